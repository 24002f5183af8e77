// gpu/device/device.hpp and gpu/cuda/loader.hpp on the node's side: asks the
// driver whether there is a GPU and, only then, finds and loads the CUDA
// plugin (gpu/cuda/plugin_api.hpp) once; answers "no GPU" with the reason
// when there is none. Registers the cuda backend in every build.
#include "gpu/cuda/loader.hpp"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <mutex>

#include "gpu/cuda/driver_probe.hpp"
#include "gpu/cuda/plugin_api.hpp"
#include "gpu/cuda/shared_library.hpp"
#include "gpu/device/device.hpp"
#include "gpu/graph/graph_options.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace {

namespace fs = std::filesystem;

struct plugin_state {
  const cuda_plugin_api* api = nullptr;
  std::string why; // when api is null
};

#ifdef SHOAL_CUDA_PLUGIN
// Where the plugin may be: beside the executable as built (build/shoald,
// build/tests/x, build/bench/x) or installed (bin/ and lib/shoal/), then
// the build tree's absolute path.
std::vector<fs::path> plugin_candidates() {
  std::vector<fs::path> out;
  char buf[PATH_MAX];
  auto n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n > 0) {
    auto dir = fs::path{std::string{buf, static_cast<size_t>(n)}}.parent_path();
    out.push_back(dir / "gpu/cuda/libshoal_cuda.so");
    out.push_back(dir / "../gpu/cuda/libshoal_cuda.so");
    out.push_back(dir / "../lib/shoal/libshoal_cuda.so");
  }
  out.emplace_back(SHOAL_CUDA_PLUGIN);
  return out;
}
#endif

#ifdef SHOAL_CUDA_PLUGIN
// The plugin at `path`, or why that file is not one.
caf::expected<const cuda_plugin_api*> open_plugin_at(const fs::path& path) {
  auto lib = shared_library::open(path.string());
  if (!lib) {
    return lib.error();
  }
  using entry_fn = const cuda_plugin_api* (*)();
  auto entry = lib->function<entry_fn>("shoal_cuda_plugin");
  const cuda_plugin_api* api = entry != nullptr ? entry() : nullptr;
  if (api == nullptr || api->abi_version != cuda_plugin_abi) {
    return make_error(errc::unavailable,
                      path.string() +
                          ": not a shoal CUDA plugin of this version");
  }
  // Never closed: backends and their vtables live in it.
  lib->keep();
  return api;
}

// The first candidate that is a plugin of this version.
plugin_state find_plugin() {
  plugin_state st;
  std::string errors;
  std::vector<fs::path> tried;
  for (auto& candidate : plugin_candidates()) {
    std::error_code ec;
    auto path = fs::canonical(candidate, ec);
    if (ec || std::find(tried.begin(), tried.end(), path) != tried.end()) {
      continue;
    }
    tried.push_back(path);
    auto api = open_plugin_at(path);
    if (api) {
      st.api = *api;
      return st;
    }
    errors += (errors.empty() ? "" : "; ") + reason_of(api.error());
  }
  st.why =
      "the CUDA plugin could not be loaded: " +
      (errors.empty() ? std::string{"libshoal_cuda.so not found"} : errors);
  return st;
}
#endif

// Asks the driver first: only a machine with a GPU loads the plugin (and
// cuBLAS and cuDNN with it).
plugin_state open_plugin() {
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
  static const plugin_state st = open_plugin();
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
