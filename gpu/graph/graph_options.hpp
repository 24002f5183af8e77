// What a graph model's manifest says (docs/model_format.md): the weights
// file, the sequential layers and resources.allow_tf32. The options of both
// graph backends, "cpu" and "cuda", which run the same graph on a CPU or a
// GPU; parsed on the node, read by the CPU backend and the CUDA plugin.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "gpu/model/model_spec.hpp"

namespace shoal {

class manifest_reader;

// One layer of a sequential graph.
struct layer_spec {
  std::string op;     // dense, relu, gelu, softmax, layernorm, conv2d,
                      // max_pool2d, avg_pool2d, flatten, add
  std::string weight; // tensor names in the weights file
  std::string bias;
  std::string save; // keep the output under this name
  std::string from; // add: the saved operand
  std::vector<uint64_t> kernel, stride, padding, dilation; // [h, w]
  double eps = 1e-5;
};

struct graph_options : backend_options {
  std::string weights_file; // [weights] file, relative to the spec's dir
  // cuda: f32 dense and conv layers may use TF32 tensor cores (10-bit
  // mantissa products, about 1e-3 relative), as torch's allow_tf32.
  bool allow_tf32 = false;
  std::vector<layer_spec> layers;
};

// The top-level manifest keys the graph backends own, and their keys in
// [resources].
std::vector<std::string> graph_sections();
std::vector<std::string> graph_resource_keys();

// Reads [weights], [[layers]] and resources.allow_tf32. Only the structure
// is checked here (known ops and their keys, a graph of one input and one
// output); tensors and shapes are checked at load, where the weights file
// is read. Errors name the file and the key.
caf::expected<backend_options_ptr>
parse_graph_options(const manifest_reader& rd, const model_spec& spec);

} // namespace shoal
