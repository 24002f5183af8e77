// The inside of a node (runtime/node/node.hpp), shared by the files that
// start its parts: node.cpp (the order of the steps, serving, HTTP, drain)
// and node_cluster.cpp (the node link and the cluster roles).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/expected.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/cluster/cluster_view.hpp"
#include "actors/cluster/coordinator.hpp"
#include "actors/cluster/link_box.hpp"
#include "actors/cluster/worker_agent.hpp"
#include "actors/jobs/job_manager.hpp"
#include "actors/serving/cache.hpp"
#include "actors/serving/executor.hpp"
#include "actors/serving/gateway.hpp"
#include "actors/serving/load_progress.hpp"
#include "actors/serving/result_cache.hpp"
#include "actors/serving/router.hpp"
#include "actors/serving/supervisor.hpp"
#include "config/config.hpp"
#include "gpu/model/live_catalog.hpp"
#include "gpu/model/model_spec.hpp"
#include "net/gateway/reply_sink.hpp"
#include "net/link/node_link.hpp"
#include "runtime/metrics/http_server.hpp"
#include "runtime/metrics/node_metrics.hpp"
#include "runtime/metrics/registry.hpp"
#include "runtime/model/repository_watcher.hpp"
#include "runtime/node/node.hpp"
#include "runtime/node/preemption.hpp"

namespace shoal {

struct node::impl {
  node_config cfg;
  // The catalog now; the watcher re-reads the repository into it.
  live_catalog_ptr catalog;
  std::shared_ptr<repository_watcher> watcher;
  std::shared_ptr<load_env> env;
  metrics::registry registry;
  std::shared_ptr<node_metrics> metrics;
  std::shared_ptr<result_cache> cache;
  std::shared_ptr<reply_sink> sink;
  std::shared_ptr<tenant_table> tenants;
  std::shared_ptr<request_log> requests; // log.requests; null: off
  std::unique_ptr<caf::actor_system_config> sys_cfg;
  std::unique_ptr<caf::actor_system> system;
  supervisor_handle supervisor;
  router_handle router;
  cache_handle cache_maint;
  job_manager_handle jobs; // head (and standalone): durable jobs
  // Cluster roles (head: coordinator; worker: agent), over one node link.
  std::shared_ptr<link_box> box;
  std::shared_ptr<node_link> link;
  std::shared_ptr<cluster_view> view;
  coordinator_handle coordinator;
  worker_agent_handle agent;
  std::unique_ptr<gateway> gw;
  // With CURVE: the gateway's clients list (SIGHUP re-reads it).
  std::shared_ptr<client_registry> clients;
  std::unique_ptr<http_server> http;
  std::unique_ptr<preemption_watcher> preemption;
  std::atomic<bool> drain_requested{false};
  std::atomic<bool> draining{false};
  std::atomic<bool> joined{false}; // worker: its head is up
  std::string endpoint;

  bool head() const noexcept { return cfg.node.role == "head"; }
  bool worker() const noexcept { return cfg.node.role == "worker"; }

  // What a drain still waits for: open requests (router) or, on a worker,
  // the replicas the head has not retired yet.
  uint64_t open_requests(caf::scoped_actor& self);

  // At the end of a drain: answers what is still open (requests
  // CANCELLED, job waits UNAVAILABLE) so that no client goes unanswered.
  void abandon_open(caf::scoped_actor& self);

  // The `drain NODE` op: an error reason, or empty when a drain started
  // (this node's own, or a worker's through the coordinator).
  std::string drain_node(const std::string& target);

  // Cluster roles (node_cluster.cpp): the coordinator on a head, the worker
  // agent on a worker, and the node link between them.
  caf::error start_cluster();

  // The job store and the job manager (node_jobs.cpp), after the router.
  // Fails naming the store file when it cannot be opened or is damaged.
  caf::error start_jobs();
};

} // namespace shoal
