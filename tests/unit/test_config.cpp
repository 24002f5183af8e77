// Node config (TOML, environment, --set) and model manifests: every bad
// input names the file and the key.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "config/config.hpp"
#include "gpu/model/manifest.hpp"
#include "net/wire/error.hpp"
#include "runtime/model/repository.hpp"

using namespace shoal;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    char tmpl[] = "/tmp/shoal-config-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~temp_dir() { fs::remove_all(path); }
  std::string write(const std::string& rel, const std::string& text) {
    auto p = path / rel;
    fs::create_directories(p.parent_path());
    std::ofstream{p} << text;
    return p.string();
  }
};

const char* good_manifest = R"(
backend = "synthetic"
[[inputs]]
name = "x"
dtype = "f32"
shape = [-1, 4]
[[outputs]]
name = "y"
dtype = "f32"
shape = [-1, 4]
[batching]
max_batch = 8
max_delay_us = 100
[cache]
ttl_ms = 5000
)";

std::string manifest_error(const std::string& text) {
  temp_dir d;
  auto path = d.write("m/1/model.toml", text);
  auto spec = parse_manifest(path, "m", 1);
  EXPECT_FALSE(spec) << "accepted:\n" << text;
  return spec ? std::string{} : reason_of(spec.error());
}

} // namespace

TEST(config, defaults_are_the_standalone_node) {
  auto cfg = load_config("");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->gateway.endpoint, "tcp://127.0.0.1:5555");
  EXPECT_EQ(cfg->http.listen, "127.0.0.1:9310");
  EXPECT_EQ(cfg->node.role, "all");
  EXPECT_FALSE(cfg->node.name.empty());
}

TEST(config, file_environment_and_set_override_in_order) {
  temp_dir d;
  auto file =
      d.write("n.toml", "[gateway]\nendpoint = \"tcp://127.0.0.1:6000\"\n"
                        "[cache]\nmax_bytes = 1000\n");
  ::setenv("SHOAL_CACHE_MAX_BYTES", "2000", 1);
  auto cfg = load_config(file);
  ::unsetenv("SHOAL_CACHE_MAX_BYTES");
  ASSERT_TRUE(cfg) << reason_of(cfg.error());
  EXPECT_EQ(cfg->gateway.endpoint, "tcp://127.0.0.1:6000");
  EXPECT_EQ(cfg->cache.max_bytes, 2000u) << "environment beats the file";
  ASSERT_FALSE(set_config_value(*cfg, "cache.max_bytes", "3000", "--set"));
  EXPECT_EQ(cfg->cache.max_bytes, 3000u);
}

TEST(config, later_files_override_earlier_ones_and_sources_are_kept) {
  temp_dir d;
  auto base = d.write("base.toml", "[cache]\nmax_bytes = 1000\n"
                                   "[http]\nthreads = 3\n");
  auto env = d.write("env.toml", "[cache]\nmax_bytes = 2000\n");
  auto cfg = load_config(std::vector<std::string>{base, env});
  ASSERT_TRUE(cfg) << reason_of(cfg.error());
  EXPECT_EQ(cfg->cache.max_bytes, 2000u) << "the environment's file wins";
  EXPECT_EQ(cfg->http.threads, 3) << "the base still sets what it alone sets";
  ASSERT_FALSE(set_config_value(*cfg, "router.tick_ms", "7", "--set"));
  auto text = render_config(*cfg, true);
  EXPECT_NE(text.find("max_bytes = 2000  # from " + env), std::string::npos)
      << text;
  EXPECT_NE(text.find("threads = 3  # from " + base), std::string::npos);
  EXPECT_NE(text.find("tick_ms = 7  # from --set"), std::string::npos);
  EXPECT_NE(text.find("io_threads = 1  # default"), std::string::npos);
  EXPECT_EQ(render_config(*cfg).find("# from"), std::string::npos)
      << "without sources the text stays a plain config file";
}

TEST(config, a_bad_later_file_names_itself) {
  temp_dir d;
  auto base = d.write("base.toml", "[cache]\nmax_bytes = 1000\n");
  auto env = d.write("env.toml", "[cache]\nmax_bites = 2000\n");
  auto cfg = load_config(std::vector<std::string>{base, env});
  ASSERT_FALSE(cfg);
  EXPECT_NE(reason_of(cfg.error()).find(env + ": cache.max_bites: unknown key"),
            std::string::npos)
      << reason_of(cfg.error());
}

TEST(config, unknown_key_names_file_and_key) {
  temp_dir d;
  auto file = d.write("n.toml", "[gateway]\nendpont = \"x\"\n");
  auto cfg = load_config(file);
  ASSERT_FALSE(cfg);
  auto why = reason_of(cfg.error());
  EXPECT_NE(why.find(file), std::string::npos) << why;
  EXPECT_NE(why.find("gateway.endpont: unknown key"), std::string::npos) << why;
}

TEST(config, wrong_types_and_syntax_are_reported) {
  temp_dir d;
  auto cfg = load_config(d.write("a.toml", "[cache]\nmax_bytes = \"big\"\n"));
  ASSERT_FALSE(cfg);
  EXPECT_NE(reason_of(cfg.error()).find("cache.max_bytes: expected an integer"),
            std::string::npos);
  cfg = load_config(d.write("b.toml", "[cache\nmax_bytes = 1\n"));
  ASSERT_FALSE(cfg);
  EXPECT_NE(reason_of(cfg.error()).find("b.toml:1:"), std::string::npos)
      << reason_of(cfg.error());
  ::setenv("SHOAL_GATEWAY_ENDPONT", "x", 1);
  cfg = load_config("");
  ::unsetenv("SHOAL_GATEWAY_ENDPONT");
  ASSERT_FALSE(cfg);
  EXPECT_NE(reason_of(cfg.error()).find("SHOAL_GATEWAY_ENDPONT"),
            std::string::npos);
}

TEST(config, validate_rejects_impossible_values) {
  auto cfg = load_config("");
  ASSERT_TRUE(cfg);
  cfg->node.role = "boss";
  auto err = validate(*cfg);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("node.role"), std::string::npos);
  cfg->node.role = "all";
  cfg->models.root = "/nonexistent/models";
  err = validate(*cfg);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("models.root"), std::string::npos);
  cfg = load_config("");
  ASSERT_TRUE(cfg);
  cfg->runtime.poll_spin_us = 1'000'000;
  err = validate(*cfg);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("runtime.poll_spin_us: must be at most 10000"),
            std::string::npos)
      << reason_of(err);
}

TEST(config, range_errors_name_where_the_value_was_set) {
  temp_dir d;
  auto base = d.write("base.toml", "[gateway]\nmax_frame_bytes = 4096\n");
  auto f = d.write("f.toml", "[gateway]\nmax_frame_bytes = 10\n");
  auto cfg = load_config(std::vector<std::string>{base, f});
  ASSERT_TRUE(cfg) << reason_of(cfg.error());
  auto why = reason_of(validate(*cfg));
  EXPECT_NE(why.find(f + ": gateway.max_frame_bytes: must be at least 64"),
            std::string::npos)
      << why;
  ASSERT_FALSE(
      set_config_value(*cfg, "gateway.max_frame_bytes", "4096", "--set"));
  ASSERT_FALSE(set_config_value(*cfg, "router.tick_ms", "0", "--set"));
  why = reason_of(validate(*cfg));
  EXPECT_NE(why.find("--set: router.tick_ms: must be at least 1"),
            std::string::npos)
      << why;
  ::setenv("SHOAL_HTTP_THREADS", "0", 1);
  cfg = load_config("");
  ::unsetenv("SHOAL_HTTP_THREADS");
  ASSERT_TRUE(cfg) << reason_of(cfg.error());
  why = reason_of(validate(*cfg));
  EXPECT_NE(why.find("SHOAL_HTTP_THREADS: http.threads: must be at least 1"),
            std::string::npos)
      << why;
  // A tenant's bad name is found in the file of its table.
  auto t = d.write("t.toml", "[tenants.\"a b\"]\nrate = 1.0\n");
  cfg = load_config(t);
  ASSERT_TRUE(cfg) << reason_of(cfg.error());
  why = reason_of(validate(*cfg));
  EXPECT_NE(why.find(t + ": tenants.a b: a tenant name"), std::string::npos)
      << why;
}

TEST(config, admin_from_names_every_admin_op) {
  auto cfg = load_config("");
  ASSERT_TRUE(cfg);
  auto text = render_config(*cfg);
  EXPECT_NE(text.find("admin ops (load, unload, drain, reload)"),
            std::string::npos)
      << text;
}

TEST(config, printed_config_reads_back_identically) {
  auto cfg = load_config("");
  ASSERT_TRUE(cfg);
  cfg->cache.max_bytes = 12345;
  cfg->node.name = "with \"quotes\"";
  temp_dir d;
  auto file = d.write("p.toml", render_config(*cfg));
  auto back = load_config(file);
  ASSERT_TRUE(back) << reason_of(back.error());
  EXPECT_EQ(render_config(*back), render_config(*cfg));
}

TEST(config, tenants_are_tables_of_limits_and_print_back) {
  temp_dir d;
  auto file = d.write("t.toml", "[tenants.paid]\nrate = 100\nburst = 20\n"
                                "max_inflight = 8\nmax_priority = 2\n"
                                "models = [\"echo\", \"slow\"]\n"
                                "weight = 4\n[tenants.default]\nrate = 5\n"
                                "[log]\nrequests = true\n"
                                "requests_sample = 0.5\n");
  auto cfg = load_config(file);
  ASSERT_TRUE(cfg) << reason_of(cfg.error());
  ASSERT_FALSE(validate(*cfg)) << reason_of(validate(*cfg));
  ASSERT_EQ(cfg->tenants.size(), 2u);
  auto& paid = cfg->tenants.at("paid");
  EXPECT_EQ(paid.rate, 100);
  EXPECT_EQ(paid.burst, 20u);
  EXPECT_EQ(paid.max_inflight, 8u);
  EXPECT_EQ(paid.max_priority, 2u);
  EXPECT_EQ(paid.models, (std::vector<std::string>{"echo", "slow"}));
  EXPECT_EQ(paid.weight, 4u);
  EXPECT_EQ(cfg->tenants.at("default").rate, 5);
  EXPECT_TRUE(cfg->log.requests);
  ASSERT_FALSE(set_config_value(*cfg, "tenants.free.models", "echo", "--set"));
  EXPECT_EQ(cfg->tenants.at("free").models, (std::vector<std::string>{"echo"}));
  auto text = render_config(*cfg, true);
  EXPECT_NE(text.find("[tenants.paid]"), std::string::npos) << text;
  EXPECT_NE(text.find("weight = 4  # from " + file), std::string::npos);
  auto back = load_config(d.write("p.toml", render_config(*cfg)));
  ASSERT_TRUE(back) << reason_of(back.error());
  EXPECT_EQ(render_config(*back), render_config(*cfg));
}

TEST(config, tenant_mistakes_name_the_file_and_field) {
  temp_dir d;
  auto check = [&](const std::string& text, const std::string& want) {
    auto file = d.write("bad.toml", text);
    auto cfg = load_config(file);
    auto why = cfg ? reason_of(validate(*cfg)) : reason_of(cfg.error());
    EXPECT_NE(why.find(want), std::string::npos) << why;
    if (!cfg) {
      EXPECT_NE(why.find(file), std::string::npos) << why;
    }
  };
  check("[tenants.a]\nrat = 1\n", "tenants.a.rat: unknown key");
  check("[tenants.a]\nrate = \"fast\"\n", "tenants.a.rate: expected");
  check("[tenants.a]\nmodels = \"echo\"\n", "tenants.a.models: expected");
  check("[tenants]\na = 1\n", "tenants.a: expected a table");
  check("[tenants.a]\nmax_priority = 10\n", "tenants.a.max_priority");
  check("[tenants.a]\nweight = 0\n", "tenants.a.weight");
  check("[tenants.other]\nrate = 1\n", "reserved");
  check("[tenants.\"a b\"]\nrate = 1\n", "tenant name");
  check("[log]\nrequests_sample = 2.0\n", "log.requests_sample");
}

TEST(manifest, good_manifest_parses) {
  temp_dir d;
  auto spec = parse_manifest(d.write("m/1/model.toml", good_manifest), "m", 1);
  ASSERT_TRUE(spec) << reason_of(spec.error());
  EXPECT_EQ(spec->max_batch, 8u);
  EXPECT_EQ(spec->max_delay.count(), 100);
  EXPECT_EQ(spec->cache_ttl.count(), 5000);
  EXPECT_EQ(spec->inputs[0].shape, (std::vector<int64_t>{-1, 4}));
}

TEST(manifest, each_mistake_names_the_key) {
  std::string g = good_manifest;
  auto with = [&](const std::string& from, const std::string& to) {
    auto s = g;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  EXPECT_NE(manifest_error(g + "colour = 1\n").find("colour: unknown key"),
            std::string::npos);
  EXPECT_NE(manifest_error(with("dtype = \"f32\"", "dtype = \"f33\""))
                .find("inputs[0].dtype: unknown dtype 'f33'"),
            std::string::npos);
  EXPECT_NE(manifest_error(with("max_batch = 8", "max_batch = 0"))
                .find("batching.max_batch"),
            std::string::npos);
  EXPECT_NE(manifest_error(with("shape = [-1, 4]", "shape = [4, -1]"))
                .find("inputs[0].shape"),
            std::string::npos);
  EXPECT_NE(manifest_error(with("backend = \"synthetic\"", "backend = \"tpu\""))
                .find("backend: unknown backend 'tpu'"),
            std::string::npos);
  EXPECT_NE(manifest_error(with("[cache]", "[cache]\nttl = 3"))
                .find("cache.ttl: unknown key"),
            std::string::npos);
  auto why = manifest_error(with("name = \"y\"", "name = \"y\"\nsize = 2"));
  EXPECT_NE(why.find("model.toml"), std::string::npos) << why;
  EXPECT_NE(why.find("outputs[0].size: unknown key"), std::string::npos) << why;
}

TEST(repository, scans_versions_and_resolves_the_newest) {
  temp_dir d;
  d.write("m/1/model.toml", good_manifest);
  d.write("m/3/model.toml", good_manifest);
  d.write("m/notes/readme.txt", "not a version");
  auto cat = scan_repository(d.path.string());
  ASSERT_TRUE(cat) << reason_of(cat.error());
  EXPECT_EQ((*cat)->resolve("m", std::nullopt)->version, 3u);
  EXPECT_EQ((*cat)->resolve("m", 1)->version, 1u);
  EXPECT_EQ((*cat)->resolve("m", 2), nullptr);
  EXPECT_EQ((*cat)->resolve("n", std::nullopt), nullptr);
}

TEST(repository, a_broken_manifest_fails_the_scan) {
  temp_dir d;
  d.write("m/1/model.toml", good_manifest);
  d.write("bad/1/model.toml", "backend = 3\n");
  auto cat = scan_repository(d.path.string());
  ASSERT_FALSE(cat);
  EXPECT_NE(reason_of(cat.error()).find("bad/1/model.toml: backend"),
            std::string::npos)
      << reason_of(cat.error());
}
