#include "actors/jobs/job_manager.hpp"

#include <chrono>
#include <random>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "net/wire/codec.hpp"
#include "net/wire/error.hpp"
#include "net/wire/exec.hpp"

namespace shoal {

namespace {

using self_ptr = job_manager_handle::stateful_pointer<job_manager_state>;
using open_job = job_manager_state::open_job;
using waiter = job_manager_state::waiter;

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string key_of(const std::string& tenant, const std::string& id) {
  std::string k = tenant;
  k += '\0';
  k += id;
  return k;
}

// The router's retry key for a job's request is its id under an empty
// route: no client has an empty identity.
request_id router_id(const std::string& key) {
  return request_id::of(key);
}

std::string new_job_id() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[24];
  std::snprintf(buf, sizeof buf, "j-%016llx",
                static_cast<unsigned long long>(rng()));
  return buf;
}

void send(self_ptr self, const reply_route& route, reply& r) {
  auto& st = self->state;
  st.encode_buf.clear();
  encode_reply(r, st.encode_buf);
  st.sink->push(route, st.encode_buf);
}

void send_error(self_ptr self, const job_request& rq, status code,
                std::string why) {
  reply r;
  r.id = rq.id;
  r.code = code;
  r.error = std::move(why);
  r.job.job = rq.job;
  send(self, rq.route, r);
}

job_info info_of(const job_record& j) {
  job_info i;
  i.job = j.id;
  i.state = std::string{to_string(j.state)};
  i.model = j.model;
  i.version = j.version;
  i.has_progress = j.total > 0;
  i.done = j.done;
  i.total = j.total;
  i.created_ms = static_cast<uint64_t>(j.created_ms);
  i.updated_ms = static_cast<uint64_t>(j.updated_ms);
  return i;
}

job_record record_of(const open_job& o) {
  job_record r;
  r.tenant = o.tenant;
  r.id = o.id;
  r.state = o.state;
  r.model = o.model;
  r.version = o.version;
  r.created_ms = o.created_ms;
  r.updated_ms = o.updated_ms;
  r.done = o.done;
  r.total = o.total;
  return r;
}

// The `job` reply of a job: its state and, once it ended, the keys of the
// infer reply it got (status and error when it failed).
reply reply_of(const job_record& j) {
  reply r;
  if (is_final(j.state) && !j.result.empty()) {
    codec_limits lim;
    lim.max_frame_bytes = lim.max_bin_bytes = j.result.size() + 1;
    if (auto err =
            decode_reply(reinterpret_cast<const uint8_t*>(j.result.data()),
                         j.result.size(), lim, r)) {
      r = reply{};
      r.code = status::internal;
      r.error =
          "stored result of job " + j.id + " unreadable: " + reason_of(err);
    }
  } else if (is_final(j.state)) {
    r.code = static_cast<status>(j.code);
    r.error = j.error;
  }
  r.event.clear();
  r.model = j.model;
  r.version = j.version;
  auto info = info_of(j);
  r.job = info;
  r.job.model.clear();
  r.job.version.reset();
  return r;
}

bool expired(self_ptr self, const job_record& j) {
  auto ttl = static_cast<int64_t>(self->state.cfg.result_ttl_ms);
  return is_final(j.state) && ttl > 0 && j.updated_ms + ttl < unix_ms();
}

// The job as the store or memory has it; nullopt (answered NOT_FOUND or
// INTERNAL) when there is none.
std::optional<job_record> lookup(self_ptr self, const job_request& rq,
                                 bool with_result) {
  auto& st = self->state;
  if (auto o = st.open.find(key_of(rq.tenant, rq.job)); o != st.open.end()) {
    return record_of(o->second);
  }
  auto j = st.store->get(rq.tenant, rq.job, with_result);
  if (!j) {
    send_error(self, rq, status::internal, reason_of(j.error()));
    return std::nullopt;
  }
  if (!*j || expired(self, **j)) {
    send_error(self, rq, status::not_found, "no job " + rq.job);
    return std::nullopt;
  }
  return std::move(**j);
}

// Hands an open job to the router as an ordinary request.
void run_job(self_ptr self, const std::string& key, infer_job job) {
  auto& st = self->state;
  if (st.draining) {
    return; // stored; the next start runs it
  }
  job.id = router_id(key);
  if (auto& t = st.cfg.tenants) {
    auto o = st.open.find(key);
    auto id = t->resolve(o == st.open.end() ? "default" : o->second.tenant);
    job.tenant = id.index;
    job.tenant_label = id.label;
  }
  job.route = reply_route{};
  job.recv_ns = now_ns();
  job.deadline_ns = 0;
  job.listener = caf::actor_cast<job_listener_handle>(self);
  self->send(st.router, std::move(job));
}

void add_open(self_ptr self, const std::string& key, const job_record& j) {
  auto& st = self->state;
  open_job o;
  o.tenant = j.tenant;
  o.id = j.id;
  o.model = j.model;
  o.version = j.version;
  o.state = job_state::queued;
  o.created_ms = j.created_ms;
  o.updated_ms = j.updated_ms;
  o.done = j.done;
  o.total = j.total;
  st.open[key] = std::move(o);
  ++st.open_per_tenant[j.tenant];
}

void drop_open(self_ptr self, const std::string& key) {
  auto& st = self->state;
  auto o = st.open.find(key);
  if (o == st.open.end()) {
    return;
  }
  auto t = st.open_per_tenant.find(o->second.tenant);
  if (t != st.open_per_tenant.end() && --t->second == 0) {
    st.open_per_tenant.erase(t);
  }
  st.open.erase(o);
}

void on_submit(self_ptr self, job_request& rq) {
  auto& st = self->state;
  if (rq.job.empty()) {
    rq.job = new_job_id();
  }
  auto key = key_of(rq.tenant, rq.job);
  reply r;
  r.id = rq.id;
  r.job.job = rq.job;
  if (auto o = st.open.find(key); o != st.open.end()) {
    r.job.state = std::string{to_string(o->second.state)};
    return send(self, rq.route, r);
  }
  auto n = st.open_per_tenant[rq.tenant];
  for (auto& p : st.pending) {
    n += p.tenant == rq.tenant;
  }
  if (n >= st.cfg.max_queued) {
    return send_error(self, rq, status::resource_exhausted,
                      "tenant " + rq.tenant + " has " + std::to_string(n) +
                          " jobs open (jobs.max_queued)");
  }
  st.pending.push_back(std::move(rq));
  if (!st.commit_scheduled) {
    st.commit_scheduled = true;
    self->send(self, flush_atom::value);
  }
}

// The answer to one committed submit, and its run.
void submitted(self_ptr self, job_request& rq, const job_record& stored,
               bool fresh) {
  auto key = key_of(rq.tenant, rq.job);
  if (!fresh && expired(self, stored)) {
    return send_error(self, rq, status::resource_exhausted,
                      "job " + rq.job + " expired and is being removed");
  }
  reply r;
  r.id = rq.id;
  r.job.job = rq.job;
  r.job.state = std::string{to_string(stored.state)};
  if (auto o = self->state.open.find(key); o != self->state.open.end()) {
    r.job.state = std::string{to_string(o->second.state)};
  }
  send(self, rq.route, r);
  if (fresh) {
    add_open(self, key, stored);
    run_job(self, key, std::move(rq.infer));
  }
}

// Group commit: every submit that arrived since the last one goes into one
// transaction; each is answered only after it.
void on_commit(self_ptr self) {
  auto& st = self->state;
  st.commit_scheduled = false;
  auto batch = std::move(st.pending);
  st.pending.clear();
  std::vector<job_record> recs;
  for (auto& rq : batch) {
    job_record j;
    j.tenant = rq.tenant;
    j.id = rq.job;
    j.priority = rq.infer.priority;
    j.model = rq.infer.model;
    j.version = rq.infer.version;
    j.created_ms = unix_ms();
    j.request = std::move(rq.frame);
    recs.push_back(std::move(j));
  }
  auto added = st.store->insert_all(std::move(recs));
  if (!added) {
    spdlog::error("jobs: {}", reason_of(added.error()));
    for (auto& rq : batch) {
      send_error(self, rq, status::internal, reason_of(added.error()));
    }
    return;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    submitted(self, batch[i], (*added)[i].first, (*added)[i].second);
  }
}

void on_job(self_ptr self, const job_request& rq) {
  auto j = lookup(self, rq, true);
  if (!j) {
    return;
  }
  auto r = reply_of(*j);
  r.id = rq.id;
  if (j->state == job_state::cancelled) {
    r.code = status::cancelled;
  }
  send(self, rq.route, r);
}

// A waiter's final reply: the job's, with event "done" for a client that
// asked for progress frames.
void answer_waiter(self_ptr self, const waiter& w, reply r) {
  r.id = w.id;
  if (w.progress) {
    r.event = "done";
  }
  send(self, w.route, r);
}

void on_wait(self_ptr self, const job_request& rq) {
  auto& st = self->state;
  auto key = key_of(rq.tenant, rq.job);
  if (st.open.count(key) == 0) {
    if (auto j = lookup(self, rq, true)) {
      answer_waiter(self, waiter{rq.id, rq.route, 0, rq.progress},
                    reply_of(*j));
    }
    return;
  }
  auto ms = rq.timeout_ms > 0 ? rq.timeout_ms : st.cfg.default_wait_ms;
  auto deadline = now_ns() + static_cast<int64_t>(ms) * 1'000'000;
  st.waiters[key].push_back(waiter{rq.id, rq.route, deadline, rq.progress});
}

// Tells every waiter of a job that it ended, and forgets it.
void job_ended(self_ptr self, const std::string& key, const job_record& j) {
  auto& st = self->state;
  auto w = st.waiters.find(key);
  if (w != st.waiters.end()) {
    auto r = reply_of(j);
    if (j.state == job_state::cancelled) {
      r.code = status::cancelled;
    }
    for (auto& x : w->second) {
      answer_waiter(self, x, r);
    }
    st.waiters.erase(w);
  }
  drop_open(self, key);
}

void on_cancel(self_ptr self, const job_request& rq) {
  auto& st = self->state;
  auto key = key_of(rq.tenant, rq.job);
  auto o = st.open.find(key);
  if (o == st.open.end()) {
    if (auto j = lookup(self, rq, false)) {
      reply r;
      r.id = rq.id;
      r.job.job = j->id;
      r.job.state = std::string{to_string(j->state)};
      send(self, rq.route, r);
    }
    return;
  }
  auto j = record_of(o->second);
  j.state = job_state::cancelled;
  j.code = static_cast<uint8_t>(status::cancelled);
  j.error = "job " + rq.job + " was cancelled";
  j.updated_ms = unix_ms();
  auto ok = st.store->finish(j);
  if (!ok) {
    return send_error(self, rq, status::internal, reason_of(ok.error()));
  }
  self->send(st.router, cancel_atom::value, reply_route{}, router_id(key));
  job_ended(self, key, j);
  reply r;
  r.id = rq.id;
  r.job.job = rq.job;
  r.job.state = "cancelled";
  send(self, rq.route, r);
}

// Whether `after` names a job of the tenant; answers the request when not.
// The store pages from the job it names, and from the top when it names
// none: a client that passed an unknown `after` would get its first page
// again, and a paginating client would loop.
bool known_after(self_ptr self, const job_request& rq) {
  if (rq.after.empty()) {
    return true;
  }
  auto j = self->state.store->get(rq.tenant, rq.after, false);
  if (!j) {
    send_error(self, rq, status::internal, reason_of(j.error()));
    return false;
  }
  if (!*j) {
    send_error(self, rq, status::not_found,
               "jobs: after: no job " + rq.after +
                   " (pass the last job of the previous page)");
    return false;
  }
  return true;
}

void on_list(self_ptr self, const job_request& rq) {
  auto& st = self->state;
  if (!known_after(self, rq)) {
    return;
  }
  auto limit = rq.limit == 0 ? 100 : std::min<uint64_t>(rq.limit, 1000);
  auto list = st.store->list(rq.tenant, limit, rq.after);
  if (!list) {
    return send_error(self, rq, status::internal, reason_of(list.error()));
  }
  reply r;
  r.id = rq.id;
  r.has_jobs = true;
  for (auto& j : *list) {
    auto o = st.open.find(key_of(j.tenant, j.id));
    r.jobs.push_back(info_of(o != st.open.end() ? record_of(o->second) : j));
  }
  send(self, rq.route, r);
}

void on_request(self_ptr self, job_request& rq) {
  switch (static_cast<op_kind>(rq.op)) {
  case op_kind::submit:
    return on_submit(self, rq);
  case op_kind::job:
    return on_job(self, rq);
  case op_kind::wait:
    return on_wait(self, rq);
  case op_kind::cancel:
    return on_cancel(self, rq);
  case op_kind::jobs:
    return on_list(self, rq);
  default:
    return send_error(self, rq, status::invalid_argument,
                      "not a job op: " +
                          std::string{to_string(static_cast<op_kind>(rq.op))});
  }
}

void on_progress(self_ptr self, const std::string& key, open_job& o,
                 const job_event& ev) {
  auto& st = self->state;
  if (ev.kind == job_event_kind::progress) {
    o.done = ev.done;
    o.total = ev.total;
  }
  o.state = job_state::running;
  o.updated_ms = unix_ms();
  o.dirty = true;
  auto w = st.waiters.find(key);
  if (ev.kind != job_event_kind::progress || w == st.waiters.end()) {
    return;
  }
  for (auto& x : w->second) {
    if (!x.progress) {
      continue;
    }
    reply r;
    r.id = x.id;
    r.job.job = o.id;
    r.event = "progress";
    r.job.has_progress = true;
    r.job.done = o.done;
    r.job.total = o.total;
    send(self, x.route, r);
  }
}

// A job's request ended: its result is committed, then its waiters hear.
void on_finished(self_ptr self, const std::string& key, open_job& o,
                 job_event& ev) {
  auto& st = self->state;
  auto code = static_cast<status>(ev.code);
  // A drain refuses or abandons requests; the job stays as stored and
  // runs after the next start.
  if (st.draining &&
      (code == status::unavailable || code == status::cancelled)) {
    return;
  }
  auto j = record_of(o);
  j.state = code == status::ok ? job_state::done : job_state::failed;
  j.code = ev.code;
  j.error = std::move(ev.error);
  j.result = std::move(ev.reply);
  j.updated_ms = unix_ms();
  // A job that is done did all of its steps, whatever the last progress
  // said; a failed one keeps how far it got, which is what its owner needs
  // to tell a late failure from an early one.
  if (j.state == job_state::done && o.total > 0) {
    j.done = j.total;
  }
  auto ok = st.store->finish(j);
  if (!ok) {
    spdlog::error("jobs: job {} ended but its result was not stored: {}", o.id,
                  reason_of(ok.error()));
    return;
  }
  if (!*ok) {
    return; // it had ended already: the first outcome stands
  }
  st.metrics->finished(j.model, (j.updated_ms - j.created_ms) / 1e3);
  job_ended(self, key, j);
}

void on_event(self_ptr self, job_event& ev) {
  auto& st = self->state;
  auto key = ev.id.str;
  auto o = st.open.find(key);
  if (o == st.open.end()) {
    return; // cancelled, or ended already
  }
  if (ev.kind == job_event_kind::finished) {
    on_finished(self, key, o->second, ev);
  } else {
    on_progress(self, key, o->second, ev);
  }
}

// Progress and running states go to the store at most once a tick per
// job, in one transaction.
void flush_progress(self_ptr self) {
  auto& st = self->state;
  std::vector<job_progress> batch;
  for (auto& [key, o] : st.open) {
    if (o.dirty) {
      o.dirty = false;
      batch.push_back({o.tenant, o.id, o.done, o.total, o.updated_ms});
    }
  }
  if (auto err = st.store->set_progress(batch)) {
    spdlog::warn("jobs: progress not stored: {}", reason_of(err));
  }
}

void expire_waits(self_ptr self) {
  auto& st = self->state;
  auto now = now_ns();
  for (auto& [key, ws] : st.waiters) {
    auto o = st.open.find(key);
    for (auto w = ws.begin(); w != ws.end();) {
      if (w->deadline_ns == 0 || w->deadline_ns > now || o == st.open.end()) {
        ++w;
        continue;
      }
      auto r = reply_of(record_of(o->second));
      r.code = status::deadline_exceeded;
      r.error = "job " + o->second.id + " is still " +
                std::string{to_string(o->second.state)};
      answer_waiter(self, *w, r);
      w = ws.erase(w);
    }
  }
  std::erase_if(st.waiters, [](auto& kv) { return kv.second.empty(); });
}

// The node stops: a client waiting on a job hears that now, with a status
// it may retry on once the node is back, instead of no reply at all.
uint64_t abandon_waits(self_ptr self) {
  auto& st = self->state;
  uint64_t answered = 0;
  for (auto& [key, ws] : st.waiters) {
    auto o = st.open.find(key);
    for (auto& w : ws) {
      reply r;
      if (o != st.open.end()) {
        r = reply_of(record_of(o->second));
      }
      r.code = status::unavailable;
      r.error = "the node is shutting down; the job stays stored and "
                "resumes when the node is back";
      answer_waiter(self, w, r);
      ++answered;
    }
  }
  st.waiters.clear();
  return answered;
}

void on_tick(self_ptr self) {
  auto& st = self->state;
  flush_progress(self);
  expire_waits(self);
  auto per_second =
      std::max<int64_t>(1, 1000 / std::max<int64_t>(1, st.cfg.tick.count()));
  if (st.ticks++ % per_second == 0) {
    if (st.cfg.result_ttl_ms > 0) {
      auto gone = st.store->expire(unix_ms() -
                                   static_cast<int64_t>(st.cfg.result_ttl_ms));
      if (!gone) {
        spdlog::warn("jobs: expiry failed: {}", reason_of(gone.error()));
      }
    }
    if (auto counts = st.store->counts()) {
      st.metrics->states(*counts);
    }
  }
  self->delayed_send(self, st.cfg.tick, tick_atom::value);
}

// Queues every open job of the store again, by priority then age.
void recover(self_ptr self) {
  auto& st = self->state;
  auto t0 = clock_type::now();
  auto jobs = st.store->open_jobs();
  if (!jobs) {
    spdlog::error("jobs: cannot read open jobs: {}", reason_of(jobs.error()));
    return;
  }
  uint64_t n = 0;
  for (auto& j : *jobs) {
    auto key = key_of(j.tenant, j.id);
    auto job = st.rebuild(j.request, j.version);
    if (!job) {
      j.state = job_state::failed;
      j.code = static_cast<uint8_t>(to_status(job.error()));
      j.error = reason_of(job.error());
      j.updated_ms = unix_ms();
      st.store->finish(j);
      continue;
    }
    add_open(self, key, j);
    run_job(self, key, std::move(*job));
    ++n;
  }
  auto ms = std::chrono::duration<double, std::milli>(clock_type::now() - t0);
  st.metrics->recovered(n);
  if (!jobs->empty()) {
    spdlog::info("jobs: {} job(s) recovered and queued in {:.1f} ms", n,
                 ms.count());
  }
}

} // namespace

job_manager_handle::behavior_type
job_manager_actor(self_ptr self, job_manager_config cfg, job_store_ptr store,
                  router_handle router, std::shared_ptr<reply_sink> sink,
                  std::shared_ptr<job_metrics> metrics,
                  job_rebuild_fn rebuild) {
  auto& st = self->state;
  st.cfg = cfg;
  st.store = std::move(store);
  st.router = std::move(router);
  st.sink = std::move(sink);
  st.metrics = std::move(metrics);
  st.rebuild = std::move(rebuild);
  recover(self);
  self->send(self, tick_atom::value);
  return {
      [=](job_request& rq) { on_request(self, rq); },
      [=](job_atom, job_event& ev) { on_event(self, ev); },
      [=](tick_atom) { on_tick(self); },
      [=](flush_atom) { on_commit(self); },
      [=](drain_atom) { self->state.draining = true; },
      [=](count_atom) {
        return static_cast<uint64_t>(self->state.open.size());
      },
      [=](abandon_atom) { return abandon_waits(self); },
  };
}

} // namespace shoal
