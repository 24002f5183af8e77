// backend = "torch": a TorchScript module (docs/model_format.md), run by
// libtorch in the plugin libshoal_torch.so, which the node loads with
// dlopen when the first torch model loads (gpu/torch/torch_plugin_api.h
// says why). This side, built into every node, speaks to the plugin's C
// interface only: it turns shoal tensors into the plugin's, checks what
// forward returns against the manifest, and warms a replica up.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "gpu/backend.hpp"
#include "gpu/registry.hpp"
#include "gpu/torch/torch_options.hpp"
#include "gpu/torch/torch_plugin_api.h"

namespace shoal {

class torch_backend : public backend {
public:
  ~torch_backend() override;

  // Loads the plugin (once per process), the module (frozen, optimised),
  // checks forward's arity and, unless [torch] warmup = false, runs every
  // batch size the batcher forms. Errors: errc::unavailable naming the
  // model, the file and the reason.
  static caf::expected<backend_ptr>
  load(const model_spec& spec, device_choice where, const load_options& opts);

  caf::expected<std::vector<tensor>> run(const std::vector<tensor>& inputs,
                                         uint64_t rows) override;
  uint64_t memory_bytes() const noexcept override;
  std::string device() const override;

private:
  torch_backend() = default;

  // run() without the model and file in its errors.
  caf::expected<std::vector<tensor>> run_raw(const std::vector<tensor>& inputs,
                                             uint64_t rows);

  // Runs one batch of zeros of `rows` rows (warm-up and output checks).
  caf::error run_zeros(uint64_t rows);

  // What forward returned, checked against the declared outputs.
  caf::expected<std::vector<tensor>>
  take_outputs(const std::vector<shoal_torch_tensor>& outs, uint64_t rows);

  // "<dir>/model.pt" for errors.
  std::string file_;
  model_spec spec_;
  const shoal_torch_api* api_ = nullptr;
  shoal_torch_model* model_ = nullptr;
  int gpu_ = -1;
  uint64_t ledger_id_ = 0;
  uint64_t file_bytes_ = 0;
};

// The libtorch version the plugin runs on, loading it if needed; the
// reason it cannot be loaded otherwise.
caf::expected<std::string> torch_runtime_version();

// CUDA devices the plugin's libtorch can use, loading it if needed; 0
// without the plugin or with a CPU-only libtorch.
int torch_cuda_devices();

// Whether this process has mapped the plugin (tests and benchmarks).
bool torch_plugin_loaded() noexcept;

// backend = "torch": [weights], [torch]; runs on cpu (default), gpu, any.
backend_info torch_backend_info();

} // namespace shoal
