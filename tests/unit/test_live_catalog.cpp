// Re-reading a model repository while a node runs: what a re-read adds,
// removes and refuses (merge_catalogs), how reread_repository reads a
// directory against the catalog a node already has, and the live catalog
// its readers share.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "gpu/model/live_catalog.hpp"
#include "net/wire/error.hpp"
#include "runtime/model/repository.hpp"

using namespace shoal;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    char tmpl[] = "/tmp/shoal-reload-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~temp_dir() { fs::remove_all(path); }
  void write(const std::string& rel, const std::string& text) {
    auto p = path / rel;
    fs::create_directories(p.parent_path());
    std::ofstream{p} << text;
  }
};

std::string manifest(double scale) {
  return "backend = \"synthetic\"\n"
         "[[inputs]]\nname = \"x\"\ndtype = \"f32\"\nshape = [-1, 4]\n"
         "[[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [-1, 4]\n"
         "[synthetic]\nscale = " +
         std::to_string(scale) + "\n";
}

model_spec_ptr spec_of(const std::string& name, uint64_t v,
                       const std::string& sha) {
  auto s = std::make_shared<model_spec>();
  s->name = name;
  s->version = v;
  s->dir = "/repo/" + name + "/" + std::to_string(v);
  s->manifest_sha256 = sha;
  return s;
}

std::vector<std::string> names(const std::vector<catalog_change>& xs) {
  std::vector<std::string> out;
  for (auto& c : xs) {
    out.push_back(c.model + ":" + std::to_string(c.version));
  }
  return out;
}

store_config store_of(const temp_dir& repo) {
  store_config s;
  s.repository = repo.path.string();
  s.cache_dir = (repo.path / ".cache").string();
  return s;
}

} // namespace

TEST(merge_catalogs, adds_removes_and_keeps_known_specs) {
  model_catalog cur;
  cur.models["a"][1] = spec_of("a", 1, "s1");
  cur.models["a"][2] = spec_of("a", 2, "s2");
  cur.models["b"][1] = spec_of("b", 1, "s3");
  model_catalog scanned;
  scanned.models["a"][2] = spec_of("a", 2, "s2");
  scanned.models["a"][3] = spec_of("a", 3, "s4");
  scanned.models["c"][1] = spec_of("c", 1, "s5");
  auto up = merge_catalogs(cur, scanned);
  EXPECT_EQ(names(up.added), (std::vector<std::string>{"a:3", "c:1"}));
  EXPECT_EQ(names(up.removed), (std::vector<std::string>{"a:1", "b:1"}));
  EXPECT_TRUE(up.refused.empty());
  EXPECT_TRUE(up.changed());
  // A known version keeps its spec object: replicas and router entries
  // that hold it stay valid.
  EXPECT_EQ(up.catalog->resolve("a", 2), cur.models["a"][2]);
  EXPECT_EQ(up.catalog->resolve("a", std::nullopt)->version, 3u);
  EXPECT_EQ(up.catalog->resolve("b", 1), nullptr);
}

TEST(merge_catalogs, refuses_a_changed_manifest_and_keeps_the_old_spec) {
  model_catalog cur;
  cur.models["a"][1] = spec_of("a", 1, "old");
  model_catalog scanned;
  scanned.models["a"][1] = spec_of("a", 1, "new");
  auto up = merge_catalogs(cur, scanned);
  ASSERT_EQ(up.refused.size(), 1u);
  EXPECT_EQ(up.refused[0].model, "a");
  EXPECT_EQ(up.refused[0].version, 1u);
  EXPECT_NE(up.refused[0].error.find("/repo/a/1/model.toml"), std::string::npos)
      << up.refused[0].error;
  EXPECT_FALSE(up.changed());
  EXPECT_EQ(up.catalog->resolve("a", 1)->manifest_sha256, "old");
}

TEST(merge_catalogs, nothing_changed_is_no_change) {
  model_catalog cur;
  cur.models["a"][1] = spec_of("a", 1, "s");
  auto up = merge_catalogs(cur, cur);
  EXPECT_FALSE(up.changed());
  EXPECT_TRUE(up.added.empty() && up.removed.empty() && up.refused.empty());
}

TEST(reread_repository, finds_new_and_removed_versions_of_a_directory) {
  temp_dir repo;
  repo.write("m/1/model.toml", manifest(2));
  auto first = open_repository(store_of(repo));
  ASSERT_TRUE(first) << reason_of(first.error());
  repo.write("m/2/model.toml", manifest(3));
  repo.write("n/1/model.toml", manifest(4));
  auto up = reread_repository(store_of(repo), **first);
  ASSERT_TRUE(up) << reason_of(up.error());
  EXPECT_EQ(names(up->added), (std::vector<std::string>{"m:2", "n:1"}));
  EXPECT_TRUE(up->removed.empty());
  EXPECT_EQ(up->catalog->resolve("m", 1), (*first)->resolve("m", 1));
  fs::remove_all(repo.path / "m" / "1");
  auto again = reread_repository(store_of(repo), *up->catalog);
  ASSERT_TRUE(again) << reason_of(again.error());
  EXPECT_EQ(names(again->removed), (std::vector<std::string>{"m:1"}));
  EXPECT_EQ(again->catalog->resolve("m", std::nullopt)->version, 2u);
}

TEST(reread_repository, refuses_a_changed_manifest_even_a_broken_one) {
  temp_dir repo;
  repo.write("m/1/model.toml", manifest(2));
  auto first = open_repository(store_of(repo));
  ASSERT_TRUE(first) << reason_of(first.error());
  repo.write("m/1/model.toml", "backend = 3\n");
  auto up = reread_repository(store_of(repo), **first);
  ASSERT_TRUE(up) << reason_of(up.error());
  ASSERT_EQ(up->refused.size(), 1u);
  EXPECT_NE(up->refused[0].error.find((repo.path / "m/1/model.toml").string()),
            std::string::npos)
      << up->refused[0].error;
  EXPECT_EQ(up->catalog->resolve("m", 1), (*first)->resolve("m", 1));
}

TEST(reread_repository, a_broken_new_manifest_fails_and_names_the_file) {
  temp_dir repo;
  repo.write("m/1/model.toml", manifest(2));
  auto first = open_repository(store_of(repo));
  ASSERT_TRUE(first) << reason_of(first.error());
  repo.write("m/2/model.toml", "backend = 3\n");
  auto up = reread_repository(store_of(repo), **first);
  ASSERT_FALSE(up);
  EXPECT_NE(reason_of(up.error()).find("m/2/model.toml"), std::string::npos)
      << reason_of(up.error());
}

TEST(live_catalog, readers_see_a_new_generation) {
  auto first = std::make_shared<model_catalog>();
  live_catalog live{first};
  auto g = live.generation();
  EXPECT_EQ(live.get(), first);
  auto next = std::make_shared<model_catalog>();
  live.set(next);
  EXPECT_NE(live.generation(), g);
  EXPECT_EQ(live.get(), next);
  // Without a re-reader, a re-read answers at once with no change.
  bool answered = false;
  live.reread([&](const caf::expected<catalog_update>& up) {
    answered = up && !up->changed() && up->catalog == next;
  });
  EXPECT_TRUE(answered);
}
