// The synthetic backend: deterministic outputs computed from the inputs
// (output i = scale * input i + offset, elementwise, in the output's dtype),
// a configurable cost per batch and per item, an optional run in steps that
// reports progress, and a fault hook that crashes
// the replica in the middle of its Nth batch. Used by tests and benchmarks.
#pragma once

#include <cstdint>

#include "gpu/backend.hpp"
#include "gpu/registry.hpp"

namespace shoal {

// [synthetic] in model.toml.
struct synthetic_options : backend_options {
  uint64_t cost_per_batch_us = 0; // simulated compute, per batch
  uint64_t cost_per_item_us = 0;  // and per request in the batch
  double scale = 2.0;             // outputs = scale * input + offset
  double offset = 1.0;
  uint64_t crash_after_batches = 0; // fault hook: 0 = never
  uint64_t load_ms = 0;             // simulated model load time
  // A long run in steps, each reporting progress (and where a cancelled
  // batch stops): `steps` times cost_per_step_us, after the costs above.
  uint64_t steps = 0;
  uint64_t cost_per_step_us = 0;
};

// Thrown by the fault hook: the executor treats it like a device fault and
// dies, so the supervisor and router recovery paths run for real.
struct synthetic_crash : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class synthetic_backend : public backend {
public:
  // Runs with the spec's synthetic_options (the defaults when it has none).
  explicit synthetic_backend(const model_spec& spec);

  caf::expected<std::vector<tensor>> run(const std::vector<tensor>& inputs,
                                         uint64_t rows) override;
  uint64_t memory_bytes() const noexcept override;
  std::string device() const override;

  uint64_t batches_run() const noexcept { return batches_; }

private:
  // The run's steps; errc::cancelled when told to stop between two.
  caf::error run_steps();

  model_spec spec_;
  synthetic_options params_;
  uint64_t batches_ = 0;
};

// Checks that a synthetic model's outputs can be derived from its inputs.
caf::error check_synthetic(const model_spec& spec);

// backend = "synthetic": reads [synthetic], runs on the CPU only, and may
// block only when it has a cost or a load time.
backend_info synthetic_backend_info();

} // namespace shoal
