// Reads a model repository: <root>/<name>/<version>/model.toml, from a
// directory or, through the model store, from a file:// or http(s):// URL.
#pragma once

#include <string>

#include <caf/expected.hpp>

#include "gpu/model/live_catalog.hpp"
#include "gpu/model/model_spec.hpp"
#include "runtime/model/model_store.hpp"

namespace shoal {

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

// Reads the repository again for a running node whose catalog is
// `current`, and merges (merge_catalogs): new versions are parsed, a known
// version whose manifest is unchanged keeps its spec without a parse, a
// changed one is refused. Unlike at start, an unreachable repository or a
// broken new manifest is an error and the node keeps `current`.
caf::expected<catalog_update> reread_repository(const store_config& cfg,
                                                const model_catalog& current);

} // namespace shoal
