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

#include <caf/expected.hpp>

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

// The sha256 of a file's contents, lowercase hex.
caf::expected<std::string> sha256_file(const std::string& path);

} // namespace shoal
