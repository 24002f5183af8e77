// executor: one replica of one model version. Loads the model's backend when
// it starts, batches the requests the router hands it (dynamic batching:
// max_batch rows, max_delay), runs the backend, and reports results.
//
// On start it makes the model's files ready through the model store
// (fetched or verified against their sha256; see prepare_model), then loads
// the backend. It then tells its listener (ready_atom, below), or quits
// with errc::unavailable when the load fails. A backend that throws kills
// the replica (exit reason errc::internal): its requests are re-dispatched
// by the router and the supervisor restarts it.
//
// This header holds the interfaces every replica is seen through:
// replica_handle (what the router sends to a replica, local or remote:
// remote_replica implements it too), replica_listener_handle (what a
// replica and the supervisor report to: the router, or a worker's agent)
// and executor_handle (an executor's own interface).
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>

#include <caf/actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_actor.hpp>

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
using file_progress_fn =
    std::function<void(const std::string& file, uint64_t done, uint64_t total)>;

// Makes a model version's files ready under spec.dir, fetched or verified
// against their sha256, before its backend loads. The node passes the model
// store's (runtime/model/model_store.hpp): executors do not know where
// files come from.
using prepare_fn = std::function<caf::error(const model_spec& spec,
                                            const file_progress_fn& progress,
                                            prepare_stats& stats)>;

// What executors need to bring a model's files in before loading it.
struct load_env {
  prepare_fn prepare;                      // empty: files are used as they are
  std::shared_ptr<load_progress> progress; // may be null
};

// A replica as the router (or a worker's agent) holds it: an executor, or a
// remote_replica proxy for an executor on a worker node.
using replica_handle = caf::typed_actor<
    // From the router (or a worker's agent, relaying its head's `exec`):
    // one request to run. Nothing comes back directly: its result comes
    // later in its batch's (done_atom, results) to the replica's listener.
    caf::reacts_to<exec_atom, exec_item>,
    // From the router (or a worker's agent): the request of this ticket
    // was cancelled; dropped if still queued, stopped between steps if
    // running. Its result, if any, is dropped by the router.
    caf::reacts_to<cancel_atom, uint64_t>>;

// Whoever a replica reports to: the router on a node that serves, the
// worker agent on a worker (which relays to its head). The supervisor
// reports failed spawns to it too.
using replica_listener_handle = caf::typed_actor<
    // From an executor that finished loading (model, version, the replica,
    // its device); nothing comes back.
    caf::reacts_to<ready_atom, std::string, uint64_t, replica_handle,
                   std::string>,
    // From a replica: the results of one batch; nothing comes back.
    caf::reacts_to<done_atom, std::vector<exec_result>>,
    // From a replica: progress (done of total steps) of its running
    // batch's tickets; nothing comes back.
    caf::reacts_to<progress_atom, std::vector<uint64_t>, uint64_t, uint64_t>,
    // From the supervisor: no replica of (model, version) will come, and
    // why; nothing comes back.
    caf::reacts_to<spawn_fail_atom, std::string, uint64_t, std::string>>;

// An executor: the replica interface and its own timers.
using executor_handle = caf::typed_actor<
    // From the router or a worker's agent: one request to run, batched;
    // its result comes later in (done_atom, results) to the listener, one
    // message per batch.
    caf::reacts_to<exec_atom, exec_item>,
    // From the router or a worker's agent: a cancelled ticket (see
    // replica_handle); nothing comes back.
    caf::reacts_to<cancel_atom, uint64_t>,
    // From itself: the batch delay of generation `gen` ran out; nothing
    // comes back.
    caf::reacts_to<flush_atom, uint64_t>,
    // From itself, with a pipelined backend: wait for the oldest started
    // batch and send its results; nothing comes back.
    caf::reacts_to<collect_atom>>;

// Where an executor reports. In a node it is a replica_listener_handle
// (the router, or a worker's agent, whichever asked the supervisor for the
// replica), and what the executor sends it is checked against that
// interface. A program that drives an executor by hand from a blocking
// scoped actor (the benchmarks) has no typed handle to give: it gets the
// same messages, unchecked, with the executor in ready_atom as a
// caf::actor.
class executor_listener {
public:
  executor_listener() = default;

  executor_listener(replica_listener_handle listener)
      : typed_(std::move(listener)) {
    // nop
  }

  executor_listener(caf::actor listener) : dynamic_(std::move(listener)) {
    // nop
  }

  // (ready_atom, model, version, self, device).
  void ready(executor_handle::pointer self, const model_spec& spec,
             const std::string& device) const;

  // (done_atom, results); nothing when there are none.
  void done(executor_handle::pointer self,
            std::vector<exec_result>&& results) const;

  // (progress_atom, tickets, done, total).
  void progress(executor_handle::pointer self,
                const std::vector<uint64_t>& tickets, uint64_t done,
                uint64_t total) const;

private:
  replica_listener_handle typed_;
  caf::actor dynamic_;
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
  executor_listener listener;
  std::shared_ptr<serving_metrics> metrics;
  uint64_t flush_gen = 0;
  bool flush_scheduled = false;
  std::deque<started> in_flight;
  bool collect_scheduled = false;
  bool faulted = false; // the backend threw; the actor is quitting
  // Tickets cancelled before they ran: answered CANCELLED, not run.
  std::unordered_set<uint64_t> cancelled;
  static inline const char* name = "executor";
};

executor_handle::behavior_type
executor_actor(executor_handle::stateful_pointer<executor_state> self,
               model_spec_ptr spec, executor_listener listener,
               std::shared_ptr<serving_metrics> metrics,
               std::shared_ptr<const load_env> env);

} // namespace shoal
