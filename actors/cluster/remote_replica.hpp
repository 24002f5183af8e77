// remote_replica: the head's stand-in for an executor on a worker node. The
// router treats it like a local executor (same messages, monitored the same
// way); it forwards over the node link and quits with the reason the
// coordinator gives when the replica or its whole node is lost, so the
// router's DOWN handling re-dispatches what it was running.
//
// If the link refuses a send (the worker is down), the proxy quits with
// errc::unavailable at once rather than waiting for the failure detector.
//
// Requests the router hands over in one go travel in one `exec` message:
// each item waits only until the proxy has read the items already in its
// mailbox (a flush it sends itself goes behind them), so under load the
// link, the worker's agent and its executor see one message per burst
// instead of one per request, and a single request pays one more message
// to itself.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <caf/stateful_actor.hpp>
#include <caf/typed_actor.hpp>

#include "actors/cluster/link_box.hpp"
#include "actors/messages.hpp"
#include "actors/serving/router.hpp"

namespace shoal {

// A replica_handle (actors/serving/executor.hpp) with one more input, the
// results the coordinator decodes for it.
using remote_replica_handle = caf::typed_actor<
    // From the router: one request, sent to the worker in an `exec`
    // message. Its result reaches the router as this proxy's: sent so by
    // the head's link thread (result_routes), or as done_atom through the
    // coordinator for a replica the routes do not know.
    caf::reacts_to<exec_atom, exec_item>,
    // From itself, behind the exec_atoms already queued: the items
    // collected so far go to the worker in one `exec`.
    caf::reacts_to<flush_atom>,
    // From the router: a cancelled ticket, sent to the worker in a
    // `cancel` message; its executor stops between steps. The result still
    // comes (done_atom), and the router drops it. Nothing comes back.
    caf::reacts_to<cancel_atom, uint64_t>,
    // From the coordinator (a decoded `done` from the worker, when the
    // link thread left it to the coordinator): forwarded to the router,
    // with this proxy as the sender. Nothing comes back.
    caf::reacts_to<done_atom, std::vector<exec_result>>,
    // From the coordinator (a decoded `progress` from the worker): the
    // tickets, done and total, forwarded to the router as a local
    // executor's progress. Nothing comes back.
    caf::reacts_to<progress_atom, std::vector<uint64_t>, uint64_t, uint64_t>>;

struct remote_replica_state {
  std::shared_ptr<link_box> link;
  std::string worker;
  uint64_t replica = 0;
  router_handle router;
  // Items not yet sent, and whether a flush is on its way.
  std::vector<exec_item> pending;
  size_t pending_bytes = 0;
  bool flush_scheduled = false;
  static inline const char* name = "remote_replica";
};

remote_replica_handle::behavior_type remote_replica_actor(
    remote_replica_handle::stateful_pointer<remote_replica_state> self,
    std::shared_ptr<link_box> link, std::string worker, uint64_t replica,
    router_handle router);

} // namespace shoal
