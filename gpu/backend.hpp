// The backend interface: a loaded model that turns a batch of input tensors
// into output tensors. Executors own one backend instance per replica and
// call it from one thread at a time.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "net/message.hpp"
#include "runtime/model_spec.hpp"

namespace shoal {

class backend {
public:
  virtual ~backend() = default;

  // Runs one batch. `inputs` follow the model's declared inputs, already
  // concatenated along the batch axis (axis 0 holds the sum of the rows of
  // every request in the batch). Returns the declared outputs with the same
  // number of rows, in the declared order.
  virtual caf::expected<std::vector<tensor>>
  run(const std::vector<tensor>& inputs, uint64_t rows) = 0;

  // Bytes of memory the loaded model holds (weights, workspaces).
  virtual uint64_t memory_bytes() const noexcept = 0;

  // "cpu", "gpu:0", ... for status and metrics.
  virtual std::string device() const = 0;
};

using backend_ptr = std::unique_ptr<backend>;

// Whether loading or running this model can block its thread (sleeps, long
// kernels, device syncs). Executors of models that cannot block run on the
// actor scheduler, saving two thread hops per request; the others get a
// thread of their own so that they never stall the router.
bool backend_may_block(const model_spec& spec) noexcept;

// Loads the model's backend named in spec.backend. Fails with
// errc::unavailable and a reason naming the file or field.
caf::expected<backend_ptr> load_backend(const model_spec& spec);

} // namespace shoal
