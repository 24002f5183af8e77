// Whether this machine can show the process a GPU, asked of the NVIDIA
// driver directly, before the CUDA plugin is loaded. The plugin brings
// cuBLAS and cuDNN, whose loading costs a node about 150 MiB of memory and
// a good part of a second; a node without a GPU should pay neither.
#pragma once

#include <string>

namespace shoal {

struct driver_answer {
  int devices = 0; // CUDA devices the driver reports
  std::string why; // when devices is 0: "no NVIDIA device (...)", ...
};

// Looks for the driver's device files (or WSL's), then loads only the
// driver library (libcuda.so.1) and asks it cuInit and cuDeviceGetCount.
// The library is unloaded again only when it could not be used at all.
driver_answer probe_cuda_driver();

} // namespace shoal
