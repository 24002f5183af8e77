// model.toml: what a model version declares, parsed and checked, and the
// check of a request's inputs against it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

#include "gpu/model/model_spec.hpp"
#include "net/wire/message.hpp"

namespace shoal {

// Parses one manifest: the keys every model has here, and the sections of
// its backend by the backend's own parser (gpu/registry.hpp). Errors name
// the file and the key.
caf::expected<model_spec> parse_manifest(const std::string& path,
                                         const std::string& name,
                                         uint64_t version);

// The top-level keys every manifest may have, whatever its backend, and
// the keys of [resources] every backend shares. A backend's own sections
// and resource keys come on top and must not collide with these.
const std::vector<std::string_view>& manifest_common_keys();
const std::vector<std::string_view>& manifest_common_resource_keys();

// Checks a request's inputs against the spec: names, dtypes, ranks, fixed
// dims, and one shared batch size. Returns the batch size.
caf::expected<uint64_t> validate_inputs(const model_spec& spec,
                                        const std::vector<tensor>& inputs);

} // namespace shoal
