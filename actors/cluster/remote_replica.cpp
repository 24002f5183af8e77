#include "actors/cluster/remote_replica.hpp"

#include <caf/all.hpp>

#include "actors/serving/cancel_board.hpp"
#include "net/link/cluster_codec.hpp"
#include "net/wire/error.hpp"

namespace shoal {

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
        auto& st = self->state;
        exec_msg msg;
        msg.replica = st.replica;
        msg.items.push_back(std::move(item));
        if (auto err = st.link->send(st.worker, msg)) {
          self->quit(make_error(errc::unavailable,
                                "worker " + st.worker +
                                    " unreachable: " + reason_of(err)));
        }
      },
      [=](cancel_atom, uint64_t ticket) {
        // Posted by the router for a local replica; this one is remote.
        cancel_board::instance().forget(ticket);
      },
      [=](done_atom, std::vector<exec_result>& results) {
        self->send(self->state.router, done_atom::value, std::move(results));
      },
  };
}

} // namespace shoal
