// gpu/device/device.hpp and gpu/cuda/loader.hpp on the node's side: asks the
// driver whether there is a GPU and, only then, finds and loads the CUDA
// plugin (gpu/cuda/plugin_api.hpp) once; answers "no GPU" with the reason
// when there is none. Registers the cuda backend in every build.
#include "gpu/cuda/loader.hpp"

#include <mutex>

#include "gpu/cuda/driver_probe.hpp"
#include "gpu/cuda/plugin_api.hpp"
#include "gpu/device/device.hpp"
#include "gpu/graph/graph_options.hpp"
#include "gpu/plugin/plugin_file.hpp"
#include "gpu/plugin/shared_library.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace {

struct plugin_state {
  const cuda_plugin_api* api = nullptr;
  std::string why; // when api is null
};

#ifdef SHOAL_CUDA_PLUGIN
// The first libshoal_cuda.so found that is a plugin of this version.
plugin_state find_plugin() {
  plugin_state st;
  auto lib = open_plugin(
      {"libshoal_cuda.so", "gpu/cuda", SHOAL_CUDA_PLUGIN},
      [&st](const shared_library& lib, const std::string& path) {
        using entry_fn = const cuda_plugin_api* (*)();
        auto entry = lib.function<entry_fn>("shoal_cuda_plugin");
        st.api = entry != nullptr ? entry() : nullptr;
        if (st.api == nullptr || st.api->abi_version != cuda_plugin_abi) {
          st.api = nullptr;
          return make_error(errc::unavailable,
                            path + ": not a shoal CUDA plugin of this version");
        }
        return caf::error{};
      });
  if (!lib) {
    st.api = nullptr;
    st.why = "the CUDA plugin could not be loaded: " + reason_of(lib.error());
    return st;
  }
  // Never closed: backends and their vtables live in it.
  lib->keep();
  return st;
}
#endif

// Asks the driver first: only a machine with a GPU loads the plugin (and
// cuBLAS and cuDNN with it).
plugin_state load_plugin() {
#ifndef SHOAL_CUDA_PLUGIN
  return {nullptr, "this node was built without the cuda feature"};
#else
  auto driver = probe_cuda_driver();
  if (driver.devices == 0) {
    return {nullptr, driver.why};
  }
  return find_plugin();
#endif
}

const plugin_state& plugin() {
  static const plugin_state st = load_plugin();
  return st;
}

// device = "any" without a GPU with room runs the same graph on the CPU.
caf::expected<backend_ptr> load_cuda_graph(const model_spec& spec,
                                           device_choice where,
                                           const load_options& opts) {
  if (!where.on_gpu) {
    return load_with_backend("cpu", spec, where, opts);
  }
  return load_gpu_backend(spec, where.gpu, opts);
}

} // namespace

bool cuda_built() noexcept {
#ifdef SHOAL_CUDA_PLUGIN
  return true;
#else
  return false;
#endif
}

std::vector<gpu_device_info> gpu_devices() {
  auto& p = plugin();
  return p.api ? p.api->devices() : std::vector<gpu_device_info>{};
}

std::string gpu_absent_reason() {
  auto& p = plugin();
  return p.api ? p.api->absent_reason() : p.why;
}

caf::expected<backend_ptr> load_gpu_backend(const model_spec& spec, int device,
                                            const load_options& opts) {
  auto& p = plugin();
  if (!p.api) {
    return make_error(errc::unavailable, p.why);
  }
  return p.api->load(spec, device, opts, device_ledger::instance());
}

backend_info cuda_backend_info() {
  return {
      .name = "cuda",
      .sections = graph_sections(),
      .resource_keys = graph_resource_keys(),
      .devices = {device_kind::gpu, device_kind::any},
      .default_device = device_kind::gpu,
      .parse = parse_graph_options,
      .load = load_cuda_graph,
      .may_block = {},
  };
}

} // namespace shoal
