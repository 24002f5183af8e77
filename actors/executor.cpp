#include "actors/executor.hpp"

#include <map>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "net/codec.hpp"
#include "net/error.hpp"

namespace shoal {

namespace {

using self_ptr = caf::stateful_actor<executor_state>*;

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
                         node_metrics& metrics) {
  // Log each file at every tenth of its size, not at every callback.
  std::map<std::string, uint64_t> logged;
  auto progress = [&](const std::string& file, uint64_t done, uint64_t total) {
    if (env.progress)
      env.progress->update(spec.name, spec.version, file, done, total);
    if (total == 0)
      return;
    auto tenth = done * 10 / total;
    auto& last = logged[file];
    if (tenth > last) {
      last = tenth;
      spdlog::info("model store: {} v{}: {} {}% ({:.1f} of {:.1f} MB)",
                   spec.name, spec.version, file, tenth * 10, done / 1e6,
                   total / 1e6);
    }
  };
  fetch_stats stats;
  auto err = prepare_model(spec, env.store, progress, &stats);
  if (env.progress)
    env.progress->finish(spec.name, spec.version);
  if (!err)
    metrics.model_files(stats.bytes_downloaded, stats.files_fetched,
                        stats.files_reused);
  return err;
}

// Runs one batch and sends its results to the router.
void run_batch(self_ptr self) {
  auto& st = self->state;
  auto now = clock_type::now();
  auto items = st.queue->take();
  const auto& arrivals = st.queue->taken_arrivals();
  std::vector<exec_result> results;
  results.reserve(items.size());
  // Requests whose deadline passed while queued are answered, not run.
  auto now_i = to_ns(now);
  std::vector<exec_item> live;
  std::vector<time_point> live_arrivals;
  live.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].deadline_ns > 0 && items[i].deadline_ns <= now_i) {
      exec_result r;
      r.ticket = items[i].ticket;
      r.code = static_cast<uint8_t>(status::deadline_exceeded);
      r.error = "deadline exceeded while queued at the executor";
      results.push_back(std::move(r));
    } else {
      live.push_back(std::move(items[i]));
      live_arrivals.push_back(arrivals[i]);
    }
  }
  if (!live.empty()) {
    uint64_t rows = 0;
    auto inputs = concat_inputs(live, rows);
    auto start = clock_type::now();
    caf::expected<std::vector<tensor>> outputs{std::vector<tensor>{}};
    try {
      outputs = st.impl->run(inputs, rows);
    } catch (const std::exception& e) {
      // A backend fault kills this replica; the router re-dispatches the
      // batch and the supervisor decides about a restart.
      spdlog::error("executor {} v{}: backend fault: {}", st.spec->name,
                    st.spec->version, e.what());
      self->quit(make_error(errc::internal, e.what()));
      return;
    }
    auto end = clock_type::now();
    auto compute_us = us_between(start, end);
    st.metrics->compute_time(st.spec->name, compute_us / 1e6);
    st.metrics->batch(st.spec->name, static_cast<uint32_t>(live.size()));
    if (!outputs) {
      auto code = static_cast<uint8_t>(to_status(outputs.error()));
      auto reason = reason_of(outputs.error());
      for (auto& item : live) {
        exec_result r;
        r.ticket = item.ticket;
        r.code = code;
        r.error = reason;
        results.push_back(std::move(r));
      }
    } else {
      auto parts = split_outputs(*outputs, live);
      for (size_t i = 0; i < live.size(); ++i) {
        exec_result r;
        r.ticket = live[i].ticket;
        r.code = static_cast<uint8_t>(status::ok);
        encode_tensors(parts[i], r.outputs_encoded);
        r.queue_us = us_between(live_arrivals[i], start);
        r.compute_us = compute_us;
        r.batch_size = static_cast<uint32_t>(live.size());
        results.push_back(std::move(r));
      }
    }
  }
  self->send(st.listener, done_atom::value, std::move(results));
  if (!st.queue->empty())
    schedule_flush(self);
}

// Arranges for the next batch: at once when full, after the rest of the
// delay otherwise. A zero delay still goes through the mailbox, so that
// requests that arrived together are batched together.
void schedule_flush(self_ptr self) {
  auto& st = self->state;
  if (st.flush_scheduled)
    return;
  st.flush_scheduled = true;
  ++st.flush_gen;
  auto wait = st.queue->time_to_ready(clock_type::now());
  if (wait.count() <= 0)
    self->send(self, flush_atom::value, st.flush_gen);
  else
    self->delayed_send(self, wait, flush_atom::value, st.flush_gen);
}

} // namespace

caf::behavior executor_actor(self_ptr self, model_spec_ptr spec,
                             caf::actor listener,
                             std::shared_ptr<node_metrics> metrics,
                             std::shared_ptr<const load_env> env) {
  auto& st = self->state;
  st.spec = spec;
  st.listener = listener;
  st.metrics = metrics;
  st.queue = std::make_unique<batcher>(spec->max_batch, spec->max_delay);
  auto t0 = clock_type::now();
  // A null env (benchmarks) loads the files as they are.
  if (env) {
    if (auto err = prepare_files(*spec, *env, *metrics)) {
      spdlog::error("executor {} v{}: load failed: {}", spec->name,
                    spec->version, reason_of(err));
      self->quit(make_error(errc::unavailable, reason_of(err)));
      return {};
    }
  }
  auto loaded = load_backend(*spec);
  if (!loaded) {
    spdlog::error("executor {} v{}: load failed: {}", spec->name, spec->version,
                  reason_of(loaded.error()));
    self->quit(make_error(errc::unavailable, reason_of(loaded.error())));
    return {};
  }
  st.impl = std::move(*loaded);
  auto load_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  metrics->model_load(spec->name, load_s);
  spdlog::info("executor {} v{} ready on {} (load {:.1f} ms)", spec->name,
               spec->version, st.impl->device(), load_s * 1e3);
  self->send(listener, ready_atom::value, spec->name, spec->version,
             caf::actor_cast<caf::actor>(self), st.impl->device());
  return {
      [=](exec_atom, exec_item& item) {
        auto& st = self->state;
        st.queue->push(std::move(item), clock_type::now());
        if (st.queue->size() >= st.queue->max_batch()) {
          st.flush_scheduled = false;
          run_batch(self);
        } else {
          schedule_flush(self);
        }
      },
      [=](flush_atom, uint64_t gen) {
        auto& st = self->state;
        if (gen != st.flush_gen || !st.flush_scheduled)
          return;
        st.flush_scheduled = false;
        if (st.queue->empty())
          return;
        if (st.queue->ready(clock_type::now()))
          run_batch(self);
        else
          schedule_flush(self);
      },
  };
}

} // namespace shoal
