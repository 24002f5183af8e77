// The plugin's entry point (gpu/cuda_plugin.hpp).
#include "gpu/cuda/cuda_backend.hpp"
#include "gpu/cuda/device.hpp"
#include "gpu/cuda/plugin_api.hpp"

extern "C" __attribute__((visibility("default"))) const shoal::cuda_plugin_api*
shoal_cuda_plugin() {
  static const shoal::cuda_plugin_api api{
      shoal::cuda_plugin_abi, &shoal::cuda::devices,
      &shoal::cuda::absent_reason, &shoal::cuda::cuda_backend::load};
  return &api;
}
