// The node's HTTP endpoint (libmicrohttpd): /metrics, /healthz, /readyz,
// and on the head node /sd (Prometheus HTTP service discovery).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <caf/expected.hpp>

#include "runtime/metrics/registry.hpp"

namespace shoal {

struct http_handlers {
  // Returns {ready, human-readable detail}; /readyz answers 200 or 503 with
  // the detail as body.
  std::function<std::pair<bool, std::string>()> ready;
  // JSON body for /sd; when empty, /sd answers 404.
  std::function<std::string()> service_discovery;
};

struct http_limits {
  // Threads, each with its own event loop.
  int threads = 2;
  // A connection that completes no request within this is closed (rounded
  // up to whole seconds).
  uint64_t timeout_ms = 10000;
  // Open connections at most; past it new ones are closed at once.
  uint64_t max_connections = 1024;
};

class http_server {
public:
  // `listen` is "HOST:PORT" (e.g. "127.0.0.1:9310"); port 0 picks a free
  // port. Fails with errc::io_error naming the address when it can't bind.
  static caf::expected<std::unique_ptr<http_server>>
  start(const std::string& listen, metrics::registry& reg, http_handlers h,
        const http_limits& limits = {});

  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // The port actually bound.
  int port() const noexcept { return port_; }

private:
  http_server() = default;
  struct impl;
  std::unique_ptr<impl> impl_;
  int port_ = 0;
};

} // namespace shoal
