// gateway: owns the client-facing ROUTER socket on its own thread. It
// decodes and validates every frame, answers ping and cache hits on the spot
// (the hot path: no thread hop), hands misses and admin ops to the router,
// and sends the replies that actors push into its reply_sink. Every frame
// that arrives gets a reply, INVALID_ARGUMENT with a reason when it is bad.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <caf/actor.hpp>
#include <caf/expected.hpp>

#include "actors/result_cache.hpp"
#include "net/codec.hpp"
#include "net/reply_sink.hpp"
#include "runtime/model_spec.hpp"
#include "runtime/node_metrics.hpp"

namespace shoal {

struct gateway_config {
  std::string endpoint = "tcp://127.0.0.1:5555";
  uint64_t default_timeout_ms = 30000;
  int io_threads = 1;
  std::string node_name;
  codec_limits limits;
};

class gateway {
public:
  // Binds the endpoint (failing with errc::io_error naming it) and starts
  // the socket thread. `on_drain` runs on the gateway thread for a `drain`
  // op; it returns an error reason, or empty when the drain started.
  static caf::expected<std::unique_ptr<gateway>>
  start(gateway_config cfg, caf::actor router, model_catalog_ptr catalog,
        std::shared_ptr<result_cache> cache, std::shared_ptr<reply_sink> sink,
        std::shared_ptr<node_metrics> metrics,
        std::function<std::string(const std::string&)> on_drain);

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
};

} // namespace shoal
