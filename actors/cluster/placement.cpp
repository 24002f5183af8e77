#include "actors/cluster/placement.hpp"

#include <algorithm>
#include <functional>
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
    if (w.state != "up" || w.hosts_model) {
      continue;
    }
    if (w.memory_budget > 0 &&
        (w.memory_used > w.memory_budget ||
         req.memory_bytes > w.memory_budget - w.memory_used)) {
      continue;
    }
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

uint64_t gpu_room(const placement_candidate& w) {
  if (w.gpu_free.empty()) {
    return 0;
  }
  auto room = w.gpu_free;
  auto claims = w.gpu_claims;
  std::sort(claims.begin(), claims.end(), std::greater<>{});
  for (auto c : claims) {
    auto most = std::max_element(room.begin(), room.end());
    *most -= std::min(*most, c);
  }
  return *std::max_element(room.begin(), room.end());
}

namespace {

// The best worker with a GPU that has room, by choose_worker's order with
// the most GPU room before the name.
std::optional<size_t>
choose_gpu_worker(const std::vector<placement_candidate>& workers,
                  const placement_request& req) {
  bool want_on_demand = req.on_demand_replicas < req.min_replicas_on_demand;
  std::optional<size_t> best;
  // The room is negated so that more sorts first.
  std::tuple<int, int, size_t, int64_t, std::string> best_key;
  for (size_t i = 0; i < workers.size(); ++i) {
    auto& w = workers[i];
    if (w.state != "up" || w.hosts_model || w.gpu_free.empty()) {
      continue;
    }
    auto room = gpu_room(w);
    if (room < req.memory_bytes) {
      continue;
    }
    std::tuple<int, int, size_t, int64_t, std::string> key{
        want_on_demand && !w.on_demand ? 1 : 0, w.has_files ? 0 : 1, w.replicas,
        -static_cast<int64_t>(std::min<uint64_t>(room, INT64_MAX)), w.name};
    if (!best || key < best_key) {
      best = i;
      best_key = std::move(key);
    }
  }
  return best;
}

} // namespace

placement_choice
choose_placement(const std::vector<placement_candidate>& workers,
                 const placement_request& req) {
  placement_choice out;
  if (req.device == "gpu" || req.device == "any") {
    if (auto i = choose_gpu_worker(workers, req)) {
      out.worker = i;
      out.on_gpu = true;
      return out;
    }
    if (req.device == "gpu") {
      out.no_gpu_room = std::any_of(
          workers.begin(), workers.end(),
          [](const placement_candidate& w) { return w.state == "up"; });
      return out;
    }
  }
  out.worker = choose_worker(workers, req);
  return out;
}

} // namespace shoal
