// router: owns every request the cache could not answer. It coalesces
// identical in-flight misses, keeps a bounded priority queue per model
// version (priority 0..9, then arrival; deadlines enforced while queued and
// running), dispatches to the replica with the least outstanding work, asks
// the supervisor for a replica when a model has none (lazy spawn), retires
// idle replicas, re-dispatches the requests of a replica that died, and
// replies to every request exactly once.
//
// Handlers:
//   infer_job                      from the gateway: a cache miss; the reply
//                                  goes to the reply sink, not back. A retry
//                                  (same client, same id) of an open request
//                                  is absorbed: one reply per request id.
//   admin_job                      from the gateway: models, status, load,
//                                  unload; the reply goes to the sink.
//   (ready_atom, model, version, actor, device)
//                                  from an executor that finished loading.
//   (ready_atom, model, version, actor, device, node)
//                                  from the coordinator: a remote replica
//                                  (its proxy) on worker `node`.
//   (retire_atom, actor)           from the coordinator: drain that replica;
//                                  once idle and replaceable it is handed
//                                  back with (retire_atom, actor).
//   (done_atom, vector<exec_result>)
//                                  from an executor: one batch's results.
//   (spawn_fail_atom, model, version, reason)
//                                  from the supervisor: no replica will come;
//                                  queued requests fail with UNAVAILABLE.
//   (tick_atom)                    from itself: deadline checks.
//   (idle_atom)                    from itself: idle replica retirement.
//   (drain_atom)                   from the node on SIGTERM or `drain`: new
//                                  requests get UNAVAILABLE; returns the
//                                  number of requests still open.
//   (count_atom)                   from the node: returns requests open.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/messages.hpp"
#include "actors/serving/result_cache.hpp"
#include "net/gateway/reply_sink.hpp"
#include "actors/serving/load_progress.hpp"
#include "gpu/model/model_spec.hpp"
#include "actors/serving/serving_metrics.hpp"

namespace shoal {

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
  // Head of a cluster: `supervisor` is the coordinator, which also
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
};

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
  };

  // One execution: a request and everyone coalesced onto it.
  struct pending {
    infer_job job;
    std::vector<waiter> waiters;
    uint8_t priority = 5;
    uint64_t seq = 0;
    uint32_t attempts = 0;
    bool running = false;
    bool indexed = false; // in the coalescing index
    caf::actor_addr replica;
    int64_t sent_ns = 0;
  };

  struct replica {
    caf::actor handle;
    uint64_t outstanding = 0;
    int64_t last_used_ns = 0;
    std::string device;
    std::string node; // where it computes (the `node` of its replies)
    // Draining: gets no new work once another replica of the model can
    // take it, and is retired when its last request is done.
    bool retiring = false;
  };

  struct model_entry {
    model_spec_ptr spec;
    // (priority, seq) -> ticket; the smallest runs first.
    std::map<std::pair<uint8_t, uint64_t>, uint64_t> queue;
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
  model_catalog_ptr catalog;
  std::shared_ptr<result_cache> cache;
  std::shared_ptr<reply_sink> sink;
  std::shared_ptr<serving_metrics> metrics;
  caf::actor supervisor;

  std::map<model_key, model_entry> models;
  std::unordered_map<uint64_t, pending> tickets;
  // (hash_lo, hash_hi) of the cache key -> ticket of the open execution.
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> coalesce;
  // Retry key (client identity + request id) -> ticket, for open requests.
  std::unordered_map<std::string, uint64_t> open_requests;
  uint64_t next_ticket = 1;
  uint64_t next_seq = 1;
  bool tick_scheduled = false;
  bool draining = false;
  std::string encode_buf;

  static inline const char* name = "router";
};

caf::behavior router_actor(caf::stateful_actor<router_state>* self,
                           router_config cfg, model_catalog_ptr catalog,
                           std::shared_ptr<result_cache> cache,
                           std::shared_ptr<reply_sink> sink,
                           std::shared_ptr<serving_metrics> metrics,
                           caf::actor supervisor);

} // namespace shoal
