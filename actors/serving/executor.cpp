#include "actors/serving/executor.hpp"

#include <map>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/serving/cancel_board.hpp"
#include "net/wire/codec.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace {

using self_ptr = executor_handle::stateful_pointer<executor_state>;

uint64_t us_between(time_point a, time_point b) {
  return b <= a
             ? 0
             : static_cast<uint64_t>(
                   std::chrono::duration_cast<std::chrono::microseconds>(b - a)
                       .count());
}

void schedule_flush(self_ptr self);

// The model store step of a load, with progress for `models` and the log.
caf::error prepare_files(const model_spec& spec, const load_env& env,
                         serving_metrics& metrics) {
  if (!env.prepare) {
    return {};
  }
  // Log each file at every tenth of its size, not at every callback.
  std::map<std::string, uint64_t> logged;
  auto progress = [&](const std::string& file, uint64_t done, uint64_t total) {
    if (env.progress) {
      env.progress->update(spec.name, spec.version, file, done, total);
    }
    if (total == 0) {
      return;
    }
    auto tenth = done * 10 / total;
    auto& last = logged[file];
    if (tenth > last) {
      last = tenth;
      spdlog::info("model store: {} v{}: {} {}% ({:.1f} of {:.1f} MB)",
                   spec.name, spec.version, file, tenth * 10, done / 1e6,
                   total / 1e6);
    }
  };
  prepare_stats stats;
  auto err = env.prepare(spec, progress, stats);
  if (env.progress) {
    env.progress->finish(spec.name, spec.version);
  }
  if (!err) {
    metrics.model_files(stats.bytes_downloaded, stats.files_fetched,
                        stats.files_reused);
  }
  return err;
}

// Sends a batch's results to the router.
void send_results(self_ptr self, std::vector<exec_result>&& results) {
  self->state.listener.done(self, std::move(results));
}

// A backend fault kills this replica; the router re-dispatches its
// batches and the supervisor decides about a restart.
void backend_fault(self_ptr self, const std::exception& e) {
  auto& st = self->state;
  spdlog::error("executor {} v{}: backend fault: {}", st.spec->name,
                st.spec->version, e.what());
  st.faulted = true;
  self->quit(make_error(errc::internal, e.what()));
}

// Answers every live request of a batch with the backend's error.
void fail_batch(executor_state::started& p, const caf::error& err) {
  auto code = static_cast<uint8_t>(to_status(err));
  auto reason = reason_of(err);
  for (auto& item : p.live) {
    exec_result r;
    r.ticket = item.ticket;
    r.code = code;
    r.error = reason;
    p.results.push_back(std::move(r));
  }
}

// Waits for the oldest started batch and sends its results.
void collect_one(self_ptr self) {
  auto& st = self->state;
  auto p = std::move(st.in_flight.front());
  st.in_flight.pop_front();
  caf::expected<std::vector<tensor>> outputs{std::vector<tensor>{}};
  try {
    outputs = st.impl->finish();
  } catch (const std::exception& e) {
    backend_fault(self, e);
    return;
  }
  auto end = clock_type::now();
  auto compute_us = us_between(p.start, end);
  st.metrics->compute_time(st.spec->name, compute_us / 1e6);
  st.metrics->batch(st.spec->name, static_cast<uint32_t>(p.live.size()));
  auto& results = p.results;
  if (!outputs) {
    fail_batch(p, outputs.error());
  } else {
    auto parts = split_outputs(*outputs, p.live);
    for (size_t i = 0; i < p.live.size(); ++i) {
      exec_result r;
      r.ticket = p.live[i].ticket;
      r.code = static_cast<uint8_t>(status::ok);
      encode_tensors(parts[i], r.outputs_encoded);
      r.queue_us = us_between(p.arrivals[i], p.start);
      r.compute_us = compute_us;
      r.batch_size = static_cast<uint32_t>(p.live.size());
      results.push_back(std::move(r));
    }
  }
  send_results(self, std::move(results));
}

// Takes the next batch from the batcher. Requests whose deadline passed
// while queued are answered, not run.
executor_state::started take_batch(self_ptr self) {
  auto& st = self->state;
  auto items = st.queue->take();
  const auto& arrivals = st.queue->taken_arrivals();
  executor_state::started p;
  p.results.reserve(items.size());
  p.live.reserve(items.size());
  auto now = now_ns();
  for (size_t i = 0; i < items.size(); ++i) {
    if (st.cancelled.erase(items[i].ticket) > 0) {
      exec_result r;
      r.ticket = items[i].ticket;
      r.code = static_cast<uint8_t>(status::cancelled);
      r.error = "cancelled before it ran";
      p.results.push_back(std::move(r));
    } else if (items[i].deadline_ns > 0 && items[i].deadline_ns <= now) {
      exec_result r;
      r.ticket = items[i].ticket;
      r.code = static_cast<uint8_t>(status::deadline_exceeded);
      r.error = "deadline exceeded while queued at the executor";
      p.results.push_back(std::move(r));
    } else {
      p.live.push_back(std::move(items[i]));
      p.arrivals.push_back(arrivals[i]);
    }
  }
  return p;
}

// Progress of a batch in steps goes to the listener, at most every 50 ms
// (a client's progress bar needs no more); the batch stops between steps
// once every request in it was cancelled.
void watch_progress(self_ptr self, const executor_state::started& p) {
  std::vector<uint64_t> tickets;
  for (auto& item : p.live) {
    tickets.push_back(item.ticket);
  }
  auto last = std::make_shared<time_point>();
  self->state.impl->set_progress(
      [self, tickets, last](uint64_t done, uint64_t total) {
        auto now = clock_type::now();
        if (now - *last >= std::chrono::milliseconds{50} && done < total) {
          *last = now;
          self->state.listener.progress(self, tickets, done, total);
        }
        return !cancel_board::instance().all_cancelled(tickets);
      });
}

// Hands a batch's live requests to the backend, then collects it at once
// (synchronous backend) or through the mailbox (pipelined). False when the
// backend threw and the replica is quitting.
bool start_batch(self_ptr self, executor_state::started&& p) {
  auto& st = self->state;
  uint64_t rows = 0;
  auto inputs = concat_inputs(p.live, rows);
  p.start = clock_type::now();
  watch_progress(self, p);
  caf::error err;
  try {
    err = st.impl->start(inputs, rows);
  } catch (const std::exception& e) {
    backend_fault(self, e);
    return false;
  }
  if (err) {
    fail_batch(p, err);
    send_results(self, std::move(p.results));
    return true;
  }
  st.in_flight.push_back(std::move(p));
  if (st.impl->max_in_flight() <= 1) {
    collect_one(self);
  } else if (!st.collect_scheduled) {
    st.collect_scheduled = true;
    self->send(self, collect_atom::value);
  }
  return true;
}

// Starts the next batch on the backend. A synchronous backend (at most one
// batch in flight) is collected at once; a pipelined one (cuda) is
// collected through the mailbox, so that requests arriving meanwhile form
// the next batch, which starts, and copies its inputs, before this one is
// waited for.
void run_batch(self_ptr self) {
  auto& st = self->state;
  if (st.in_flight.size() >= st.impl->max_in_flight()) {
    return; // collect_atom starts it once a slot is free
  }
  auto p = take_batch(self);
  if (p.live.empty()) {
    send_results(self, std::move(p.results));
  } else if (!start_batch(self, std::move(p))) {
    return;
  }
  if (!st.queue->empty()) {
    schedule_flush(self);
  }
}

// Arranges for the next batch: at once when full, after the rest of the
// delay otherwise. A zero delay still goes through the mailbox, so that
// requests that arrived together are batched together.
void schedule_flush(self_ptr self) {
  auto& st = self->state;
  if (st.flush_scheduled) {
    return;
  }
  st.flush_scheduled = true;
  ++st.flush_gen;
  auto wait = st.queue->time_to_ready(clock_type::now());
  if (wait.count() <= 0) {
    self->send(self, flush_atom::value, st.flush_gen);
  } else {
    self->delayed_send(self, wait, flush_atom::value, st.flush_gen);
  }
}

// Makes the model's files ready and loads its backend. False when the
// load failed and the replica is quitting with errc::unavailable.
bool load(self_ptr self, const load_env* env) {
  auto& st = self->state;
  auto& spec = *st.spec;
  auto t0 = clock_type::now();
  auto fail = [&](const std::string& why) {
    spdlog::error("executor {} v{}: load failed: {}", spec.name, spec.version,
                  why);
    self->quit(make_error(errc::unavailable, why));
    return false;
  };
  // A null env (benchmarks) loads the files as they are.
  if (env) {
    if (auto err = prepare_files(spec, *env, *st.metrics)) {
      return fail(reason_of(err));
    }
  }
  // Another replica's load may need this one's device memory while it is
  // idle: it then retires like an idle-TTL retirement (not restarted).
  load_options opts;
  opts.retire = [addr = self->address()] {
    caf::anon_send_exit(addr, caf::exit_reason::user_shutdown);
  };
  auto loaded = load_backend(spec, opts);
  if (!loaded) {
    return fail(reason_of(loaded.error()));
  }
  st.impl = std::move(*loaded);
  auto load_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  st.metrics->model_load(spec.name, load_s);
  spdlog::info("executor {} v{} ready on {} (load {:.1f} ms)", spec.name,
               spec.version, st.impl->device(), load_s * 1e3);
  return true;
}

void on_exec(self_ptr self, exec_item& item) {
  auto& st = self->state;
  st.queue->push(std::move(item), clock_type::now());
  if (st.queue->full()) {
    st.flush_scheduled = false;
    run_batch(self);
  } else {
    schedule_flush(self);
  }
}

// A cancel that finds its ticket still queued keeps it from running; one
// that comes after the run has nothing left to do.
void on_cancel(self_ptr self, uint64_t ticket) {
  cancel_board::instance().forget(ticket);
  auto& st = self->state;
  if (st.queue->contains(ticket)) {
    st.cancelled.insert(ticket);
  }
}

void on_collect(self_ptr self) {
  auto& st = self->state;
  st.collect_scheduled = false;
  if (st.in_flight.empty()) {
    return;
  }
  collect_one(self);
  if (st.faulted) {
    return;
  }
  // Start the next batch before waiting on the one still in flight.
  if (!st.queue->empty() && st.queue->ready(clock_type::now())) {
    run_batch(self);
  }
  if (!st.in_flight.empty() && !st.collect_scheduled) {
    st.collect_scheduled = true;
    self->send(self, collect_atom::value);
  }
}

void on_flush(self_ptr self, uint64_t gen) {
  auto& st = self->state;
  if (gen != st.flush_gen || !st.flush_scheduled) {
    return;
  }
  st.flush_scheduled = false;
  if (st.queue->empty()) {
    return;
  }
  if (st.queue->ready(clock_type::now())) {
    run_batch(self);
  } else {
    schedule_flush(self);
  }
}

} // namespace

void executor_listener::ready(executor_handle::pointer self,
                              const model_spec& spec,
                              const std::string& device) const {
  if (typed_) {
    self->send(typed_, ready_atom::value, spec.name, spec.version,
               caf::actor_cast<replica_handle>(self), device);
  } else if (dynamic_) {
    // A dynamic listener has no interface to check the message against.
    caf::unsafe_send_as(self, dynamic_, ready_atom::value, spec.name,
                        spec.version, caf::actor_cast<caf::actor>(self),
                        device);
  }
}

void executor_listener::progress(executor_handle::pointer self,
                                 const std::vector<uint64_t>& tickets,
                                 uint64_t done, uint64_t total) const {
  if (typed_) {
    self->send(typed_, progress_atom::value, tickets, done, total);
  } else if (dynamic_) {
    caf::unsafe_send_as(self, dynamic_, progress_atom::value, tickets, done,
                        total);
  }
}

void executor_listener::done(executor_handle::pointer self,
                             std::vector<exec_result>&& results) const {
  if (results.empty()) {
    return;
  }
  if (typed_) {
    self->send(typed_, done_atom::value, std::move(results));
  } else if (dynamic_) {
    caf::unsafe_send_as(self, dynamic_, done_atom::value, std::move(results));
  }
}

executor_handle::behavior_type
executor_actor(self_ptr self, model_spec_ptr spec, executor_listener listener,
               std::shared_ptr<serving_metrics> metrics,
               std::shared_ptr<const load_env> env) {
  auto& st = self->state;
  st.spec = spec;
  st.listener = std::move(listener);
  st.metrics = std::move(metrics);
  st.queue = std::make_unique<batcher>(spec->max_batch, spec->max_delay);
  if (!load(self, env.get())) {
    return executor_handle::behavior_type::make_empty_behavior();
  }
  st.listener.ready(self, *spec, st.impl->device());
  return {
      [=](exec_atom, exec_item& item) { on_exec(self, item); },
      [=](cancel_atom, uint64_t ticket) { on_cancel(self, ticket); },
      [=](collect_atom) { on_collect(self); },
      [=](flush_atom, uint64_t gen) { on_flush(self, gen); },
  };
}

} // namespace shoal
