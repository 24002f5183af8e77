// router: owns every request the cache could not answer. It coalesces
// identical in-flight misses, keeps a bounded priority queue per model
// version (priority 0..9, then arrival; deadlines enforced while queued and
// running), dispatches to the replica with the least outstanding work, asks
// its replica source for a replica when a model has none (lazy spawn),
// retires idle replicas, re-dispatches the requests of a replica that died,
// and replies to every request exactly once.
//
// Its replica source is the node supervisor, or on a head the coordinator
// (replica_source_handle, actors/serving/supervisor.hpp); the replicas are
// executors or remote_replica proxies (replica_handle,
// actors/serving/executor.hpp). It monitors every replica: a DOWN
// re-dispatches what that replica was running.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_actor.hpp>

#include "actors/messages.hpp"
#include "actors/serving/executor.hpp"
#include "actors/serving/job_listener.hpp"
#include "actors/serving/load_progress.hpp"
#include "actors/serving/request_log.hpp"
#include "actors/serving/result_cache.hpp"
#include "actors/serving/serving_metrics.hpp"
#include "actors/serving/supervisor.hpp"
#include "actors/serving/tenants.hpp"
#include "gpu/model/live_catalog.hpp"
#include "gpu/model/model_spec.hpp"
#include "net/gateway/reply_sink.hpp"
#include "net/wire/exec.hpp"
#include "net/wire/message.hpp"

namespace shoal {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cache_key& x) {
  return f(x.bytes, x.hash_lo, x.hash_hi);
}

// An inference request the gateway could not answer from cache.
struct infer_job {
  request_id id;
  std::string model;
  uint64_t version = 0;
  std::vector<tensor> inputs; // in the model's declared input order
  uint64_t rows = 1;          // batch rows of this request
  uint8_t priority = 5;
  int64_t recv_ns = 0;
  int64_t deadline_ns = 0;
  uint8_t cache = 0;      // cache_mode
  bool cacheable = false; // the model caches and the node has a budget
  cache_key key;          // set when cacheable
  reply_route route;
  // Its tenant (tenant_table::id) and whether it holds one of the tenant's
  // in-flight slots, which its reply gives back.
  uint16_t tenant = 0;
  uint16_t tenant_label = 0;
  bool tenant_slot = false;
  // For the request log: the tenant's name when this request is logged
  // (empty: not logged), and the request frame's size.
  std::string log_tenant;
  uint64_t bytes_in = 0;
  bool stream = false; // progress frames before the final reply
  // Set for a durable job's request: the router tells it instead of
  // replying through the reply sink (not serialized: local only).
  job_listener_handle listener;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, infer_job& x) {
  return f(x.id, x.model, x.version, x.inputs, x.rows, x.priority, x.recv_ns,
           x.deadline_ns, x.cache, x.cacheable, x.key, x.route, x.tenant,
           x.tenant_label, x.tenant_slot, x.log_tenant, x.bytes_in, x.stream);
}

// A non-infer op the router answers (models, status, load, unload).
struct admin_job {
  request_id id;
  uint8_t op = 0; // op_kind
  std::string model;
  uint64_t version = 0; // 0: not given
  std::string node;
  reply_route route;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, admin_job& x) {
  return f(x.id, x.op, x.model, x.version, x.node, x.route);
}

// Who answers the `status` op for a whole cluster: the coordinator, on a
// head. Its reply goes to the reply sink.
using cluster_status_handle = caf::typed_actor<caf::reacts_to<admin_job>>;

// The router. It is a replica_listener_handle (ready_atom, done_atom,
// spawn_fail_atom) for the replicas it asks for, and more:
using router_handle = caf::typed_actor<
    // From the gateway: a cache miss. The reply goes to the reply sink, not
    // back. A retry (same client, same id) of an open request is absorbed:
    // one reply per request id.
    caf::reacts_to<infer_job>,
    // From the gateway: models, status, load, unload. The reply goes to the
    // reply sink (status on a head: from the coordinator).
    caf::reacts_to<admin_job>,
    // From an executor that finished loading (model, version, replica,
    // device): monitored, then dispatched to. Nothing comes back.
    caf::reacts_to<ready_atom, std::string, uint64_t, replica_handle,
                   std::string>,
    // From the coordinator: a remote replica (its proxy) on worker `node`
    // (model, version, proxy, device, node). Nothing comes back.
    caf::reacts_to<ready_atom, std::string, uint64_t, replica_handle,
                   std::string, std::string>,
    // From a replica (executor or proxy): one batch's results, accepted
    // only from the replica each ticket runs on. Nothing comes back.
    caf::reacts_to<done_atom, std::vector<exec_result>>,
    // From the replica source: no replica of (model, version) will come,
    // and why; queued requests fail with UNAVAILABLE. Nothing comes back.
    caf::reacts_to<spawn_fail_atom, std::string, uint64_t, std::string>,
    // From the coordinator: drain that replica. Once idle and replaceable
    // it is handed back with (retire_atom, replica) to the replica source.
    caf::reacts_to<retire_atom, replica_handle>,
    // From the job manager: cancel the open request `id` of `route` (a job's
    // or a client's infer). Its waiter gets CANCELLED; an execution left
    // without waiters is dropped from its queue or, when running, its
    // replica is told to stop. Nothing comes back.
    caf::reacts_to<cancel_atom, reply_route, request_id>,
    // From a replica: progress (done of total steps) of the tickets of its
    // running batch, passed on to streaming clients and job listeners.
    // Nothing comes back.
    caf::reacts_to<progress_atom, std::vector<uint64_t>, uint64_t, uint64_t>,
    // From itself: deadline checks (and scale-out); nothing comes back.
    caf::reacts_to<tick_atom>,
    // From itself: idle replica retirement; nothing comes back.
    caf::reacts_to<idle_atom>,
    // From the node after a re-read of the repository changed the catalog:
    // new versions pinned by their manifest get a replica, replicas of
    // removed versions retire once idle. Nothing comes back.
    caf::reacts_to<reload_atom>,
    // From the node on SIGTERM or `drain`: new requests get UNAVAILABLE,
    // queued jobs go back to the job store unrun; returns the number of
    // requests still open.
    caf::replies_to<drain_atom>::with<uint64_t>,
    // From the node while draining: returns the number of requests open.
    caf::replies_to<count_atom>::with<uint64_t>,
    // From the node when the drain ended with requests still open (grace
    // over, or a second signal): each client still waiting is answered
    // CANCELLED; jobs' requests are not (their jobs stay stored for the
    // next start). Returns how many were answered.
    caf::replies_to<abandon_atom>::with<uint64_t>>;

struct router_config {
  uint64_t queue_capacity = 1024;
  uint64_t max_redispatch = 3;
  std::chrono::milliseconds tick{5};
  uint64_t inflight_per_replica = 0; // 0: 2 * max_batch
  uint64_t max_open = 100000;
  std::chrono::milliseconds idle_ttl{300000};
  std::chrono::milliseconds default_cache_ttl{0};
  std::string node_name = "node";
  std::string node_role = "all";
  // Head of a cluster: the replica source is the coordinator, which also
  // answers the `status` op and takes retired replicas back.
  bool cluster = false;
  // Cluster scale-out: another replica is asked for when a model's queue
  // holds more than scale_out_queue requests per replica for
  // scale_out_after (0: never), up to max_replicas.
  uint64_t scale_out_queue = 0;
  std::chrono::milliseconds scale_out_after{2000};
  uint64_t max_replicas = 4;
  // Loads under way, for the `models` op (may be null).
  std::shared_ptr<load_progress> progress;
  // Tenants: weights for the fair share, slots and counters (null: one
  // `default` tenant).
  std::shared_ptr<tenant_table> tenants;
  // The request log (null: off).
  std::shared_ptr<request_log> requests;
};

// A router's first ticket: the wall clock in nanoseconds when it starts
// (at least 1). Tickets name executions on workers too, and a worker may
// still finish a ticket of a head that died when the restarted head hands
// out its own: numbered from 1 each time, the new head's ticket 5 would
// take the old head's result for ticket 5 (and cache it under the new
// request's key). Started from the clock, a later head's tickets lie above
// every ticket an earlier one issued, unless it handed out more than one
// a nanosecond or the clock went back.
constexpr uint64_t first_ticket(int64_t wall_ns) noexcept {
  return wall_ns > 0 ? static_cast<uint64_t>(wall_ns) : 1;
}

struct router_state {
  // A client waiting for a ticket's result.
  struct waiter {
    request_id id;
    reply_route route;
    int64_t recv_ns = 0;
    int64_t deadline_ns = 0;
    reply_source source = reply_source::executor;
    // What the client asked for: infer, or load (a load_waiter).
    op_kind op = op_kind::infer;
    uint16_t tenant = 0;
    uint16_t tenant_label = 0;
    bool tenant_slot = false;
    std::string log_tenant; // empty: not in the request log
    uint64_t bytes_in = 0;
    bool stream = false;          // progress frames, then event "done"
    job_listener_handle listener; // a job's: told instead of the sink
  };

  // One execution: a request and everyone coalesced onto it.
  struct pending {
    infer_job job;
    std::vector<waiter> waiters;
    uint8_t priority = 5;
    uint64_t seq = 0;
    uint64_t vstart = 0; // fair-share start tag within its priority
    uint32_t attempts = 0;
    bool running = false;
    bool indexed = false; // in the coalescing index
    caf::actor_addr replica;
    int64_t sent_ns = 0;
  };

  struct replica {
    replica_handle handle;
    uint64_t outstanding = 0;
    int64_t last_used_ns = 0;
    std::string device;
    std::string node; // where it computes (the `node` of its replies)
    // Draining: gets no new work once another replica of the model can
    // take it, and is retired when its last request is done.
    bool retiring = false;
  };

  // (priority, fair-share start tag, seq): the smallest runs first.
  using queue_key = std::tuple<uint8_t, uint64_t, uint64_t>;

  struct model_entry {
    model_spec_ptr spec;
    std::map<queue_key, uint64_t> queue; // -> ticket
    // Fair share between tenants within a priority (start-time fair
    // queueing): per priority the start tag of the last ticket dispatched,
    // per tenant and priority the finish tag of its last ticket, and per
    // tenant its tickets queued.
    std::array<uint64_t, 10> vtime{};
    std::vector<std::array<uint64_t, 10>> vfinish;
    std::vector<uint32_t> queued_by_tenant;
    std::vector<replica> replicas;
    bool spawn_requested = false;
    int64_t queue_high_since_ns = 0; // 0: queue not above the target
    int64_t scale_requested_ns = 0;  // 0: no scale-out pending
    bool pinned = false;             // by the manifest or an explicit load
    int64_t failed_until_ns = 0;
    std::string last_failure;
    std::vector<waiter> load_waiters;
  };

  using model_key = std::pair<std::string, uint64_t>;

  router_config cfg;
  live_catalog_ptr catalog;
  std::shared_ptr<result_cache> cache;
  std::shared_ptr<reply_sink> sink;
  std::shared_ptr<serving_metrics> metrics;
  replica_source_handle replicas;
  cluster_status_handle cluster_status; // a head's coordinator, else null

  std::map<model_key, model_entry> models;
  std::unordered_map<uint64_t, pending> tickets;
  // (hash_lo, hash_hi) of the cache key -> ticket of the open execution.
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> coalesce;
  // Retry key (client identity + request id) -> ticket, for open requests.
  std::unordered_map<std::string, uint64_t> open_requests;
  uint64_t next_ticket =
      first_ticket(std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count());
  uint64_t next_seq = 1;
  bool tick_scheduled = false;
  bool draining = false;
  std::string encode_buf;

  // The entry of a model version, made (or given the newer spec of a
  // version published again) with its per-tenant tables sized. Every
  // handler that needs an entry takes it here.
  model_entry& entry_for(const model_spec_ptr& spec);

  static inline const char* name = "router";
};

// `cluster_status` answers the status op when cfg.cluster (null otherwise).
router_handle::behavior_type router_actor(
    router_handle::stateful_pointer<router_state> self, router_config cfg,
    live_catalog_ptr catalog, std::shared_ptr<result_cache> cache,
    std::shared_ptr<reply_sink> sink, std::shared_ptr<serving_metrics> metrics,
    replica_source_handle replicas, cluster_status_handle cluster_status);

} // namespace shoal
