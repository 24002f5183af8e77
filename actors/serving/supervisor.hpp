// node supervisor: starts the node's executors and watches them. A child
// that dies abnormally is restarted after an exponential backoff; when more
// than max_restarts happen within period, the supervisor escalates (in
// shoald: the process exits non-zero so the orchestrator restarts it), as
// an OTP supervisor would.
//
// Handlers:
//   (spawn_atom, model, version, reason)
//                                  from the router: make sure a replica of
//                                  this model version exists or is coming;
//                                  reason (lazy, load) labels the metric.
//                                  Idempotent; nothing comes back directly:
//                                  the executor itself sends ready_atom to
//                                  the requester, or the supervisor sends
//                                  (spawn_fail_atom, model, version, reason).
//   (idle_atom, model, version)    from the router: retire that model
//                                  version's replica (scale to zero); it
//                                  exits normally and is not restarted.
//   (restart_atom, slot)           from itself, after a backoff delay.
//   (count_atom)                   from tests and status: returns
//                                  (live children, restarts so far).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>

#include <caf/actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/messages.hpp"

namespace shoal {

struct restart_policy {
  uint64_t max_restarts = 5;
  std::chrono::milliseconds period{10000};
  std::chrono::milliseconds backoff_initial{50};
  std::chrono::milliseconds backoff_max{5000};
};

// Decides the delay of the next restart, or that the limit is hit. Kept
// apart from the actor so that it is tested without timing.
class restart_tracker {
public:
  explicit restart_tracker(restart_policy p) : policy_(p) {}

  // Records a restart at `now`; nullopt means the intensity limit is
  // exceeded and the supervisor must escalate.
  std::optional<std::chrono::milliseconds> next(time_point now);

  uint64_t total() const noexcept { return total_; }

private:
  restart_policy policy_;
  std::deque<time_point> recent_;
  uint64_t total_ = 0;
};

// Starts one child for (model, version), linked to nothing; the supervisor
// monitors it. Returns an invalid actor when the model is unknown.
using child_factory =
    std::function<caf::actor(caf::local_actor* self, const std::string& model,
                             uint64_t version, caf::actor listener)>;

struct supervisor_state {
  struct slot {
    std::string model;
    uint64_t version = 0;
    caf::actor listener;
    caf::actor child; // invalid while a restart is pending
  };
  std::map<uint64_t, slot> slots;
  std::map<caf::actor_addr, uint64_t> by_child;
  uint64_t next_slot = 1;
  std::unique_ptr<restart_tracker> tracker;
  child_factory factory;
  std::function<void(const std::string&)> escalate;
  std::function<void(std::string_view)> on_spawn; // metrics, by reason
  bool escalated = false;
  static inline const char* name = "node_supervisor";
};

caf::behavior supervisor_actor(caf::stateful_actor<supervisor_state>* self,
                               restart_policy policy, child_factory factory,
                               std::function<void(const std::string&)> escalate,
                               std::function<void(std::string_view)> on_spawn);

} // namespace shoal
