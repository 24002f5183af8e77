// The backend interface: a loaded model that turns a batch of input tensors
// into output tensors. Executors own one backend instance per replica and
// call it from one thread at a time.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "gpu/model/model_spec.hpp"
#include "net/wire/message.hpp"

namespace shoal {

// Where the time of a backend's batches went, summed since load. Backends
// that cannot tell kernels from the rest (cpu) count everything as kernel.
struct backend_profile {
  uint64_t batches = 0;
  double kernel_s = 0;   // on the device: layers only
  double copy_in_s = 0;  // host to device, inputs
  double copy_out_s = 0; // device to host, outputs
};

// Progress of the batch being run, `done` of `total` steps, reported by a
// backend that works in steps (from the thread running it, between two
// steps). Returns false when the batch should stop: every request in it
// was cancelled.
using progress_fn = std::function<bool(uint64_t done, uint64_t total)>;

class backend {
public:
  virtual ~backend() = default;

  // Set by the executor before each batch (empty: nobody listens).
  void set_progress(progress_fn fn) { progress_ = std::move(fn); }

  // Runs one batch. `inputs` follow the model's declared inputs, already
  // concatenated along the batch axis (axis 0 holds the sum of the rows of
  // every request in the batch). Returns the declared outputs with the same
  // number of rows, in the declared order.
  virtual caf::expected<std::vector<tensor>>
  run(const std::vector<tensor>& inputs, uint64_t rows) = 0;

  // The pipelined form of run(), for backends that compute asynchronously:
  // start() queues a batch and returns; finish() waits for the oldest
  // started batch and returns its outputs. Executors keep at most
  // max_in_flight() batches started, so that a GPU copies the next batch's
  // inputs while it computes the current one. The default runs the batch
  // inside start().
  virtual caf::error start(const std::vector<tensor>& inputs, uint64_t rows);
  virtual caf::expected<std::vector<tensor>> finish();
  virtual size_t max_in_flight() const noexcept { return 1; }

  // Bytes of memory the loaded model holds (weights, workspaces).
  virtual uint64_t memory_bytes() const noexcept = 0;

  // "cpu", "gpu:0", ... for status and metrics.
  virtual std::string device() const = 0;

  virtual backend_profile profile() const { return {}; }

protected:
  // A step finished: reports it, and says whether to go on. A backend
  // told to stop returns errc::cancelled for the batch.
  bool step_done(uint64_t done, uint64_t total) const {
    return !progress_ || progress_(done, total);
  }

private:
  std::deque<caf::expected<std::vector<tensor>>> done_;
  progress_fn progress_;
};

using backend_ptr = std::unique_ptr<backend>;

// What the executor tells a backend at load time.
struct load_options {
  // Asks the replica that owns the backend to retire (any thread, at most
  // once), when another replica needs its device memory. Empty: never.
  std::function<void()> retire;
};

// Whether loading or running this model can block its thread (sleeps, long
// kernels, device syncs). Executors of models that cannot block run on the
// actor scheduler, saving two thread hops per request; the others get a
// thread of their own so that they never stall the router.
bool backend_may_block(const model_spec& spec) noexcept;

// Loads the model's backend named in spec.backend, on the device that
// resources.device allows: "cpu" on the CPU backend, "gpu" on a GPU or not
// at all, "any" on a GPU with room, else on the CPU. Fails with
// errc::unavailable and a reason naming the file or field, or
// errc::resource_exhausted when no GPU has room for it.
caf::expected<backend_ptr> load_backend(const model_spec& spec,
                                        const load_options& opts = {});

} // namespace shoal
