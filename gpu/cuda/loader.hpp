// The entry into the CUDA backend (gpu/cuda), declared where every build
// sees it: builds without the `cuda` feature link a version that refuses.
#pragma once

#include "gpu/backend.hpp"
#include "gpu/registry.hpp"

namespace shoal {

// Loads the model's layer graph onto CUDA device `device`. Errors:
// errc::resource_exhausted when the device has no room for it (nothing is
// left allocated), errc::unavailable for anything else, naming the file,
// field or CUDA call.
caf::expected<backend_ptr> load_gpu_backend(const model_spec& spec, int device,
                                            const load_options& opts);

// backend = "cuda": the layer graph of the cpu backend ([weights],
// [[layers]], resources.allow_tf32), on a GPU by default. Registered in
// every build, so that its models parse on CPU-only nodes and are refused
// at load with the reason (or, with device = "any", run on the CPU).
backend_info cuda_backend_info();

} // namespace shoal
