#include "gpu/backend.hpp"

#include <algorithm>
#include <chrono>
#include <thread>

#include <spdlog/spdlog.h>

#include "gpu/cpu/cpu_backend.hpp"
#include "gpu/device/device.hpp"
#include "gpu/device/device_ledger.hpp"
#include "gpu/cuda/loader.hpp"
#include "gpu/synthetic/synthetic.hpp"
#include "net/wire/error.hpp"

namespace shoal {

bool backend_may_block(const model_spec& spec) noexcept {
  if (spec.backend == "synthetic") {
    auto& p = spec.synthetic;
    return p.cost_per_batch_us > 0 || p.cost_per_item_us > 0 || p.load_ms > 0;
  }
  return true;
}

namespace {

// How long a load waits for a retired replica to free its device memory.
constexpr auto retire_wait = std::chrono::seconds{10};

bool out_of_memory(const caf::error& err) {
  return err.category() == caf::atom("shoal") &&
         static_cast<errc>(err.code()) == errc::resource_exhausted;
}

// Tries the GPUs, most free memory first; when every one is full, retires
// idle replicas one at a time (least recently used first) and tries again.
caf::expected<backend_ptr> load_on_gpu(const model_spec& spec,
                                       const load_options& opts,
                                       std::vector<gpu_device_info> devices) {
  std::sort(devices.begin(), devices.end(),
            [](auto& a, auto& b) { return a.free_bytes() > b.free_bytes(); });
  std::string why;
  for (auto& d : devices) {
    auto be = load_gpu_backend(spec, d.index, opts);
    if (be || !out_of_memory(be.error()))
      return be;
    why += (why.empty() ? "" : "; ") + reason_of(be.error());
  }
  for (auto& d : devices) {
    for (;;) {
      auto retired =
          device_ledger::instance().retire_idle(d.index, 0, retire_wait);
      if (retired.empty())
        break;
      spdlog::info("{} v{}: retired idle replica {} on {} to make room",
                   spec.name, spec.version, retired, d.name);
      auto be = load_gpu_backend(spec, d.index, opts);
      if (be || !out_of_memory(be.error()))
        return be;
    }
  }
  return make_error(errc::resource_exhausted,
                    "no GPU has room for " + spec.name + " v" +
                        std::to_string(spec.version) +
                        " and no idle replica could be retired: " + why);
}

} // namespace

caf::expected<backend_ptr> load_backend(const model_spec& spec,
                                        const load_options& opts) {
  if (spec.backend == "synthetic") {
    if (auto err = check_synthetic(spec))
      return err;
    if (spec.synthetic.load_ms > 0)
      std::this_thread::sleep_for(
          std::chrono::milliseconds{spec.synthetic.load_ms});
    return backend_ptr{std::make_unique<synthetic_backend>(spec)};
  }
  if (spec.backend != "cpu" && spec.backend != "cuda")
    return make_error(errc::unavailable, spec.dir + "/model.toml: backend: '" +
                                             spec.backend +
                                             "' is not built into this node");
  if (spec.device == "cpu")
    return cpu_backend::load(spec);
  auto devices = gpu_devices();
  if (devices.empty()) {
    if (spec.device == "gpu")
      return make_error(errc::unavailable,
                        spec.dir +
                            "/model.toml: resources.device = \"gpu\": "
                            "this node has no GPU (" +
                            gpu_absent_reason() + ")");
    return cpu_backend::load(spec);
  }
  auto be = load_on_gpu(spec, opts, std::move(devices));
  if (be || spec.device == "gpu")
    return be;
  // device = "any": a model that does not fit on a GPU still serves.
  spdlog::warn("{} v{}: {}; loading it on the CPU", spec.name, spec.version,
               reason_of(be.error()));
  return cpu_backend::load(spec);
}

} // namespace shoal
