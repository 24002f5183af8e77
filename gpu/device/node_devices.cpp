#include "gpu/device/node_devices.hpp"

#include <map>
#include <tuple>

#include "config/human_bytes.hpp"

namespace shoal {

std::vector<node_device>
describe_devices(const std::vector<gpu_device_info>& gpus,
                 const std::vector<device_ledger::entry>& replicas) {
  std::vector<node_device> out;
  out.reserve(gpus.size());
  for (auto& g : gpus) {
    node_device d;
    d.name = g.name;
    d.product = g.product;
    d.total_bytes = g.total_bytes;
    d.used_bytes = g.used_bytes;
    std::map<std::string, uint64_t> per_model;
    for (auto& r : replicas) {
      if (r.device == g.index) {
        ++per_model[r.model];
      }
    }
    d.replicas.assign(per_model.begin(), per_model.end());
    out.push_back(std::move(d));
  }
  return out;
}

std::vector<device_sample>
sample_devices(const std::vector<gpu_device_info>& gpus,
               const std::vector<device_ledger::entry>& replicas) {
  std::vector<device_sample> out;
  out.reserve(gpus.size());
  for (auto& g : gpus) {
    device_sample s;
    s.name = g.name;
    s.total_bytes = g.total_bytes;
    s.used_bytes = g.used_bytes;
    for (auto& r : replicas) {
      if (r.device != g.index) {
        continue;
      }
      s.held_bytes += r.bytes;
      ++s.replicas;
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::string devices_text(const std::vector<gpu_device_info>& gpus,
                         const std::vector<device_ledger::entry>& replicas,
                         const std::string& absent_reason) {
  if (gpus.empty()) {
    return "no GPU (" + absent_reason + ")\n";
  }
  std::string out;
  for (auto& g : gpus) {
    out += g.name + " " + g.product + ": " + human_bytes(g.used_bytes) +
           " used of " + human_bytes(g.total_bytes);
    std::string list;
    for (auto& r : replicas) {
      if (r.device != g.index) {
        continue;
      }
      list += list.empty() ? "; " : ", ";
      list += r.model + " v" + std::to_string(r.version) + " " +
              human_bytes(r.bytes);
    }
    out += list.empty() ? "; no replicas" : list;
    out += '\n';
  }
  return out;
}

bool devices_changed(const std::vector<node_device>& before,
                     const std::vector<node_device>& now, uint64_t slack) {
  if (before.size() != now.size()) {
    return true;
  }
  for (size_t i = 0; i < now.size(); ++i) {
    auto& a = before[i];
    auto& b = now[i];
    if (std::tie(a.name, a.product, a.total_bytes, a.replicas) !=
        std::tie(b.name, b.product, b.total_bytes, b.replicas)) {
      return true;
    }
    auto moved = a.used_bytes > b.used_bytes ? a.used_bytes - b.used_bytes
                                             : b.used_bytes - a.used_bytes;
    if (moved > slack) {
      return true;
    }
  }
  return false;
}

std::vector<node_device> local_devices() {
  auto gpus = gpu_devices();
  if (gpus.empty()) {
    return {};
  }
  return describe_devices(gpus, device_ledger::instance().replicas());
}

std::vector<device_sample> local_device_samples() {
  auto gpus = gpu_devices();
  if (gpus.empty()) {
    return {};
  }
  return sample_devices(gpus, device_ledger::instance().replicas());
}

std::string local_devices_text() {
  auto gpus = gpu_devices();
  if (gpus.empty()) {
    return devices_text(gpus, {}, gpu_absent_reason());
  }
  return devices_text(gpus, device_ledger::instance().replicas(), {});
}

} // namespace shoal
