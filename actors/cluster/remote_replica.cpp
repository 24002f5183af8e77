#include "actors/cluster/remote_replica.hpp"

#include <caf/all.hpp>

#include "actors/serving/cancel_board.hpp"
#include "net/link/cluster_codec.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace {

using self_ptr = remote_replica_handle::stateful_pointer<remote_replica_state>;

// Sends one message to the worker; a refused send means the worker is
// gone, and the proxy quits so that the router re-dispatches at once.
template <class Body>
void send_worker(self_ptr self, const Body& body) {
  auto& st = self->state;
  if (auto err = st.link->send(st.worker, body)) {
    self->quit(
        make_error(errc::unavailable,
                   "worker " + st.worker + " unreachable: " + reason_of(err)));
  }
}

} // namespace

remote_replica_handle::behavior_type remote_replica_actor(
    remote_replica_handle::stateful_pointer<remote_replica_state> self,
    std::shared_ptr<link_box> link, std::string worker, uint64_t replica,
    router_handle router) {
  auto& st = self->state;
  st.link = std::move(link);
  st.worker = std::move(worker);
  st.replica = replica;
  st.router = std::move(router);
  return {
      [=](exec_atom, exec_item& item) {
        exec_msg msg;
        msg.replica = self->state.replica;
        msg.items.push_back(std::move(item));
        send_worker(self, msg);
      },
      [=](cancel_atom, uint64_t ticket) {
        // The router posted it on this process's board for a local
        // replica; the worker's agent posts it on the worker's.
        cancel_board::instance().forget(ticket);
        send_worker(self, cancel_msg{self->state.replica, ticket});
      },
      [=](done_atom, std::vector<exec_result>& results) {
        self->send(self->state.router, done_atom::value, std::move(results));
      },
      [=](progress_atom, std::vector<uint64_t>& tickets, uint64_t done,
          uint64_t total) {
        self->send(self->state.router, progress_atom::value, std::move(tickets),
                   done, total);
      },
  };
}

} // namespace shoal
