// Which replicas hold memory on which GPU, so that status, /readyz and
// metrics can show it, and so that a load that runs out of device memory can
// retire an idle replica to make room before it gives up.
//
// One process-wide instance; every member is thread-safe (executors load
// and run on their own threads).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace shoal {

class device_ledger {
public:
  struct entry {
    uint64_t id = 0;
    int device = 0; // CUDA ordinal
    std::string model;
    uint64_t version = 0;
    uint64_t bytes = 0; // device memory held: weights, activations, workspace
    bool busy = false;  // a batch is on the device
    std::chrono::steady_clock::time_point last_used;
  };

  static device_ledger& instance();

  // Records a replica's memory on `device`; `retire` asks its owner to stop
  // (called from any thread, at most once; may be empty: never retired).
  uint64_t add(int device, std::string model, uint64_t version, uint64_t bytes,
               std::function<void()> retire);

  // The memory is released (the backend is gone).
  void remove(uint64_t id);

  // The replica's memory changed (its buffers grew for a larger batch).
  void set_bytes(uint64_t id, uint64_t bytes);

  // A batch started (busy) or finished on this replica.
  void touch(uint64_t id, bool busy);

  // Asks the least recently used replica on `device` that is not busy, not
  // `except` and has a retire function to retire, and waits up to `wait`
  // for its memory to be released. Returns the retired entry's model and
  // version ("mlp v1") or an empty string when none could be retired.
  std::string retire_idle(int device, uint64_t except,
                          std::chrono::milliseconds wait);

  // Every replica on `device` (all devices when device < 0).
  std::vector<entry> replicas(int device = -1) const;

private:
  struct record {
    entry e;
    std::function<void()> retire;
    bool retiring = false;
  };
  mutable std::mutex mtx_;
  std::condition_variable released_;
  std::map<uint64_t, record> records_;
  uint64_t next_id_ = 1;
};

} // namespace shoal
