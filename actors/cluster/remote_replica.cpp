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

// A burst shares a message only up to these: the link's frames have 1 MiB
// of room over the gateway's (node_cluster's link_config), so a message of
// several items stays far below it, and one item alone fits as before.
constexpr size_t max_batch_bytes = size_t{256} << 10;
constexpr size_t max_batch_items = 256;

// About what an item takes in an `exec` body.
size_t wire_bytes(const exec_item& item) {
  size_t n = 64;
  for (auto& t : item.inputs) {
    n += 64 + t.name.size() + 8 * t.shape.size() + t.data.size();
  }
  return n;
}

// The items collected so far, in one message.
void flush(self_ptr self) {
  auto& st = self->state;
  st.flush_scheduled = false;
  st.pending_bytes = 0;
  if (st.pending.empty()) {
    return;
  }
  exec_msg msg;
  msg.replica = st.replica;
  msg.items.swap(st.pending);
  send_worker(self, msg);
}

void on_exec(self_ptr self, exec_item& item) {
  auto& st = self->state;
  auto bytes = wire_bytes(item);
  if (!st.pending.empty() && (st.pending_bytes + bytes > max_batch_bytes ||
                              st.pending.size() >= max_batch_items)) {
    flush(self);
  }
  st.pending.push_back(std::move(item));
  st.pending_bytes += bytes;
  if (!st.flush_scheduled) {
    st.flush_scheduled = true;
    self->send(self, flush_atom::value);
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
      [=](exec_atom, exec_item& item) { on_exec(self, item); },
      [=](flush_atom) { flush(self); },
      [=](cancel_atom, uint64_t ticket) {
        // Its exec goes first, so that the worker knows what to cancel.
        flush(self);
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
