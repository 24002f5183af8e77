// The result cache: bounded by bytes, W-TinyLFU admission (a count-min
// frequency sketch with periodic halving, a window LRU and a segmented main
// LRU of probation and protected segments), a TTL per entry (set from the
// model's cache settings), and only successful results.
//
// It is a thread-safe structure rather than a mailbox so that the gateway
// thread can answer hits without a thread hop; the cache actor (cache.hpp)
// owns its periodic maintenance and statistics.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/wire/message.hpp"

namespace shoal {

// The key: model, resolved version and the exact input tensors. `bytes` is
// a canonical encoding of all three (compared on lookup, so two inputs never
// share an entry even if their hashes collide); `hash` is XXH3-128 of it.
struct cache_key {
  std::string bytes;
  uint64_t hash_lo = 0;
  uint64_t hash_hi = 0;

  friend bool operator==(const cache_key& a, const cache_key& b) noexcept {
    return a.hash_lo == b.hash_lo && a.hash_hi == b.hash_hi &&
           a.bytes == b.bytes;
  }
};

// Builds the key for a request: model name, resolved version, and every
// input tensor's name, dtype, shape and data.
cache_key make_cache_key(std::string_view model, uint64_t version,
                         const std::vector<tensor>& inputs);

struct cached_result {
  std::string outputs_encoded; // msgpack array of output tensors
  std::string model;
  uint64_t version = 0;
  std::string node; // node whose executor computed it
  uint64_t compute_us = 0;
};

using cached_result_ptr = std::shared_ptr<const cached_result>;

struct cache_stats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0; // removed to make room (not expiry)
  uint64_t expirations = 0;
  uint64_t rejections = 0; // candidates the admission filter refused
  uint64_t bytes = 0;
  uint64_t entries = 0;
};

class result_cache {
public:
  struct config {
    // Total budget: the key bytes, the value bytes and a fixed per-entry
    // overhead are all charged against it.
    uint64_t max_bytes = 256u << 20;
    // Share of the budget for the admission window LRU (W-TinyLFU: 1%).
    double window_fraction = 0.01;
    // Share of the main region for the protected segment (80%).
    double protected_fraction = 0.8;
  };

  explicit result_cache(config cfg);
  ~result_cache();

  // A hit bumps the entry's frequency and recency; an expired entry is
  // removed and counts as a miss.
  cached_result_ptr get(const cache_key& key,
                        time_point now = clock_type::now());

  // Offers a result. It enters the window; whatever the window pushes out
  // competes with the main region's victim by sketch frequency. An entry
  // larger than the whole budget is refused. ttl <= 0 means no expiry.
  void put(cache_key key, cached_result_ptr value,
           std::chrono::milliseconds ttl, time_point now = clock_type::now());

  // Drops an entry (used by `cache: refresh` before re-inserting).
  void erase(const cache_key& key);

  // Removes every expired entry; returns how many.
  size_t expire(time_point now = clock_type::now());

  void clear();

  cache_stats stats() const;
  const config& cfg() const noexcept { return cfg_; }

  // Charged per entry on top of key and value bytes (nodes, index slots).
  static constexpr uint64_t entry_overhead = 160;

private:
  struct impl;
  config cfg_;
  std::unique_ptr<impl> impl_;
};

} // namespace shoal
