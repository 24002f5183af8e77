#include "runtime/model/repository.hpp"

#include <charconv>
#include <filesystem>
#include <set>

#include <spdlog/spdlog.h>
#include <toml++/toml.h>

#include "config/toml_value.hpp"
#include "gpu/model/manifest.hpp"
#include "net/wire/error.hpp"

namespace fs = std::filesystem;

namespace shoal {

namespace {

// A version's spec for a scan: the known one when its manifest is
// unchanged (nothing to parse), a copy of it carrying the new manifest's
// sha256 when it changed (merge_catalogs refuses it and keeps the known
// one), else the manifest parsed.
caf::expected<model_spec_ptr> version_spec(const std::string& manifest,
                                           const std::string& name, uint64_t v,
                                           const model_catalog* known) {
  auto sha = sha256_file(manifest);
  if (!sha) {
    return sha.error();
  }
  if (known) {
    if (auto k = known->resolve(name, v)) {
      if (k->manifest_sha256 == *sha) {
        return k;
      }
      auto changed = std::make_shared<model_spec>(*k);
      changed->manifest_sha256 = *sha;
      return model_spec_ptr{std::move(changed)};
    }
  }
  auto spec = parse_manifest(manifest, name, v);
  if (!spec) {
    return spec.error();
  }
  spec->manifest_sha256 = std::move(*sha);
  return model_spec_ptr{std::make_shared<model_spec>(std::move(*spec))};
}

// The numbered version directories of one model directory.
caf::expected<std::map<uint64_t, model_spec_ptr>>
scan_model_dir(const fs::path& dir, const std::string& name,
               const model_catalog* known) {
  std::map<uint64_t, model_spec_ptr> versions;
  // A re-read repeats what the start already warned about, every poll.
  auto level = known ? spdlog::level::debug : spdlog::level::warn;
  std::error_code ec;
  for (auto& vdir : fs::directory_iterator{dir, ec}) {
    if (!vdir.is_directory()) {
      continue;
    }
    auto vname = vdir.path().filename().string();
    uint64_t v = 0;
    auto [p, perr] =
        std::from_chars(vname.data(), vname.data() + vname.size(), v);
    if (perr != std::errc{} || p != vname.data() + vname.size() || v == 0) {
      spdlog::log(level,
                  "model repository: skipping {} (version directories "
                  "are positive integers)",
                  vdir.path().string());
      continue;
    }
    auto manifest = vdir.path() / "model.toml";
    if (!fs::exists(manifest, ec)) {
      spdlog::log(level, "model repository: {} has no model.toml, skipped",
                  vdir.path().string());
      continue;
    }
    auto spec = version_spec(manifest.string(), name, v, known);
    if (!spec) {
      return spec.error();
    }
    versions.emplace(v, std::move(*spec));
  }
  if (ec) {
    return make_error(errc::io_error, "cannot read model directory '" +
                                          dir.string() + "': " + ec.message());
  }
  return versions;
}

caf::expected<model_catalog_ptr> scan_dir(const std::string& root,
                                          const model_catalog* known) {
  auto catalog = std::make_shared<model_catalog>();
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return make_error(errc::not_found,
                      "model repository '" + root + "' is not a directory");
  }
  for (auto& model_dir : fs::directory_iterator{root, ec}) {
    if (!model_dir.is_directory()) {
      continue;
    }
    auto name = model_dir.path().filename().string();
    if (name.empty() || name[0] == '.') {
      continue;
    }
    auto versions = scan_model_dir(model_dir.path(), name, known);
    if (!versions) {
      return versions.error();
    }
    if (versions->empty()) {
      spdlog::log(known ? spdlog::level::debug : spdlog::level::warn,
                  "model repository: {} holds no versions, skipped",
                  model_dir.path().string());
      continue;
    }
    catalog->models.emplace(name, std::move(*versions));
  }
  if (ec) {
    return make_error(errc::io_error, "cannot read model repository '" + root +
                                          "': " + ec.message());
  }
  return model_catalog_ptr{std::move(catalog)};
}

} // namespace

caf::expected<model_catalog_ptr> scan_repository(const std::string& root) {
  return scan_dir(root, nullptr);
}

namespace {

// An index or a manifest is small; a server sending more is refused.
constexpr uint64_t max_listing_bytes = uint64_t{1} << 20;
constexpr size_t max_index_models = 4096;

// Parses index.toml: [models] name = [versions...].
caf::expected<std::map<std::string, std::vector<uint64_t>>>
parse_index(const std::string& path) {
  auto fail = [&](const std::string& what) {
    return make_error(errc::config_invalid, path + ": " + what);
  };
  auto parsed = parse_toml_file(path);
  if (!parsed) {
    return parsed.error();
  }
  auto& root = *parsed;
  for (auto& [k, v] : root) {
    if (k.str() != "models") {
      return fail(std::string{k.str()} + ": unknown key");
    }
  }
  auto* models = root["models"].as_table();
  if (!models) {
    return fail("models: expected a table [models] of name = [versions]");
  }
  if (models->size() > max_index_models) {
    return fail("models: more than " + std::to_string(max_index_models) +
                " models");
  }
  std::map<std::string, std::vector<uint64_t>> out;
  for (auto& [k, v] : *models) {
    std::string name{k.str()};
    if (name.empty() || name[0] == '.' ||
        name.find_first_of("/\\") != std::string::npos) {
      return fail("models." + name + ": not a valid model name");
    }
    auto* arr = v.as_array();
    if (!arr || arr->empty()) {
      return fail("models." + name +
                  ": expected a non-empty array of versions");
    }
    auto& versions = out[name];
    for (auto& item : *arr) {
      auto n = item.value<int64_t>();
      if (!n || *n <= 0) {
        return fail("models." + name + ": versions are positive integers");
      }
      versions.push_back(static_cast<uint64_t>(*n));
    }
  }
  return out;
}

} // namespace

namespace {

// Brings one listed version's manifest into the cache and reads it. A
// version the node knows is fetched beside its cached manifest and
// compared, so that a refused change leaves the cached copy as it was.
caf::expected<model_spec_ptr>
fetch_version(const store_config& cfg, const fetch_options& opts,
              const std::string& root, const std::string& name, uint64_t v,
              bool offline, const model_catalog* known) {
  auto rel = name + "/" + std::to_string(v);
  auto local =
      (fs::path{cfg.cache_dir} / name / std::to_string(v) / "model.toml")
          .string();
  auto known_spec = known ? known->resolve(name, v) : nullptr;
  auto dest = known_spec ? local + ".reread" : local;
  if (!offline) {
    if (auto err = fetch_file(root, rel + "/model.toml", dest, opts)) {
      return make_error(errc::unavailable,
                        "model repository " + root + ": " + reason_of(err));
    }
  }
  auto spec = version_spec(dest, name, v, known);
  if (known_spec) {
    std::error_code ec;
    fs::remove(dest, ec);
  }
  if (!spec) {
    return spec.error();
  }
  if ((*spec)->source.empty()) {
    auto with_source = std::make_shared<model_spec>(**spec);
    with_source->source = root + "/" + rel;
    return model_spec_ptr{std::move(with_source)};
  }
  return spec;
}

// The catalog of a file:// or http(s):// repository: its index.toml and
// the manifests it lists. `known`: a running node's catalog (a re-read),
// for which an unreachable repository is an error, not a fallback.
caf::expected<model_catalog_ptr> open_remote(const store_config& cfg,
                                             const model_catalog* known) {
  auto opts = cfg.fetch;
  opts.max_file_bytes = max_listing_bytes;
  opts.progress = nullptr;
  auto root = cfg.repository;
  while (root.size() > 1 && root.back() == '/') {
    root.pop_back();
  }
  auto index_path = (fs::path{cfg.cache_dir} / "index.toml").string();
  bool offline = false;
  if (auto err = fetch_file(root, "index.toml", index_path, opts)) {
    std::error_code ec;
    if (known || !fs::exists(index_path, ec)) {
      return make_error(errc::unavailable,
                        "model repository " + root + ": " + reason_of(err));
    }
    spdlog::warn("model repository {} unreachable ({}); using the index "
                 "cached in {}",
                 root, reason_of(err), cfg.cache_dir);
    offline = true;
  }
  auto index = parse_index(index_path);
  if (!index) {
    return index.error();
  }
  auto catalog = std::make_shared<model_catalog>();
  for (auto& [name, versions] : *index) {
    std::map<uint64_t, model_spec_ptr> specs;
    for (auto v : versions) {
      auto spec = fetch_version(cfg, opts, root, name, v, offline, known);
      if (!spec) {
        return spec.error();
      }
      specs.emplace(v, std::move(*spec));
    }
    catalog->models.emplace(name, std::move(specs));
  }
  return model_catalog_ptr{std::move(catalog)};
}

} // namespace

caf::expected<model_catalog_ptr> open_repository(const store_config& cfg) {
  if (!is_remote_repository(cfg.repository)) {
    return scan_dir(cfg.repository, nullptr);
  }
  return open_remote(cfg, nullptr);
}

caf::expected<catalog_update> reread_repository(const store_config& cfg,
                                                const model_catalog& current) {
  auto scanned = is_remote_repository(cfg.repository)
                     ? open_remote(cfg, &current)
                     : scan_dir(cfg.repository, &current);
  if (!scanned) {
    return scanned.error();
  }
  return merge_catalogs(current, **scanned);
}

} // namespace shoal
