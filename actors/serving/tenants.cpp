#include "actors/serving/tenants.hpp"

#include <algorithm>
#include <cmath>

namespace shoal {

std::string_view to_string(tenant_reject r) noexcept {
  switch (r) {
  case tenant_reject::rate:
    return "rate";
  case tenant_reject::inflight:
    return "inflight";
  case tenant_reject::model:
    return "model";
  case tenant_reject::queue:
    return "queue";
  }
  return "rate";
}

tenant_table::tenant_table()
    : tenant_table(std::map<std::string, tenant_limits>{}) {
  // nop
}

tenant_table::tenant_table(const std::map<std::string, tenant_limits>& cfg) {
  auto d = cfg.find("default");
  add("default", d == cfg.end() ? tenant_limits{} : d->second);
  for (auto& [name, limits] : cfg) {
    if (name != "default") {
      add(name, limits);
    }
  }
  counters_ = std::make_unique<label_counters[]>(labels());
}

void tenant_table::add(std::string name, const tenant_limits& limits) {
  auto t = std::make_unique<tenant>();
  t->name = name;
  t->limits = limits;
  if (limits.rate > 0) {
    t->interval_ns = std::max<int64_t>(1, std::llround(1e9 / limits.rate));
    auto burst = limits.burst > 0
                     ? limits.burst
                     : std::max<uint64_t>(
                           1, static_cast<uint64_t>(std::ceil(limits.rate)));
    t->limits.burst = burst;
    t->tolerance_ns = static_cast<int64_t>(burst) * t->interval_ns;
  }
  names_.push_back(name);
  index_.emplace(std::move(name), static_cast<uint16_t>(tenants_.size()));
  tenants_.push_back(std::move(t));
}

tenant_table::id tenant_table::resolve(std::string_view name) const noexcept {
  if (name.empty()) {
    return {0, 0};
  }
  // A linear look at a handful of names beats hashing; a long list hashes.
  if (names_.size() <= 8) {
    for (size_t i = 0; i < names_.size(); ++i) {
      if (names_[i] == name) {
        return {static_cast<uint16_t>(i), static_cast<uint16_t>(i)};
      }
    }
  } else if (auto i = index_.find(name); i != index_.end()) {
    return {i->second, i->second};
  }
  return {0, static_cast<uint16_t>(tenants_.size())};
}

const std::string& tenant_table::name(uint16_t index) const noexcept {
  return tenants_[index]->name;
}

const std::string& tenant_table::label_name(uint16_t label) const noexcept {
  return label < tenants_.size() ? tenants_[label]->name : other_;
}

uint64_t tenant_table::weight(uint16_t index) const noexcept {
  return std::max<uint64_t>(1, tenants_[index]->limits.weight);
}

int64_t tenant_table::take_token(uint16_t index, int64_t now_ns) noexcept {
  auto& t = *tenants_[index];
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

bool tenant_table::acquire_slot(uint16_t index) noexcept {
  auto& t = *tenants_[index];
  auto cap = t.limits.max_inflight;
  auto before = t.inflight.fetch_add(1, std::memory_order_relaxed);
  if (cap > 0 && before >= cap) {
    t.inflight.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void tenant_table::release_slot(uint16_t index) noexcept {
  tenants_[index]->inflight.fetch_sub(1, std::memory_order_relaxed);
}

uint64_t tenant_table::inflight(uint16_t index) const noexcept {
  return tenants_[index]->inflight.load(std::memory_order_relaxed);
}

uint64_t tenant_table::max_inflight(uint16_t index) const noexcept {
  return tenants_[index]->limits.max_inflight;
}

bool tenant_table::allows_model(uint16_t index,
                                std::string_view model) const noexcept {
  auto& models = tenants_[index]->limits.models;
  return models.empty() ||
         std::find(models.begin(), models.end(), model) != models.end();
}

uint8_t tenant_table::cap_priority(uint16_t index,
                                   uint8_t priority) const noexcept {
  auto ceiling = static_cast<uint8_t>(tenants_[index]->limits.max_priority);
  return std::max(priority, ceiling);
}

double tenant_table::rate(uint16_t index) const noexcept {
  return tenants_[index]->limits.rate;
}

uint64_t tenant_table::burst(uint16_t index) const noexcept {
  return tenants_[index]->limits.burst;
}

void tenant_table::count(uint16_t label, status s) noexcept {
  counters_[label].requests[static_cast<size_t>(s)].fetch_add(
      1, std::memory_order_relaxed);
}

void tenant_table::count_on_gateway(uint16_t label, status s) noexcept {
  auto& c = counters_[label].gateway[static_cast<size_t>(s)];
  c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

void tenant_table::rejected(uint16_t label, tenant_reject r) noexcept {
  counters_[label].rejected[static_cast<size_t>(r)].fetch_add(
      1, std::memory_order_relaxed);
}

uint64_t tenant_table::requests(uint16_t label, status s) const noexcept {
  auto& c = counters_[label];
  auto i = static_cast<size_t>(s);
  return c.gateway[i].load(std::memory_order_relaxed) +
         c.requests[i].load(std::memory_order_relaxed);
}

uint64_t tenant_table::rejections(uint16_t label,
                                  tenant_reject r) const noexcept {
  return counters_[label].rejected[static_cast<size_t>(r)].load(
      std::memory_order_relaxed);
}

} // namespace shoal
