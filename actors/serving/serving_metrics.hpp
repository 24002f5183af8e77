// What the serving and cluster actors report while they work. The node
// exports it as Prometheus families (runtime/metrics/node_metrics.hpp); the
// actors only see this interface, so that they need nothing from the
// process around them and their tests can record what was reported.
// Implementations are thread-safe: the gateway thread, the router and every
// executor report concurrently.
#pragma once

#include <cstdint>
#include <string_view>

#include "net/wire/message.hpp"

namespace shoal {

class serving_metrics {
public:
  virtual ~serving_metrics() = default;

  // One reply to an `infer` of a model the node serves.
  virtual void reply(std::string_view model, status s, reply_source src,
                     double total_seconds) = 0;
  // One reply to any other op, or to an `infer` refused before it named a
  // model the node serves (unknown model), so that a client's made-up
  // model names never become label values.
  virtual void op_reply(op_kind op, status s) = 0;
  // One frame that could not be decoded (no op to count it under).
  virtual void invalid_frame() = 0;
  virtual void queue_time(std::string_view model, double seconds) = 0;
  virtual void compute_time(std::string_view model, double seconds) = 0;
  virtual void batch(std::string_view model, uint32_t size) = 0;
  virtual void waiting(std::string_view model, uint64_t n) = 0;
  virtual void executors(std::string_view model, int64_t delta) = 0;
  virtual void spawn(std::string_view reason) = 0;
  virtual void redispatched(uint64_t n = 1) = 0;
  virtual void model_load(std::string_view model, double seconds) = 0;
  // What one load's model store step did: bytes downloaded, files fetched
  // (or hashed in place) and files reused from the verified cache.
  virtual void model_files(uint64_t bytes, uint64_t fetched,
                           uint64_t reused) = 0;
  // Nodes of the cluster per state (up, suspect, draining, down).
  virtual void cluster_nodes(std::string_view state, uint64_t n) = 0;
};

} // namespace shoal
