// A shoald node: the actor system, the node's actors (supervisor, router,
// cache), the gateway thread and the HTTP endpoint, wired from one config,
// plus orderly shutdown (drain on SIGTERM or the `drain` op).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include <caf/expected.hpp>

#include "config/config.hpp"
#include "runtime/model/model_store.hpp"

namespace shoal {

class node {
public:
  // Starts everything; fails with a clear error (bad model repository,
  // endpoint in use, ...).
  static caf::expected<std::unique_ptr<node>> start(node_config cfg);

  ~node();

  // Blocks until SIGINT/SIGTERM (which the caller must have blocked in
  // every thread, see block_signals) or a drain request, then drains:
  // no new work is accepted, open requests finish within the grace
  // period, and everything stops. Returns the process exit code.
  int run();

  // Asks run() to drain and return.
  void request_drain();

  const std::string& gateway_endpoint() const noexcept;
  int http_port() const noexcept;

  // Opaque outside runtime/node/ (node_impl.hpp).
  struct impl;

private:
  node();
  std::unique_ptr<impl> impl_;
};

// The model store settings (models.*) of a node configuration.
store_config store_config_of(const node_config& cfg);

// Blocks SIGINT and SIGTERM in the calling thread and every thread it
// starts afterwards, so that run() receives them synchronously.
void block_signals();

} // namespace shoal
