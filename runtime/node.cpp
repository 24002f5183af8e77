#include "runtime/node.hpp"

#include <csignal>
#include <thread>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>

#include "actors/cache.hpp"
#include "actors/coordinator.hpp"
#include "actors/executor.hpp"
#include "actors/router.hpp"
#include "actors/supervisor.hpp"
#include "actors/worker_agent.hpp"
#include "net/error.hpp"
#include "net/gateway.hpp"
#include "runtime/http_server.hpp"
#include "runtime/human_bytes.hpp"
#include "runtime/model_repository.hpp"
#include "runtime/node_devices.hpp"
#include "runtime/node_metrics.hpp"

namespace shoal {

void block_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

struct node::impl {
  node_config cfg;
  model_catalog_ptr catalog;
  std::shared_ptr<load_progress> progress;
  metrics::registry registry;
  std::shared_ptr<node_metrics> metrics;
  std::shared_ptr<result_cache> cache;
  std::shared_ptr<reply_sink> sink;
  std::unique_ptr<caf::actor_system_config> sys_cfg;
  std::unique_ptr<caf::actor_system> system;
  caf::actor supervisor;
  caf::actor router;
  caf::actor cache_maint;
  // Cluster roles (head: coordinator; worker: agent), over one node link.
  std::shared_ptr<link_box> box;
  std::shared_ptr<node_link> link;
  std::shared_ptr<cluster_view> view;
  caf::actor coordinator;
  caf::actor agent;
  std::unique_ptr<gateway> gw;
  std::unique_ptr<http_server> http;
  std::atomic<bool> drain_requested{false};
  std::atomic<bool> draining{false};
  std::atomic<bool> joined{false}; // worker: its head is up
  std::string endpoint;

  uint64_t open_requests(caf::scoped_actor& self) {
    uint64_t n = 0;
    // A worker's open work is its replicas: the head retires each one
    // once it is idle and replaced.
    auto& target = router ? router : agent;
    if (!target)
      return 0;
    self->request(target, std::chrono::seconds{5}, count_atom::value)
        .receive([&](uint64_t x) { n = x; }, [&](caf::error&) { n = 0; });
    return n;
  }
};

namespace {

// cluster.secret, or the first line of cluster.secret_file.
caf::expected<std::string> cluster_secret(const node_config& c) {
  if (c.cluster.secret_file.empty())
    return c.cluster.secret;
  std::ifstream in{c.cluster.secret_file};
  std::string line;
  if (!in || !std::getline(in, line))
    return make_error(errc::config_invalid,
                      "cluster.secret_file: cannot read " +
                          c.cluster.secret_file);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' '))
    line.pop_back();
  return line;
}

std::vector<std::pair<std::string, std::string>>
parse_labels(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t pos = 0;
  while (pos < text.size()) {
    auto comma = text.find(',', pos);
    if (comma == std::string::npos)
      comma = text.size();
    auto item = text.substr(pos, comma - pos);
    auto eq = item.find('=');
    if (eq != std::string::npos && eq > 0)
      out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    pos = comma + 1;
  }
  return out;
}

// Model versions whose files this node already holds verified, which the
// coordinator prefers when it places them.
std::vector<std::pair<std::string, uint64_t>>
cached_models(const std::string& cache_dir, const model_catalog& catalog) {
  std::vector<std::pair<std::string, uint64_t>> out;
  std::error_code ec;
  for (auto& [name, versions] : catalog.models)
    for (auto& [v, spec] : versions)
      if (!spec->files.empty() &&
          std::filesystem::exists(std::filesystem::path{cache_dir} / name /
                                      std::to_string(v) / ".shoal-verified",
                                  ec))
        out.emplace_back(name, v);
  return out;
}

} // namespace

store_config store_config_of(const node_config& c) {
  store_config s;
  s.repository = c.models.root;
  s.cache_dir = c.models.cache_dir;
  s.fetch.parallel_ranges = c.models.parallel_ranges;
  s.fetch.range_threshold = c.models.range_threshold_bytes;
  s.fetch.timeout = std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::milliseconds{
          std::max<uint64_t>(c.models.fetch_timeout_ms, 1000)});
  s.fetch.retries = static_cast<int>(c.models.fetch_retries);
  s.fetch.max_file_bytes = c.models.max_file_bytes;
  return s;
}

node::node() : impl_(std::make_unique<impl>()) {
  // nop
}

node::~node() {
  auto& d = *impl_;
  if (d.gw)
    d.gw->stop();
  d.http.reset();
  // The link's callbacks send to actors: stop it before they go.
  if (d.link)
    d.link->stop();
  // The link's callbacks hold the box that holds the link: break the
  // cycle, or the link (and what it still queued) is never freed.
  if (d.box)
    d.box->set(nullptr);
  d.link.reset();
  if (d.system) {
    for (auto& a :
         {d.router, d.supervisor, d.cache_maint, d.coordinator, d.agent})
      if (a)
        caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    d.router = nullptr;
    d.supervisor = nullptr;
    d.cache_maint = nullptr;
    d.coordinator = nullptr;
    d.agent = nullptr;
    d.system.reset();
  }
}

caf::expected<std::unique_ptr<node>> node::start(node_config cfg) {
  std::unique_ptr<node> n{new node};
  auto& d = *n->impl_;
  d.cfg = std::move(cfg);
  auto& c = d.cfg;
  auto env = std::make_shared<load_env>();
  env->store = store_config_of(c);
  env->progress = std::make_shared<load_progress>();
  d.progress = env->progress;
  auto catalog = open_repository(env->store);
  if (!catalog)
    return catalog.error();
  d.catalog = *catalog;
  spdlog::info("model repository {}: {} model(s)", c.models.root,
               d.catalog->models.size());
  d.metrics = std::make_shared<node_metrics>(d.registry, c.node.name);
  result_cache::config cc;
  cc.max_bytes = c.cache.max_bytes;
  cc.window_fraction = c.cache.window_fraction;
  d.cache = std::make_shared<result_cache>(cc);
  d.metrics->watch_cache(d.cache);
  d.metrics->watch_devices(local_device_samples);
  // What this node can place GPU models on, once, for whoever reads the
  // log when a model does not land on a GPU.
  if (auto gpus = gpu_devices(); gpus.empty()) {
    spdlog::info("node {}: no GPU ({})", c.node.name, gpu_absent_reason());
  } else {
    for (auto& g : gpus)
      spdlog::info("node {}: {} {}: {} used of {}", c.node.name, g.name,
                   g.product, human_bytes(g.used_bytes),
                   human_bytes(g.total_bytes));
  }
  d.sink = std::make_shared<reply_sink>();

  d.sys_cfg = std::make_unique<caf::actor_system_config>();
  auto threads = c.runtime.scheduler_threads > 0
                     ? c.runtime.scheduler_threads
                     : std::max(2u, std::thread::hardware_concurrency());
  d.sys_cfg->set("scheduler.max-threads", static_cast<size_t>(threads));
  d.sys_cfg->set("logger.verbosity", caf::atom("quiet"));
  // CAF's idle workers first poll, then poll with 50 us sleeps that nothing
  // can cut short, then sleep on a condition variable that enqueues notify.
  // The middle phase adds up to a sleep per hop on a lightly loaded node,
  // so it is replaced by a short spin before the notified sleep.
  d.sys_cfg->set("work-stealing.moderate-sleep-duration", caf::timespan{0});
  d.sys_cfg->set("work-stealing.moderate-poll-attempts", size_t{200});
  d.system = std::make_unique<caf::actor_system>(*d.sys_cfg);

  const bool head = c.node.role == "head";
  const bool worker = c.node.role == "worker";
  auto* self_impl = &d;

  if (!head) {
    restart_policy policy;
    policy.max_restarts = c.supervisor.max_restarts;
    policy.period = std::chrono::milliseconds{c.supervisor.period_ms};
    policy.backoff_initial =
        std::chrono::milliseconds{c.supervisor.backoff_initial_ms};
    policy.backoff_max = std::chrono::milliseconds{c.supervisor.backoff_max_ms};
    auto catalog_ptr = d.catalog;
    auto metrics = d.metrics;
    bool detached = c.executor.detached;
    std::shared_ptr<const load_env> env_c = env;
    child_factory factory = [catalog_ptr, metrics, detached,
                             env_c](caf::local_actor* self,
                                    const std::string& model, uint64_t version,
                                    caf::actor listener) -> caf::actor {
      auto spec = catalog_ptr->resolve(model, version);
      if (!spec)
        return {};
      if (detached && backend_may_block(*spec))
        return self->spawn<caf::detached>(executor_actor, spec, listener,
                                          metrics, env_c);
      return self->spawn(executor_actor, spec, listener, metrics, env_c);
    };
    auto escalate = [](const std::string& why) {
      spdlog::critical("node exits: {}", why);
      spdlog::default_logger()->flush();
      std::_Exit(70);
    };
    d.supervisor = d.system->spawn(
        supervisor_actor, policy, factory, escalate,
        [metrics](std::string_view reason) { metrics->spawn(reason); });
  }

  if (head || worker) {
    d.box = std::make_shared<link_box>();
    auto secret = cluster_secret(c);
    if (!secret)
      return secret.error();
    if (secret->empty())
      spdlog::warn("cluster.secret is empty: node messages are not "
                   "authenticated; use this on a trusted network only");
    node_link_config lc;
    lc.role = head ? link_role::hub : link_role::member;
    lc.name = c.node.name;
    lc.secret = *secret;
    lc.endpoint = head ? c.cluster.listen : c.cluster.join;
    lc.heartbeat_interval = std::chrono::milliseconds{c.cluster.heartbeat_ms};
    lc.suspect_after = std::chrono::milliseconds{c.cluster.suspect_ms};
    lc.heartbeat_timeout = std::chrono::milliseconds{c.cluster.timeout_ms};
    lc.max_frame_bytes = c.gateway.max_frame_bytes + (1u << 20);
    caf::actor target;
    if (worker) {
      worker_hello hello;
      hello.labels = parse_labels(c.node.labels);
      hello.memory_bytes = c.node.memory_bytes;
      hello.metrics_target = c.http.listen;
      hello.cached = cached_models(c.models.cache_dir, *d.catalog);
      hello.devices = local_devices();
      std::string body;
      encode(hello, body);
      lc.hello = std::move(body);
      d.agent = d.system->spawn(
          worker_agent_actor, d.box, d.supervisor, std::move(hello),
          [self_impl] { self_impl->drain_requested = true; });
      target = d.agent;
    } else {
      d.view = std::make_shared<cluster_view>();
      coordinator_config cc2;
      cc2.node_name = c.node.name;
      cc2.labels = parse_labels(c.node.labels);
      d.coordinator = d.system->spawn(coordinator_actor, cc2, d.box, d.catalog,
                                      d.sink, d.metrics, d.view);
      target = d.coordinator;
    }
    link_handlers lh;
    lh.on_message = [target](const std::string& peer, uint64_t inc,
                             std::string_view type, std::string_view body) {
      caf::anon_send(target, link_msg_atom::value, peer, inc, std::string{type},
                     std::string{body});
    };
    auto box = d.box;
    lh.on_peer_state = [target, box, self_impl,
                        worker](const std::string& peer, uint64_t inc,
                                peer_state state, const std::string& reason) {
      std::string hello;
      if (!worker && state == peer_state::up) {
        if (auto l = box->get())
          for (auto& p : l->peers())
            if (p.name == peer && p.incarnation == inc)
              hello = p.hello;
      }
      if (worker)
        self_impl->joined = state != peer_state::down;
      caf::anon_send(target, peer_atom::value, peer, inc,
                     static_cast<uint8_t>(state), reason, hello);
    };
    auto link = node_link::start(lc, std::move(lh));
    if (!link)
      return link.error();
    d.link = std::shared_ptr<node_link>{std::move(*link)};
    d.box->set(d.link);
    spdlog::info("node {}: node link {} {}", c.node.name,
                 head ? "listening on" : "joining", d.link->endpoint());
  }

  if (!worker) {
    router_config rc;
    rc.queue_capacity = c.router.queue_capacity;
    rc.max_redispatch = c.router.max_redispatch;
    rc.tick = std::chrono::milliseconds{c.router.tick_ms};
    rc.inflight_per_replica = c.router.inflight_per_replica;
    rc.max_open = c.gateway.max_inflight;
    rc.idle_ttl = std::chrono::milliseconds{c.executor.idle_ttl_ms};
    rc.default_cache_ttl = std::chrono::milliseconds{c.cache.default_ttl_ms};
    rc.node_name = c.node.name;
    rc.node_role = c.node.role;
    rc.progress = d.progress;
    rc.cluster = head;
    rc.scale_out_queue = c.router.scale_out_queue;
    rc.scale_out_after = std::chrono::milliseconds{c.router.scale_out_after_ms};
    rc.max_replicas = std::max<uint64_t>(1, c.router.max_replicas);
    d.router = d.system->spawn(router_actor, rc, d.catalog, d.cache, d.sink,
                               d.metrics, head ? d.coordinator : d.supervisor);
    if (head)
      caf::anon_send(d.coordinator, set_router_atom::value, d.router);
    d.cache_maint =
        d.system->spawn(cache_actor, d.cache, std::chrono::milliseconds{1000});

    gateway_config gc;
    gc.endpoint = c.gateway.endpoint;
    gc.default_timeout_ms = c.gateway.default_timeout_ms;
    gc.io_threads = c.gateway.io_threads;
    gc.node_name = c.node.name;
    gc.limits.max_frame_bytes = c.gateway.max_frame_bytes;
    gc.limits.max_bin_bytes = c.gateway.max_frame_bytes;
    auto gw = gateway::start(
        gc, d.router, d.catalog, d.cache, d.sink, d.metrics,
        [self_impl](const std::string& target) -> std::string {
          auto& own = self_impl->cfg.node.name;
          if (target == own) {
            self_impl->drain_requested = true;
            return {};
          }
          if (self_impl->view) {
            auto state = self_impl->view->state_of(target);
            if (!state.empty() && state != "down") {
              caf::anon_send(self_impl->coordinator, drain_atom::value, target);
              return {};
            }
          }
          return "no node named '" + target + "' (this node is '" + own + "')";
        });
    if (!gw)
      return gw.error();
    d.gw = std::move(*gw);
    d.endpoint = d.gw->endpoint();
  }

  if (!c.http.listen.empty()) {
    http_handlers h;
    h.ready = [self_impl, worker]() -> std::pair<bool, std::string> {
      auto [ok, line] = [&]() -> std::pair<bool, std::string> {
        if (self_impl->draining)
          return {false, "draining\n"};
        auto& join = self_impl->cfg.cluster.join;
        if (worker && self_impl->joined)
          return {true, "ready: joined " + join + "\n"};
        if (worker)
          return {false, "not joined to " + join + "\n"};
        return {true, "ready: gateway " + self_impl->endpoint + ", " +
                          std::to_string(self_impl->catalog->models.size()) +
                          " model(s)\n"};
      }();
      // The devices only inform: they never change the status code.
      return {ok, line + local_devices_text()};
    };
    if (head) {
      // Prometheus HTTP service discovery: every live node's /metrics.
      h.service_discovery = [self_impl]() -> std::string {
        auto quote = [](const std::string& s) {
          std::string out = "\"";
          for (char ch : s) {
            if (ch == '"' || ch == '\\')
              out += '\\';
            if (static_cast<unsigned char>(ch) >= 0x20)
              out += ch;
          }
          return out + "\"";
        };
        auto group = [&](const std::string& target, const std::string& name,
                         const std::string& role, const auto& labels) {
          std::string out = "{\"targets\":[" + quote(target) +
                            "],\"labels\":{\"node\":" + quote(name) +
                            ",\"role\":" + quote(role);
          for (auto& [k, v] : labels) {
            std::string key = "label_";
            for (char ch : k)
              key += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
            out += "," + quote(key) + ":" + quote(v);
          }
          return out + "}}";
        };
        auto& c = self_impl->cfg;
        auto host = c.http.listen.substr(0, c.http.listen.rfind(':'));
        std::string out =
            "[" + group(host + ":" + std::to_string(self_impl->http->port()),
                        c.node.name, "head",
                        std::vector<std::pair<std::string, std::string>>{});
        for (auto& [name, e] : self_impl->view->snapshot())
          if (e.state != "down" && !e.metrics_target.empty())
            out += "," + group(e.metrics_target, name, "worker", e.labels);
        return out + "]\n";
      };
    }
    auto http =
        http_server::start(c.http.listen, d.registry, h, c.http.threads);
    if (!http)
      return http.error();
    d.http = std::move(*http);
  }
  spdlog::info("node {} ({}) {}{}", c.node.name, c.node.role,
               worker ? "joined " + c.cluster.join : "serving on " + d.endpoint,
               d.http ? ", metrics on http://" +
                            c.http.listen.substr(0, c.http.listen.rfind(':')) +
                            ":" + std::to_string(d.http->port()) + "/metrics"
                      : std::string{});
  return n;
}

int node::run() {
  auto& d = *impl_;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  timespec poll{0, 100'000'000};
  int sig = 0;
  while (!d.drain_requested) {
    sig = sigtimedwait(&set, nullptr, &poll);
    if (sig == SIGINT || sig == SIGTERM)
      break;
  }
  spdlog::info("node {}: {}, draining (grace {} ms)", d.cfg.node.name,
               sig > 0 ? strsignal(sig) : "drain requested",
               d.cfg.runtime.drain_grace_ms);
  d.draining = true;
  caf::scoped_actor self{*d.system};
  if (d.agent) {
    // The head moves this worker's replicas elsewhere and retires each
    // one here once it is idle; open_requests counts what is left.
    caf::anon_send(d.agent, drain_atom::value);
  } else {
    self->request(d.router, std::chrono::seconds{5}, drain_atom::value)
        .receive([](uint64_t) {}, [](caf::error&) {});
  }
  auto deadline = clock_type::now() +
                  std::chrono::milliseconds{d.cfg.runtime.drain_grace_ms};
  uint64_t open = d.open_requests(self);
  while (open > 0 && clock_type::now() < deadline) {
    // A second signal means "stop now".
    timespec step{0, 20'000'000};
    if (sigtimedwait(&set, nullptr, &step) > 0)
      break;
    open = d.open_requests(self);
  }
  if (open > 0)
    spdlog::warn("node {}: {} {} still open at shutdown", d.cfg.node.name, open,
                 d.agent ? "replica(s) or request(s)" : "request(s)");
  if (d.agent && d.link) {
    // Saying goodbye spares the head a heartbeat timeout.
    d.link->send("", "leave", std::string{});
  }
  // Let the gateway (and the link) send the last messages before stopping.
  std::this_thread::sleep_for(std::chrono::milliseconds{50});
  if (d.gw)
    d.gw->stop();
  spdlog::info("node {} stopped", d.cfg.node.name);
  return 0;
}

void node::request_drain() {
  impl_->drain_requested = true;
}

const std::string& node::gateway_endpoint() const noexcept {
  return impl_->endpoint;
}

int node::http_port() const noexcept {
  return impl_->http ? impl_->http->port() : 0;
}

} // namespace shoal
