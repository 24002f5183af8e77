// model.toml: what a model version declares, parsed and checked, and the
// check of a request's inputs against it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "gpu/model/model_spec.hpp"
#include "net/wire/message.hpp"

namespace shoal {

// Parses one manifest. Errors name the file and the key.
caf::expected<model_spec> parse_manifest(const std::string& path,
                                         const std::string& name,
                                         uint64_t version);

// Checks a request's inputs against the spec: names, dtypes, ranks, fixed
// dims, and one shared batch size. Returns the batch size.
caf::expected<uint64_t> validate_inputs(const model_spec& spec,
                                        const std::vector<tensor>& inputs);

} // namespace shoal
