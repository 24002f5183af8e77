// The node's security settings turned into what the gateway and the node
// link take: the gateway's CURVE key and clients list, the admin rule, the
// node link's CURVE keys, and shoal_auth_failures_total. Key files are
// read here (refused when group or others may read them); key material
// never reaches a log.
#pragma once

#include <caf/error.hpp>

#include "actors/serving/gateway.hpp"
#include "config/config.hpp"
#include "net/link/node_link.hpp"
#include "runtime/metrics/registry.hpp"

namespace shoal {

// Fills the gateway's CURVE and admin settings from security.*.
caf::error configure_gateway_security(const node_config& cfg,
                                      metrics::registry& reg,
                                      gateway_config& gc);

// The cluster secret: cluster.secret, or the first line of
// cluster.secret_file (refused when group or others may read it).
caf::expected<std::string> read_cluster_secret(const node_config& cfg);

// Fills the node link's CURVE keys: this node's pair and the peers it
// accepts, from cluster.curve_secret_key_file (with workers_file or
// head_public_key), else derived from the cluster secret, else none.
caf::error configure_link_security(const node_config& cfg,
                                   node_link_config& lc);

// What --check-config reads of the above, without starting anything: the
// key files, the clients file, the cluster secret and the workers' keys
// that starting this node would read, with the same errors (which name the
// setting and the file, never a secret).
caf::error check_security_files(const node_config& cfg);

} // namespace shoal
