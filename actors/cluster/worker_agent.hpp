// worker_agent: a worker node's end of the cluster. It turns the head's
// messages (arriving from the link thread) into local supervisor and
// executor messages, and the executors' answers into link messages. The
// executors it starts have it as their listener, so they never know they
// serve a remote router.
//
// Handlers:
//   (link_msg_atom, name, inc, type, body)
//                                  from the link thread: spawn, exec,
//                                  retire, drain from the head.
//   (peer_atom, name, inc, state, reason, hello)
//                                  from the link thread: the head's state
//                                  (logged; a new head gets our hello).
//   (ready_atom, model, version, actor, device)
//                                  from a local executor that loaded:
//                                  numbered and announced (`ready`).
//   (spawn_fail_atom, model, version, reason)
//                                  from the supervisor: sent on.
//   (done_atom, vector<exec_result>) from a local executor: sent on.
//   (drain_atom)                   from the node (SIGTERM): announce the
//                                  drain; returns nothing.
//   (count_atom)                   from the node: what a drain waits for:
//                                  the replicas still running, or, while
//                                  the head is down (nobody can retire
//                                  them), the requests still computing.
//   (tick_atom)                    from itself, every second in a build
//                                  with CUDA: tells the head (`devices`)
//                                  when its GPUs changed; nothing back.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include <caf/actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/cluster/link_box.hpp"
#include "actors/messages.hpp"
#include "net/link/cluster_codec.hpp"

namespace shoal {

struct worker_agent_state {
  struct local_replica {
    caf::actor executor;
    replica_desc desc;
  };

  std::shared_ptr<link_box> link;
  caf::actor supervisor;
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

caf::behavior worker_agent_actor(caf::stateful_actor<worker_agent_state>* self,
                                 std::shared_ptr<link_box> link,
                                 caf::actor supervisor, worker_hello hello,
                                 std::function<void()> on_drain);

} // namespace shoal
