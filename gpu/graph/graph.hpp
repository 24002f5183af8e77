// A model's layer graph (docs/model_format.md) resolved against its weights
// file: every layer's tensors found and shape-checked, and the per-sample
// dims of every activation inferred. Shared by the CPU and CUDA backends so
// that both refuse the same manifests with the same messages.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "gpu/graph/graph_options.hpp"
#include "gpu/graph/layer_shapes.hpp"
#include "gpu/model/model_spec.hpp"
#include "gpu/model/safetensors.hpp"

namespace shoal {

struct graph_step {
  std::string op;
  // Weight and bias in the file's own dtype (null: none); they point into
  // the file they were resolved against.
  const tensor_view* w = nullptr;
  const tensor_view* b = nullptr;
  std::vector<uint64_t> in_dims; // per sample, no batch axis
  std::vector<uint64_t> out_dims;
  conv2d_shape conv; // n = 1; set the batch per run
  pool2d_shape pool; // n = 1
  float eps = 1e-5f;
  std::string save;
  std::string from;
};

struct layer_graph {
  std::vector<graph_step> steps;
  std::vector<uint64_t> in_dims;
  std::vector<uint64_t> out_dims;
  std::map<std::string, std::vector<uint64_t>> saved_dims;
  uint64_t widest = 0;        // values per sample of the widest activation
  uint64_t cpu_workspace = 0; // floats of im2col scratch (cpu backend)
  uint64_t weight_bytes = 0;  // as stored in the file
};

// Product of dims (1 for none).
uint64_t dims_product(const std::vector<uint64_t>& dims);

// "[1, 28, 28]"
std::string dims_string(const std::vector<uint64_t>& dims);

// Resolves graph.layers against `file`, the graph's weights file. The graph
// takes the spec's one f32 input and gives its one f32 output, as declared.
// Errors are errc::unavailable naming model.toml and layers[i].field;
// `backend` names the backend in them.
caf::expected<layer_graph> resolve_graph(const model_spec& spec,
                                         const graph_options& graph,
                                         const safetensors_file& file,
                                         const char* backend);

} // namespace shoal
