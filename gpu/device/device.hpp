// The node's GPUs, as the CUDA driver reports them. Always built: without
// the `cuda` feature (or without a GPU) the list is empty and
// gpu_absent_reason() says why, so callers never need #ifdefs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shoal {

struct gpu_device_info {
  int index = 0;       // CUDA device ordinal
  std::string name;    // "gpu:0": the name in status, metrics and logs
  std::string product; // "NVIDIA H100 80GB HBM3"
  uint64_t total_bytes = 0;
  // Used by every process on the device (total minus the driver's free),
  // which is what placement must respect, not only this node's share.
  uint64_t used_bytes = 0;
  uint64_t free_bytes() const noexcept {
    return total_bytes > used_bytes ? total_bytes - used_bytes : 0;
  }
};

// Whether this build has the CUDA backend (the meson `cuda` feature).
bool cuda_built() noexcept;

// The GPUs this process can use, with their memory now. Thread-safe; costs
// one cudaMemGetInfo per device, cheap enough for every scrape and status.
// Empty without CUDA or without a usable device.
std::vector<gpu_device_info> gpu_devices();

// Why gpu_devices() is empty ("this node was built without the cuda
// feature", "no NVIDIA device (/dev/nvidiactl absent)", "no usable CUDA
// device (cuInit: ...)"); empty when there are GPUs.
std::string gpu_absent_reason();

} // namespace shoal
