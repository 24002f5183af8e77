// What a torch model's manifest says besides the common keys
// (docs/model_format.md, "backend = torch"): the TorchScript file in
// [weights] and the optional [torch] table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "gpu/model/model_spec.hpp"

namespace shoal {

class manifest_reader;

struct torch_options : backend_options {
  std::string weights_file = "model.pt"; // [weights] file
  // Intra-op threads of this model's batches, at most the node's
  // torch.threads (0: all of those).
  uint32_t threads = 0;
  // On a GPU: floating inputs and weights in f16 or bf16 (outputs f32).
  dtype precision = dtype::f32;
  // Run every batch size the batcher can form once at load, so that the
  // first request after ready runs at full speed.
  bool warmup = true;
};

// [weights] and [torch].
std::vector<std::string> torch_sections();

// Reads [weights] file (which [files] must list with its sha256) and
// [torch] threads, precision, warmup. Errors name the file and the key.
caf::expected<backend_options_ptr>
parse_torch_options(const manifest_reader& rd, const model_spec& spec);

} // namespace shoal
