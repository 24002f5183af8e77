// The model store: brings a model version's files from a repository (a local
// directory, file:// or http(s)://) into a local cache directory, verified by
// sha256. A file appears under its final name only after its checksum
// matched, so a reader of the cache never sees a partial or corrupt file.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "gpu/model/model_spec.hpp"

namespace shoal {

// One file of a model version, as the manifest's [files] table lists it.
struct store_file {
  std::string name;   // relative to the version directory, no ".."
  std::string sha256; // lowercase hex
};

struct fetch_options {
  // Files land in <cache_dir>/<model>/<version>/<name>.
  std::string cache_dir;
  // Ranged GETs per large file.
  size_t parallel_ranges = 4;
  // Files at least this big (and of known size) are fetched in ranges.
  uint64_t range_threshold = 8u << 20;
  // Connect timeout, and the longest time a transfer may stall (no byte
  // received) before it counts as failed and is retried.
  std::chrono::seconds timeout{300};
  // Attempts after the first for a transfer that fails without progress;
  // a transfer that made progress before failing does not use one up.
  int retries = 3;
  // A manifest is untrusted input: a file bigger than this is refused
  // before disk is spent on it.
  uint64_t max_file_bytes = uint64_t{64} << 30;
  // May be empty. Called from the fetching thread or, for ranged downloads,
  // from the range workers (calls are serialized).
  std::function<void(const std::string& file, uint64_t done, uint64_t total)>
      progress;
};

struct fetch_stats {
  uint64_t bytes_downloaded = 0; // body bytes received or copied
  uint64_t files_fetched = 0;
  uint64_t files_reused = 0; // already in the cache with the right sha256
};

// Brings `files` of `model` version `version` from `source` (the version
// directory's location: a local path, file:///abs/path or http(s)://...)
// into the cache. Errors name the file (and the URL and HTTP status):
// invalid_argument for a bad name or source, unavailable for a failed
// download or a checksum mismatch, io_error for a local disk failure.
caf::expected<fetch_stats> fetch_model(const std::string& source,
                                       const std::string& model,
                                       uint64_t version,
                                       const std::vector<store_file>& files,
                                       const fetch_options& opts);

// Copies one small file that has no known checksum (a repository index, a
// manifest) from `source`/`name` to `dest`, atomically (temp file, then
// rename). opts.max_file_bytes bounds it; opts.cache_dir is not used.
caf::error fetch_file(const std::string& source, const std::string& name,
                      const std::string& dest, const fetch_options& opts);

// The sha256 of a file's contents, lowercase hex.
caf::expected<std::string> sha256_file(const std::string& path);

// How a node reaches its model repository and where it keeps verified
// copies (models.* settings).
struct store_config {
  // models.root: a directory, file:///abs/path or http(s)://host/path.
  std::string repository;
  // models.cache_dir: fetched files and verification records.
  std::string cache_dir;
  // Download tuning; its cache_dir and progress are filled per call.
  fetch_options fetch;
};

// Whether `root` names a repository reached through the store (file:// or
// http(s)://) rather than a directory whose files are loaded in place.
bool is_remote_repository(const std::string& root) noexcept;

// Makes every file in spec.files present under spec.dir and verified
// against its sha256, so that a backend may load from spec.dir.
//  - Remote repository (spec.source set): fetch_model into spec.dir, which
//    is <cache_dir>/<name>/<version>.
//  - Local directory: each file is hashed in place. A record of the file's
//    size, mtime and inode next to its sha256 (in <cache_dir>) lets later
//    loads of an unchanged file skip the hash, which keeps loads at disk
//    speed; a file that changed in any of those is hashed again.
// A mismatch fails with errc::unavailable naming the file and both sums.
caf::error
prepare_model(const model_spec& spec, const store_config& cfg,
              const std::function<void(const std::string& file, uint64_t done,
                                       uint64_t total)>& progress = {},
              fetch_stats* stats = nullptr);

} // namespace shoal
