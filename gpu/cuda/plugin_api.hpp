// The CUDA backend is a plugin (libshoal_cuda.so, built with the `cuda`
// feature) that the node loads with dlopen when the driver first reports a
// GPU (gpu/cuda/driver_probe.hpp).
// Two reasons: one shoald binary then runs on CPU-only machines that have
// no CUDA libraries at all; and cuBLAS and cuDNN declare about 110 KiB of
// thread-local storage, which, linked into the executable, every thread's
// stack must hold, more than a small (100 KiB) thread stack has. Loaded
// later, their TLS is allocated on demand instead.
//
// Both sides are built from this tree by the same compiler, so the entry
// point passes C++ types; abi_version guards against a stale plugin.
#pragma once

#include <string>
#include <vector>

#include "gpu/backend.hpp"
#include "gpu/device/device.hpp"
#include "gpu/device/device_ledger.hpp"

namespace shoal {

constexpr int cuda_plugin_abi = 1;

struct cuda_plugin_api {
  int abi_version = cuda_plugin_abi;
  std::vector<gpu_device_info> (*devices)();
  std::string (*absent_reason)();
  // The node's ledger is passed in: the plugin has its own copy of the
  // ledger's code but must record into the node's one instance.
  caf::expected<backend_ptr> (*load)(const model_spec& spec, int device,
                                     const load_options& opts,
                                     device_ledger& ledger);
};

} // namespace shoal

// The plugin's one exported symbol.
extern "C" const shoal::cuda_plugin_api* shoal_cuda_plugin();
