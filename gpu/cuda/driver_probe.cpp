#include "gpu/cuda/driver_probe.hpp"

#include <unistd.h>

#include <filesystem>
#include <string_view>

#include "gpu/plugin/shared_library.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace {

namespace fs = std::filesystem;

// The driver API's few entry points, without its header: CUresult is an
// int, 0 on success.
using cu_init_fn = int (*)(unsigned int);
using cu_device_get_count_fn = int (*)(int*);
using cu_get_error_string_fn = int (*)(int, const char**);

bool exists(const char* path) {
  return ::access(path, F_OK) == 0;
}

// /dev/nvidia0, /dev/nvidia1, ...: a container given one GPU may see only
// that GPU's number.
bool any_nvidia_device() {
  std::error_code ec;
  for (auto& entry : fs::directory_iterator{"/dev", ec}) {
    auto name = entry.path().filename().string();
    std::string_view rest{name};
    if (rest.substr(0, 6) != "nvidia" || rest.size() == 6) {
      continue;
    }
    rest.remove_prefix(6);
    if (rest.find_first_not_of("0123456789") == std::string_view::npos) {
      return true;
    }
  }
  return false;
}

// Why the driver's device files say there is no GPU; empty when they
// might (or on WSL, where /dev/dxg stands for them).
std::string device_files_absent() {
  if (exists("/dev/dxg")) {
    return {};
  }
  if (!exists("/dev/nvidiactl")) {
    return "no NVIDIA device (/dev/nvidiactl absent)";
  }
  if (!any_nvidia_device()) {
    return "no NVIDIA device (/dev/nvidia0 absent)";
  }
  return {};
}

std::string cu_error(const shared_library& lib, const char* call, int rc) {
  const char* text = nullptr;
  auto describe = lib.function<cu_get_error_string_fn>("cuGetErrorString");
  if (describe == nullptr || describe(rc, &text) != 0 || text == nullptr) {
    return std::string{call} + " failed with error " + std::to_string(rc);
  }
  return std::string{call} + ": " + text;
}

} // namespace

driver_answer probe_cuda_driver() {
  driver_answer out;
  if (out.why = device_files_absent(); !out.why.empty()) {
    return out;
  }
  auto lib = shared_library::open("libcuda.so.1");
  if (!lib) {
    out.why = "no NVIDIA driver (" + reason_of(lib.error()) + ")";
    return out;
  }
  auto init = lib->function<cu_init_fn>("cuInit");
  auto count = lib->function<cu_device_get_count_fn>("cuDeviceGetCount");
  if (init == nullptr || count == nullptr) {
    out.why = "no usable NVIDIA driver (libcuda.so.1 lacks cuInit or "
              "cuDeviceGetCount)";
    return out;
  }
  // Once cuInit ran, the driver may hold threads and exit handlers of its
  // own: the library is never unloaded after that.
  lib->keep();
  if (auto rc = init(0); rc != 0) {
    out.why = "no usable CUDA device (" + cu_error(*lib, "cuInit", rc) + ")";
    return out;
  }
  if (auto rc = count(&out.devices); rc != 0 || out.devices <= 0) {
    out.devices = 0;
    out.why = rc != 0 ? "no usable CUDA device (" +
                            cu_error(*lib, "cuDeviceGetCount", rc) + ")"
                      : "no CUDA device";
    return out;
  }
  return out;
}

} // namespace shoal
