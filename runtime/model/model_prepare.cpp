// prepare_model: the step between a manifest and a backend load. Files come
// from the store (remote repository) or are checked in place (local
// directory); either way nothing is loaded before its sha256 matched.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "net/wire/error.hpp"
#include "runtime/model/model_store.hpp"
#include "runtime/model/verified_record.hpp"

namespace shoal {

namespace fs = std::filesystem;

namespace {

constexpr const char* record_name = ".shoal-verified";

// One line per file: sha256 size mtime_ns ctime_ns ino dev path. The path
// comes last so that it may contain spaces.
constexpr size_t max_record_bytes = size_t{4} << 20;

uint64_t ns_of(const struct timespec& ts) {
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u +
         static_cast<uint64_t>(ts.tv_nsec);
}

std::string version_dir(const store_config& cfg, const model_spec& spec) {
  return (fs::path{cfg.cache_dir} / spec.name / std::to_string(spec.version))
      .string();
}

} // namespace

bool verified_record::stat_identity(const std::string& path, identity& out) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return false;
  }
  out.size = static_cast<uint64_t>(st.st_size);
  out.mtime_ns = ns_of(st.st_mtim);
  out.ctime_ns = ns_of(st.st_ctim);
  out.ino = static_cast<uint64_t>(st.st_ino);
  out.dev = static_cast<uint64_t>(st.st_dev);
  return true;
}

verified_record verified_record::load(const std::string& dir) {
  verified_record rec;
  rec.file_ = (fs::path{dir} / record_name).string();
  std::error_code ec;
  auto size = fs::file_size(rec.file_, ec);
  if (ec || size > max_record_bytes) {
    return rec;
  }
  std::ifstream in{rec.file_};
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream is{line};
    entry e;
    std::string path;
    if (!(is >> e.sha256 >> e.id.size >> e.id.mtime_ns >> e.id.ctime_ns >>
          e.id.ino >> e.id.dev)) {
      continue;
    }
    std::getline(is, path);
    if (path.size() < 2 || path[0] != ' ' || e.sha256.size() != 64) {
      continue;
    }
    rec.entries_[path.substr(1)] = std::move(e);
  }
  return rec;
}

bool verified_record::matches(const std::string& path,
                              const std::string& sha256) const {
  auto i = entries_.find(path);
  if (i == entries_.end() || i->second.sha256 != sha256) {
    return false;
  }
  identity now;
  return stat_identity(path, now) && now == i->second.id;
}

void verified_record::add(const std::string& path, const std::string& sha256) {
  entry e;
  e.sha256 = sha256;
  if (!stat_identity(path, e.id)) {
    return;
  }
  entries_[path] = std::move(e);
  dirty_ = true;
}

void verified_record::erase(const std::string& path) {
  dirty_ = entries_.erase(path) > 0 || dirty_;
}

void verified_record::save() {
  if (!dirty_ || file_.empty()) {
    return;
  }
  std::error_code ec;
  fs::create_directories(fs::path{file_}.parent_path(), ec);
  auto tmp = file_ + ".tmp";
  {
    std::ofstream out{tmp, std::ios::trunc};
    for (auto& [path, e] : entries_) {
      out << e.sha256 << ' ' << e.id.size << ' ' << e.id.mtime_ns << ' '
          << e.id.ctime_ns << ' ' << e.id.ino << ' ' << e.id.dev << ' ' << path
          << '\n';
    }
    out.flush();
    if (!out) {
      spdlog::warn("model store: cannot write {}: files will be hashed again "
                   "on the next load",
                   tmp);
      fs::remove(tmp, ec);
      return;
    }
  }
  if (std::rename(tmp.c_str(), file_.c_str()) != 0) {
    spdlog::warn("model store: cannot rename {} into place", tmp);
    fs::remove(tmp, ec);
    return;
  }
  dirty_ = false;
}

bool is_remote_repository(const std::string& root) noexcept {
  auto starts = [&](std::string_view prefix) {
    if (root.size() < prefix.size()) {
      return false;
    }
    for (size_t i = 0; i < prefix.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(root[i])) != prefix[i]) {
        return false;
      }
    }
    return true;
  };
  return starts("http://") || starts("https://") || starts("file://");
}

namespace {

// A remote repository's files, fetched into the cache and verified there.
caf::error prepare_remote(
    const model_spec& spec, const store_config& cfg,
    const std::vector<store_file>& files,
    const std::function<void(const std::string&, uint64_t, uint64_t)>& progress,
    fetch_stats* stats) {
  auto opts = cfg.fetch;
  opts.cache_dir = cfg.cache_dir;
  opts.progress = progress;
  auto fetched = fetch_model(spec.source, spec.name, spec.version, files, opts);
  if (!fetched) {
    return make_error(errc::unavailable, spec.name + " v" +
                                             std::to_string(spec.version) +
                                             ": " + reason_of(fetched.error()));
  }
  if (stats != nullptr) {
    *stats = *fetched;
  }
  return {};
}

// One file of a local repository, hashed unless the record says it is
// unchanged since it was last verified.
caf::error verify_local(const std::string& path, const std::string& sha256,
                        verified_record& rec, fetch_stats& local) {
  auto want = sha256;
  for (auto& ch : want) {
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }
  if (rec.matches(path, want)) {
    ++local.files_reused;
    return {};
  }
  spdlog::info("model store: verifying {}", path);
  auto sha = sha256_file(path);
  if (!sha) {
    return make_error(errc::unavailable, reason_of(sha.error()));
  }
  if (*sha != want) {
    rec.erase(path);
    return make_error(errc::unavailable,
                      path + ": sha256 mismatch: the manifest says " + want +
                          ", the file hashes to " + *sha + "; not loaded");
  }
  rec.add(path, want);
  ++local.files_fetched;
  return {};
}

} // namespace

caf::error prepare_model(
    const model_spec& spec, const store_config& cfg,
    const std::function<void(const std::string&, uint64_t, uint64_t)>& progress,
    fetch_stats* stats) {
  if (spec.files.empty()) {
    return {};
  }
  if (cfg.cache_dir.empty()) {
    return make_error(errc::invalid_argument,
                      "models.cache_dir is empty: the model store has "
                      "nowhere to keep verified files");
  }
  std::vector<store_file> files;
  files.reserve(spec.files.size());
  for (auto& [name, sha] : spec.files) {
    files.push_back({name, sha});
  }
  if (!spec.source.empty()) {
    return prepare_remote(spec, cfg, files, progress, stats);
  }
  // A local repository is loaded in place; only the record lives in the
  // cache directory.
  auto rec = verified_record::load(version_dir(cfg, spec));
  fetch_stats local;
  caf::error failure;
  for (auto& f : files) {
    auto path = (fs::path{spec.dir} / f.name).string();
    if (failure = verify_local(path, f.sha256, rec, local); failure) {
      break;
    }
  }
  rec.save();
  if (failure) {
    return failure;
  }
  if (stats != nullptr) {
    *stats = local;
  }
  return {};
}

} // namespace shoal
