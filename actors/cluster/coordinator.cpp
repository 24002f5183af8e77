#include "actors/cluster/coordinator.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/cluster/placement.hpp"
#include "actors/cluster/remote_replica.hpp"
#include "gpu/device/node_devices.hpp"
#include "net/link/cluster_codec.hpp"
#include "net/wire/codec.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace {

using self_ptr = coordinator_handle::stateful_pointer<coordinator_state>;
using worker = coordinator_state::worker;

std::string label_of(const worker& w, const std::string& key) {
  for (auto& [k, v] : w.labels) {
    if (k == key) {
      return v;
    }
  }
  return {};
}

// The node counts by state, and the view's entry of the worker whose state
// changed (`name`; empty: none). Only that worker is looked at: with a
// thousand workers, recounting and copying them all on each worker's event
// made joins and state changes quadratic.
void publish(self_ptr self, const std::string& name = {}) {
  auto& st = self->state;
  if (auto i = st.workers.find(name); i != st.workers.end()) {
    auto& w = i->second;
    if (w.counted_state != w.state) {
      if (!w.counted_state.empty()) {
        --st.worker_counts[w.counted_state];
      }
      ++st.worker_counts[w.state];
      w.counted_state = w.state;
    }
    st.view->set(name, {w.state, w.metrics_target, w.labels});
  }
  auto& c = st.worker_counts;
  st.metrics->cluster_nodes("up", c["up"] + (st.draining ? 0 : 1));
  st.metrics->cluster_nodes("suspect", c["suspect"]);
  st.metrics->cluster_nodes("draining", c["draining"] + (st.draining ? 1 : 0));
  st.metrics->cluster_nodes("down", c["down"]);
}

bool hosts(const worker& w, const coordinator_state::model_key& key) {
  if (w.spawning.count(key)) {
    return true;
  }
  for (auto& [id, r] : w.replicas) {
    if (r.model == key.first && r.version == key.second && !r.retiring) {
      return true;
    }
  }
  return false;
}

bool on_gpu(const std::string& device) {
  return device.rfind("gpu", 0) == 0;
}

// What the CPU replicas placed there take of node.memory_bytes; a GPU
// replica's estimate is device memory and counts against its GPU instead.
uint64_t memory_used(const worker& w) {
  uint64_t used = 0;
  for (auto& [id, r] : w.replicas) {
    if (!on_gpu(r.device)) {
      used += r.memory_bytes;
    }
  }
  return used;
}

// Each GPU's free memory as last reported, less what replicas that became
// ready there since then hold (the report could not see them).
std::vector<uint64_t> gpu_free(const worker& w) {
  std::vector<uint64_t> out;
  for (auto& d : w.devices) {
    uint64_t free =
        d.total_bytes > d.used_bytes ? d.total_bytes - d.used_bytes : 0;
    for (auto& [dev, bytes] : w.gpu_unreported) {
      if (dev == d.name) {
        free -= std::min(free, bytes);
      }
    }
    out.push_back(free);
  }
  return out;
}

struct choice {
  std::string worker; // "": none
  bool on_gpu = false;
  bool no_gpu_room = false;
};

// Where to place a replica of `spec` (actors/placement.hpp).
choice choose(self_ptr self, const model_spec& spec) {
  auto& st = self->state;
  coordinator_state::model_key key{spec.name, spec.version};
  std::vector<placement_candidate> cands;
  placement_request req;
  req.memory_bytes = spec.memory_bytes;
  req.min_replicas_on_demand = spec.min_replicas_on_demand;
  req.device = spec.device;
  for (auto& [name, w] : st.workers) {
    placement_candidate c;
    c.name = name;
    c.state = w.state;
    c.on_demand = label_of(w, "capacity") == "on-demand";
    c.memory_budget = w.memory_budget;
    c.memory_used = memory_used(w);
    c.hosts_model = hosts(w, key);
    c.has_files = w.cached.count(key) > 0;
    c.replicas = w.replicas.size() + w.spawning.size();
    c.gpu_free = gpu_free(w);
    for (auto& [k, bytes] : w.gpu_spawning) {
      c.gpu_claims.push_back(bytes);
    }
    if (w.state != "down" && c.on_demand && c.hosts_model) {
      ++req.on_demand_replicas;
    }
    cands.push_back(std::move(c));
  }
  auto p = choose_placement(cands, req);
  choice out;
  out.on_gpu = p.on_gpu;
  out.no_gpu_room = p.no_gpu_room;
  if (p.worker) {
    out.worker = cands[*p.worker].name;
  }
  return out;
}

// Sends the spawn to a worker, or leaves it waiting for one.
void place(self_ptr self, const std::string& model, uint64_t version,
           const std::string& reason) {
  auto& st = self->state;
  auto spec = st.catalog->get()->resolve(model, version);
  if (!spec) {
    self->send(st.router, spawn_fail_atom::value, model, version,
               std::string{"model not in the head's repository"});
    return;
  }
  auto [target, for_gpu, no_gpu_room] = choose(self, *spec);
  // A drain's replacement waits like any other: the draining replica
  // serves meanwhile, and a GPU worker may join before the grace ends.
  if (no_gpu_room && reason != "drain") {
    // Waiting would hold the requests until their deadlines for a GPU
    // that may never free up; the router answers UNAVAILABLE now and
    // fails fast for a second, after which a request tries again.
    auto why = "no worker has a GPU with room for " + model + " v" +
               std::to_string(version) + " (needs " +
               std::to_string(spec->memory_bytes) + " bytes)";
    // A scale-out that cannot happen is no client's error.
    spdlog::log(reason == "scale" ? spdlog::level::info : spdlog::level::warn,
                "coordinator: {}", why);
    st.waiting.erase({model, version});
    self->send(st.router, spawn_fail_atom::value, model, version, why);
    return;
  }
  if (target.empty()) {
    spdlog::info("coordinator: no worker with room for {} v{} yet, waiting",
                 model, version);
    st.waiting[{model, version}] = reason;
    return;
  }
  if (auto err = st.link->send(target, spawn_msg{model, version, reason})) {
    st.waiting[{model, version}] = reason;
    return;
  }
  st.waiting.erase({model, version});
  auto& w = st.workers[target];
  w.spawning.insert({model, version});
  if (for_gpu) {
    w.gpu_spawning[{model, version}] = spec->memory_bytes;
  }
  spdlog::info("coordinator: placing {} v{} on {}{} ({})", model, version,
               target, for_gpu ? " for a GPU" : "", reason);
}

void retry_waiting(self_ptr self) {
  auto waiting = self->state.waiting;
  for (auto& [key, reason] : waiting) {
    place(self, key.first, key.second, reason);
  }
}

// Results of a replica whose proxy quits come through this actor again,
// which no longer knows it.
void drop_route(self_ptr self, const std::string& name, uint64_t replica) {
  if (auto& routes = self->state.cfg.routes) {
    routes->remove(name, replica);
  }
}

// Quits every proxy of a worker (the router re-dispatches their work) and
// re-places the spawns it had not answered.
void lose_replicas(self_ptr self, worker& w, const std::string& name,
                   const std::string& why) {
  if (auto& routes = self->state.cfg.routes) {
    routes->remove_worker(name);
  }
  for (auto& [id, r] : w.replicas) {
    if (r.proxy) {
      self->send_exit(
          r.proxy, make_error(errc::unavailable, "node " + name + " " + why));
    }
  }
  w.replicas.clear();
  w.gpu_spawning.clear();
  w.gpu_unreported.clear();
  auto spawning = std::move(w.spawning);
  w.spawning.clear();
  for (auto& key : spawning) {
    place(self, key.first, key.second, "respawn");
  }
}

void adopt(self_ptr self, const std::string& name, worker& w,
           const replica_desc& d) {
  auto& st = self->state;
  if (w.replicas.count(d.id)) {
    return;
  }
  w.spawning.erase({d.model, d.version});
  w.gpu_spawning.erase({d.model, d.version});
  // A spawn that waited for a worker is satisfied by an adopted replica too.
  st.waiting.erase({d.model, d.version});
  auto spec = st.catalog->get()->resolve(d.model, d.version);
  if (!spec) {
    st.link->send(name, retire_msg{d.id, d.model, d.version});
    return;
  }
  auto proxy =
      self->spawn(remote_replica_actor, st.link, name, d.id, st.router);
  // Workers report no size of their own yet: the manifest's estimate is
  // what the budgets are kept in.
  auto bytes = d.memory_bytes > 0 ? d.memory_bytes : spec->memory_bytes;
  w.replicas[d.id] = {d.model, d.version, proxy, bytes, false, d.device};
  if (st.cfg.routes) {
    st.cfg.routes->add(name, w.incarnation, d.id, proxy, st.router);
  }
  if (on_gpu(d.device)) {
    w.gpu_unreported.emplace_back(d.device, bytes);
  }
  self->send(st.router, ready_atom::value, d.model, d.version,
             replica_handle{proxy}, d.device, name);
  spdlog::info("coordinator: replica {} of {} v{} ready on {} ({})", d.id,
               d.model, d.version, name, d.device);
  if (w.state == "draining") {
    self->send(st.router, retire_atom::value, replica_handle{proxy});
  }
}

void start_drain(self_ptr self, const std::string& name, worker& w) {
  auto& st = self->state;
  if (w.state == "down" || w.state == "draining") {
    return;
  }
  spdlog::info("coordinator: draining {}: replacing its replicas elsewhere",
               name);
  w.state = "draining";
  for (auto& [id, r] : w.replicas) {
    if (r.retiring) {
      continue;
    }
    r.retiring = true;
    // The replacement starts first; the router keeps using this replica
    // until another one of the model is ready, then retires it.
    place(self, r.model, r.version, "drain");
    self->send(st.router, retire_atom::value, replica_handle{r.proxy});
  }
  publish(self, name);
}

// A worker's session is up (a join, a re-join, or back from suspect): its
// hello says what it offers and runs, and its replicas are adopted.
void on_worker_up(self_ptr self, const std::string& name, worker& w,
                  uint64_t inc, const std::string& hello_body) {
  worker_hello h;
  if (auto err = decode(hello_body, h)) {
    spdlog::warn("coordinator: {}: bad hello dropped: {}", name,
                 reason_of(err));
    return;
  }
  if (w.incarnation != inc && !w.replicas.empty()) {
    lose_replicas(self, w, name, "restarted");
  }
  bool was_up = w.state == "up" || w.state == "suspect";
  bool fresh = w.incarnation != inc || w.state == "down";
  w.incarnation = inc;
  w.labels = h.labels;
  w.memory_budget = h.memory_bytes;
  w.metrics_target = h.metrics_target;
  w.cached.clear();
  w.cached.insert(h.cached.begin(), h.cached.end());
  w.state = h.draining ? "draining" : "up";
  w.down_since_ns = 0;
  for (auto& d : h.replicas) {
    adopt(self, name, w, d);
  }
  // A new session's hello is a fresh report that already counts the
  // replicas it lists. A live session's `up` (back from suspect) comes
  // with the hello of its join, older than its `devices` reports.
  if (fresh) {
    w.devices = std::move(h.devices);
    w.gpu_unreported.clear();
  }
  if (!was_up) {
    spdlog::info("coordinator: worker {} up ({} replica(s))", name,
                 h.replicas.size());
  }
  publish(self, name);
  retry_waiting(self);
}

void on_peer(self_ptr self, const std::string& name, uint64_t inc,
             uint8_t state, const std::string& reason,
             const std::string& hello_body) {
  auto ps = static_cast<peer_state>(state);
  auto& workers = self->state.workers;
  if (ps == peer_state::up) {
    return on_worker_up(self, name, workers[name], inc, hello_body);
  }
  auto wi = workers.find(name);
  if (wi == workers.end()) {
    return; // it left (forgotten) before its connection closed
  }
  auto& w = wi->second;
  if (w.incarnation != inc && w.incarnation != 0) {
    return; // about an incarnation already replaced
  }
  if (ps == peer_state::suspect) {
    if (w.state == "up") {
      w.state = "suspect";
    }
    publish(self, name);
    return;
  }
  spdlog::warn("coordinator: worker {} down: {}", name, reason);
  w.state = "down";
  w.down_since_ns = now_ns();
  lose_replicas(self, w, name, "down: " + reason);
  publish(self, name);
}

// Decodes a worker's message body; a bad one is logged and dropped.
template <class Body>
bool decode_from(const std::string& name, const std::string& body, Body& out) {
  if (auto err = decode(body, out)) {
    spdlog::warn("coordinator: {}: {} dropped: {}", name, to_string(op_of(out)),
                 reason_of(err));
    return false;
  }
  return true;
}

// A batch's results: to the proxy of the replica that ran them, which hands
// them to the router as itself.
void on_done(self_ptr self, worker& w, const std::string& name,
             const std::string& body) {
  done_msg m;
  if (!decode_from(name, body, m)) {
    return;
  }
  auto r = w.replicas.find(m.replica);
  if (r != w.replicas.end() && r->second.proxy) {
    self->send(r->second.proxy, done_atom::value, std::move(m.results));
  }
}

// Progress of a batch: to the proxy of the replica that runs it, which
// hands it to the router as itself, like a local executor's.
void on_progress(self_ptr self, worker& w, const std::string& name,
                 const std::string& body) {
  progress_msg m;
  if (!decode_from(name, body, m)) {
    return;
  }
  auto r = w.replicas.find(m.replica);
  if (r != w.replicas.end() && r->second.proxy) {
    self->send(r->second.proxy, progress_atom::value, std::move(m.tickets),
               m.done, m.total);
  }
}

void on_ready(self_ptr self, worker& w, const std::string& name,
              const std::string& body) {
  replica_desc d;
  if (!decode_from(name, body, d)) {
    return;
  }
  adopt(self, name, w, d);
  publish(self, name);
}

void on_spawn_fail(self_ptr self, worker& w, const std::string& name,
                   const std::string& body) {
  spawn_fail_msg m;
  if (!decode_from(name, body, m)) {
    return;
  }
  w.spawning.erase({m.model, m.version});
  w.gpu_spawning.erase({m.model, m.version});
  self->send(self->state.router, spawn_fail_atom::value, m.model, m.version,
             name + ": " + m.reason);
}

// A replica died on its worker: its proxy quits, so that the router
// re-dispatches what it was running.
void on_replica_down(self_ptr self, worker& w, const std::string& name,
                     const std::string& body) {
  replica_down_msg m;
  if (!decode_from(name, body, m)) {
    return;
  }
  auto r = w.replicas.find(m.replica);
  if (r == w.replicas.end()) {
    return;
  }
  drop_route(self, name, m.replica);
  if (r->second.proxy) {
    self->send_exit(r->second.proxy,
                    make_error(errc::internal,
                               "replica on " + name + " died: " + m.reason));
  }
  w.replicas.erase(r);
}

void on_devices(worker& w, const std::string& name, const std::string& body) {
  devices_msg m;
  if (!decode_from(name, body, m)) {
    return;
  }
  // It counts every replica that was ready when it was sent, and the link
  // delivers in order: what became ready before it is in it.
  w.devices = std::move(m.devices);
  w.gpu_unreported.clear();
}

// Drops a worker from the membership at once (status, shoal_cluster_nodes).
void forget_worker(self_ptr self, const std::string& name) {
  auto& st = self->state;
  auto it = st.workers.find(name);
  if (it == st.workers.end()) {
    return;
  }
  st.view->erase(name);
  if (!it->second.counted_state.empty()) {
    --st.worker_counts[it->second.counted_state];
  }
  st.workers.erase(it);
  publish(self);
}

// A worker that said goodbye (a drain, a handled preemption, a scale-down)
// is forgotten at once rather than listed `down` until forget_after: it is
// not a failure, and `down` is what the node-down alert watches, so every
// rolling update would page someone.
void on_leave(self_ptr self, worker& w, const std::string& name) {
  spdlog::info("coordinator: worker {} left", name);
  w.state = "down";
  w.down_since_ns = now_ns();
  lose_replicas(self, w, name, "left");
  forget_worker(self, name);
}

void on_link_msg(self_ptr self, const std::string& name, uint64_t inc,
                 const std::string& type, const std::string& body) {
  auto& st = self->state;
  auto wi = st.workers.find(name);
  if (wi == st.workers.end() || wi->second.incarnation != inc ||
      wi->second.state == "down") {
    // Raced with a down or a restart: the link refuses the rest anyway.
    return;
  }
  auto op = parse_cluster_op(type);
  if (!op) {
    log_unknown_op(st.unknown_ops, "coordinator", name, type);
    return;
  }
  auto& w = wi->second;
  switch (*op) {
  case cluster_op::done:
    return on_done(self, w, name, body);
  case cluster_op::progress:
    return on_progress(self, w, name, body);
  case cluster_op::ready:
    return on_ready(self, w, name, body);
  case cluster_op::spawn_fail:
    return on_spawn_fail(self, w, name, body);
  case cluster_op::replica_down:
    return on_replica_down(self, w, name, body);
  case cluster_op::drain:
    return start_drain(self, name, w);
  case cluster_op::devices:
    return on_devices(w, name, body);
  case cluster_op::leave:
    return on_leave(self, w, name);
  case cluster_op::spawn:
  case cluster_op::retire:
  case cluster_op::exec:
  case cluster_op::cancel:
    // The head's own ops: a worker that sends one is confused.
    spdlog::warn("coordinator: {}: {} is a head-to-worker op; dropped", name,
                 to_string(*op));
    return;
  }
}

void status_reply(self_ptr self, const admin_job& job) {
  auto& st = self->state;
  reply r;
  r.id = job.id;
  r.has_nodes = true;
  node_info head;
  head.name = st.cfg.node_name;
  head.role = "head";
  head.state = st.draining ? "draining" : "up";
  head.labels = st.cfg.labels;
  head.devices = local_devices();
  r.nodes.push_back(std::move(head));
  for (auto& [name, w] : st.workers) {
    node_info n;
    n.name = name;
    n.role = "worker";
    n.state = w.state;
    n.labels = w.labels;
    std::map<std::string, uint64_t> per_model;
    for (auto& [id, rep] : w.replicas) {
      ++per_model[rep.model];
    }
    n.replicas.assign(per_model.begin(), per_model.end());
    n.devices = w.devices;
    r.nodes.push_back(std::move(n));
  }
  std::string out;
  encode_reply(r, out);
  st.sink->push(job.route, std::move(out));
  st.metrics->op_reply(op_kind::status, status::ok);
}

// Retires every replica of a model version (the router's idle check).
void on_idle(self_ptr self, const std::string& model, uint64_t version) {
  auto& st = self->state;
  st.waiting.erase({model, version});
  for (auto& [name, w] : st.workers) {
    bool any = false;
    for (auto it = w.replicas.begin(); it != w.replicas.end();) {
      if (it->second.model == model && it->second.version == version) {
        drop_route(self, name, it->first);
        self->send_exit(it->second.proxy, caf::exit_reason::normal);
        it = w.replicas.erase(it);
        any = true;
      } else {
        ++it;
      }
    }
    if (any) {
      st.link->send(name, retire_msg{0, model, version});
    }
  }
}

// A drained replica the router handed back: its worker stops it.
void on_retire(self_ptr self, const replica_handle& proxy) {
  auto& st = self->state;
  for (auto& [name, w] : st.workers) {
    for (auto it = w.replicas.begin(); it != w.replicas.end(); ++it) {
      if (it->second.proxy != proxy) {
        continue;
      }
      st.link->send(
          name, retire_msg{it->first, it->second.model, it->second.version});
      drop_route(self, name, it->first);
      self->send_exit(it->second.proxy, caf::exit_reason::normal);
      w.replicas.erase(it);
      return;
    }
  }
}

void on_drain_request(self_ptr self, const std::string& node) {
  auto& st = self->state;
  auto i = st.workers.find(node);
  if (i == st.workers.end()) {
    return;
  }
  // The worker drains itself (finishes, then exits); it announces it with
  // a `drain` of its own, which starts the replacements.
  st.link->send(node, drain_msg{});
  start_drain(self, node, i->second);
}

// Forgets workers down for long, retries the spawns that wait for one.
void on_tick(self_ptr self) {
  auto& st = self->state;
  auto now = now_ns();
  auto forget_ns = std::chrono::nanoseconds{st.cfg.forget_after}.count();
  std::vector<std::string> forget;
  for (auto& [name, w] : st.workers) {
    if (w.state == "down" && now - w.down_since_ns > forget_ns) {
      forget.push_back(name);
    }
  }
  for (auto& name : forget) {
    forget_worker(self, name);
  }
  if (!st.waiting.empty()) {
    retry_waiting(self);
  }
  self->delayed_send(self, std::chrono::milliseconds{500}, tick_atom::value);
}

} // namespace

coordinator_handle::behavior_type
coordinator_actor(self_ptr self, coordinator_config cfg,
                  std::shared_ptr<link_box> link, live_catalog_ptr catalog,
                  std::shared_ptr<reply_sink> sink,
                  std::shared_ptr<serving_metrics> metrics,
                  std::shared_ptr<cluster_view> view) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.link = std::move(link);
  st.catalog = std::move(catalog);
  st.sink = std::move(sink);
  st.metrics = std::move(metrics);
  st.view = std::move(view);
  publish(self);
  self->send(self, tick_atom::value);
  return {
      [=](spawn_atom, const std::string& model, uint64_t version,
          const std::string& reason) { place(self, model, version, reason); },
      [=](idle_atom, const std::string& model, uint64_t version) {
        on_idle(self, model, version);
      },
      [=](retire_atom, const replica_handle& proxy) { on_retire(self, proxy); },
      [=](admin_job& job) { status_reply(self, job); },
      [=](drain_atom, const std::string& node) {
        on_drain_request(self, node);
      },
      [=](peer_atom, const std::string& name, uint64_t inc, uint8_t state,
          const std::string& reason, const std::string& hello) {
        on_peer(self, name, inc, state, reason, hello);
      },
      [=](link_msg_atom, const std::string& name, uint64_t inc,
          const std::string& type, const std::string& body) {
        on_link_msg(self, name, inc, type, body);
      },
      [=](set_router_atom, router_handle& router) {
        self->state.router = std::move(router);
      },
      [=](tick_atom) { on_tick(self); },
  };
}

} // namespace shoal
