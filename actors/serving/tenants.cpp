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
  // `default` first: index 0 is every unconfigured tenant's bucket.
  std::vector<std::pair<std::string, tenant_limits>> all;
  auto d = cfg.find("default");
  all.emplace_back("default", d == cfg.end() ? tenant_limits{} : d->second);
  for (auto& [name, limits] : cfg) {
    if (name != "default") {
      all.emplace_back(name, limits);
    }
  }
  size_ = all.size();
  tenants_ = std::make_unique<tenant[]>(size_);
  for (size_t i = 0; i < size_; ++i) {
    init(tenants_[i], all[i].first, all[i].second);
    names_.push_back(all[i].first);
    index_.emplace(all[i].first, static_cast<uint16_t>(i));
  }
  counters_ = std::make_unique<label_counters[]>(labels());
}

void tenant_table::init(tenant& t, const std::string& name,
                        const tenant_limits& limits) {
  t.name = name;
  t.limits = limits;
  t.max_priority =
      static_cast<uint8_t>(std::min<uint64_t>(limits.max_priority, UINT8_MAX));
  if (limits.rate > 0) {
    t.interval_ns = std::max<int64_t>(1, std::llround(1e9 / limits.rate));
    auto burst = limits.burst > 0
                     ? limits.burst
                     : std::max<uint64_t>(
                           1, static_cast<uint64_t>(std::ceil(limits.rate)));
    t.limits.burst = burst;
    t.tolerance_ns = static_cast<int64_t>(burst) * t.interval_ns;
  }
}

bool tenant_table::listed(const std::vector<std::string>& models,
                          std::string_view model) noexcept {
  return std::find(models.begin(), models.end(), model) != models.end();
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
  return {0, static_cast<uint16_t>(size_)};
}

const std::string& tenant_table::name(uint16_t index) const noexcept {
  return tenants_[index].name;
}

const std::string& tenant_table::label_name(uint16_t label) const noexcept {
  return label < size_ ? tenants_[label].name : other_;
}

uint64_t tenant_table::weight(uint16_t index) const noexcept {
  return std::max<uint64_t>(1, tenants_[index].limits.weight);
}

bool tenant_table::acquire_slot(uint16_t index) noexcept {
  auto& t = tenants_[index];
  auto cap = t.limits.max_inflight;
  auto before = t.inflight.fetch_add(1, std::memory_order_relaxed);
  if (cap > 0 && before >= cap) {
    t.inflight.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void tenant_table::release_slot(uint16_t index) noexcept {
  tenants_[index].inflight.fetch_sub(1, std::memory_order_relaxed);
}

uint64_t tenant_table::inflight(uint16_t index) const noexcept {
  return tenants_[index].inflight.load(std::memory_order_relaxed);
}

uint64_t tenant_table::max_inflight(uint16_t index) const noexcept {
  return tenants_[index].limits.max_inflight;
}

double tenant_table::rate(uint16_t index) const noexcept {
  return tenants_[index].limits.rate;
}

uint64_t tenant_table::burst(uint16_t index) const noexcept {
  return tenants_[index].limits.burst;
}

void tenant_table::count(uint16_t label, status s) noexcept {
  counters_[label].requests[static_cast<size_t>(s)].fetch_add(
      1, std::memory_order_relaxed);
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
