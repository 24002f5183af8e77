// The node's metric families (docs/operations.md lists them; their names
// are a contract) and the cheap, thread-safe recording that the gateway,
// router, executors and coordinator do through serving_metrics.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "actors/serving/serving_metrics.hpp"
#include "gpu/device/node_devices.hpp"
#include "net/wire/message.hpp"
#include "runtime/metrics/registry.hpp"

namespace shoal {

class result_cache;
class tenant_table;

class node_metrics : public serving_metrics {
public:
  node_metrics(metrics::registry& reg, std::string node_name);
  ~node_metrics() override;

  void reply(std::string_view model, status s, reply_source src,
             double total_seconds) override;
  void op_reply(op_kind op, status s) override;
  void invalid_frame() override;
  void queue_time(std::string_view model, double seconds) override;
  void compute_time(std::string_view model, double seconds) override;
  void batch(std::string_view model, uint32_t size) override;
  void waiting(std::string_view model, uint64_t n) override;
  void executors(std::string_view model, int64_t delta) override;
  void spawn(std::string_view reason) override;
  void redispatched(uint64_t n = 1) override;
  void model_load(std::string_view model, double seconds) override;
  void model_files(uint64_t bytes, uint64_t fetched, uint64_t reused) override;
  void cluster_nodes(std::string_view state, uint64_t n) override;
  // A spot preemption notice was seen (the node drains).
  void preemption_notice();

  // Exports the cache's statistics at every scrape.
  void watch_cache(std::shared_ptr<result_cache> cache);

  // Exports the tenants' request and rejection counters at every scrape
  // (shoal_tenant_requests_total, shoal_tenant_rejected_total).
  void watch_tenants(std::shared_ptr<tenant_table> tenants);

  // Exports the GPUs that `source` returns at every scrape (memory used and
  // total, this node's bytes and replicas there); a GPU it stops returning
  // stops being exported. The node passes local_device_samples.
  void watch_devices(std::function<std::vector<device_sample>()> source);

  metrics::registry& registry() noexcept { return reg_; }
  const std::string& node_name() const noexcept { return node_; }

private:
  struct per_model;
  per_model& model(std::string_view name);

  metrics::registry& reg_;
  std::string node_;
  metrics::family<metrics::counter>& requests_;
  metrics::family<metrics::counter>& op_requests_;
  metrics::family<metrics::histogram>& request_duration_;
  metrics::family<metrics::histogram>& queue_duration_;
  metrics::family<metrics::histogram>& compute_duration_;
  metrics::family<metrics::gauge>& waiting_;
  metrics::family<metrics::gauge>& executors_;
  metrics::family<metrics::counter>& spawns_;
  metrics::counter& redispatched_;
  metrics::family<metrics::histogram>& load_duration_;
  metrics::counter& store_bytes_;
  metrics::family<metrics::counter>& store_files_;
  metrics::family<metrics::histogram>& batch_size_;
  metrics::counter& cache_hits_;
  metrics::counter& cache_misses_;
  metrics::counter& cache_evictions_;
  metrics::gauge& cache_bytes_;
  metrics::gauge& cache_entries_;
  metrics::family<metrics::gauge>& cluster_nodes_;
  metrics::counter& preemption_notices_;
  metrics::family<metrics::gauge>& gpu_used_;
  metrics::family<metrics::gauge>& gpu_total_;
  metrics::family<metrics::gauge>& gpu_held_;
  metrics::family<metrics::gauge>& gpu_replicas_;

  struct string_hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  std::mutex mtx_;
  std::unordered_map<std::string, std::unique_ptr<per_model>, string_hash,
                     std::equal_to<>>
      models_;
};

} // namespace shoal
