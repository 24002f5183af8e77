// The CPU backend: runs a model's sequential graph (docs/model_format.md)
// on f32 with the OpenBLAS kernels of cpu_layers. Weights stay in the
// mmap of the safetensors file when they are f32 and aligned (no second
// copy); f16, bf16 and f64 weights are converted to f32 once, at load.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gpu/backend.hpp"
#include "gpu/cpu/cpu_layers.hpp"
#include "gpu/graph/graph.hpp"
#include "gpu/model/safetensors.hpp"
#include "gpu/registry.hpp"

namespace shoal {

class cpu_backend : public backend {
public:
  // Opens the weights, resolves every layer's tensors and infers the shapes
  // layer by layer. Errors name model.toml and layers[i].field.
  static caf::expected<backend_ptr> load(const model_spec& spec);

  caf::expected<std::vector<tensor>> run(const std::vector<tensor>& inputs,
                                         uint64_t rows) override;
  uint64_t memory_bytes() const noexcept override;
  std::string device() const override;

  // One resolved layer; the dims are per sample (no batch axis).
  struct step {
    std::string op;
    const float* w = nullptr;
    const float* b = nullptr;
    std::vector<uint64_t> in_dims;
    std::vector<uint64_t> out_dims;
    cpu::conv2d_shape conv; // n is set per run
    cpu::pool2d_shape pool;
    float eps = 1e-5f;
    std::string save;
    std::string from;
  };

private:
  cpu_backend() = default;

  // Weights as f32: a pointer into the mapping, or into owned storage.
  caf::expected<const float*> weight(const tensor_view* t);

  // Runs one layer on `cur`, a batch of `rows`; returns where its output
  // is: `cur` for a layer that works in place, else `next`.
  float* run_step(const step& s, uint64_t rows, float* cur, float* next);

  // Keeps the layer's output for a later `add`.
  void save(const step& s, uint64_t rows, const float* cur);

  model_spec spec_;
  std::string weights_path_; // for errors about its tensors
  safetensors_file file_;
  std::vector<std::unique_ptr<std::vector<float>>> owned_;
  std::vector<step> steps_;
  uint64_t weight_bytes_ = 0;
  // Floats per sample of the widest activation (input included).
  uint64_t widest_ = 0;
  // Scratch reused across batches (one executor thread per replica).
  std::vector<float> a_, b_, workspace_;
  std::map<std::string, std::vector<float>> saved_;
};

// backend = "cpu": the layer graph ([weights], [[layers]]), on the CPU by
// default; resources.device = "gpu" or "any" hands it to the cuda backend.
backend_info cpu_backend_info();

} // namespace shoal
