#include "actors/placement.hpp"

#include <tuple>

namespace shoal {

std::optional<size_t>
choose_worker(const std::vector<placement_candidate>& workers,
              const placement_request& req) {
  bool want_on_demand = req.on_demand_replicas < req.min_replicas_on_demand;
  std::optional<size_t> best;
  std::tuple<int, int, size_t, std::string> best_key;
  for (size_t i = 0; i < workers.size(); ++i) {
    auto& w = workers[i];
    if (w.state != "up" || w.hosts_model)
      continue;
    if (w.memory_budget > 0 &&
        (w.memory_used > w.memory_budget ||
         req.memory_bytes > w.memory_budget - w.memory_used))
      continue;
    std::tuple<int, int, size_t, std::string> key{
        want_on_demand && !w.on_demand ? 1 : 0, w.has_files ? 0 : 1, w.replicas,
        w.name};
    if (!best || key < best_key) {
      best = i;
      best_key = std::move(key);
    }
  }
  return best;
}

} // namespace shoal
