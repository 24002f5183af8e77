// The plugin's device queries (gpu/cuda_plugin.hpp) on the CUDA runtime.
#include "gpu/cuda/device.hpp"

#include <cuda_runtime_api.h>

namespace shoal::cuda {

namespace {

// cudaGetDeviceCount, with the reason when it fails: a machine without a
// driver or a device reports an error, not zero.
int device_count(std::string* why) {
  int n = 0;
  auto rc = cudaGetDeviceCount(&n);
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    if (why) {
      *why = std::string{"no usable CUDA device: "} + cudaGetErrorString(rc);
    }
    return 0;
  }
  if (n == 0 && why) {
    *why = "no CUDA device";
  }
  return n;
}

struct inventory {
  std::vector<std::string> products;
  std::string why;
};

// The devices do not change while the process runs; properties cost a
// driver round trip, so they are read once.
const inventory& devices_once() {
  static const inventory inv = [] {
    inventory r;
    int n = device_count(&r.why);
    for (int i = 0; i < n; ++i) {
      cudaDeviceProp prop{};
      r.products.push_back(cudaGetDeviceProperties(&prop, i) == cudaSuccess
                               ? std::string{prop.name}
                               : std::string{});
    }
    return r;
  }();
  return inv;
}

} // namespace

std::vector<gpu_device_info> devices() {
  std::vector<gpu_device_info> out;
  auto& inv = devices_once();
  for (int i = 0; i < static_cast<int>(inv.products.size()); ++i) {
    gpu_device_info d;
    d.index = i;
    d.name = "gpu:" + std::to_string(i);
    d.product = inv.products[i];
    // cudaMemGetInfo works on the calling thread's current device; restore
    // it so that a scrape never moves an executor thread's device.
    int current = 0;
    cudaGetDevice(&current);
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(i) == cudaSuccess &&
        cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
      d.total_bytes = total_b;
      d.used_bytes = total_b - free_b;
    } else {
      (void)cudaGetLastError();
    }
    cudaSetDevice(current);
    out.push_back(std::move(d));
  }
  return out;
}

std::string absent_reason() {
  return devices_once().why;
}

} // namespace shoal::cuda
