#include "actors/cluster/worker_agent.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/serving/cancel_board.hpp"
#include "gpu/device/node_devices.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace {

using self_ptr = worker_agent_handle::stateful_pointer<worker_agent_state>;

// Sends one cluster message to the head. A refused send needs no handling:
// the head's failure detector and our hello recover whatever was lost.
template <class Body>
void send_head(self_ptr self, const Body& body) {
  if (auto err = self->state.link->send("", body)) {
    spdlog::debug("worker: {} not sent: {}", to_string(op_of(body)),
                  reason_of(err));
  }
}

// The hello a (re)started head will see: what runs here now.
void refresh_hello(self_ptr self) {
  auto& st = self->state;
  st.hello.draining = st.draining;
  st.hello.replicas.clear();
  for (auto& [id, r] : st.replicas) {
    st.hello.replicas.push_back(r.desc);
  }
  st.link->set_hello(st.hello);
}

// How often the GPUs are looked at, and how far a device's used memory may
// drift before the head hears of it: placement needs room to the nearest
// few replicas, not to the byte, and a message a second per allocator
// hiccup would be noise.
constexpr auto devices_period = std::chrono::seconds{1};
constexpr uint64_t devices_slack = uint64_t{32} << 20;

// Tells the head about our GPUs when they changed since it last heard
// (and keeps the hello current for a head that restarts).
void report_devices(self_ptr self) {
  auto& st = self->state;
  auto now = local_devices();
  if (!devices_changed(st.hello.devices, now, devices_slack)) {
    return;
  }
  st.hello.devices = std::move(now);
  refresh_hello(self);
  if (!st.head_up) {
    return; // the next hello carries them
  }
  send_head(self, devices_msg{st.hello.devices});
}

worker_agent_state::local_replica* by_executor(self_ptr self,
                                               const caf::actor_addr& a) {
  for (auto& [id, r] : self->state.replicas) {
    if (r.executor.address() == a) {
      return &r;
    }
  }
  return nullptr;
}

void count_executor(self_ptr self, const std::string& model, int64_t delta) {
  if (self->state.metrics) {
    self->state.metrics->executors(model, delta);
  }
}

void retire(self_ptr self, const retire_msg& m) {
  auto& st = self->state;
  for (auto it = st.replicas.begin(); it != st.replicas.end();) {
    auto& d = it->second.desc;
    bool match = m.replica != 0 ? it->first == m.replica
                                : d.model == m.model && d.version == m.version;
    if (!match) {
      ++it;
      continue;
    }
    spdlog::info("worker: retiring replica {} of {} v{}", it->first, d.model,
                 d.version);
    self->demonitor(it->second.executor.address());
    // The supervisor stops it without a restart (the same path as an idle
    // retirement on a standalone node).
    self->send(st.supervisor, idle_atom::value, d.model, d.version);
    count_executor(self, d.model, -1);
    it = st.replicas.erase(it);
  }
  refresh_hello(self);
}

// Decodes a message body from the head; a bad one is logged and dropped.
template <class Body>
bool decode_from_head(const std::string& body, Body& out) {
  if (auto err = decode(body, out)) {
    spdlog::warn("worker: {} from the head dropped: {}", to_string(op_of(out)),
                 reason_of(err));
    return false;
  }
  return true;
}

// The executors here run under the head's tickets (items go on with the
// ticket they came with), so done, progress and cancel name the same
// tickets on both nodes and need no mapping.
void on_exec(self_ptr self, const std::string& body) {
  auto& st = self->state;
  exec_msg m;
  if (!decode_from_head(body, m)) {
    return;
  }
  auto r = st.replicas.find(m.replica);
  if (r == st.replicas.end()) {
    // The head thinks it is alive; its proxy must quit so that the router
    // re-dispatches.
    return send_head(
        self, replica_down_msg{m.replica, "no such replica on this worker"});
  }
  st.inflight += m.items.size();
  for (auto& item : m.items) {
    self->send(r->second.executor, exec_atom::value, std::move(item));
  }
}

// The head cancelled a ticket it sent to one of our replicas: posted on
// this process's board, which the executor reads between steps while it
// runs (it reads no messages then), and sent to it as the router sends a
// local replica, so a ticket still queued does not run at all. Its result
// still goes back in `done`; the head's router drops it.
void on_cancel(self_ptr self, const std::string& body) {
  auto& st = self->state;
  cancel_msg m;
  if (!decode_from_head(body, m)) {
    return;
  }
  auto r = st.replicas.find(m.replica);
  if (r == st.replicas.end()) {
    // Gone already: the head's proxy of it quits on replica_down.
    return;
  }
  cancel_board::instance().cancel(m.ticket);
  self->send(r->second.executor, cancel_atom::value, m.ticket);
}

void on_spawn(self_ptr self, const std::string& body) {
  auto& st = self->state;
  spawn_msg m;
  if (!decode_from_head(body, m)) {
    return;
  }
  // Already running (the head lost track of it): announced again.
  for (auto& [id, r] : st.replicas) {
    if (r.desc.model == m.model && r.desc.version == m.version) {
      return send_head(self, r.desc);
    }
  }
  if (st.catalog && !st.catalog->get()->resolve(m.model, m.version)) {
    spdlog::info("worker: {} v{} is not in this worker's catalog yet; "
                 "re-reading the model repository",
                 m.model, m.version);
    auto agent = caf::actor_cast<worker_agent_handle>(self);
    st.catalog->reread([agent, m](const caf::expected<catalog_update>&) {
      caf::anon_send(agent, spawn_atom::value, m.model, m.version, m.reason);
    });
    return;
  }
  self->send(st.supervisor, spawn_atom::value, m.model, m.version, m.reason);
}

void on_drain_request(self_ptr self) {
  auto& st = self->state;
  if (st.draining) {
    return;
  }
  spdlog::info("worker: drain requested by the head");
  st.draining = true;
  refresh_hello(self);
  if (st.on_drain) {
    st.on_drain();
  }
}

void on_link_msg(self_ptr self, const std::string& type,
                 const std::string& body) {
  auto op = parse_cluster_op(type);
  if (!op) {
    log_unknown_op(self->state.unknown_ops, "worker", "head", type);
    return;
  }
  switch (*op) {
  case cluster_op::exec:
    return on_exec(self, body);
  case cluster_op::spawn:
    return on_spawn(self, body);
  case cluster_op::retire: {
    retire_msg m;
    if (decode_from_head(body, m)) {
      retire(self, m);
    }
    return;
  }
  case cluster_op::cancel:
    return on_cancel(self, body);
  case cluster_op::drain:
    return on_drain_request(self);
  case cluster_op::ready:
  case cluster_op::spawn_fail:
  case cluster_op::replica_down:
  case cluster_op::done:
  case cluster_op::progress:
  case cluster_op::leave:
  case cluster_op::devices:
    // A worker's own ops: a head that sends one is confused.
    spdlog::warn("worker: {} is a worker-to-head op; dropped", to_string(*op));
    return;
  }
}

// A local executor died: the head's proxy of it must quit, so that its
// router re-dispatches.
void on_executor_down(self_ptr self, caf::down_msg& dm) {
  auto& st = self->state;
  for (auto it = st.replicas.begin(); it != st.replicas.end(); ++it) {
    if (it->second.executor.address() != dm.source) {
      continue;
    }
    send_head(self, replica_down_msg{it->first, reason_of(dm.reason)});
    count_executor(self, it->second.desc.model, -1);
    st.replicas.erase(it);
    refresh_hello(self);
    return;
  }
}

void on_head_state(self_ptr self, const std::string& name, uint8_t state,
                   const std::string& reason) {
  auto ps = static_cast<peer_state>(state);
  self->state.head_up = ps != peer_state::down;
  if (ps == peer_state::down) {
    spdlog::warn("worker: head {} down: {}", name, reason);
  } else if (ps == peer_state::up) {
    spdlog::info("worker: joined head {}", name);
  }
}

// A local executor finished loading: numbered and announced to the head.
void on_ready(self_ptr self, const std::string& model, uint64_t version,
              replica_handle handle, const std::string& device) {
  auto& st = self->state;
  auto id = st.next_id++;
  self->monitor(handle);
  replica_desc d{id, model, version, device, 0};
  st.replicas[id] = {std::move(handle), d};
  count_executor(self, model, 1);
  spdlog::info("worker: replica {} of {} v{} ready on {}", id, model, version,
               device);
  send_head(self, d);
  refresh_hello(self);
  // Right behind `ready`, so the head's estimate of the new replica is
  // replaced by what it really holds.
  if (!st.hello.devices.empty()) {
    report_devices(self);
  }
}

void on_done(self_ptr self, std::vector<exec_result>& results) {
  auto& st = self->state;
  st.inflight -= std::min<uint64_t>(st.inflight, results.size());
  auto* r = by_executor(
      self, caf::actor_cast<caf::actor_addr>(self->current_sender()));
  if (r) {
    send_head(self, done_msg{r->desc.id, std::move(results)});
  }
}

// A local executor's progress, sent on under the replica's id. The executor
// already sends at most one per batch per 50 ms (and none for the last
// step, which its `done` stands for), so the link sees no more than that.
void on_progress(self_ptr self, std::vector<uint64_t>& tickets, uint64_t done,
                 uint64_t total) {
  auto& st = self->state;
  if (!st.head_up) {
    return; // advisory: nothing is kept for a head that is away
  }
  auto* r = by_executor(
      self, caf::actor_cast<caf::actor_addr>(self->current_sender()));
  if (r) {
    send_head(self, progress_msg{r->desc.id, std::move(tickets), done, total});
  }
}

} // namespace

worker_agent_handle::behavior_type
worker_agent_actor(self_ptr self, std::shared_ptr<link_box> link,
                   replica_source_handle supervisor, worker_hello hello,
                   std::function<void()> on_drain, live_catalog_ptr catalog,
                   std::shared_ptr<serving_metrics> metrics) {
  auto& st = self->state;
  st.catalog = std::move(catalog);
  st.metrics = std::move(metrics);
  st.on_drain = std::move(on_drain);
  st.link = std::move(link);
  st.supervisor = std::move(supervisor);
  st.hello = std::move(hello);
  self->set_down_handler(
      [=](caf::down_msg& dm) { on_executor_down(self, dm); });
  refresh_hello(self);
  // The node's GPUs are in the hello from the start and never appear
  // later: without one there is nothing to watch.
  if (!st.hello.devices.empty()) {
    self->delayed_send(self, devices_period, tick_atom::value);
  }
  return {
      [=](link_msg_atom, const std::string&, uint64_t, const std::string& type,
          const std::string& body) { on_link_msg(self, type, body); },
      [=](peer_atom, const std::string& name, uint64_t, uint8_t state,
          const std::string& reason,
          const std::string&) { on_head_state(self, name, state, reason); },
      [=](ready_atom, const std::string& model, uint64_t version,
          replica_handle& handle, const std::string& device) {
        on_ready(self, model, version, std::move(handle), device);
      },
      [=](spawn_fail_atom, const std::string& model, uint64_t version,
          const std::string& reason) {
        send_head(self, spawn_fail_msg{model, version, reason});
      },
      [=](done_atom, std::vector<exec_result>& results) {
        on_done(self, results);
      },
      [=](progress_atom, std::vector<uint64_t>& tickets, uint64_t done,
          uint64_t total) { on_progress(self, tickets, done, total); },
      [=](drain_atom) {
        auto& st = self->state;
        st.draining = true;
        refresh_hello(self);
        send_head(self, drain_msg{});
      },
      [=](count_atom) {
        auto& st = self->state;
        return st.head_up ? static_cast<uint64_t>(st.replicas.size())
                          : st.inflight;
      },
      [=](tick_atom) {
        report_devices(self);
        self->delayed_send(self, devices_period, tick_atom::value);
      },
      [=](spawn_atom, const std::string& model, uint64_t version,
          const std::string& reason) {
        self->send(self->state.supervisor, spawn_atom::value, model, version,
                   reason);
      },
  };
}

} // namespace shoal
