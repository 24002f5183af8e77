#include "runtime/node/node_security.hpp"

#include <fstream>

#include <spdlog/spdlog.h>

#include "net/security/curve_keys.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace {

// The gateway's CURVE key pair and the clients it accepts.
caf::expected<std::pair<curve_key_pair, std::shared_ptr<client_registry>>>
read_gateway_keys(const node_config::security_section& s) {
  auto pair = read_secret_key_file(s.curve_secret_key_file,
                                   "security.curve_secret_key_file");
  if (!pair) {
    return pair.error();
  }
  auto clients = client_registry::open(s.clients_file);
  if (!clients) {
    return clients.error();
  }
  return std::make_pair(*pair, std::move(*clients));
}

} // namespace

caf::error configure_gateway_security(const node_config& cfg,
                                      metrics::registry& reg,
                                      gateway_config& gc) {
  auto& s = cfg.security;
  gc.admin_from_any = s.admin_from == "any";
  auto& failures =
      reg.counters("shoal_auth_failures_total",
                   "Client handshakes refused, by reason: unknown_key (not in "
                   "the clients file), no_curve, bad_handshake.",
                   {"reason"});
  for (auto reason : {"unknown_key", "no_curve", "bad_handshake"}) {
    failures.with({reason});
  }
  if (s.curve_secret_key_file.empty()) {
    if (gc.admin_from_any) {
      spdlog::warn("security.admin_from = \"any\" and no CURVE keys: anyone "
                   "who reaches {} may load, unload, drain and reload",
                   cfg.gateway.endpoint);
    }
    return {};
  }
  auto keys = read_gateway_keys(s);
  if (!keys) {
    return keys.error();
  }
  auto& [pair, clients] = *keys;
  gc.secret_key = pair.secret_key;
  gc.clients = clients;
  gc.on_auth_failure = [&failures](std::string_view reason) {
    failures.with({std::string{reason}}).inc();
  };
  spdlog::info("security: gateway requires CURVE; public key {}, {} client(s) "
               "from {}",
               z85_of(pair.public_key), gc.clients->size(), s.clients_file);
  if (gc.admin_from_any) {
    spdlog::warn("security.admin_from = \"any\" has no effect with CURVE: "
                 "admin ops need an admin key");
  }
  return {};
}

caf::expected<std::string> read_cluster_secret(const node_config& cfg) {
  auto& c = cfg.cluster;
  if (c.secret_file.empty()) {
    return c.secret;
  }
  return read_private_first_line(c.secret_file, "cluster.secret_file");
}

namespace {

// One Z85 key (or .pub path) a line; blank lines and # comments skipped.
caf::expected<std::vector<curve_key>> read_workers_file(const std::string& f) {
  if (auto err = check_private_file(f, "cluster.workers_file")) {
    return err;
  }
  std::ifstream in{f};
  if (!in) {
    return make_error(errc::config_invalid,
                      "cluster.workers_file: cannot read " + f);
  }
  std::vector<curve_key> keys;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    auto begin = line.find_first_not_of(" \t\r");
    if (begin == std::string::npos || line[begin] == '#') {
      continue;
    }
    auto end = line.find_last_not_of(" \t\r");
    auto key = read_public_key(line.substr(begin, end - begin + 1),
                               "cluster.workers_file");
    if (!key) {
      return make_error(errc::config_invalid,
                        "cluster.workers_file: " + f + ": line " +
                            std::to_string(n) + ": " + reason_of(key.error()));
    }
    keys.push_back(*key);
  }
  return keys;
}

caf::error configure_node_keys(const node_config& cfg, node_link_config& lc) {
  auto& c = cfg.cluster;
  auto pair = read_secret_key_file(c.curve_secret_key_file,
                                   "cluster.curve_secret_key_file");
  if (!pair) {
    return pair.error();
  }
  lc.curve.enabled = true;
  lc.curve.own = *pair;
  if (lc.role == link_role::hub) {
    auto keys = read_workers_file(c.workers_file);
    if (!keys) {
      return keys.error();
    }
    lc.curve.allowed = std::move(*keys);
  } else {
    auto head = read_public_key(c.head_public_key, "cluster.head_public_key");
    if (!head) {
      return head.error();
    }
    lc.curve.hub_public_key = *head;
  }
  spdlog::info("node link: CURVE with this node's key (public {})",
               z85_of(pair->public_key));
  return {};
}

} // namespace

caf::error configure_link_security(const node_config& cfg,
                                   node_link_config& lc) {
  if (!cfg.cluster.curve_secret_key_file.empty()) {
    return configure_node_keys(cfg, lc);
  }
  if (lc.secret.empty()) {
    return {};
  }
  // Every node that knows the secret derives the same two pairs; the hub
  // accepts only the member key, so a node without the secret cannot even
  // finish the handshake.
  auto hub = derive_key_pair(lc.secret, "hub");
  auto member = derive_key_pair(lc.secret, "member");
  lc.curve.enabled = true;
  lc.curve.own = lc.role == link_role::hub ? hub : member;
  lc.curve.hub_public_key = hub.public_key;
  lc.curve.allowed = {member.public_key};
  return {};
}

caf::error check_security_files(const node_config& cfg) {
  if (!cfg.security.curve_secret_key_file.empty()) {
    if (auto keys = read_gateway_keys(cfg.security); !keys) {
      return keys.error();
    }
  }
  // A standalone node starts no node link and reads none of its files.
  if (cfg.node.role != "head" && cfg.node.role != "worker") {
    return {};
  }
  auto secret = read_cluster_secret(cfg);
  if (!secret) {
    return secret.error();
  }
  node_link_config lc;
  lc.role = cfg.node.role == "head" ? link_role::hub : link_role::member;
  lc.secret = std::move(*secret);
  return configure_link_security(cfg, lc);
}

} // namespace shoal
