// The GPUs as the CUDA runtime sees them, inside the plugin; the node reaches
// them through gpu/device.hpp.
#pragma once

#include <string>
#include <vector>

#include "gpu/device/device.hpp"

namespace shoal::cuda {

// Every device, with its memory now (one cudaMemGetInfo each).
std::vector<gpu_device_info> devices();

// Why devices() is empty; empty when it is not.
std::string absent_reason();

} // namespace shoal::cuda
