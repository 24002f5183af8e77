// worker_agent: a worker node's end of the cluster. It turns the head's
// messages (arriving from the link thread) into local supervisor and
// executor messages, and the executors' answers into link messages. The
// executors it starts have it as their listener, so they never know they
// serve a remote router.
//
// It is the listener (replica_listener_handle) of the executors it asks
// its supervisor for, and the link thread's link_events_handle.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include <caf/stateful_actor.hpp>
#include <caf/typed_actor.hpp>

#include "actors/cluster/link_box.hpp"
#include "actors/messages.hpp"
#include "actors/serving/executor.hpp"
#include "actors/serving/serving_metrics.hpp"
#include "actors/serving/supervisor.hpp"
#include "gpu/model/live_catalog.hpp"
#include "net/link/cluster_codec.hpp"

namespace shoal {

using worker_agent_handle = caf::typed_actor<
    // From the link thread: a message of the head (name, inc, op, body);
    // the ops it handles are spawn, exec, cancel, retire, drain. Nothing
    // comes back.
    caf::reacts_to<link_msg_atom, std::string, uint64_t, std::string,
                   std::string>,
    // From the link thread: the head's state (name, inc, peer_state,
    // reason, unused body); logged, and a new head gets our hello.
    caf::reacts_to<peer_atom, std::string, uint64_t, uint8_t, std::string,
                   std::string>,
    // From a local executor that loaded: numbered and announced to the head
    // (`ready`). Nothing comes back.
    caf::reacts_to<ready_atom, std::string, uint64_t, replica_handle,
                   std::string>,
    // From the supervisor: sent on to the head (`spawn_fail`).
    caf::reacts_to<spawn_fail_atom, std::string, uint64_t, std::string>,
    // From a local executor: one batch's results, sent on (`done`).
    caf::reacts_to<done_atom, std::vector<exec_result>>,
    // From a local executor: progress of its running batch, sent on
    // (`progress`). Nothing comes back.
    caf::reacts_to<progress_atom, std::vector<uint64_t>, uint64_t, uint64_t>,
    // From the node (SIGTERM): announce the drain (`drain`); nothing comes
    // back.
    caf::reacts_to<drain_atom>,
    // From the node while draining: returns what a drain waits for: the
    // replicas still running, or, while the head is down (nobody can
    // retire them), the requests still computing.
    caf::replies_to<count_atom>::with<uint64_t>,
    // From itself, every second when the node has GPUs: tells the head
    // (`devices`) when they changed. Nothing comes back.
    caf::reacts_to<tick_atom>,
    // From itself, when the re-read of the repository that a spawn of a
    // version this worker had not seen asked for is done: the spawn goes
    // on to the supervisor (which answers spawn_fail, sent on to the head,
    // if the version is still unknown). Nothing comes back.
    caf::reacts_to<spawn_atom, std::string, uint64_t, std::string>>;

struct worker_agent_state {
  struct local_replica {
    replica_handle executor;
    replica_desc desc;
  };

  std::shared_ptr<link_box> link;
  replica_source_handle supervisor;
  // This worker's view of the repository: a spawn of a version not in it
  // re-reads it first, so that a version the head has just read is found.
  live_catalog_ptr catalog;
  // shoal_executors of this node: a worker counts the executors it runs (the
  // head's router counts only its own node's).
  std::shared_ptr<serving_metrics> metrics;
  worker_hello hello; // kept current: a restarted head adopts from it
  std::map<uint64_t, local_replica> replicas;
  uint64_t next_id = 1;
  bool draining = false;
  bool head_up = false;
  uint64_t inflight = 0; // items handed to executors, not yet answered
  std::set<std::string> unknown_ops; // logged once each
  // hello.devices is also what the head was last told about our GPUs.
  // Tells the node to drain (the head asked for it): it then runs the same
  // shutdown as on SIGTERM.
  std::function<void()> on_drain;
  static inline const char* name = "worker_agent";
};

worker_agent_handle::behavior_type worker_agent_actor(
    worker_agent_handle::stateful_pointer<worker_agent_state> self,
    std::shared_ptr<link_box> link, replica_source_handle supervisor,
    worker_hello hello, std::function<void()> on_drain,
    live_catalog_ptr catalog, std::shared_ptr<serving_metrics> metrics);

} // namespace shoal
