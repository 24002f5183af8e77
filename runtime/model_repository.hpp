// Reads a model repository: <root>/<name>/<version>/model.toml.
#pragma once

#include <string>

#include <caf/expected.hpp>

#include "runtime/model_spec.hpp"
#include "runtime/model_store.hpp"

namespace shoal {

// Parses one manifest. Errors name the file and the key.
caf::expected<model_spec> parse_manifest(const std::string& path,
                                         const std::string& name,
                                         uint64_t version);

// Scans the root. A directory that is not a model (no numeric version
// directories) is skipped with a warning; a broken manifest fails the scan,
// because serving a repository with a silently missing model is worse.
caf::expected<model_catalog_ptr> scan_repository(const std::string& root);

// The catalog of the node's repository (models.root). A directory is
// scanned in place. A file:// or http(s):// repository lists its models in
// <root>/index.toml ([models] name = [versions], as `shoalctl index`
// writes it); each listed manifest is fetched into
// <cache_dir>/<name>/<version>/model.toml, and the weights follow lazily
// when a replica loads (prepare_model). When the repository cannot be
// reached, the index and manifests cached by an earlier start are used,
// with a warning, so that a node restarts while its repository is down.
caf::expected<model_catalog_ptr> open_repository(const store_config& cfg);

// Checks a request's inputs against the spec: names, dtypes, ranks, fixed
// dims, and one shared batch size. Returns the batch size.
caf::expected<uint64_t> validate_inputs(const model_spec& spec,
                                        const std::vector<tensor>& inputs);

} // namespace shoal
