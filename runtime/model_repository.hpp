// Reads a model repository: <root>/<name>/<version>/model.toml.
#pragma once

#include <string>

#include <caf/expected.hpp>

#include "runtime/model_spec.hpp"

namespace shoal {

// Parses one manifest. Errors name the file and the key.
caf::expected<model_spec> parse_manifest(const std::string& path,
                                         const std::string& name,
                                         uint64_t version);

// Scans the root. A directory that is not a model (no numeric version
// directories) is skipped with a warning; a broken manifest fails the scan,
// because serving a repository with a silently missing model is worse.
caf::expected<model_catalog_ptr> scan_repository(const std::string& root);

// Checks a request's inputs against the spec: names, dtypes, ranks, fixed
// dims, and one shared batch size. Returns the batch size.
caf::expected<uint64_t> validate_inputs(const model_spec& spec,
                                        const std::vector<tensor>& inputs);

} // namespace shoal
