// tenants: who a request belongs to and what that tenant may do. The
// gateway resolves each request's tenant once (a precomputed index), takes
// a token from its rate bucket (cache hits too), checks its models and
// priority ceiling and, for a request that goes on to the router, an
// in-flight slot, which the router gives back when it answers. The router
// reads the weights for its fair share. Everything per request is an
// atomic on a per-tenant cache line: no lock, no allocation.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "net/wire/message.hpp"

namespace shoal {

// Why a tenant's request was refused (label `reason` of
// shoal_tenant_rejected_total).
enum class tenant_reject : uint8_t { rate, inflight, model, queue };

std::string_view to_string(tenant_reject r) noexcept;

constexpr size_t tenant_reject_count = 4;
constexpr size_t status_count = 10;

class tenant_table {
public:
  // A request's tenant: whose limits apply (`index`, 0 is `default`, which
  // every tenant without a table of its own shares) and its metric label
  // (`label`: the configured name, or `other` for an unconfigured one).
  struct id {
    uint16_t index = 0;
    uint16_t label = 0;
  };

  explicit tenant_table(const std::map<std::string, tenant_limits>& cfg);
  // No tenants configured: `default` without limits.
  tenant_table();

  // `name` is the CURVE key's tenant, else the request's `tenant` key;
  // empty is `default`.
  id resolve(std::string_view name) const noexcept;

  // Buckets (configured tenants, `default` among them) and labels (those
  // plus `other`).
  size_t size() const noexcept { return size_; }
  size_t labels() const noexcept { return size_ + 1; }
  const std::string& name(uint16_t index) const noexcept;
  const std::string& label_name(uint16_t label) const noexcept;
  uint64_t weight(uint16_t index) const noexcept;

  // Gateway thread only. Takes one token at `now_ns`; returns 0 when the
  // request may go on, else the nanoseconds until a token is there.
  int64_t take_token(uint16_t index, int64_t now_ns) noexcept {
    auto& t = tenants_[index];
    if (t.interval_ns == 0) {
      return 0;
    }
    // GCRA: the bucket is one timestamp. A request may go when the time it
    // would be due, less the burst, is not in the future.
    auto tat = std::max(t.tat_ns.load(std::memory_order_relaxed), now_ns);
    auto next = tat + t.interval_ns;
    if (next - now_ns > t.tolerance_ns) {
      return next - now_ns - t.tolerance_ns;
    }
    t.tat_ns.store(next, std::memory_order_relaxed);
    return 0;
  }
  // An in-flight slot, false when the tenant has max_inflight open.
  bool acquire_slot(uint16_t index) noexcept;
  void release_slot(uint16_t index) noexcept;
  uint64_t inflight(uint16_t index) const noexcept;
  uint64_t max_inflight(uint16_t index) const noexcept;
  bool allows_model(uint16_t index, std::string_view model) const noexcept {
    auto& models = tenants_[index].limits.models;
    return models.empty() || listed(models, model);
  }
  // The priority a request is served at: no more urgent than the ceiling.
  uint8_t cap_priority(uint16_t index, uint8_t priority) const noexcept {
    return std::max(priority, tenants_[index].max_priority);
  }
  // The configured rate (0: unlimited) and the bucket's size.
  double rate(uint16_t index) const noexcept;
  uint64_t burst(uint16_t index) const noexcept;

  // Counters for shoal_tenant_requests_total and
  // shoal_tenant_rejected_total; any thread.
  void count(uint16_t label, status s) noexcept;
  // The same from the gateway thread, its only writer: a plain store, no
  // locked instruction on the hit path.
  void count_on_gateway(uint16_t label, status s) noexcept {
    auto& c = counters_[label].gateway[static_cast<size_t>(s)];
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  void rejected(uint16_t label, tenant_reject r) noexcept;
  uint64_t requests(uint16_t label, status s) const noexcept;
  uint64_t rejections(uint16_t label, tenant_reject r) const noexcept;

private:
  // What the hit path reads comes first, on the record's first cache line.
  struct alignas(64) tenant {
    int64_t interval_ns = 0;        // 1 / rate; 0: unlimited
    int64_t tolerance_ns = 0;       // burst * interval
    std::atomic<int64_t> tat_ns{0}; // the bucket's theoretical arrival time
    std::atomic<uint64_t> inflight{0};
    uint8_t max_priority = 0; // limits.max_priority, clamped to a priority
    std::string name;
    tenant_limits limits;
  };
  struct alignas(64) label_counters {
    std::array<std::atomic<uint64_t>, status_count> gateway{};
    std::array<std::atomic<uint64_t>, status_count> requests{};
    std::array<std::atomic<uint64_t>, tenant_reject_count> rejected{};
  };

  static void init(tenant& t, const std::string& name,
                   const tenant_limits& limits);
  static bool listed(const std::vector<std::string>& models,
                     std::string_view model) noexcept;

  // Looks names up without making a std::string of them.
  struct name_hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };

  // One array, in place: the hit path reaches a tenant in one step.
  std::unique_ptr<tenant[]> tenants_;
  size_t size_ = 0;
  std::unique_ptr<label_counters[]> counters_;
  std::vector<std::string> names_; // tenants_' names, side by side
  std::unordered_map<std::string, uint16_t, name_hash, std::equal_to<>> index_;
  std::string other_ = "other";
};

// The gateway's last lookups: consecutive requests mostly name the same
// tenant and model, and a repeat costs one comparison of each name instead
// of a pass over the tenants and the allowlist (measured in situ, those
// passes were most of what tenant accounting adds to a cache hit). One per
// gateway thread; not thread-safe.
class tenant_memo {
public:
  // Starts as the answers for empty names, so that the first lookup of any
  // other name asks the table.
  explicit tenant_memo(const tenant_table& table)
      : table_(&table), id_(table.resolve({})),
        allowed_(table.allows_model(0, {})) {
    // nop
  }

  tenant_table::id resolve(std::string_view name) {
    if (name != name_) {
      id_ = table_->resolve(name);
      name_.assign(name);
    }
    return id_;
  }

  bool allows_model(uint16_t index, std::string_view model) {
    if (index != model_index_ || model != model_) {
      allowed_ = table_->allows_model(index, model);
      model_.assign(model);
      model_index_ = index;
    }
    return allowed_;
  }

private:
  const tenant_table* table_;
  std::string name_;
  tenant_table::id id_;
  std::string model_;
  uint16_t model_index_ = 0;
  bool allowed_;
};

} // namespace shoal
