// gateway: what a client frame means. It runs on the client socket's thread
// (net/gateway/client_socket.hpp), decodes and validates every frame,
// answers ping and cache hits on the spot (the hot path: no thread hop),
// hands misses and admin ops to the router, and leaves the replies of
// actors to the socket's reply sink. Every frame that arrives gets a reply,
// INVALID_ARGUMENT with a reason when it is bad.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/expected.hpp>

#include "actors/jobs/job_manager.hpp"
#include "actors/serving/request_log.hpp"
#include "actors/serving/result_cache.hpp"
#include "actors/serving/router.hpp"
#include "actors/serving/serving_metrics.hpp"
#include "actors/serving/tenants.hpp"
#include "gpu/model/live_catalog.hpp"
#include "gpu/model/model_spec.hpp"
#include "net/gateway/client_socket.hpp"
#include "net/security/client_registry.hpp"
#include "net/wire/codec.hpp"

namespace shoal {

struct gateway_config {
  std::string endpoint = "tcp://127.0.0.1:5555";
  uint64_t default_timeout_ms = 30000;
  int io_threads = 1;
  // After a light round, how long the gateway thread polls before it sleeps.
  std::chrono::microseconds poll_spin{0};
  std::string node_name;
  codec_limits limits;
  // CURVE: set `clients` to require it. The node's secret key; the allowed
  // client keys (re-read on change), whose role decides the admin ops.
  std::shared_ptr<client_registry> clients;
  curve_key secret_key{};
  // Without CURVE: admin ops from any address, not only loopback.
  bool admin_from_any = false;
  // A refused handshake, by reason (shoal_auth_failures_total).
  std::function<void(std::string_view reason)> on_auth_failure;
};

// What the gateway needs from the node around it.
struct gateway_env {
  router_handle router; // takes infer_job and admin_job
  // Requests are validated against it; the `reload` op re-reads it.
  live_catalog_ptr catalog;
  std::shared_ptr<result_cache> cache;
  std::shared_ptr<reply_sink> sink;
  std::shared_ptr<serving_metrics> metrics;
  // Runs on the gateway thread for a `drain` op; returns an error reason,
  // or empty when the drain started.
  std::function<std::string(const std::string& node)> on_drain;
  // Tenants' limits and counters, shared with the router (null: one
  // `default` tenant without limits).
  std::shared_ptr<tenant_table> tenants;
  // The request log (null: off).
  std::shared_ptr<request_log> requests;
  // The head's job manager (null: no job ops here).
  job_manager_handle jobs;
};

class gateway {
public:
  // Binds the endpoint (failing with errc::io_error naming it) and starts
  // the socket thread.
  static caf::expected<std::unique_ptr<gateway>> start(gateway_config cfg,
                                                       gateway_env env);

  ~gateway();
  gateway(const gateway&) = delete;
  gateway& operator=(const gateway&) = delete;

  // Stops the thread after sending the replies already queued.
  void stop();

  // The endpoint actually bound (resolves a wildcard port).
  const std::string& endpoint() const noexcept;

  uint64_t frames_received() const noexcept;

private:
  gateway();
  struct impl;
  std::unique_ptr<impl> impl_;
  std::unique_ptr<client_socket> socket_;
};

} // namespace shoal
