// f32 tensors, random values and a small generated CPU model, shared by the
// CPU backend's tests and its benchmark. The caller writes the files
// (write_safetensors, model.toml): this library stays below the runtime.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "net/wire/message.hpp"

namespace shoal::test {

// An f32 tensor of `shape` holding `values` (its name left empty).
tensor f32_tensor(std::vector<uint64_t> shape,
                  const std::vector<float>& values);

// `n` values drawn from N(0, scale).
std::vector<float> random_values(size_t n, std::mt19937& rng, float scale);

// The weights of a two-layer MLP: dense (in -> hidden), relu, dense (hidden
// -> out), softmax; weights row-major [out, in] as the dense layer takes
// them.
struct mlp_weights {
  size_t in = 0, hidden = 0, out = 0;
  std::vector<float> w1, b1, w2, b2;

  // fc1.weight, fc1.bias, fc2.weight, fc2.bias, as write_safetensors takes
  // them.
  std::vector<std::pair<std::string, tensor>> tensors() const;
  size_t bytes() const;
};

// Weights from N(0, weight_scale) and biases from N(0, bias_scale), drawn in
// the order w1, b1, w2, b2.
mlp_weights random_mlp(size_t in, size_t hidden, size_t out, std::mt19937& rng,
                       float weight_scale, float bias_scale);

// The [[layers]] of that MLP.
extern const char* const mlp_layers;

// The model.toml of a cpu model with input x f32 [-1, in] and output probs
// f32 [-1, out], weights in model.safetensors; `batching` is the body of its
// [batching] table, `layers` its [[layers]] tables.
std::string cpu_manifest(size_t in, size_t out, const std::string& batching,
                         const std::string& layers = mlp_layers);

} // namespace shoal::test
