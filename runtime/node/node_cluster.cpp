// The cluster roles of a node: the head's coordinator or the worker's agent,
// and the node link that carries their messages. The link's callbacks run
// on its own thread and only post messages to those actors.
#include <filesystem>
#include <fstream>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/cluster/coordinator.hpp"
#include "actors/cluster/worker_agent.hpp"
#include "gpu/device/node_devices.hpp"
#include "net/link/cluster_codec.hpp"
#include "net/wire/error.hpp"
#include "runtime/node/node_impl.hpp"
#include "runtime/node/node_security.hpp"

namespace shoal {

namespace {

// Model versions whose files this node already holds verified, which the
// coordinator prefers when it places them.
std::vector<std::pair<std::string, uint64_t>>
cached_models(const std::string& cache_dir, const model_catalog& catalog) {
  std::vector<std::pair<std::string, uint64_t>> out;
  std::error_code ec;
  for (auto& [name, versions] : catalog.models) {
    for (auto& [v, spec] : versions) {
      auto record = std::filesystem::path{cache_dir} / name /
                    std::to_string(v) / ".shoal-verified";
      if (!spec->files.empty() && std::filesystem::exists(record, ec)) {
        out.emplace_back(name, v);
      }
    }
  }
  return out;
}

node_link_config link_config(const node_config& c, std::string secret) {
  const bool head = c.node.role == "head";
  node_link_config lc;
  lc.role = head ? link_role::hub : link_role::member;
  lc.name = c.node.name;
  lc.secret = std::move(secret);
  lc.endpoint = head ? c.cluster.listen : c.cluster.join;
  lc.heartbeat_interval = std::chrono::milliseconds{c.cluster.heartbeat_ms};
  lc.suspect_after = std::chrono::milliseconds{c.cluster.suspect_ms};
  lc.heartbeat_timeout = std::chrono::milliseconds{c.cluster.timeout_ms};
  lc.max_frame_bytes = c.gateway.max_frame_bytes + (1u << 20);
  return lc;
}

// A worker's registration: what placement needs to know about it.
worker_hello make_hello(const node_config& c, const model_catalog& catalog) {
  worker_hello hello;
  hello.labels = parse_labels(c.node.labels);
  hello.memory_bytes = c.node.memory_bytes;
  hello.metrics_target = c.http.listen;
  hello.cached = cached_models(c.models.cache_dir, catalog);
  hello.devices = local_devices();
  return hello;
}

// The link thread's events, posted to the role's actor. A head also hands
// the coordinator the worker's hello when its session comes up; results go
// straight to the router where `routes` knows their replica.
link_handlers make_link_handlers(node::impl& d, link_events_handle target,
                                 std::shared_ptr<result_routes> routes) {
  link_handlers lh;
  lh.on_message = [target, routes](const std::string& peer, uint64_t inc,
                                   std::string_view type,
                                   std::string_view body) {
    if (routes && routes->deliver(peer, inc, type, body)) {
      return;
    }
    caf::anon_send(target, link_msg_atom::value, peer, inc, std::string{type},
                   std::string{body});
  };
  auto box = d.box;
  auto* joined = &d.joined;
  bool worker = d.worker();
  lh.on_peer_state = [target, box, joined,
                      worker](const std::string& peer, uint64_t inc,
                              peer_state state, const std::string& reason) {
    std::string hello;
    if (!worker && state == peer_state::up) {
      if (auto l = box->get()) {
        if (auto p = l->peer(peer); p && p->incarnation == inc) {
          hello = std::move(p->hello);
        }
      }
    }
    if (worker) {
      *joined = state != peer_state::down;
    }
    caf::anon_send(target, peer_atom::value, peer, inc,
                   static_cast<uint8_t>(state), reason, hello);
  };
  return lh;
}

} // namespace

caf::error node::impl::start_cluster() {
  auto secret = read_cluster_secret(cfg);
  if (!secret) {
    return secret.error();
  }
  if (secret->empty() && cfg.cluster.curve_secret_key_file.empty()) {
    spdlog::warn("cluster.secret is empty: node messages are neither "
                 "authenticated nor encrypted; use this on a trusted network "
                 "only");
  }
  auto lc = link_config(cfg, std::move(*secret));
  if (auto err = configure_link_security(cfg, lc)) {
    return err;
  }
  box = std::make_shared<link_box>();
  link_events_handle target;
  std::shared_ptr<result_routes> routes;
  if (worker()) {
    auto hello = make_hello(cfg, *catalog->get());
    std::string body;
    encode(hello, body);
    lc.hello = std::move(body);
    agent = system->spawn(
        worker_agent_actor, box, supervisor, std::move(hello),
        [this] { drain_requested = true; }, catalog, metrics);
    target = agent;
  } else {
    view = std::make_shared<cluster_view>();
    coordinator_config cc;
    cc.node_name = cfg.node.name;
    cc.labels = parse_labels(cfg.node.labels);
    routes = std::make_shared<result_routes>();
    cc.routes = routes;
    coordinator =
        system->spawn(coordinator_actor, cc, box, catalog, sink, metrics, view);
    target = coordinator;
  }
  auto started =
      node_link::start(lc, make_link_handlers(*this, target, routes));
  if (!started) {
    return started.error();
  }
  link = std::shared_ptr<node_link>{std::move(*started)};
  box->set(link);
  spdlog::info("node {}: node link {} {}", cfg.node.name,
               head() ? "listening on" : "joining", link->endpoint());
  return {};
}

} // namespace shoal
