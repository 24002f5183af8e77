#include "runtime/node/node.hpp"

#include <csignal>
#include <cstdlib>
#include <thread>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/serving/cache.hpp"
#include "actors/serving/router.hpp"
#include "actors/serving/supervisor.hpp"
#include "config/human_bytes.hpp"
#include "gpu/backend.hpp"
#include "gpu/device/node_devices.hpp"
#include "gpu/registry.hpp"
#include "net/wire/error.hpp"
#include "runtime/model/repository.hpp"
#include "runtime/node/node_impl.hpp"
#include "runtime/node/node_security.hpp"
#include "runtime/node/service_discovery.hpp"

namespace shoal {

void block_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

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

uint64_t node::impl::open_requests(caf::scoped_actor& self) {
  uint64_t n = 0;
  auto count = [&](const auto& target) {
    self->request(target, std::chrono::seconds{5}, count_atom::value)
        .receive([&](uint64_t x) { n = x; }, [&](caf::error&) { n = 0; });
  };
  // A worker's open work is its replicas: the head retires each one once
  // it is idle and replaced.
  if (router) {
    count(router);
  } else if (agent) {
    count(agent);
  }
  return n;
}

// Every request and wait still open gets its reply before the gateway
// stops (a worker has no clients: the head re-runs its requests).
void node::impl::abandon_open(caf::scoped_actor& self) {
  uint64_t answered = 0;
  auto abandon = [&](const auto& target) {
    self->request(target, std::chrono::seconds{5}, abandon_atom::value)
        .receive([&](uint64_t n) { answered += n; }, [](caf::error&) {});
  };
  if (router) {
    abandon(router);
  }
  if (jobs) {
    abandon(jobs);
  }
  if (answered > 0) {
    spdlog::warn("node {}: answered {} open request(s) CANCELLED or "
                 "UNAVAILABLE at shutdown",
                 cfg.node.name, answered);
  }
}

std::string node::impl::drain_node(const std::string& target) {
  auto& own = cfg.node.name;
  if (target == own) {
    drain_requested = true;
    return {};
  }
  if (view) {
    auto state = view->state_of(target);
    if (!state.empty() && state != "down") {
      caf::anon_send(coordinator, drain_atom::value, target);
      return {};
    }
  }
  return "no node named '" + target + "' (this node is '" + own + "')";
}

namespace {

using impl = node::impl;

// The model repository, and how executors bring a version's files in.
caf::error open_models(impl& d) {
  configure_backends(d.cfg);
  auto store = store_config_of(d.cfg);
  d.env = std::make_shared<load_env>();
  d.env->prepare = [store](const model_spec& spec,
                           const file_progress_fn& progress,
                           prepare_stats& stats) {
    fetch_stats fs;
    auto err = prepare_model(spec, store, progress, &fs);
    stats.bytes_downloaded = fs.bytes_downloaded;
    stats.files_fetched = fs.files_fetched;
    stats.files_reused = fs.files_reused;
    return err;
  };
  d.env->progress = std::make_shared<load_progress>();
  auto catalog = open_repository(store);
  if (!catalog) {
    return catalog.error();
  }
  d.catalog = std::make_shared<live_catalog>(*catalog);
  spdlog::info("model repository {}: {} model(s)", d.cfg.models.root,
               (*catalog)->models.size());
  return {};
}

// Re-reads of the repository (models.poll_ms, the `reload` op, a worker's
// spawn of a version it has not seen) and what a change means here.
void watch_models(impl& d) {
  auto on_change = [&d](const catalog_update& up) {
    if (d.router) {
      caf::anon_send(d.router, reload_atom::value);
    }
    // A version number removed and later published again must not answer
    // from the old version's cached results.
    if (!up.removed.empty()) {
      d.cache->clear();
    }
  };
  d.watcher = repository_watcher::start(
      store_config_of(d.cfg), std::chrono::milliseconds{d.cfg.models.poll_ms},
      d.catalog, on_change);
  d.catalog->set_rereader(
      [w = std::weak_ptr<repository_watcher>{d.watcher}](reread_done done) {
        if (auto p = w.lock()) {
          p->request(std::move(done));
        }
      });
}

// Metrics, the result cache and the reply sink: what every part shares.
void make_shared_state(impl& d) {
  auto& c = d.cfg;
  d.metrics = std::make_shared<node_metrics>(d.registry, c.node.name);
  result_cache::config cc;
  cc.max_bytes = c.cache.max_bytes;
  cc.window_fraction = c.cache.window_fraction;
  d.cache = std::make_shared<result_cache>(cc);
  d.metrics->watch_cache(d.cache);
  d.metrics->watch_devices(local_device_samples);
  d.sink = std::make_shared<reply_sink>();
  d.tenants = std::make_shared<tenant_table>(c.tenants);
  d.metrics->watch_tenants(d.tenants);
}

// What this node can place GPU models on, once, for whoever reads the log
// when a model does not land on a GPU.
void log_devices(const impl& d) {
  auto gpus = gpu_devices();
  if (gpus.empty()) {
    spdlog::info("node {}: no GPU ({})", d.cfg.node.name, gpu_absent_reason());
  }
  for (auto& g : gpus) {
    spdlog::info("node {}: {} {}: {} used of {}", d.cfg.node.name, g.name,
                 g.product, human_bytes(g.used_bytes),
                 human_bytes(g.total_bytes));
  }
}

void start_actor_system(impl& d) {
  auto& c = d.cfg;
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
}

restart_policy restart_policy_of(const node_config& c) {
  restart_policy policy;
  policy.max_restarts = c.supervisor.max_restarts;
  policy.period = std::chrono::milliseconds{c.supervisor.period_ms};
  policy.backoff_initial =
      std::chrono::milliseconds{c.supervisor.backoff_initial_ms};
  policy.backoff_max = std::chrono::milliseconds{c.supervisor.backoff_max_ms};
  return policy;
}

// The node supervisor and how it makes executors: a backend that may
// block gets a thread of its own, the others run on the scheduler.
void start_supervisor(impl& d) {
  child_factory factory = [catalog = d.catalog, metrics = d.metrics,
                           detached = d.cfg.executor.detached,
                           env = std::shared_ptr<const load_env>{d.env}](
                              caf::local_actor* self, const std::string& model,
                              uint64_t version,
                              replica_listener_handle listener) -> caf::actor {
    auto spec = catalog->get()->resolve(model, version);
    if (!spec) {
      return {};
    }
    if (detached && backend_may_block(*spec)) {
      return caf::actor_cast<caf::actor>(self->spawn<caf::detached>(
          executor_actor, spec, listener, metrics, env));
    }
    return caf::actor_cast<caf::actor>(
        self->spawn(executor_actor, spec, listener, metrics, env));
  };
  auto escalate = [](const std::string& why) {
    spdlog::critical("node exits: {}", why);
    spdlog::default_logger()->flush();
    std::_Exit(70);
  };
  d.supervisor =
      d.system->spawn(supervisor_actor, restart_policy_of(d.cfg), factory,
                      escalate, [metrics = d.metrics](std::string_view reason) {
                        metrics->spawn(reason);
                      });
}

router_config router_config_of(const impl& d) {
  auto& c = d.cfg;
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
  rc.progress = d.env->progress;
  rc.cluster = d.head();
  rc.scale_out_queue = c.router.scale_out_queue;
  rc.scale_out_after = std::chrono::milliseconds{c.router.scale_out_after_ms};
  rc.max_replicas = std::max<uint64_t>(1, c.router.max_replicas);
  rc.tenants = d.tenants;
  rc.requests = d.requests;
  return rc;
}

// The router (its replicas come from the coordinator on a head, from the
// supervisor otherwise), the cache's maintenance and the gateway.
caf::error start_serving(impl& d) {
  auto& c = d.cfg;
  if (c.log.requests) {
    auto log = request_log::open(c.log.requests_file, c.log.requests_sample);
    if (!log) {
      return log.error();
    }
    d.requests = std::move(*log);
  }
  auto replicas = d.head() ? replica_source_handle{d.coordinator}
                           : replica_source_handle{d.supervisor};
  auto cluster_status =
      d.head() ? cluster_status_handle{d.coordinator} : cluster_status_handle{};
  d.router =
      d.system->spawn(router_actor, router_config_of(d), d.catalog, d.cache,
                      d.sink, d.metrics, replicas, cluster_status);
  if (d.head()) {
    caf::anon_send(d.coordinator, set_router_atom::value, d.router);
  }
  if (auto err = d.start_jobs()) {
    return err;
  }
  d.cache_maint =
      d.system->spawn(cache_actor, d.cache, std::chrono::milliseconds{1000});
  gateway_config gc;
  gc.endpoint = c.gateway.endpoint;
  gc.default_timeout_ms = c.gateway.default_timeout_ms;
  gc.io_threads = c.gateway.io_threads;
  gc.poll_spin = std::chrono::microseconds{c.runtime.poll_spin_us};
  gc.node_name = c.node.name;
  gc.limits.max_frame_bytes = c.gateway.max_frame_bytes;
  gc.limits.max_bin_bytes = c.gateway.max_frame_bytes;
  if (auto err = configure_gateway_security(c, d.registry, gc)) {
    return err;
  }
  d.clients = gc.clients;
  gateway_env ge{d.router,
                 d.catalog,
                 d.cache,
                 d.sink,
                 d.metrics,
                 [&d](const std::string& target) {
                   return d.drain_node(target); }};
  ge.tenants = d.tenants;
  ge.requests = d.requests;
  ge.jobs = d.jobs;
  auto gw = gateway::start(gc, std::move(ge));
  if (!gw) {
    return gw.error();
  }
  d.gw = std::move(*gw);
  d.endpoint = d.gw->endpoint();
  return {};
}

// /readyz: whether this node takes work now, and its devices (which only
// inform, never change the status code).
std::pair<bool, std::string> readiness(const impl& d) {
  auto& join = d.cfg.cluster.join;
  std::pair<bool, std::string> out;
  if (d.draining) {
    out = {false, "draining\n"};
  } else if (d.worker()) {
    out = d.joined ? std::pair{true, "ready: joined " + join + "\n"}
                   : std::pair{false, "not joined to " + join + "\n"};
  } else {
    out = {true, "ready: gateway " + d.endpoint + ", " +
                     std::to_string(d.catalog->get()->models.size()) +
                     " model(s)\n"};
  }
  out.second += local_devices_text();
  return out;
}

// The host part of http.listen (HOST:PORT).
std::string listen_host(const node_config& c) {
  return c.http.listen.substr(0, c.http.listen.rfind(':'));
}

// /sd hands each node's http.listen to Prometheus as its target, and a
// wildcard host is no address to scrape: said once at start, where an
// operator looks when a target stays down.
void warn_wildcard_listen(const node_config& c) {
  if (c.node.role == "all") {
    return; // a standalone node is in no /sd
  }
  auto host = listen_host(c);
  if (host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]") {
    spdlog::warn("node {}: http.listen {} is a wildcard address, which the "
                 "head's /sd hands to Prometheus as this node's metrics "
                 "target; set it to an address Prometheus can reach (on "
                 "Kubernetes: SHOAL_HTTP_LISTEN=$(POD_IP):9310)",
                 c.node.name, c.http.listen);
  }
}

// The head's own metrics target and every live worker's.
std::string service_discovery(const impl& d) {
  auto& c = d.cfg;
  auto host = listen_host(c);
  // A cluster's pods share the head's namespace (the Kubernetes downward
  // API's POD_NAMESPACE); Prometheus' HTTP discovery cannot know it.
  static const std::string ns = [] {
    const char* v = std::getenv("POD_NAMESPACE");
    return std::string{v == nullptr ? "" : v};
  }();
  std::vector<sd_target> targets;
  targets.push_back({host + ":" + std::to_string(d.http->port()),
                     c.node.name,
                     "head",
                     {},
                     ns});
  for (auto& [name, e] : d.view->snapshot()) {
    if (e.state != "down" && !e.metrics_target.empty()) {
      targets.push_back({e.metrics_target, name, "worker", e.labels, ns});
    }
  }
  return render_service_discovery(targets);
}

caf::error start_http(impl& d) {
  http_handlers h;
  h.ready = [&d] { return readiness(d); };
  if (d.head()) {
    h.service_discovery = [&d] { return service_discovery(d); };
  }
  warn_wildcard_listen(d.cfg);
  http_limits limits;
  limits.threads = d.cfg.http.threads;
  limits.timeout_ms = d.cfg.http.timeout_ms;
  limits.max_connections = d.cfg.http.max_connections;
  auto http = http_server::start(d.cfg.http.listen, d.registry, h, limits);
  if (!http) {
    return http.error();
  }
  d.http = std::move(*http);
  return {};
}

// Spot notices start the same drain as SIGTERM, only earlier.
void watch_preemption(impl& d) {
  auto& n = d.cfg.node;
  preemption_config pc{n.preemption_notice_url, n.preemption_notice_file,
                       std::chrono::milliseconds{n.preemption_poll_ms}};
  d.preemption = preemption_watcher::start(pc, [&d](const std::string& from) {
    spdlog::warn("node {}: preemption notice ({}): draining now",
                 d.cfg.node.name, from);
    d.metrics->preemption_notice();
    d.drain_requested = true;
  });
}

void log_started(const impl& d) {
  auto& c = d.cfg;
  std::string metrics;
  if (d.http) {
    metrics = ", metrics on http://" + listen_host(c) + ":" +
              std::to_string(d.http->port()) + "/metrics";
  }
  spdlog::info("node {} ({}) {}{}", c.node.name, c.node.role,
               d.worker() ? "joining " + c.cluster.join
                          : "serving on " + d.endpoint,
               metrics);
}

} // namespace

node::node() : impl_(std::make_unique<impl>()) {
  // nop
}

node::~node() {
  auto& d = *impl_;
  d.preemption.reset();
  // Its callbacks send to the actors and the cache.
  if (d.catalog) {
    d.catalog->set_rereader({});
  }
  d.watcher.reset();
  if (d.gw) {
    d.gw->stop();
  }
  // The gateway holds the job manager's handle, and CAF waits for a
  // detached actor until its last handle is gone.
  d.gw.reset();
  d.http.reset();
  // The link's callbacks send to actors: stop it before they go.
  if (d.link) {
    d.link->stop();
  }
  // The link's callbacks hold the box that holds the link: break the
  // cycle, or the link (and what it still queued) is never freed.
  if (d.box) {
    d.box->close();
  }
  d.link.reset();
  if (d.system) {
    auto stop = [](auto& a) {
      if (a) {
        caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
      }
      a = nullptr;
    };
    stop(d.jobs);
    stop(d.router);
    stop(d.supervisor);
    stop(d.cache_maint);
    stop(d.coordinator);
    stop(d.agent);
    d.system.reset();
  }
}

caf::expected<std::unique_ptr<node>> node::start(node_config cfg) {
  std::unique_ptr<node> n{new node};
  auto& d = *n->impl_;
  d.cfg = std::move(cfg);
  if (auto err = open_models(d)) {
    return err;
  }
  make_shared_state(d);
  log_devices(d);
  start_actor_system(d);
  if (!d.head()) {
    start_supervisor(d);
  }
  if (d.head() || d.worker()) {
    if (auto err = d.start_cluster()) {
      return err;
    }
  }
  if (!d.worker()) {
    if (auto err = start_serving(d)) {
      return err;
    }
  }
  if (!d.cfg.http.listen.empty()) {
    if (auto err = start_http(d)) {
      return err;
    }
  }
  watch_models(d);
  watch_preemption(d);
  log_started(d);
  return n;
}
namespace {

// Waits for SIGINT/SIGTERM or a drain request. Returns the signal, or 0.
// SIGHUP re-reads the clients file.
int wait_for_stop(const node::impl& d, const sigset_t& set) {
  timespec poll{0, 100'000'000};
  while (!d.drain_requested) {
    int sig = sigtimedwait(&set, nullptr, &poll);
    if (sig == SIGINT || sig == SIGTERM) {
      return sig;
    }
    if (sig == SIGHUP && d.clients) {
      d.clients->reload();
    }
  }
  return 0;
}

// Waits until nothing is open or the grace period is over; a second signal
// means "stop now". Returns what is still open.
uint64_t wait_drained(node::impl& d, caf::scoped_actor& self,
                      const sigset_t& set) {
  auto deadline = clock_type::now() +
                  std::chrono::milliseconds{d.cfg.runtime.drain_grace_ms};
  uint64_t open = d.open_requests(self);
  while (open > 0 && clock_type::now() < deadline) {
    timespec step{0, 20'000'000};
    int sig = sigtimedwait(&set, nullptr, &step);
    if (sig == SIGINT || sig == SIGTERM) {
      break;
    }
    open = d.open_requests(self);
  }
  return open;
}

} // namespace

int node::run() {
  auto& d = *impl_;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  int sig = wait_for_stop(d, set);
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
    // Jobs not done by the end of the drain stay stored for the next start.
    caf::anon_send(d.jobs, drain_atom::value);
    self->request(d.router, std::chrono::seconds{5}, drain_atom::value)
        .receive([](uint64_t) {}, [](caf::error&) {});
  }
  if (auto open = wait_drained(d, self, set); open > 0) {
    spdlog::warn("node {}: {} {} still open at shutdown", d.cfg.node.name, open,
                 d.agent ? "replica(s) or request(s)" : "request(s)");
  }
  d.abandon_open(self);
  if (d.agent && d.link) {
    // Saying goodbye spares the head a heartbeat timeout.
    send(*d.link, "", leave_msg{});
  }
  // Let the gateway (and the link) send the last messages before stopping.
  std::this_thread::sleep_for(std::chrono::milliseconds{50});
  if (d.gw) {
    d.gw->stop();
  }
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
