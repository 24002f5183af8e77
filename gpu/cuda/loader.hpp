// The entry into the CUDA backend (gpu/cuda), declared where every build
// sees it: builds without the `cuda` feature link a version that refuses.
#pragma once

#include "gpu/backend.hpp"

namespace shoal {

// Loads the model's layer graph onto CUDA device `device`. Errors:
// errc::resource_exhausted when the device has no room for it (nothing is
// left allocated), errc::unavailable for anything else, naming the file,
// field or CUDA call.
caf::expected<backend_ptr> load_gpu_backend(const model_spec& spec, int device,
                                            const load_options& opts);

} // namespace shoal
