// job_manager: durable jobs on the head. It owns the job store (an
// interface, actors/jobs/job_store.hpp; the node injects the
// implementation), answers the job ops (submit, job, wait, cancel, jobs),
// and runs each job as an ordinary request through the router, which tells
// it (job_listener_handle, actors/serving/job_listener.hpp) when the job
// runs, how far it got and how it ended. A job is acknowledged only once
// the store committed it, and its waiters hear it is done only once its
// result is committed. On start it queues every job the store holds as
// queued or running again, by priority: a head that died loses none.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/stateful_actor.hpp>
#include <caf/typed_actor.hpp>

#include "actors/jobs/job_store.hpp"
#include "actors/messages.hpp"
#include "actors/serving/job_listener.hpp"
#include "actors/serving/router.hpp"
#include "net/gateway/reply_sink.hpp"
#include "net/wire/message.hpp"

namespace shoal {

// A job op from the gateway (submit, job, wait, cancel, jobs).
struct job_request {
  uint8_t op = 0; // op_kind
  request_id id;
  std::string tenant;
  std::string job; // submit: may be empty (the manager picks one)
  reply_route route;
  bool progress = false;   // wait: progress frames first
  uint64_t timeout_ms = 0; // wait: 0 means the default
  uint64_t limit = 0;      // jobs
  std::string after;       // jobs
  infer_job infer;         // submit: the validated request
  std::string frame;       // submit: its bytes, kept for recovery
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, job_request& x) {
  return f(x.op, x.id, x.tenant, x.job, x.route, x.progress, x.timeout_ms,
           x.limit, x.after, x.infer, x.frame);
}

// Turns a stored submit frame back into a request for the router, against
// the models of this process (the version the job was submitted for).
using job_rebuild_fn = std::function<caf::expected<infer_job>(
    const std::string& frame, uint64_t version)>;

// What the job manager reports (runtime/jobs/job_metrics.hpp fills it in).
class job_metrics {
public:
  virtual ~job_metrics() = default;
  // Jobs per state (index: job_state), refreshed every second.
  virtual void states(const std::vector<uint64_t>& counts) = 0;
  // A job ended (done or failed) after `seconds` from submit.
  virtual void finished(const std::string& model, double seconds) = 0;
  // Jobs queued again at start.
  virtual void recovered(uint64_t n) = 0;
};

struct job_manager_config {
  uint64_t result_ttl_ms = 86'400'000;
  uint64_t max_queued = 10000; // open jobs per tenant
  uint64_t default_wait_ms = 30000;
  std::chrono::milliseconds tick{200}; // progress flush, wait deadlines
  // The tenants, so that a job shares the router's fair share as its
  // tenant (null: every job as the default tenant).
  std::shared_ptr<const tenant_table> tenants;
};

using job_manager_handle = caf::typed_actor<
    // From the gateway: a job op. The reply goes to the reply sink: at once
    // (submit, after the commit; job; jobs; cancel), or when the job ends
    // or the wait times out (wait, with progress frames first if asked).
    caf::reacts_to<job_request>,
    // From the router: a job's request runs, made progress, or ended.
    // Nothing comes back.
    caf::reacts_to<job_atom, job_event>,
    // From itself: flushes coalesced progress, ends waits that timed out,
    // expires old jobs. Nothing comes back.
    caf::reacts_to<tick_atom>,
    // From itself: commits the submits that arrived since the last commit
    // in one transaction (group commit), then answers them. Nothing comes
    // back.
    caf::reacts_to<flush_atom>,
    // From the node on SIGTERM: jobs stay as stored (queued for the next
    // start), new ones are stored but not run. Nothing comes back.
    caf::reacts_to<drain_atom>,
    // From the node, tests, benchmarks: the number of open jobs.
    caf::replies_to<count_atom>::with<uint64_t>,
    // From the node as it stops: each open `wait` is answered UNAVAILABLE
    // (the job stays stored and resumes at the next start). Returns how
    // many were answered.
    caf::replies_to<abandon_atom>::with<uint64_t>>;

struct job_manager_state {
  struct open_job {
    std::string tenant;
    std::string id;
    std::string model;
    uint64_t version = 0;
    job_state state = job_state::queued;
    int64_t created_ms = 0;
    int64_t updated_ms = 0;
    uint64_t done = 0;
    uint64_t total = 0;
    bool dirty = false; // progress or state not in the store yet
  };
  struct waiter {
    request_id id;
    reply_route route;
    int64_t deadline_ns = 0; // 0: none
    bool progress = false;
  };

  job_manager_config cfg;
  job_store_ptr store;
  router_handle router;
  std::shared_ptr<reply_sink> sink;
  std::shared_ptr<job_metrics> metrics;
  job_rebuild_fn rebuild;
  // Open jobs by key (tenant, NUL, id), and their waiters.
  std::unordered_map<std::string, open_job> open;
  std::unordered_map<std::string, std::vector<waiter>> waiters;
  std::unordered_map<std::string, uint64_t> open_per_tenant;
  // Submits waiting for the next group commit.
  std::vector<job_request> pending;
  bool commit_scheduled = false;
  uint64_t ticks = 0;
  bool draining = false;
  std::string encode_buf;
  static inline const char* name = "job_manager";
};

// Queues the store's open jobs again before it takes any message.
job_manager_handle::behavior_type
job_manager_actor(job_manager_handle::stateful_pointer<job_manager_state> self,
                  job_manager_config cfg, job_store_ptr store,
                  router_handle router, std::shared_ptr<reply_sink> sink,
                  std::shared_ptr<job_metrics> metrics, job_rebuild_fn rebuild);

} // namespace shoal
