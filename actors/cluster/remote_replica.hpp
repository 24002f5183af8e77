// remote_replica: the head's stand-in for an executor on a worker node. The
// router treats it like a local executor (same messages, monitored the same
// way); it forwards over the node link and quits with the reason the
// coordinator gives when the replica or its whole node is lost, so the
// router's DOWN handling re-dispatches what it was running.
//
// Handlers:
//   (exec_atom, exec_item)          from the router: sent to the worker as
//                                   an `exec` message; results come back
//                                   as done_atom from the coordinator.
//   (done_atom, vector<exec_result>) from the coordinator (decoded `done`
//                                   from the worker): forwarded to the
//                                   router, with this proxy as the sender.
// If the link refuses a send (the worker is down), the proxy quits with
// errc::unavailable at once rather than waiting for the failure detector.
#pragma once

#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/cluster/link_box.hpp"
#include "actors/messages.hpp"

namespace shoal {

struct remote_replica_state {
  std::shared_ptr<link_box> link;
  std::string worker;
  uint64_t replica = 0;
  caf::actor router;
  static inline const char* name = "remote_replica";
};

caf::behavior
remote_replica_actor(caf::stateful_actor<remote_replica_state>* self,
                     std::shared_ptr<link_box> link, std::string worker,
                     uint64_t replica, caf::actor router);

} // namespace shoal
