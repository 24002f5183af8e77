// Where the coordinator puts a new replica: a pure function of what it
// knows about the workers, so that the rules are tested on their own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shoal {

struct placement_candidate {
  std::string name;
  std::string state;          // up, suspect, draining, down
  bool on_demand = false;     // labelled capacity=on-demand
  uint64_t memory_budget = 0; // 0: unlimited
  uint64_t memory_used = 0;   // by the CPU replicas placed there
  bool hosts_model = false;   // runs (or is starting) this model version
  bool has_files = false;     // its verified cache holds the model's files
  size_t replicas = 0;        // of any model, running or starting
  // One entry per GPU (none: a CPU-only worker): its free memory as the
  // worker last reported it, less the estimates of replicas that became
  // ready on it since (the report did not see them yet).
  std::vector<uint64_t> gpu_free;
  // Estimates of the GPU replicas placed there and not ready yet. The
  // worker picks their GPU when it loads them, so they belong to none yet.
  std::vector<uint64_t> gpu_claims;
};

struct placement_request {
  uint64_t memory_bytes = 0;           // resources.memory_bytes
  uint64_t on_demand_replicas = 0;     // of this model on on-demand workers
  uint64_t min_replicas_on_demand = 0; // resources.min_replicas_on_demand
  std::string device = "cpu";          // resources.device: cpu, gpu, any
};

struct placement_choice {
  std::optional<size_t> worker; // index into the candidates
  // Chosen for a GPU with room: the estimate counts against the worker's
  // GPUs, not against its node.memory_bytes.
  bool on_gpu = false;
  // No worker, and waiting would not help: a `gpu` model while workers are
  // up but none has a GPU with room. The spawn fails (UNAVAILABLE to the
  // clients) instead of waiting; with no worker up at all it waits.
  bool no_gpu_room = false;
};

// The CPU rules: the index of the worker to place on, or nullopt when none
// qualifies. Qualifies: up (not suspect, draining or down), not running
// this model version yet (spread), with room for it in node.memory_bytes.
// Then, in order of preference: an on-demand worker while the model is
// below its on-demand minimum; one that has the files; the fewest
// replicas; the name (a stable tie-break).
std::optional<size_t>
choose_worker(const std::vector<placement_candidate>& workers,
              const placement_request& req);

// The most memory one of the worker's GPUs has left once its claims are
// laid out as a worker loads them (largest first, each on the GPU with the
// most room); 0 without a GPU.
uint64_t gpu_room(const placement_candidate& w);

// Every rule, by req.device:
//  - cpu: choose_worker.
//  - gpu: only workers that are up, do not run the model yet and have a
//    GPU whose room (gpu_room) fits req.memory_bytes; then the same order
//    as choose_worker, with the most GPU room before the name. None while
//    some worker is up: no_gpu_room.
//  - any: as gpu when some worker qualifies, else choose_worker.
placement_choice
choose_placement(const std::vector<placement_candidate>& workers,
                 const placement_request& req);

} // namespace shoal
