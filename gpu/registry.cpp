#include "gpu/registry.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

#include <spdlog/spdlog.h>

#include "gpu/cpu/cpu_backend.hpp"
#include "gpu/cuda/loader.hpp"
#include "gpu/device/device.hpp"
#include "gpu/device/device_ledger.hpp"
#include "gpu/model/manifest.hpp"
#include "gpu/synthetic/synthetic.hpp"
#include "gpu/torch/torch_backend.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace {

// The backends built into every node, one line each (gpu/registry.hpp says
// why this is a list).
std::vector<backend_info> builtin_backends() {
  std::vector<backend_info> out;
  out.push_back(synthetic_backend_info());
  out.push_back(cpu_backend_info());
  out.push_back(cuda_backend_info());
  out.push_back(torch_backend_info());
  return out;
}

template <class List>
bool contains(const List& list, std::string_view key) {
  return std::find(list.begin(), list.end(), key) != list.end();
}

caf::error invalid(const std::string& name, const std::string& what) {
  return make_error(errc::config_invalid, "backend '" + name + "': " + what);
}

// What register_backend refuses, apart from a name already taken.
caf::error check_info(const backend_info& info) {
  if (info.name.empty()) {
    return make_error(errc::config_invalid, "a backend without a name");
  }
  if (!info.load) {
    return invalid(info.name, "no load function");
  }
  if (!info.accepts(info.default_device)) {
    return invalid(info.name, "its default device is not one of its devices");
  }
  if (!info.parse && (!info.sections.empty() || !info.resource_keys.empty())) {
    return invalid(info.name, "it reads manifest keys but has no parser");
  }
  for (auto& key : info.sections) {
    if (contains(manifest_common_keys(), key)) {
      return invalid(info.name, "'" + key + "' is a common manifest key");
    }
  }
  for (auto& key : info.resource_keys) {
    if (contains(manifest_common_resource_keys(), key)) {
      return invalid(info.name, "resources." + key + " is a common key");
    }
  }
  return {};
}

[[noreturn]] void abort_on(const caf::error& err) {
  std::fprintf(stderr, "shoal: cannot register a backend: %s\n",
               reason_of(err).c_str());
  std::abort();
}

// Every backend by name. Backends are added while the program starts and
// never removed, so a found backend_info lives as long as the process.
class registry {
public:
  static registry& instance() {
    static registry reg;
    return reg;
  }

  caf::error add(backend_info info) {
    if (auto err = check_info(info)) {
      return err;
    }
    std::lock_guard<std::mutex> guard{mtx_};
    auto name = info.name;
    if (!backends_.emplace(name, std::move(info)).second) {
      return invalid(name, "registered twice");
    }
    return {};
  }

  const backend_info* find(std::string_view name) const {
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = backends_.find(name);
    return i == backends_.end() ? nullptr : &i->second;
  }

  std::vector<std::string> names() const {
    std::lock_guard<std::mutex> guard{mtx_};
    std::vector<std::string> out;
    for (auto& [name, info] : backends_) {
      out.push_back(name);
    }
    return out;
  }

private:
  registry() {
    for (auto& info : builtin_backends()) {
      if (auto err = add(std::move(info))) {
        abort_on(err);
      }
    }
  }

  mutable std::mutex mtx_;
  std::map<std::string, backend_info, std::less<>> backends_;
};

// How long a load waits for a retired replica to free its device memory.
constexpr auto retire_wait = std::chrono::seconds{10};

bool out_of_memory(const caf::error& err) {
  return err.category() == caf::atom("shoal") &&
         static_cast<errc>(err.code()) == errc::resource_exhausted;
}

// Tries the GPUs, most free memory first; when every one is full, retires
// idle replicas one at a time (least recently used first) and tries again.
caf::expected<backend_ptr> load_on_gpu(const backend_info& info,
                                       const model_spec& spec,
                                       const load_options& opts,
                                       std::vector<gpu_device_info> devices) {
  std::sort(devices.begin(), devices.end(),
            [](auto& a, auto& b) { return a.free_bytes() > b.free_bytes(); });
  std::string why;
  for (auto& d : devices) {
    auto be = info.load(spec, device_choice::gpu_ordinal(d.index), opts);
    if (be || !out_of_memory(be.error())) {
      return be;
    }
    why += (why.empty() ? "" : "; ") + reason_of(be.error());
  }
  for (auto& d : devices) {
    for (;;) {
      auto retired =
          device_ledger::instance().retire_idle(d.index, 0, retire_wait);
      if (retired.empty()) {
        break;
      }
      spdlog::info("{} v{}: retired idle replica {} on {} to make room",
                   spec.name, spec.version, retired, d.name);
      auto be = info.load(spec, device_choice::gpu_ordinal(d.index), opts);
      if (be || !out_of_memory(be.error())) {
        return be;
      }
    }
  }
  return make_error(errc::resource_exhausted,
                    "no GPU has room for " + spec.name + " v" +
                        std::to_string(spec.version) +
                        " and no idle replica could be retired: " + why);
}

// resources.device = "gpu" or "any" when the node has GPUs to offer.
caf::expected<backend_ptr> load_on_devices(const backend_info& info,
                                           const model_spec& spec,
                                           const load_options& opts,
                                           device_kind kind) {
  auto devices = gpu_devices();
  if (devices.empty()) {
    if (kind == device_kind::gpu) {
      return make_error(errc::unavailable,
                        spec.dir +
                            "/model.toml: resources.device = \"gpu\": "
                            "this node has no GPU (" +
                            gpu_absent_reason() + ")");
    }
    return info.load(spec, device_choice::cpu(), opts);
  }
  auto be = load_on_gpu(info, spec, opts, std::move(devices));
  if (be || kind == device_kind::gpu) {
    return be;
  }
  // device = "any": a model that does not fit on a GPU still serves.
  spdlog::warn("{} v{}: {}; loading it on the CPU", spec.name, spec.version,
               reason_of(be.error()));
  return info.load(spec, device_choice::cpu(), opts);
}

} // namespace

std::string_view to_string(device_kind kind) noexcept {
  switch (kind) {
  case device_kind::cpu:
    return "cpu";
  case device_kind::gpu:
    return "gpu";
  case device_kind::any:
    return "any";
  }
  return "cpu";
}

std::optional<device_kind> parse_device_kind(std::string_view text) noexcept {
  for (auto kind : {device_kind::cpu, device_kind::gpu, device_kind::any}) {
    if (text == to_string(kind)) {
      return kind;
    }
  }
  return std::nullopt;
}

bool backend_info::accepts(device_kind kind) const noexcept {
  return std::find(devices.begin(), devices.end(), kind) != devices.end();
}

const backend_info* find_backend(std::string_view name) {
  return registry::instance().find(name);
}

std::vector<std::string> backend_names() {
  return registry::instance().names();
}

caf::error register_backend(backend_info info) {
  return registry::instance().add(std::move(info));
}

void configure_backends(const node_config& cfg) {
  for (auto& name : backend_names()) {
    auto* info = find_backend(name);
    if (info->configure) {
      info->configure(cfg);
    }
  }
}

bool register_backend_or_abort(backend_info info) {
  if (auto err = register_backend(std::move(info))) {
    abort_on(err);
  }
  return true;
}

caf::expected<backend_ptr> load_with_backend(std::string_view name,
                                             const model_spec& spec,
                                             device_choice where,
                                             const load_options& opts) {
  auto* info = find_backend(name);
  if (info == nullptr) {
    return make_error(errc::unavailable, "backend '" + std::string{name} +
                                             "' is not built into this node");
  }
  return info->load(spec, where, opts);
}

bool backend_may_block(const model_spec& spec) noexcept {
  auto* info = find_backend(spec.backend);
  return info == nullptr || !info->may_block || info->may_block(spec);
}

caf::expected<backend_ptr> load_backend(const model_spec& spec,
                                        const load_options& opts) {
  auto* info = find_backend(spec.backend);
  if (info == nullptr) {
    return make_error(errc::unavailable, spec.dir + "/model.toml: backend: '" +
                                             spec.backend +
                                             "' is not built into this node");
  }
  auto kind = parse_device_kind(spec.device);
  if (!kind || !info->accepts(*kind)) {
    return make_error(errc::unavailable,
                      spec.dir + "/model.toml: resources.device: backend = \"" +
                          spec.backend + "\" does not run on device = \"" +
                          spec.device + "\"");
  }
  if (*kind == device_kind::cpu) {
    return info->load(spec, device_choice::cpu(), opts);
  }
  return load_on_devices(*info, spec, opts, *kind);
}

} // namespace shoal
