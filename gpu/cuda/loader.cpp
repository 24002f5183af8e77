// gpu/device/device.hpp and gpu/cuda/loader.hpp on the node's side: finds
// and loads the CUDA plugin (gpu/cuda/plugin_api.hpp) once, and answers "no
// GPU" with the reason when there is none to load. Registers the cuda
// backend in every build.
#include "gpu/cuda/loader.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <mutex>

#include "gpu/cuda/plugin_api.hpp"
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

plugin_state open_plugin() {
  plugin_state st;
#ifndef SHOAL_CUDA_PLUGIN
  st.why = "this node was built without the cuda feature";
#else
  std::string errors;
  std::vector<fs::path> tried;
  for (auto& candidate : plugin_candidates()) {
    std::error_code ec;
    auto path = fs::canonical(candidate, ec);
    if (ec || std::find(tried.begin(), tried.end(), path) != tried.end())
      continue;
    tried.push_back(path);
    // RTLD_LOCAL: the plugin's copies of shoal code stay its own.
    void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      errors += std::string{errors.empty() ? "" : "; "} + ::dlerror();
      continue;
    }
    using entry_fn = const cuda_plugin_api* (*)();
    auto entry = reinterpret_cast<entry_fn>(::dlsym(h, "shoal_cuda_plugin"));
    const cuda_plugin_api* api = entry ? entry() : nullptr;
    if (!api || api->abi_version != cuda_plugin_abi) {
      errors += std::string{errors.empty() ? "" : "; "} + path.string() +
                ": not a shoal CUDA plugin of this version";
      ::dlclose(h);
      continue;
    }
    // Never closed: backends and their vtables live in it.
    st.api = api;
    return st;
  }
  st.why =
      "the CUDA plugin could not be loaded: " +
      (errors.empty() ? std::string{"libshoal_cuda.so not found"} : errors);
#endif
  return st;
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
  if (!p.api)
    return make_error(errc::unavailable, p.why);
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
