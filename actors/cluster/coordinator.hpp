// coordinator: the head node's view of the cluster. It turns link events
// into membership, places replicas on workers, keeps a remote_replica proxy
// per replica for the router, and answers the `status` op. Its state is
// soft: after a head restart, every worker's hello lists the replicas it
// still runs, and they are adopted as they are.
//
// Placement of a model version's replica (actors/cluster/placement.hpp): among
// workers that are up and not draining, that run no replica of it yet and
// have room for its resources.memory_bytes within their node.memory_bytes
// budget, prefer an on-demand worker while the model has fewer than
// resources.min_replicas_on_demand replicas on on-demand workers, then one
// with the model's files already in its verified cache, then the fewest
// replicas. With no candidate, the spawn waits until a worker joins or
// frees room. A model with resources.device = "gpu" goes only to a worker
// with a GPU whose free memory fits the estimate: free as the worker last
// reported it (hello, then `devices` messages), less the estimates of the
// GPU replicas placed there that the report cannot have seen yet (not
// ready, or ready since); with workers up and none fitting, the spawn
// fails at once (a drain's replacement waits instead). "any" prefers such
// a worker, else follows the CPU rules.
//
// To the router it is the replica source (replica_source_handle, as the
// node supervisor is on a standalone node) and the cluster's status
// (cluster_status_handle); to the link thread it is a link_events_handle.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <caf/stateful_actor.hpp>
#include <caf/typed_actor.hpp>

#include "actors/cluster/cluster_view.hpp"
#include "actors/cluster/link_box.hpp"
#include "actors/cluster/remote_replica.hpp"
#include "actors/cluster/result_routes.hpp"
#include "actors/messages.hpp"
#include "actors/serving/router.hpp"
#include "actors/serving/serving_metrics.hpp"
#include "actors/serving/supervisor.hpp"
#include "gpu/model/live_catalog.hpp"
#include "gpu/model/model_spec.hpp"
#include "net/gateway/reply_sink.hpp"

namespace shoal {

using coordinator_handle = caf::typed_actor<
    // From the router: place a replica of (model, version). Later the
    // router gets ready_atom from this actor (naming the proxy), or
    // spawn_fail_atom.
    caf::reacts_to<spawn_atom, std::string, uint64_t, std::string>,
    // From the router: retire that version's replicas on every worker
    // (`retire` to each). Nothing comes back.
    caf::reacts_to<idle_atom, std::string, uint64_t>,
    // From the router: a draining replica (proxy) finished its work;
    // `retire` to its worker. Nothing comes back.
    caf::reacts_to<retire_atom, replica_handle>,
    // From the router: the `status` op; the reply goes to the reply sink.
    caf::reacts_to<admin_job>,
    // From the gateway (`drain NODE`, through the node): drain that worker;
    // nothing comes back.
    caf::reacts_to<drain_atom, std::string>,
    // From the link thread: a worker's session changed state (name, inc,
    // peer_state, reason, hello body). Nothing comes back.
    caf::reacts_to<peer_atom, std::string, uint64_t, uint8_t, std::string,
                   std::string>,
    // From the link thread: a worker's message (name, inc, op, body); the
    // ops it handles are ready, spawn_fail, done, progress, replica_down,
    // drain, leave, devices. Nothing comes back.
    caf::reacts_to<link_msg_atom, std::string, uint64_t, std::string,
                   std::string>,
    // From the node at start: the router (spawned after this actor).
    caf::reacts_to<set_router_atom, router_handle>,
    // From itself, every 500 ms: retries waiting spawns, forgets long-dead
    // workers. Nothing comes back.
    caf::reacts_to<tick_atom>>;

struct coordinator_config {
  std::string node_name = "head";
  std::vector<std::pair<std::string, std::string>> labels;
  // A down worker stays listed (state down) this long.
  std::chrono::milliseconds forget_after{std::chrono::minutes{5}};
  // Where the link thread finds each replica's proxy, so that results skip
  // this actor (null: they come through it).
  std::shared_ptr<result_routes> routes;
};

struct coordinator_state {
  struct replica {
    std::string model;
    uint64_t version = 0;
    remote_replica_handle proxy;
    uint64_t memory_bytes = 0;
    bool retiring = false;
    std::string device; // "cpu", "gpu:0", ...
  };

  struct worker {
    uint64_t incarnation = 0;
    std::string state = "up"; // up, suspect, draining, down
    std::vector<std::pair<std::string, std::string>> labels;
    uint64_t memory_budget = 0; // 0: unlimited
    std::string metrics_target;
    std::set<std::pair<std::string, uint64_t>> cached;
    std::map<uint64_t, replica> replicas; // by replica id
    // Spawns sent and not yet answered.
    std::set<std::pair<std::string, uint64_t>> spawning;
    int64_t down_since_ns = 0;
    // Its GPUs as it last reported them (hello, `devices`).
    std::vector<node_device> devices;
    // Estimates of the spawns among `spawning` that were placed for a GPU.
    std::map<std::pair<std::string, uint64_t>, uint64_t> gpu_spawning;
    // (GPU name, estimate) of GPU replicas that became ready after the
    // last report; the next report includes them.
    std::vector<std::pair<std::string, uint64_t>> gpu_unreported;
    // The state publish() last counted it in ("": not counted yet).
    std::string counted_state;
  };

  using model_key = std::pair<std::string, uint64_t>;

  coordinator_config cfg;
  std::shared_ptr<link_box> link;
  router_handle router;
  live_catalog_ptr catalog;
  std::shared_ptr<reply_sink> sink;
  std::shared_ptr<serving_metrics> metrics;
  std::shared_ptr<cluster_view> view;
  std::map<std::string, worker> workers;
  // Workers by counted_state, for shoal_cluster_nodes.
  std::map<std::string, uint64_t> worker_counts;
  // Spawns with no worker to take them yet, with their reason.
  std::map<model_key, std::string> waiting;
  bool draining = false;
  std::set<std::string> unknown_ops; // logged once each
  static inline const char* name = "coordinator";
};

coordinator_handle::behavior_type
coordinator_actor(coordinator_handle::stateful_pointer<coordinator_state> self,
                  coordinator_config cfg, std::shared_ptr<link_box> link,
                  live_catalog_ptr catalog, std::shared_ptr<reply_sink> sink,
                  std::shared_ptr<serving_metrics> metrics,
                  std::shared_ptr<cluster_view> view);

} // namespace shoal
