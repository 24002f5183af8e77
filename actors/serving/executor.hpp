// executor: one replica of one model version. Loads the model's backend when
// it starts, batches the requests the router hands it (dynamic batching:
// max_batch rows, max_delay), runs the backend, and reports results.
//
// Handlers:
//   (exec_atom, exec_item)     from the router: one request to run; answered
//                              later by (done_atom, vector<exec_result>) to
//                              the router, one message per batch.
//   (flush_atom, uint64_t gen) from itself: the batch delay of generation
//                              `gen` ran out; nothing comes back.
//   (collect_atom)             from itself, with a pipelined backend: wait
//                              for the oldest started batch and send its
//                              results; nothing comes back.
// On start it makes the model's files ready through the model store
// (fetched or verified against their sha256; see prepare_model), then loads
// the backend. It then sends (ready_atom, model, version, self, device) to the
// listener, or quits with errc::unavailable when the load fails. A backend
// that throws kills the replica (exit reason errc::internal): its requests
// are re-dispatched by the router and the supervisor restarts it.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/messages.hpp"
#include "actors/serving/batcher.hpp"
#include "actors/serving/load_progress.hpp"
#include "actors/serving/serving_metrics.hpp"
#include "gpu/backend.hpp"
#include "gpu/model/model_spec.hpp"

namespace shoal {

// What the model store step of one load did.
struct prepare_stats {
  uint64_t bytes_downloaded = 0; // body bytes received or copied
  uint64_t files_fetched = 0;    // downloaded, or hashed in place
  uint64_t files_reused = 0;     // verified copy unchanged
};

// Bytes of `file` made ready so far, of `total` (0 while unknown).
using file_progress_fn = std::function<void(const std::string& file,
                                            uint64_t done, uint64_t total)>;

// Makes a model version's files ready under spec.dir, fetched or verified
// against their sha256, before its backend loads. The node passes the model
// store's (runtime/model/model_store.hpp): executors do not know where
// files come from.
using prepare_fn = std::function<caf::error(
    const model_spec& spec, const file_progress_fn& progress,
    prepare_stats& stats)>;

// What executors need to bring a model's files in before loading it.
struct load_env {
  prepare_fn prepare;                      // empty: files are used as they are
  std::shared_ptr<load_progress> progress; // may be null
};

struct executor_state {
  // A batch started on the backend and not yet collected.
  struct started {
    std::vector<exec_item> live;
    std::vector<time_point> arrivals;
    time_point start;
    std::vector<exec_result> results; // those answered without running
  };
  model_spec_ptr spec;
  backend_ptr impl;
  std::unique_ptr<batcher> queue;
  caf::actor listener;
  std::shared_ptr<serving_metrics> metrics;
  uint64_t flush_gen = 0;
  bool flush_scheduled = false;
  std::deque<started> in_flight;
  bool collect_scheduled = false;
  bool faulted = false; // the backend threw; the actor is quitting
  static inline const char* name = "executor";
};

caf::behavior executor_actor(caf::stateful_actor<executor_state>* self,
                             model_spec_ptr spec, caf::actor listener,
                             std::shared_ptr<serving_metrics> metrics,
                             std::shared_ptr<const load_env> env);

} // namespace shoal
