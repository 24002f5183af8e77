// node supervisor: starts the node's executors and watches them. A child
// that dies abnormally is restarted after an exponential backoff; when more
// than max_restarts happen within period, the supervisor escalates (in
// shoald: the process exits non-zero so the orchestrator restarts it), as
// an OTP supervisor would.
//
// It is the router's replica source on a node that runs its own executors
// (the coordinator is on a head), and the worker agent's on a worker. The
// sender of spawn_atom becomes the listener of that model version's
// replica: the executor sends it ready_atom, the supervisor spawn_fail_atom.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>

#include <caf/actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_actor.hpp>

#include "actors/messages.hpp"
#include "actors/serving/executor.hpp"

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

// What the router asks of whoever provides its replicas: this supervisor
// on a node that runs its own executors, the coordinator on a head. None of
// them answers directly: a replica announces itself with ready_atom to the
// requester, or spawn_fail_atom tells it that none will come.
using replica_source_handle = caf::typed_actor<
    // From the router (or a worker's agent): make sure a replica of (model,
    // version) exists or is coming; `reason` (lazy, load, scale, drain,
    // respawn) labels the metric. Idempotent. Later, ready_atom or
    // spawn_fail_atom to the sender.
    caf::reacts_to<spawn_atom, std::string, uint64_t, std::string>,
    // From the router (or a worker's agent, when its head retires them):
    // retire every replica of (model, version) (scale to zero); they exit
    // normally and are not restarted. Nothing comes back.
    caf::reacts_to<idle_atom, std::string, uint64_t>,
    // From the router: a draining replica finished its work and another
    // one serves its model; stop it. Nothing comes back.
    caf::reacts_to<retire_atom, replica_handle>>;

// The node supervisor: a replica source (spawn_atom, idle_atom, retire_atom
// above; the child of a spawn sends ready_atom to its sender, a load
// failure or the restart limit sends it spawn_fail_atom), plus:
using supervisor_handle = replica_source_handle::extend<
    // From itself, after a backoff delay: start slot `id`'s child again.
    caf::reacts_to<restart_atom, uint64_t>,
    // From tests: returns (live children, restarts so far).
    caf::replies_to<count_atom>::with<uint64_t, uint64_t>>;

// Starts one child for (model, version), linked to nothing; the supervisor
// monitors it. Returns an invalid actor when the model is unknown. The
// supervisor only links, monitors and stops its children, so they are
// plain handles to it.
using child_factory = std::function<caf::actor(
    caf::local_actor* self, const std::string& model, uint64_t version,
    replica_listener_handle listener)>;

struct supervisor_state {
  struct slot {
    std::string model;
    uint64_t version = 0;
    replica_listener_handle listener;
    caf::actor child; // invalid while a restart is pending
  };
  std::map<uint64_t, slot> slots;
  std::map<caf::actor_addr, uint64_t> by_child;
  uint64_t next_slot = 1;
  std::unique_ptr<restart_tracker> tracker;
  child_factory factory;
  std::function<void(const std::string&)> escalate;
  std::function<void(std::string_view)> on_spawn; // metrics, by reason
  restart_policy policy;
  bool escalated = false;
  static inline const char* name = "node_supervisor";
};

supervisor_handle::behavior_type
supervisor_actor(supervisor_handle::stateful_pointer<supervisor_state> self,
                 restart_policy policy, child_factory factory,
                 std::function<void(const std::string&)> escalate,
                 std::function<void(std::string_view)> on_spawn);

} // namespace shoal
