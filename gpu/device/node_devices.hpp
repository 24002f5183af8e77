// This node's GPUs as status, /readyz, metrics and the worker's reports to
// its head show them: the driver's view (gpu/device.hpp) joined with the
// replicas that hold memory there (gpu/device_ledger.hpp). The joins are
// pure functions of that data so that they are tested without a GPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gpu/device/device.hpp"
#include "gpu/device/device_ledger.hpp"
#include "net/wire/message.hpp"

namespace shoal {

// One GPU with this node's share of it, for the metrics.
struct device_sample {
  std::string name; // "gpu:0"
  uint64_t total_bytes = 0;
  uint64_t used_bytes = 0; // every process
  uint64_t held_bytes = 0; // this node's replicas
  uint64_t replicas = 0;   // this node's replicas
};

// Each GPU with the replicas on it, per model name (sorted). Replicas on an
// ordinal that is not in `gpus` are left out.
std::vector<node_device>
describe_devices(const std::vector<gpu_device_info>& gpus,
                 const std::vector<device_ledger::entry>& replicas);

// Each GPU with the bytes and number of replicas this node holds there.
std::vector<device_sample>
sample_devices(const std::vector<gpu_device_info>& gpus,
               const std::vector<device_ledger::entry>& replicas);

// The /readyz lines about devices: per GPU its product, memory used of
// total and the replicas on it ("mlp v1 1.2 GiB"); "no GPU (<why>)" when
// there is none. Each line ends with '\n'.
std::string devices_text(const std::vector<gpu_device_info>& gpus,
                         const std::vector<device_ledger::entry>& replicas,
                         const std::string& absent_reason);

// Whether a worker should tell its head: another device set, product,
// total or replica count, or used memory that moved by more than `slack`
// bytes on some device (so that allocator noise is not a message a second).
bool devices_changed(const std::vector<node_device>& before,
                     const std::vector<node_device>& now, uint64_t slack);

// The same, read from this process now (gpu_devices() and the ledger).
std::vector<node_device> local_devices();
std::vector<device_sample> local_device_samples();
std::string local_devices_text();

} // namespace shoal
