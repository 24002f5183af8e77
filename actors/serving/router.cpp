#include "actors/serving/router.hpp"

#include <algorithm>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/serving/cancel_board.hpp"
#include "net/wire/codec.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace {

using self_ptr = router_handle::stateful_pointer<router_state>;
using waiter = router_state::waiter;
using pending = router_state::pending;
using model_entry = router_state::model_entry;

uint64_t us_since(int64_t from_ns, int64_t to_ns) {
  return to_ns > from_ns ? static_cast<uint64_t>((to_ns - from_ns) / 1000) : 0;
}

// The retry key of a request: the client's identity and its id. Nil ids
// can not be retried and are never deduplicated.
std::string retry_key(const reply_route& route, const request_id& id) {
  if (id.k == request_id::kind::nil) {
    return {};
  }
  std::string key = route.identity;
  key += '\0';
  if (id.k == request_id::kind::num) {
    key += 'n';
    key += std::to_string(id.num);
  } else {
    key += 's';
    key += id.str;
  }
  return key;
}

void log_reply(request_log& log, const waiter& w, const reply& r,
               size_t bytes_out) {
  request_record rec;
  rec.id = &w.id;
  rec.tenant = w.log_tenant;
  rec.model = r.model;
  rec.version = r.version;
  rec.op = w.op;
  rec.code = r.code;
  rec.source = r.source;
  rec.timing_us = r.timing_us.value_or(timing{});
  rec.bytes_in = w.bytes_in;
  rec.bytes_out = bytes_out;
  log.write(rec);
}

// Encodes one reply and hands it to the gateway. Every reply to a client
// passes here, so this is also where its retry key is released.
void send_reply(self_ptr self, const waiter& w, reply& r) {
  auto& st = self->state;
  if (auto key = retry_key(w.route, w.id); !key.empty()) {
    st.open_requests.erase(key);
  }
  r.id = w.id;
  if (w.stream) {
    r.event = "done";
  }
  st.encode_buf.clear();
  encode_reply(r, st.encode_buf);
  if (w.listener) {
    job_event ev{w.id,
                 job_event_kind::finished,
                 0,
                 0,
                 static_cast<uint8_t>(r.code),
                 r.error,
                 st.encode_buf};
    self->send(w.listener, job_atom::value, std::move(ev));
  } else {
    st.sink->push(w.route, st.encode_buf);
  }
  auto total = r.timing_us ? r.timing_us->total_us / 1e6
                           : us_since(w.recv_ns, now_ns()) / 1e6;
  if (!w.log_tenant.empty() && st.cfg.requests) {
    log_reply(*st.cfg.requests, w, r, st.encode_buf.size());
  }
  if (w.op == op_kind::infer) {
    st.metrics->reply(r.model, r.code, r.source, total);
    st.cfg.tenants->count(w.tenant_label, r.code);
    if (w.tenant_slot) {
      st.cfg.tenants->release_slot(w.tenant);
    }
  } else {
    st.metrics->op_reply(w.op, r.code);
  }
}

void fail_waiter(self_ptr self, const waiter& w, const std::string& model,
                 status code, std::string reason) {
  reply r;
  r.code = code;
  r.error = std::move(reason);
  r.model = model;
  r.timing_us = timing{0, 0, us_since(w.recv_ns, now_ns())};
  send_reply(self, w, r);
}

// shoal_executors counts the executors that run on this node: a head's
// replicas on workers are counted by those workers (each node is scraped).
void count_executor(self_ptr self, const std::string& model,
                    const std::string& node, int64_t delta) {
  auto& st = self->state;
  if (node.empty() || node == st.cfg.node_name) {
    st.metrics->executors(model, delta);
  }
}

void update_waiting(self_ptr self, const model_entry& m) {
  self->state.metrics->waiting(m.spec->name, m.queue.size());
}

// Takes a ticket out of the coalescing index: no identical request joins
// it from now on.
void unindex(router_state& st, pending& p) {
  if (p.indexed) {
    st.coalesce.erase({p.job.key.hash_lo, p.job.key.hash_hi});
    p.indexed = false;
  }
}

// Forgets a ticket that has no waiters left and is not running.
void erase_ticket(self_ptr self, uint64_t ticket) {
  auto& st = self->state;
  auto i = st.tickets.find(ticket);
  if (i == st.tickets.end()) {
    return;
  }
  unindex(st, i->second);
  st.tickets.erase(i);
}

// Draining: a queued ticket that only jobs wait on is put back, not run.
// Its jobs stay queued in the job store for the next start, so the drain
// waits for what runs and for clients' requests only.
void shelve_queued_jobs(self_ptr self) {
  auto& st = self->state;
  auto jobs_only = [](const pending& p) {
    return !p.running &&
           std::all_of(p.waiters.begin(), p.waiters.end(),
                       [](const waiter& w) { return bool{w.listener}; });
  };
  for (auto& [key, m] : st.models) {
    for (auto q = m.queue.begin(); q != m.queue.end();) {
      auto t = st.tickets.find(q->second);
      if (t == st.tickets.end() || !jobs_only(t->second)) {
        ++q;
        continue;
      }
      --m.queued_by_tenant[t->second.job.tenant];
      q = m.queue.erase(q);
      erase_ticket(self, t->first);
    }
    update_waiting(self, m);
  }
}

void fail_ticket(self_ptr self, uint64_t ticket, status code,
                 const std::string& reason) {
  auto& st = self->state;
  auto i = st.tickets.find(ticket);
  if (i == st.tickets.end()) {
    return;
  }
  for (auto& w : i->second.waiters) {
    fail_waiter(self, w, i->second.job.model, code, reason);
  }
  erase_ticket(self, ticket);
}

void schedule_tick(self_ptr self) {
  auto& st = self->state;
  if (st.tick_scheduled || st.tickets.empty()) {
    return;
  }
  st.tick_scheduled = true;
  self->delayed_send(self, st.cfg.tick, tick_atom::value);
}

void request_replica(self_ptr self, model_entry& m,
                     const char* reason = "lazy") {
  if (m.spawn_requested || !m.replicas.empty()) {
    return;
  }
  m.spawn_requested = true;
  self->send(self->state.replicas, spawn_atom::value, m.spec->name,
             m.spec->version, std::string{reason});
}

uint64_t capacity(const router_state& st, const model_entry& m) {
  if (st.cfg.inflight_per_replica > 0) {
    return st.cfg.inflight_per_replica;
  }
  return 2 * std::max<uint64_t>(1, m.spec->max_batch);
}

router_state::queue_key key_of(const pending& p) {
  return {p.priority, p.vstart, p.seq};
}

// Takes a ticket out of its model's queue, if it is there.
void unqueue(model_entry& m, const pending& p) {
  if (m.queue.erase(key_of(p)) > 0) {
    --m.queued_by_tenant[p.job.tenant];
  }
}

// Fair share within a priority, by start-time fair queueing: a ticket
// starts at the later of the priority's virtual time (the tag of the last
// ticket dispatched) and its tenant's previous finish, and finishes
// 2^16 / weight later. Serving the smallest start tag first serves the
// tenants with work queued in weighted round robin, and a tenant that was
// idle starts at the current virtual time: idling earns no credit.
void tag(const router_state& st, model_entry& m, pending& p) {
  auto& finish = m.vfinish[p.job.tenant][p.priority];
  p.vstart = std::max(m.vtime[p.priority], finish);
  finish =
      p.vstart + (uint64_t{1} << 16) / st.cfg.tenants->weight(p.job.tenant);
}

// Tells the job listeners among a ticket's waiters that it runs.
void notify_running(self_ptr self, const pending& p) {
  for (auto& w : p.waiters) {
    if (w.listener) {
      self->send(w.listener, job_atom::value,
                 job_event{w.id, job_event_kind::running, 0, 0, 0, {}, {}});
    }
  }
}

// Hands queued requests to replicas while any has room, least outstanding
// work first.
void dispatch(self_ptr self, model_entry& m) {
  auto& st = self->state;
  auto cap = capacity(st, m);
  auto now = now_ns();
  bool any_live = std::any_of(m.replicas.begin(), m.replicas.end(),
                              [](auto& r) { return !r.retiring; });
  while (!m.queue.empty()) {
    router_state::replica* best = nullptr;
    for (auto& r : m.replicas) {
      if ((!r.retiring || !any_live) && r.outstanding < cap &&
          (!best || r.outstanding < best->outstanding)) {
        best = &r;
      }
    }
    if (!best) {
      break;
    }
    auto ticket = m.queue.begin()->second;
    auto& p = st.tickets.at(ticket);
    unqueue(m, p);
    auto& vt = m.vtime[p.priority];
    vt = std::max(vt, p.vstart);
    exec_item item;
    item.ticket = ticket;
    item.inputs = p.job.inputs;
    item.rows = p.job.rows;
    // The execution is useful until its last waiter gives up; a waiter
    // without a deadline keeps it useful for good (0).
    item.deadline_ns = 0;
    bool unbounded = false;
    for (auto& w : p.waiters) {
      unbounded = unbounded || w.deadline_ns == 0;
      item.deadline_ns = std::max(item.deadline_ns, w.deadline_ns);
    }
    if (unbounded) {
      item.deadline_ns = 0;
    }
    item.sent_ns = now;
    notify_running(self, p);
    p.running = true;
    p.replica = best->handle.address();
    p.sent_ns = now;
    ++best->outstanding;
    best->last_used_ns = now;
    self->send(best->handle, exec_atom::value, std::move(item));
  }
  if (!m.queue.empty() && m.replicas.empty()) {
    request_replica(self, m);
  }
  update_waiting(self, m);
}

// Hands back draining replicas that finished their work, once another
// replica of the model can take over.
void retire_drained(self_ptr self, const router_state::model_key& key,
                    model_entry& m) {
  auto& st = self->state;
  bool any_live = std::any_of(m.replicas.begin(), m.replicas.end(),
                              [](auto& r) { return !r.retiring; });
  if (!any_live) {
    return;
  }
  for (auto r = m.replicas.begin(); r != m.replicas.end();) {
    if (r->retiring && r->outstanding == 0) {
      self->demonitor(r->handle.address());
      count_executor(self, key.first, r->node, -1);
      self->send(st.replicas, retire_atom::value, r->handle);
      r = m.replicas.erase(r);
    } else {
      ++r;
    }
  }
}

// Queues a ticket under the tag it has (a re-dispatched one keeps its
// place ahead of newer work).
void enqueue(self_ptr self, model_entry& m, uint64_t ticket) {
  auto& p = self->state.tickets.at(ticket);
  if (m.queue.emplace(key_of(p), ticket).second) {
    ++m.queued_by_tenant[p.job.tenant];
  }
}

// A client's retry of a request that is still open joins nothing and gets
// no second reply: the first attempt's reply answers it. True when `job`
// was such a retry, or reused an open id with other inputs (then refused).
bool absorb_retry(self_ptr self, const infer_job& job, const waiter& w,
                  const std::string& rkey) {
  auto& st = self->state;
  auto i = rkey.empty() ? st.open_requests.end() : st.open_requests.find(rkey);
  if (i == st.open_requests.end()) {
    return false;
  }
  auto t = st.tickets.find(i->second);
  if (t != st.tickets.end() && t->second.job.model == job.model &&
      t->second.job.version == job.version &&
      t->second.job.inputs == job.inputs) {
    // No reply of its own: the slot it took goes back now.
    if (w.tenant_slot) {
      st.cfg.tenants->release_slot(w.tenant);
    }
    return true;
  }
  // Not a retry but a different request under an id that is still open:
  // absorbing it would leave its sender waiting forever.
  auto open_ticket = i->second;
  fail_waiter(self, w, job.model, status::invalid_argument,
              "request id " + job.id.to_string() +
                  " is already in flight with other inputs; ids must be "
                  "unique among a client's open requests");
  // That reply shares the open request's retry key; keep the key.
  st.open_requests[rkey] = open_ticket;
  return true;
}

// Joins `job` to an open identical execution (same cache key) as another
// waiter, if there is one.
bool join_identical(self_ptr self, model_entry& m, const infer_job& job,
                    waiter& w, const std::string& rkey) {
  auto& st = self->state;
  auto c = st.coalesce.find({job.key.hash_lo, job.key.hash_hi});
  if (c == st.coalesce.end()) {
    return false;
  }
  auto& p = st.tickets.at(c->second);
  if (p.job.key.bytes != job.key.bytes) {
    return false;
  }
  w.source = reply_source::coalesced;
  if (!rkey.empty()) {
    st.open_requests.emplace(rkey, c->second);
  }
  p.waiters.push_back(std::move(w));
  // A more urgent joiner lifts a queued execution's priority.
  if (!p.running && job.priority < p.priority) {
    unqueue(m, p);
    p.priority = job.priority;
    tag(st, m, p);
    enqueue(self, m, c->second);
  }
  return true;
}

// The tenant that holds the most of a model's queue for its weight.
uint16_t greediest(const router_state& st, const model_entry& m) {
  auto& tenants = *st.cfg.tenants;
  uint16_t top = 0;
  for (uint16_t i = 1; i < m.queued_by_tenant.size(); ++i) {
    if (uint64_t{m.queued_by_tenant[i]} * tenants.weight(top) >
        uint64_t{m.queued_by_tenant[top]} * tenants.weight(i)) {
      top = i;
    }
  }
  return top;
}

// A full queue makes room for `tenant` when another tenant holds more than
// its share: that tenant's newest queued request is refused instead, so a
// flood can fill the queue but not keep a trickle out of it.
bool push_out(self_ptr self, model_entry& m, uint16_t tenant) {
  auto& st = self->state;
  auto& tenants = *st.cfg.tenants;
  auto top = greediest(st, m);
  auto held = uint64_t{m.queued_by_tenant[top]};
  if (top == tenant ||
      (uint64_t{m.queued_by_tenant[tenant]} + 1) * tenants.weight(top) >=
          held * tenants.weight(tenant)) {
    return false;
  }
  for (auto q = m.queue.rbegin(); q != m.queue.rend(); ++q) {
    auto ticket = q->second;
    auto& p = st.tickets.at(ticket);
    if (p.job.tenant != top) {
      continue;
    }
    unqueue(m, p);
    tenants.rejected(p.job.tenant_label, tenant_reject::queue);
    fail_ticket(self, ticket, status::resource_exhausted,
                "queue of model " + p.job.model + " is full and tenant '" +
                    tenants.name(top) + "' held " + std::to_string(held) +
                    " of its places; its newest request made room for "
                    "another tenant");
    return true;
  }
  return false;
}

// Whether a new execution may open: the node's and the model's bounds.
// False when refused (and answered).
bool admit(self_ptr self, model_entry& m, const infer_job& job,
           const waiter& w) {
  auto& st = self->state;
  // A durable job is bounded by its tenant's jobs.max_queued, not here.
  if (job.listener) {
    return true;
  }
  if (st.tickets.size() >= st.cfg.max_open) {
    fail_waiter(self, w, job.model, status::resource_exhausted,
                "node has " + std::to_string(st.tickets.size()) +
                    " requests open (gateway.max_inflight)");
    return false;
  }
  auto cap = m.spec->queue_capacity.value_or(st.cfg.queue_capacity);
  if (m.queue.size() >= cap && !push_out(self, m, job.tenant)) {
    st.cfg.tenants->rejected(job.tenant_label, tenant_reject::queue);
    fail_waiter(self, w, job.model, status::resource_exhausted,
                "queue of model " + job.model + " is full (" +
                    std::to_string(cap) + " requests waiting)");
    return false;
  }
  return true;
}

// Opens a ticket for `job`, queues it and dispatches.
void open_ticket(self_ptr self, model_entry& m, infer_job& job, waiter& w,
                 std::string rkey, bool coalescible) {
  auto& st = self->state;
  auto ticket = st.next_ticket++;
  auto& p = st.tickets[ticket];
  p.priority = job.priority;
  p.seq = st.next_seq++;
  p.job = std::move(job);
  if (!rkey.empty()) {
    st.open_requests.emplace(std::move(rkey), ticket);
  }
  p.waiters.push_back(std::move(w));
  if (coalescible) {
    p.indexed =
        st.coalesce
            .emplace(std::make_pair(p.job.key.hash_lo, p.job.key.hash_hi),
                     ticket)
            .second;
  }
  tag(st, m, p);
  enqueue(self, m, ticket);
  dispatch(self, m);
  schedule_tick(self);
}

void on_infer(self_ptr self, infer_job& job) {
  auto& st = self->state;
  waiter w{job.id,
           job.route,
           job.recv_ns,
           job.deadline_ns,
           reply_source::executor,
           op_kind::infer,
           job.tenant,
           job.tenant_label,
           job.tenant_slot,
           std::move(job.log_tenant),
           job.bytes_in,
           job.stream,
           job.listener};
  if (st.draining) {
    fail_waiter(self, w, job.model, status::unavailable,
                "node " + st.cfg.node_name + " is draining");
    return;
  }
  auto rkey = retry_key(job.route, job.id);
  if (absorb_retry(self, job, w, rkey)) {
    return;
  }
  auto spec = st.catalog->get()->resolve(job.model, job.version);
  if (!spec) {
    fail_waiter(self, w, job.model, status::not_found,
                "model " + job.model + " v" + std::to_string(job.version) +
                    " not found");
    return;
  }
  auto& m = self->state.entry_for(spec);
  if (m.replicas.empty() && !m.spawn_requested &&
      m.failed_until_ns > now_ns()) {
    fail_waiter(self, w, job.model, status::unavailable, m.last_failure);
    return;
  }
  auto mode = static_cast<cache_mode>(job.cache);
  bool coalescible = job.cacheable && mode == cache_mode::use;
  if (coalescible && join_identical(self, m, job, w, rkey)) {
    return;
  }
  if (admit(self, m, job, w)) {
    open_ticket(self, m, job, w, std::move(rkey), coalescible);
  }
}

// Puts a successful result into the cache (unless the request bypasses
// it), under the model's TTL.
void cache_result(self_ptr self, pending& p, const exec_result& res,
                  const std::string& node, const model_entry* m) {
  auto& st = self->state;
  if (static_cast<status>(res.code) != status::ok || !p.job.cacheable ||
      static_cast<cache_mode>(p.job.cache) == cache_mode::bypass) {
    return;
  }
  auto value = std::make_shared<cached_result>();
  value->outputs_encoded = res.outputs_encoded;
  value->model = p.job.model;
  value->version = p.job.version;
  value->node = node;
  value->compute_us = res.compute_us;
  auto ttl = m && m->spec->cache_ttl.count() > 0 ? m->spec->cache_ttl
                                                 : st.cfg.default_cache_ttl;
  st.cache->put(std::move(p.job.key), std::move(value), ttl);
}

// Answers every waiter of a ticket with its result.
void answer_waiters(self_ptr self, pending& p, exec_result& res,
                    const std::string& node, uint64_t router_queue_us,
                    int64_t now) {
  auto code = static_cast<status>(res.code);
  for (size_t k = 0; k < p.waiters.size(); ++k) {
    auto& w = p.waiters[k];
    reply r;
    r.code = code;
    r.error = res.error;
    r.model = p.job.model;
    r.version = p.job.version;
    r.node = node;
    if (code == status::ok) {
      r.source = w.source;
      if (k + 1 == p.waiters.size()) {
        r.outputs_encoded = std::move(res.outputs_encoded);
      } else {
        r.outputs_encoded = res.outputs_encoded;
      }
    }
    auto total = us_since(w.recv_ns, now);
    r.timing_us = timing{std::min(total, router_queue_us + res.queue_us),
                         res.compute_us, total};
    send_reply(self, w, r);
  }
}

// One result of a batch from `sender`. Returns the model entry it belongs
// to, or null when it was dropped: its ticket was re-dispatched elsewhere
// (its replica was presumed dead) or already answered.
model_entry* on_result(self_ptr self, exec_result& res,
                       const caf::strong_actor_ptr& sender, int64_t now) {
  auto& st = self->state;
  auto i = st.tickets.find(res.ticket);
  if (i == st.tickets.end() || !i->second.running ||
      i->second.replica != sender) {
    return nullptr;
  }
  auto& p = i->second;
  model_entry* m = nullptr;
  std::string node = st.cfg.node_name;
  if (auto mi = st.models.find({p.job.model, p.job.version});
      mi != st.models.end()) {
    m = &mi->second;
    for (auto& r : m->replicas) {
      if (r.handle.address() == sender) {
        node = r.node;
        if (r.outstanding > 0) {
          --r.outstanding;
        }
        r.last_used_ns = now;
      }
    }
  }
  auto router_queue_us = us_since(p.job.recv_ns, p.sent_ns);
  st.metrics->queue_time(p.job.model, (router_queue_us + res.queue_us) / 1e6);
  cache_result(self, p, res, node, m);
  answer_waiters(self, p, res, node, router_queue_us, now);
  p.waiters.clear();
  p.running = false;
  erase_ticket(self, res.ticket);
  return m;
}

void on_results(self_ptr self, std::vector<exec_result>& results) {
  auto sender = self->current_sender();
  auto now = now_ns();
  model_entry* touched = nullptr;
  for (auto& res : results) {
    if (auto* m = on_result(self, res, sender, now)) {
      touched = m;
    }
  }
  if (touched) {
    dispatch(self, *touched);
    retire_drained(self, {touched->spec->name, touched->spec->version},
                   *touched);
  }
}

void on_ready(self_ptr self, const std::string& model, uint64_t version,
              replica_handle handle, std::string device, std::string node) {
  auto& st = self->state;
  auto spec = st.catalog->get()->resolve(model, version);
  if (!spec) {
    self->send(st.replicas, idle_atom::value, model, version);
    return;
  }
  auto& m = self->state.entry_for(spec);
  m.spawn_requested = false;
  m.scale_requested_ns = 0;
  m.queue_high_since_ns = 0;
  m.failed_until_ns = 0;
  self->monitor(handle);
  m.replicas.push_back({handle, 0, now_ns(), std::move(device), node, false});
  count_executor(self, model, node, 1);
  for (auto& w : m.load_waiters) {
    reply r;
    r.model = model;
    r.version = version;
    r.node = node;
    send_reply(self, w, r);
  }
  m.load_waiters.clear();
  dispatch(self, m);
  retire_drained(self, {model, version}, m);
}

void on_spawn_fail(self_ptr self, const std::string& model, uint64_t version,
                   const std::string& reason) {
  auto& st = self->state;
  auto mi = st.models.find({model, version});
  if (mi == st.models.end()) {
    return;
  }
  auto& m = mi->second;
  m.spawn_requested = false;
  m.scale_requested_ns = 0;
  if (!m.replicas.empty()) {
    return;
  }
  auto why = "model " + model + " v" + std::to_string(version) +
             " could not be loaded: " + reason;
  // Fail fast for a moment instead of retrying a broken load per request.
  m.failed_until_ns = now_ns() + 1'000'000'000;
  m.last_failure = why;
  std::vector<uint64_t> queued;
  for (auto& [k, t] : m.queue) {
    queued.push_back(t);
  }
  m.queue.clear();
  std::fill(m.queued_by_tenant.begin(), m.queued_by_tenant.end(), 0);
  for (auto t : queued) {
    fail_ticket(self, t, status::unavailable, why);
  }
  for (auto& w : m.load_waiters) {
    fail_waiter(self, w, model, status::unavailable, why);
  }
  m.load_waiters.clear();
  update_waiting(self, m);
}

// A replica died: everything it was running goes back to the front of its
// model's queue (executors are pure, so re-running is safe).
void on_down(self_ptr self, caf::down_msg& dm) {
  auto& st = self->state;
  for (auto& [key, m] : st.models) {
    auto r = std::find_if(m.replicas.begin(), m.replicas.end(), [&](auto& x) {
      return x.handle.address() == dm.source;
    });
    if (r == m.replicas.end()) {
      continue;
    }
    count_executor(self, key.first, r->node, -1);
    m.replicas.erase(r);
    if (dm.reason && dm.reason != caf::exit_reason::user_shutdown) {
      spdlog::warn("router: replica of {} v{} died: {}", key.first, key.second,
                   reason_of(dm.reason));
    }
    std::vector<uint64_t> lost;
    for (auto& [t, p] : st.tickets) {
      if (p.running && p.replica == dm.source) {
        lost.push_back(t);
      }
    }
    uint64_t redispatched = 0;
    for (auto t : lost) {
      auto& p = st.tickets.at(t);
      p.running = false;
      p.replica = nullptr;
      if (++p.attempts > st.cfg.max_redispatch) {
        fail_ticket(
            self, t, status::internal,
            "executor failed " + std::to_string(p.attempts) +
                " times while running this request: " + reason_of(dm.reason));
        continue;
      }
      if (p.waiters.empty()) {
        erase_ticket(self, t);
        continue;
      }
      enqueue(self, m, t);
      ++redispatched;
    }
    if (redispatched > 0) {
      st.metrics->redispatched(redispatched);
    }
    if (redispatched > 0) {
      spdlog::info("router: {} v{}: {} request(s) of the lost replica "
                   "re-dispatched, {} replica(s) left",
                   key.first, key.second, redispatched, m.replicas.size());
    }
    dispatch(self, m);
    return;
  }
}

// Asks for one more replica of a model whose queue has stayed deep; the
// coordinator places it on a worker that runs none yet.
void check_scale_out(self_ptr self, model_entry& m, int64_t now) {
  auto& st = self->state;
  if (!st.cfg.cluster || st.cfg.scale_out_queue == 0 || m.replicas.empty()) {
    return;
  }
  auto live =
      static_cast<uint64_t>(std::count_if(m.replicas.begin(), m.replicas.end(),
                                          [](auto& r) { return !r.retiring; }));
  // A request that found no worker is given up after a while, so that a
  // worker joining later can still be asked.
  if (m.scale_requested_ns != 0 &&
      now - m.scale_requested_ns > 30'000'000'000) {
    m.scale_requested_ns = 0;
  }
  if (m.queue.size() <= st.cfg.scale_out_queue * std::max<uint64_t>(live, 1)) {
    m.queue_high_since_ns = 0;
    return;
  }
  if (m.queue_high_since_ns == 0) {
    m.queue_high_since_ns = now;
  }
  if (m.scale_requested_ns != 0 || live >= st.cfg.max_replicas ||
      now - m.queue_high_since_ns <
          std::chrono::nanoseconds{st.cfg.scale_out_after}.count()) {
    return;
  }
  m.scale_requested_ns = now;
  spdlog::info("router: {} v{} has {} queued for {} replica(s): asking for "
               "another",
               m.spec->name, m.spec->version, m.queue.size(), live);
  self->send(st.replicas, spawn_atom::value, m.spec->name, m.spec->version,
             std::string{"scale"});
}

void on_tick(self_ptr self) {
  auto& st = self->state;
  st.tick_scheduled = false;
  auto now = now_ns();
  for (auto& [key, m] : st.models) {
    check_scale_out(self, m, now);
  }
  std::vector<uint64_t> dead;
  for (auto& [t, p] : st.tickets) {
    auto& ws = p.waiters;
    for (auto w = ws.begin(); w != ws.end();) {
      if (w->deadline_ns > 0 && w->deadline_ns <= now) {
        fail_waiter(self, *w, p.job.model, status::deadline_exceeded,
                    std::string{"deadline exceeded while "} +
                        (p.running ? "running" : "queued"));
        w = ws.erase(w);
      } else {
        ++w;
      }
    }
    if (ws.empty() && !p.running) {
      dead.push_back(t);
    }
  }
  for (auto t : dead) {
    auto& p = st.tickets.at(t);
    auto mi = st.models.find({p.job.model, p.job.version});
    if (mi != st.models.end()) {
      unqueue(mi->second, p);
      update_waiting(self, mi->second);
    }
    erase_ticket(self, t);
  }
  schedule_tick(self);
}

void retire_idle(self_ptr self) {
  auto& st = self->state;
  auto now = now_ns();
  auto catalog = st.catalog->get();
  for (auto& [key, m] : st.models) {
    // A version gone from the repository retires as soon as it is idle.
    bool removed = !catalog->resolve(key.first, key.second);
    auto ttl = removed ? std::chrono::milliseconds{0}
                       : m.spec->idle_ttl.value_or(st.cfg.idle_ttl);
    if ((m.pinned && !removed) || !m.queue.empty() || m.replicas.empty()) {
      continue;
    }
    bool idle = true;
    for (auto& r : m.replicas) {
      idle = idle && r.outstanding == 0 &&
             now - r.last_used_ns >= std::chrono::nanoseconds{ttl}.count();
    }
    if (!idle) {
      continue;
    }
    spdlog::info("router: retiring {} replicas of {} v{}",
                 removed ? "removed" : "idle", key.first, key.second);
    for (auto& r : m.replicas) {
      self->demonitor(r.handle.address());
      count_executor(self, key.first, r.node, -1);
    }
    m.replicas.clear();
    self->send(st.replicas, idle_atom::value, key.first, key.second);
  }
}

void on_idle_check(self_ptr self) {
  auto& st = self->state;
  retire_idle(self);
  auto period = std::min<std::chrono::milliseconds>(
      std::chrono::milliseconds{1000},
      std::max(st.cfg.idle_ttl / 4, std::chrono::milliseconds{10}));
  self->delayed_send(self, period, idle_atom::value);
}

// A replica the coordinator is draining: it gets no new work once another
// replica of its model can take it, and is handed back when idle.
void on_retire(self_ptr self, const replica_handle& handle) {
  for (auto& [key, m] : self->state.models) {
    for (auto& r : m.replicas) {
      if (r.handle != handle) {
        continue;
      }
      r.retiring = true;
      retire_drained(self, key, m);
      return;
    }
  }
}

// The catalog changed: versions pinned by their manifest that are new get
// a replica, and replicas of removed versions retire (the idle check, now
// for those already idle, later for the others).
void on_catalog_changed(self_ptr self) {
  auto& st = self->state;
  auto catalog = st.catalog->get();
  for (auto& [name, versions] : catalog->models) {
    for (auto& [v, spec] : versions) {
      if (spec->pinned) {
        request_replica(self, self->state.entry_for(spec), "load");
      }
    }
  }
  retire_idle(self);
}

// A client's or the job manager's cancel of the open request `id`.
void on_cancel(self_ptr self, const reply_route& route, const request_id& id) {
  auto& st = self->state;
  auto i = st.open_requests.find(retry_key(route, id));
  if (i == st.open_requests.end()) {
    // A client's cancel is answered; the job manager's needs no answer.
    if (!route.identity.empty()) {
      fail_waiter(self, waiter{id, route, now_ns()}, {}, status::not_found,
                  "no open request with id " + id.to_string());
    }
    return;
  }
  auto ticket = i->second;
  auto& p = st.tickets.at(ticket);
  auto w = std::find_if(p.waiters.begin(), p.waiters.end(), [&](auto& x) {
    return x.id == id && x.route.identity == route.identity;
  });
  if (w == p.waiters.end()) {
    st.open_requests.erase(i);
    return;
  }
  auto gone = *w;
  p.waiters.erase(w);
  fail_waiter(self, gone, p.job.model, status::cancelled, "cancelled");
  if (!p.waiters.empty()) {
    return;
  }
  if (p.running) {
    // An identical request that comes now must not join an execution that
    // is being stopped: it would get this cancel's CANCELLED instead of a
    // result. It opens an execution of its own.
    unindex(st, p);
    // The result is dropped when it comes; the replica stops early when
    // it can (between steps).
    if (auto h = caf::actor_cast<replica_handle>(p.replica)) {
      cancel_board::instance().cancel(ticket);
      self->send(h, cancel_atom::value, ticket);
    }
    return;
  }
  auto mi = st.models.find({p.job.model, p.job.version});
  if (mi != st.models.end()) {
    unqueue(mi->second, p);
    update_waiting(self, mi->second);
  }
  erase_ticket(self, ticket);
}

// The node stops with these requests open: every client gets its one reply
// now rather than none. A job's request is left alone: failing it would
// end the job, which instead stays stored and runs at the next start.
uint64_t on_abandon(self_ptr self) {
  auto& st = self->state;
  uint64_t answered = 0;
  for (auto& [ticket, p] : st.tickets) {
    for (auto& w : p.waiters) {
      if (!w.listener) {
        fail_waiter(self, w, p.job.model, status::cancelled,
                    "cancelled: the node is shutting down");
        ++answered;
      }
    }
    std::erase_if(p.waiters, [](const waiter& w) { return !w.listener; });
  }
  return answered;
}

// Progress of running tickets: a frame to each streaming waiter, an event
// to each job listener.
void on_progress(self_ptr self, const std::vector<uint64_t>& tickets,
                 uint64_t done, uint64_t total) {
  auto& st = self->state;
  for (auto t : tickets) {
    auto i = st.tickets.find(t);
    if (i == st.tickets.end()) {
      continue;
    }
    for (auto& w : i->second.waiters) {
      if (w.listener) {
        self->send(
            w.listener, job_atom::value,
            job_event{w.id, job_event_kind::progress, done, total, 0, {}, {}});
      } else if (w.stream) {
        reply r;
        r.id = w.id;
        r.event = "progress";
        r.job.has_progress = true;
        r.job.done = done;
        r.job.total = total;
        st.encode_buf.clear();
        encode_reply(r, st.encode_buf);
        st.sink->push(w.route, st.encode_buf);
      }
    }
  }
}

} // namespace

void router_admin(self_ptr self, admin_job& job);

model_entry& router_state::entry_for(const model_spec_ptr& spec) {
  auto& m = models[{spec->name, spec->version}];
  // A version removed from the repository and published again is a new
  // spec; the old one's entry holds no replica by then.
  if (!m.spec || (m.spec != spec && m.replicas.empty() && !m.spawn_requested)) {
    m.spec = spec;
    m.pinned = spec->pinned;
    m.vfinish.resize(cfg.tenants->size());
    m.queued_by_tenant.resize(cfg.tenants->size());
  }
  return m;
}

router_handle::behavior_type router_actor(
    self_ptr self, router_config cfg, live_catalog_ptr catalog,
    std::shared_ptr<result_cache> cache, std::shared_ptr<reply_sink> sink,
    std::shared_ptr<serving_metrics> metrics, replica_source_handle replicas,
    cluster_status_handle cluster_status) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  if (!st.cfg.tenants) {
    st.cfg.tenants = std::make_shared<tenant_table>();
  }
  st.catalog = std::move(catalog);
  st.cache = std::move(cache);
  st.sink = std::move(sink);
  st.metrics = std::move(metrics);
  st.replicas = std::move(replicas);
  st.cluster_status = std::move(cluster_status);
  self->set_down_handler([=](caf::down_msg& dm) { on_down(self, dm); });
  self->send(self, idle_atom::value);
  // Pinned models are loaded at start, so their first request is warm.
  on_catalog_changed(self);
  return {
      [=](infer_job& job) { on_infer(self, job); },
      [=](admin_job& job) { router_admin(self, job); },
      [=](ready_atom, const std::string& model, uint64_t version,
          replica_handle& handle, std::string& device) {
        on_ready(self, model, version, std::move(handle), std::move(device),
                 self->state.cfg.node_name);
      },
      [=](ready_atom, const std::string& model, uint64_t version,
          replica_handle& handle, std::string& device, std::string& node) {
        on_ready(self, model, version, std::move(handle), std::move(device),
                 std::move(node));
      },
      [=](done_atom, std::vector<exec_result>& results) {
        on_results(self, results);
      },
      [=](spawn_fail_atom, const std::string& model, uint64_t version,
          const std::string& reason) {
        on_spawn_fail(self, model, version, reason);
      },
      [=](retire_atom, const replica_handle& handle) {
        on_retire(self, handle);
      },
      [=](cancel_atom, const reply_route& route, const request_id& id) {
        on_cancel(self, route, id);
      },
      [=](progress_atom, const std::vector<uint64_t>& tickets, uint64_t done,
          uint64_t total) { on_progress(self, tickets, done, total); },
      [=](tick_atom) { on_tick(self); },
      [=](idle_atom) { on_idle_check(self); },
      [=](reload_atom) { on_catalog_changed(self); },
      [=](drain_atom) {
        self->state.draining = true;
        shelve_queued_jobs(self);
        return static_cast<uint64_t>(self->state.tickets.size());
      },
      [=](count_atom) {
        return static_cast<uint64_t>(self->state.tickets.size());
      },
      [=](abandon_atom) { return on_abandon(self); },
  };
}

} // namespace shoal
