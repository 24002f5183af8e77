#include "gpu/backend.hpp"

#include <chrono>
#include <thread>

#include "gpu/cpu_backend.hpp"
#include "gpu/synthetic.hpp"
#include "net/error.hpp"

namespace shoal {

bool backend_may_block(const model_spec& spec) noexcept {
  if (spec.backend == "synthetic") {
    auto& p = spec.synthetic;
    return p.cost_per_batch_us > 0 || p.cost_per_item_us > 0 || p.load_ms > 0;
  }
  return true;
}

caf::expected<backend_ptr> load_backend(const model_spec& spec) {
  if (spec.backend == "synthetic") {
    if (auto err = check_synthetic(spec))
      return err;
    if (spec.synthetic.load_ms > 0)
      std::this_thread::sleep_for(
          std::chrono::milliseconds{spec.synthetic.load_ms});
    return backend_ptr{std::make_unique<synthetic_backend>(spec)};
  }
  if (spec.backend == "cpu") {
    if (spec.device == "gpu")
      return make_error(errc::unavailable,
                        spec.dir + "/model.toml: resources.device: the model "
                                   "requires a GPU and this node runs it on "
                                   "the CPU backend");
    return cpu_backend::load(spec);
  }
  return make_error(errc::unavailable, spec.dir + "/model.toml: backend: '" +
                                           spec.backend +
                                           "' is not built into this node");
}

} // namespace shoal
