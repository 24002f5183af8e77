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
  uint64_t memory_used = 0;   // by the replicas placed there
  bool hosts_model = false;   // runs (or is starting) this model version
  bool has_files = false;     // its verified cache holds the model's files
  size_t replicas = 0;        // of any model, running or starting
};

struct placement_request {
  uint64_t memory_bytes = 0;           // resources.memory_bytes
  uint64_t on_demand_replicas = 0;     // of this model on on-demand workers
  uint64_t min_replicas_on_demand = 0; // resources.min_replicas_on_demand
};

// The index of the worker to place on, or nullopt when none qualifies.
// Qualifies: up (not suspect, draining or down), not running this model
// version yet (spread), with room for it. Then, in order of preference: an
// on-demand worker while the model is below its on-demand minimum; one that
// has the files; the fewest replicas; the name (a stable tie-break).
std::optional<size_t>
choose_worker(const std::vector<placement_candidate>& workers,
              const placement_request& req);

} // namespace shoal
