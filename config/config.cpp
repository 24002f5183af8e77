#include "config/config.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <sstream>

#include <toml++/toml.h>
#include <unistd.h>

#include "config/toml_value.hpp"
#include "net/wire/error.hpp"

#ifndef SHOAL_DEFAULT_MODEL_ROOT
#define SHOAL_DEFAULT_MODEL_ROOT "examples/models"
#endif

extern char** environ;

namespace shoal {

namespace {

// One declared setting: where it lives, what it means, how to read it from
// a TOML node or a string, and how to print it.
struct setting {
  std::string key; // "section.name"
  std::string doc;
  std::function<caf::error(node_config&, const toml::node&, const std::string&)>
      from_toml;
  std::function<caf::error(node_config&, const std::string&,
                           const std::string&)>
      from_string;
  std::function<std::string(const node_config&)> render;
};

caf::error bad(const std::string& origin, const std::string& key,
               const std::string& what) {
  return make_error(errc::config_invalid, origin + ": " + key + ": " + what);
}

template <class T>
std::string render_value(const T& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    std::ostringstream os;
    os << toml::value<std::string>{v};
    return os.str();
  } else if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else {
    std::ostringstream os;
    os << v;
    return os.str();
  }
}

template <class T>
caf::error parse_string(const std::string& s, T& out) {
  if constexpr (std::is_same_v<T, std::string>) {
    out = s;
    return {};
  } else if constexpr (std::is_same_v<T, bool>) {
    if (s == "true" || s == "1" || s == "yes") {
      out = true;
      return {};
    }
    if (s == "false" || s == "0" || s == "no") {
      out = false;
      return {};
    }
    return make_error(errc::config_invalid, "expected true or false");
  } else if constexpr (std::is_floating_point_v<T>) {
    char* end = nullptr;
    auto v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0') {
      return make_error(errc::config_invalid, "expected a number");
    }
    out = static_cast<T>(v);
    return {};
  } else {
    T v{};
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size()) {
      return make_error(errc::config_invalid, "expected an integer");
    }
    out = v;
    return {};
  }
}

template <class Section, class T>
setting declare(std::string key, std::string doc, Section node_config::*sec,
                T Section::*field) {
  setting s;
  s.key = key;
  s.doc = std::move(doc);
  s.from_toml = [=](node_config& cfg, const toml::node& n,
                    const std::string& origin) -> caf::error {
    if (auto what = read_toml_value(n, cfg.*sec.*field)) {
      return bad(origin, key, what);
    }
    cfg.sources[key] = origin;
    return {};
  };
  s.from_string = [=](node_config& cfg, const std::string& str,
                      const std::string& origin) -> caf::error {
    if (auto err = parse_string(str, cfg.*sec.*field)) {
      return bad(origin, key, reason_of(err) + ", got '" + str + "'");
    }
    cfg.sources[key] = origin;
    return {};
  };
  s.render = [=](const node_config& cfg) {
    return render_value(cfg.*sec.*field);
  };
  return s;
}

// A setting whose value --print-config must not show (a secret).
setting hidden(setting s) {
  s.render = [key = s.key](const node_config& cfg) {
    auto* value = key == "cluster.secret" ? &cfg.cluster.secret : nullptr;
    return value != nullptr && !value->empty() ? std::string{"\"(hidden)\""}
                                               : std::string{"''"};
  };
  return s;
}

std::vector<setting> node_settings() {
  using c = node_config;
  return {
      declare("node.name",
              "Name of this node in status and metrics (default: hostname).",
              &c::node, &c::node_section::name),
      declare("node.role", "head, worker or all (standalone).", &c::node,
              &c::node_section::role),
      declare("node.labels",
              "Placement labels, k=v,k=v; capacity=spot or capacity=on-demand "
              "is what min_replicas_on_demand looks at.",
              &c::node, &c::node_section::labels),
      declare("node.memory_bytes",
              "Worker: memory its replicas may use, by their manifests' "
              "resources.memory_bytes (0: no limit).",
              &c::node, &c::node_section::memory_bytes),
      declare("node.preemption_notice_url",
              "Spot notice: a URL (e.g. the cloud's instance-action metadata) "
              "polled every preemption_poll_ms; a 200 whose body is not "
              "'false' starts a drain at once (empty: off).",
              &c::node, &c::node_section::preemption_notice_url),
      declare("node.preemption_poll_ms",
              "How often the notice URL and file are looked at.", &c::node,
              &c::node_section::preemption_poll_ms),
      declare("node.preemption_notice_file",
              "Spot notice: a file whose appearance starts a drain (what node "
              "termination handlers write; empty: off).",
              &c::node, &c::node_section::preemption_notice_file),
  };
}

std::vector<setting> cluster_settings() {
  using c = node_config;
  return {
      declare("cluster.listen",
              "Head: ZeroMQ endpoint the workers' node links connect to.",
              &c::cluster, &c::cluster_section::listen),
      declare("cluster.join",
              "Worker: the head's cluster.listen endpoint (--join).",
              &c::cluster, &c::cluster_section::join),
      hidden(declare("cluster.secret",
                     "Shared secret that authenticates node messages "
                     "(HMAC-SHA256) and, unless cluster.curve_secret_key_file "
                     "is set, encrypts the links (CURVE keys derived from "
                     "it); empty: neither, for a trusted network only.",
                     &c::cluster, &c::cluster_section::secret)),
      declare("cluster.secret_file",
              "File holding cluster.secret (its first line), e.g. a mounted "
              "Kubernetes secret.",
              &c::cluster, &c::cluster_section::secret_file),
      declare("cluster.curve_secret_key_file",
              "This node's own CURVE secret key for the node links (Z85, "
              "first line; shoalctl keygen); instead of keys derived from "
              "cluster.secret.",
              &c::cluster, &c::cluster_section::curve_secret_key_file),
      declare("cluster.workers_file",
              "Head, with cluster.curve_secret_key_file: the worker public "
              "keys it accepts, one Z85 key (or .pub file path) a line; "
              "others are refused at the handshake.",
              &c::cluster, &c::cluster_section::workers_file),
      declare("cluster.head_public_key",
              "Worker, with cluster.curve_secret_key_file: the head's public "
              "key (Z85, or a .pub file).",
              &c::cluster, &c::cluster_section::head_public_key),
      declare("cluster.heartbeat_ms",
              "Heartbeat interval of node links; a head whose workers would "
              "need over 1000 heartbeats a second lengthens it (up to "
              "cluster.timeout_ms / 4) and tells them.",
              &c::cluster, &c::cluster_section::heartbeat_ms),
      declare("cluster.suspect_ms",
              "Silence after which a node is suspect (shown, still used).",
              &c::cluster, &c::cluster_section::suspect_ms),
      declare("cluster.timeout_ms",
              "Silence after which a node is declared down and its work "
              "re-dispatched.",
              &c::cluster, &c::cluster_section::timeout_ms),
  };
}

std::vector<setting> gateway_settings() {
  using c = node_config;
  return {
      declare("gateway.endpoint", "ZeroMQ ROUTER endpoint clients connect to.",
              &c::gateway, &c::gateway_section::endpoint),
      declare(
          "gateway.max_frame_bytes",
          "Largest request frame decoded; larger ones get INVALID_ARGUMENT, "
          "and past twice this the connection is dropped.",
          &c::gateway, &c::gateway_section::max_frame_bytes),
      declare("gateway.default_timeout_ms",
              "Deadline for requests that carry no timeout_ms.", &c::gateway,
              &c::gateway_section::default_timeout_ms),
      declare("gateway.max_inflight",
              "Requests accepted but not answered before new ones get "
              "RESOURCE_EXHAUSTED.",
              &c::gateway, &c::gateway_section::max_inflight),
      declare("gateway.io_threads", "ZeroMQ I/O threads.", &c::gateway,
              &c::gateway_section::io_threads),
  };
}

std::vector<setting> http_settings() {
  using c = node_config;
  return {
      declare("http.listen",
              "HOST:PORT of /metrics, /healthz and /readyz (empty: off).",
              &c::http, &c::http_section::listen),
      declare("http.threads",
              "HTTP threads, each an event loop (idle connections cost no "
              "thread).",
              &c::http, &c::http_section::threads),
      declare("http.timeout_ms",
              "A connection that sends no complete request within this is "
              "closed (whole seconds).",
              &c::http, &c::http_section::timeout_ms),
      declare("http.max_connections",
              "Open HTTP connections at most; past it new ones are closed at "
              "once.",
              &c::http, &c::http_section::max_connections),
  };
}

std::vector<setting> models_settings() {
  using c = node_config;
  return {
      declare("models.root",
              "Model repository: a directory <root>/<name>/<version>/"
              "model.toml, or a file:// or http(s):// URL of one with an "
              "index.toml (shoalctl index).",
              &c::models, &c::models_section::root),
      declare("models.cache_dir",
              "Where fetched model files and verification records are kept "
              "(default: $XDG_CACHE_HOME/shoal/models).",
              &c::models, &c::models_section::cache_dir),
      declare("models.parallel_ranges",
              "Parallel ranged GETs per large file from an HTTP repository.",
              &c::models, &c::models_section::parallel_ranges),
      declare("models.range_threshold_bytes",
              "Files at least this big are fetched in parallel ranges.",
              &c::models, &c::models_section::range_threshold_bytes),
      declare("models.fetch_timeout_ms",
              "Connect timeout, and the longest a download may stall, before "
              "it is retried.",
              &c::models, &c::models_section::fetch_timeout_ms),
      declare("models.fetch_retries",
              "Retries of a download that fails without progress.", &c::models,
              &c::models_section::fetch_retries),
      declare("models.max_file_bytes",
              "Largest model file the store accepts from a repository.",
              &c::models, &c::models_section::max_file_bytes),
      declare("models.poll_ms",
              "Re-read the repository this often for new and removed model "
              "versions (0: only at start and on `shoalctl reload`).",
              &c::models, &c::models_section::poll_ms),
  };
}

std::vector<setting> cache_settings() {
  using c = node_config;
  return {
      declare("cache.max_bytes",
              "Result cache budget in bytes (keys, values and overhead); 0 "
              "disables the cache.",
              &c::cache, &c::cache_section::max_bytes),
      declare("cache.default_ttl_ms",
              "TTL of cached results for models that set none (0: no expiry).",
              &c::cache, &c::cache_section::default_ttl_ms),
      declare("cache.window_fraction",
              "Share of the cache budget for the W-TinyLFU admission window.",
              &c::cache, &c::cache_section::window_fraction),
  };
}

std::vector<setting> router_settings() {
  using c = node_config;
  return {
      declare("router.queue_capacity",
              "Requests queued per model before RESOURCE_EXHAUSTED (models "
              "may override).",
              &c::router, &c::router_section::queue_capacity),
      declare("router.max_redispatch",
              "Times one request is re-run after its executor died before it "
              "fails with INTERNAL.",
              &c::router, &c::router_section::max_redispatch),
      declare("router.tick_ms",
              "Period of deadline and idle checks (the deadline resolution).",
              &c::router, &c::router_section::tick_ms),
      declare("router.inflight_per_replica",
              "Requests handed to one replica at once (0: two batches' worth); "
              "the rest wait in the router's priority queue.",
              &c::router, &c::router_section::inflight_per_replica),
      declare("router.scale_out_queue",
              "Cluster: queued requests per replica that, held for "
              "router.scale_out_after_ms, start another replica (0: never).",
              &c::router, &c::router_section::scale_out_queue),
      declare("router.scale_out_after_ms",
              "How long a model's queue must stay above the scale-out target.",
              &c::router, &c::router_section::scale_out_after_ms),
      declare("router.max_replicas",
              "Cluster: most replicas of one model version.", &c::router,
              &c::router_section::max_replicas),
  };
}

std::vector<setting> executor_settings() {
  using c = node_config;
  return {
      declare("executor.idle_ttl_ms",
              "An unpinned replica idle this long retires (scale to zero).",
              &c::executor, &c::executor_section::idle_ttl_ms),
      declare("executor.detached",
              "Run each executor whose backend may block on its own thread, "
              "as a GPU stream owner would, so a long batch never stalls the "
              "scheduler (false: all run on the scheduler).",
              &c::executor, &c::executor_section::detached),
  };
}

std::vector<setting> supervisor_settings() {
  using c = node_config;
  return {
      declare("supervisor.max_restarts",
              "Restarts allowed within supervisor.period_ms before the node "
              "exits non-zero (escalation).",
              &c::supervisor, &c::supervisor_section::max_restarts),
      declare("supervisor.period_ms", "Window of supervisor.max_restarts.",
              &c::supervisor, &c::supervisor_section::period_ms),
      declare("supervisor.backoff_initial_ms",
              "Delay before the first restart; doubles with each restart in "
              "the window.",
              &c::supervisor, &c::supervisor_section::backoff_initial_ms),
      declare("supervisor.backoff_max_ms", "Upper bound of the restart delay.",
              &c::supervisor, &c::supervisor_section::backoff_max_ms),
  };
}

std::vector<setting> runtime_settings() {
  using c = node_config;
  return {
      declare("runtime.scheduler_threads",
              "CAF scheduler threads (0: one per core).", &c::runtime,
              &c::runtime_section::scheduler_threads),
      declare("runtime.drain_grace_ms",
              "On SIGTERM, how long in-flight work may take before exit "
              "(what is still open then is answered CANCELLED).",
              &c::runtime, &c::runtime_section::drain_grace_ms),
      declare("runtime.poll_spin_us",
              "How long the gateway thread keeps polling after a light round "
              "before it sleeps, yielding to any thread that wants the "
              "CPU (0: sleep at once); a request or reply arriving meanwhile "
              "skips a thread wake-up.",
              &c::runtime, &c::runtime_section::poll_spin_us),
  };
}

std::vector<setting> security_settings() {
  using c = node_config;
  return {
      declare("security.curve_secret_key_file",
              "The gateway's CURVE secret key (Z85, first line; shoalctl "
              "keygen). When set, clients must connect with CURVE and a key "
              "listed in security.clients_file.",
              &c::security, &c::security_section::curve_secret_key_file),
      declare("security.clients_file",
              "TOML list of allowed clients: [[client]] name, public_key "
              "(Z85), tenant, role = \"client\" | \"admin\"; re-read on "
              "change or SIGHUP.",
              &c::security, &c::security_section::clients_file),
      declare(
          "security.admin_from",
          "Without CURVE, where admin ops (load, unload, drain, reload) may "
          "come from: \"loopback\" or \"any\" (warned about at start).",
          &c::security, &c::security_section::admin_from),
  };
}

std::vector<setting> jobs_settings() {
  using c = node_config;
  return {
      declare("jobs.path",
              "Head: the durable job store, a SQLite file (default: "
              "<models.cache_dir>/jobs/jobs.db).",
              &c::jobs, &c::jobs_section::path),
      declare("jobs.result_ttl_ms",
              "How long a finished job and its result are kept; then it "
              "answers NOT_FOUND (0: forever).",
              &c::jobs, &c::jobs_section::result_ttl_ms),
      declare("jobs.max_result_bytes",
              "Results larger than this are kept in files under "
              "jobs.results_dir instead of the database.",
              &c::jobs, &c::jobs_section::max_result_bytes),
      declare("jobs.results_dir",
              "Where large job results are kept (default: beside jobs.path, "
              "<jobs.path>.results).",
              &c::jobs, &c::jobs_section::results_dir),
      declare("jobs.max_queued",
              "Open (queued or running) jobs per tenant before submit gets "
              "RESOURCE_EXHAUSTED.",
              &c::jobs, &c::jobs_section::max_queued),
  };
}

std::vector<setting> log_settings() {
  using c = node_config;
  return {
      declare("log.level", "trace, debug, info, warn, error or off.", &c::log,
              &c::log_section::level),
      declare("log.requests",
              "Write one JSON line per request (time, id, tenant, model, "
              "status, timings, bytes; never tensor data).",
              &c::log, &c::log_section::requests),
      declare("log.requests_file",
              "File the request lines are appended to (empty: the node's "
              "log).",
              &c::log, &c::log_section::requests_file),
      declare("log.requests_sample",
              "Share of requests logged, 0..1 (1: every request).", &c::log,
              &c::log_section::requests_sample),
  };
}

std::vector<setting> torch_settings() {
  using c = node_config;
  return {
      declare("torch.threads",
              "Intra-op threads of libtorch's one process-wide pool, set once "
              "when the first torch model loads (0: every core this process "
              "may run on); [torch] threads in a manifest can only lower it.",
              &c::torch, &c::torch_section::threads),
  };
}

// Every setting, declared once with its documentation, section by section
// in the order --print-config shows them.
const std::vector<setting>& settings() {
  static const std::vector<setting> all = [] {
    std::vector<setting> out;
    for (auto* section :
         {&node_settings, &cluster_settings, &gateway_settings, &http_settings,
          &models_settings, &cache_settings, &router_settings,
          &executor_settings, &supervisor_settings, &runtime_settings,
          &security_settings, &log_settings, &torch_settings, &jobs_settings}) {
      auto more = section();
      out.insert(out.end(), more.begin(), more.end());
    }
    return out;
  }();
  return all;
}

const setting* find_setting(std::string_view key) {
  for (auto& s : settings()) {
    if (s.key == key) {
      return &s;
    }
  }
  return nullptr;
}

// One key of a [tenants.NAME] table, declared once with its documentation.
struct tenant_setting {
  std::string key;
  std::string doc;
  std::function<const char*(tenant_limits&, const toml::node&)> from_toml;
  std::function<caf::error(tenant_limits&, const std::string&)> from_string;
  std::function<std::string(const tenant_limits&)> render;
};

template <class T>
tenant_setting declare_tenant(std::string key, std::string doc,
                              T tenant_limits::*field) {
  return {std::move(key), std::move(doc),
          [=](tenant_limits& t, const toml::node& n) {
            return read_toml_value(n, t.*field);
          },
          [=](tenant_limits& t, const std::string& s) {
            return parse_string(s, t.*field);
          },
          [=](const tenant_limits& t) { return render_value(t.*field); }};
}

// `models`: a TOML array of names, or a comma-separated string (--set).
tenant_setting tenant_models_setting() {
  tenant_setting s;
  s.key = "models";
  s.doc = "Models it may use, e.g. [\"echo\"]; others get PERMISSION_DENIED "
          "(empty: every model).";
  s.from_toml = [](tenant_limits& t, const toml::node& n) -> const char* {
    auto* arr = n.as_array();
    if (!arr) {
      return "expected an array of model names";
    }
    std::vector<std::string> names;
    for (auto& item : *arr) {
      auto v = item.value_exact<std::string>();
      if (!v) {
        return "expected an array of model names";
      }
      names.push_back(*v);
    }
    t.models = std::move(names);
    return nullptr;
  };
  s.from_string = [](tenant_limits& t, const std::string& str) -> caf::error {
    std::string_view rest{str};
    t.models.clear();
    while (!rest.empty()) {
      auto comma = rest.find(',');
      if (auto name = rest.substr(0, comma); !name.empty()) {
        t.models.emplace_back(name);
      }
      rest = comma == std::string_view::npos ? "" : rest.substr(comma + 1);
    }
    return {};
  };
  s.render = [](const tenant_limits& t) {
    std::string out = "[";
    for (size_t i = 0; i < t.models.size(); ++i) {
      out += (i ? ", " : "") + render_value(t.models[i]);
    }
    return out + "]";
  };
  return s;
}

// The keys of [tenants.NAME], in the order --print-config shows them.
const std::vector<tenant_setting>& tenant_settings() {
  using t = tenant_limits;
  static const std::vector<tenant_setting> all{
      declare_tenant("rate",
                     "Requests per second it may send, a token bucket "
                     "refilled at this rate (0: unlimited).",
                     &t::rate),
      declare_tenant("burst",
                     "Requests it may send at once above the rate: the "
                     "bucket's size (0: one second's worth, at least 1).",
                     &t::burst),
      declare_tenant("max_inflight",
                     "Requests it may have executing or queued at once; "
                     "cache hits take no slot (0: unlimited).",
                     &t::max_inflight),
      declare_tenant("max_priority",
                     "Most urgent priority it may use (0..9, 0 most urgent); "
                     "a more urgent request is served at this one.",
                     &t::max_priority),
      tenant_models_setting(),
      declare_tenant("weight",
                     "Its share of a model's queue within one priority, "
                     "served in weighted round robin (1..1000).",
                     &t::weight),
  };
  return all;
}

const tenant_setting* find_tenant_setting(std::string_view key) {
  for (auto& s : tenant_settings()) {
    if (s.key == key) {
      return &s;
    }
  }
  return nullptr;
}

// [tenants.NAME] tables: a name the operator chooses, then its keys.
caf::error apply_tenants(node_config& cfg, const toml::table& tenants,
                         const std::string& file) {
  for (auto& [name_key, node] : tenants) {
    auto name = std::string{name_key.str()};
    auto* tbl = node.as_table();
    if (!tbl) {
      return bad(file, "tenants." + name,
                 "expected a table [tenants." + name + "]");
    }
    auto& limits = cfg.tenants[name];
    for (auto& [key, value] : *tbl) {
      auto dotted = "tenants." + name + "." + std::string{key.str()};
      auto* s = find_tenant_setting(key.str());
      if (!s) {
        return bad(file, dotted, "unknown key");
      }
      if (auto* what = s->from_toml(limits, value)) {
        return bad(file, dotted, what);
      }
      cfg.sources[dotted] = file;
    }
  }
  return {};
}

// "tenants.NAME.KEY" from a string (--set).
caf::error set_tenant_value(node_config& cfg, const std::string& dotted,
                            const std::string& value,
                            const std::string& origin) {
  auto last = dotted.rfind('.');
  auto name = dotted.substr(
      8, last == std::string::npos || last < 8 ? std::string::npos : last - 8);
  auto* s = last == std::string::npos || last < 8
                ? nullptr
                : find_tenant_setting(dotted.substr(last + 1));
  if (!s || name.empty()) {
    return bad(origin, dotted, "unknown key (expected tenants.NAME.KEY)");
  }
  if (auto err = s->from_string(cfg.tenants[name], value)) {
    return bad(origin, dotted, reason_of(err) + ", got '" + value + "'");
  }
  cfg.sources[dotted] = origin;
  return {};
}

caf::error apply_toml(node_config& cfg, const toml::table& root,
                      const std::string& file) {
  for (auto& [section, node] : root) {
    auto sec = std::string{section.str()};
    auto* tbl = node.as_table();
    if (!tbl) {
      return bad(file, sec, "expected a table [" + sec + "]");
    }
    if (sec == "tenants") {
      if (auto err = apply_tenants(cfg, *tbl, file)) {
        return err;
      }
      continue;
    }
    for (auto& [key, value] : *tbl) {
      auto dotted = sec + "." + std::string{key.str()};
      auto* s = find_setting(dotted);
      if (!s) {
        return bad(file, dotted, "unknown key");
      }
      if (auto err = s->from_toml(cfg, value, file)) {
        return err;
      }
    }
  }
  return {};
}

caf::error apply_env(node_config& cfg) {
  // SHOAL_<SECTION>_<KEY>, e.g. SHOAL_GATEWAY_ENDPOINT. Unknown SHOAL_*
  // names are an error too: a typo must not silently do nothing.
  static const std::vector<std::string> not_settings{
      "SHOAL_MODEL_ROOT", "SHOAL_ENDPOINT", "SHOAL_CONFIG",
      // shoalctl's CURVE keys.
      "SHOAL_SERVER_PUBLIC_KEY", "SHOAL_CLIENT_KEY"};
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv{*e};
    if (kv.substr(0, 6) != "SHOAL_") {
      continue;
    }
    auto eq = kv.find('=');
    if (eq == std::string_view::npos) {
      continue;
    }
    std::string name{kv.substr(0, eq)};
    std::string value{kv.substr(eq + 1)};
    if (std::find(not_settings.begin(), not_settings.end(), name) !=
        not_settings.end()) {
      continue;
    }
    const setting* match = nullptr;
    for (auto& s : settings()) {
      std::string env = "SHOAL_";
      for (char ch : s.key) {
        env += ch == '.' ? '_' : static_cast<char>(std::toupper(ch));
      }
      if (env == name) {
        match = &s;
        break;
      }
    }
    if (!match) {
      return make_error(errc::config_invalid,
                        "environment: " + name + ": unknown setting");
    }
    if (auto err = match->from_string(cfg, value, "environment " + name)) {
      return err;
    }
  }
  return {};
}

} // namespace

std::string default_model_root() {
  if (auto* env = std::getenv("SHOAL_MODEL_ROOT"); env && *env) {
    return env;
  }
  return SHOAL_DEFAULT_MODEL_ROOT;
}

std::string default_model_cache_dir() {
  if (auto* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg == '/') {
    return std::string{xdg} + "/shoal/models";
  }
  if (auto* home = std::getenv("HOME"); home && *home == '/') {
    return std::string{home} + "/.cache/shoal/models";
  }
  return "/tmp/shoal-models-" + std::to_string(::getuid());
}

caf::expected<node_config> load_config(const std::string& file) {
  return load_config(file.empty() ? std::vector<std::string>{}
                                  : std::vector<std::string>{file});
}

caf::expected<node_config> load_config(const std::vector<std::string>& files) {
  node_config cfg;
  for (auto& file : files) {
    auto tbl = parse_toml_file(file);
    if (!tbl) {
      return tbl.error();
    }
    if (auto err = apply_toml(cfg, *tbl, file)) {
      return err;
    }
  }
  if (auto err = apply_env(cfg)) {
    return err;
  }
  if (cfg.models.root.empty()) {
    cfg.models.root = default_model_root();
  }
  if (cfg.models.cache_dir.empty()) {
    cfg.models.cache_dir = default_model_cache_dir();
  }
  if (cfg.node.name.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
      std::snprintf(host, sizeof(host), "node");
    }
    cfg.node.name = host;
  }
  return cfg;
}

caf::error set_config_value(node_config& cfg, const std::string& dotted,
                            const std::string& value,
                            const std::string& origin) {
  if (dotted.rfind("tenants.", 0) == 0) {
    return set_tenant_value(cfg, dotted, value, origin);
  }
  auto* s = find_setting(dotted);
  if (!s) {
    return bad(origin, dotted, "unknown key");
  }
  return s->from_string(cfg, value, origin);
}

namespace {

// Where `key` was set (a file, --set, an environment variable), or empty
// for a default. A tenant's name has no source of its own: its table's
// first field set says where the table is.
std::string origin_of(const node_config& cfg, const std::string& key) {
  if (auto i = cfg.sources.find(key); i != cfg.sources.end()) {
    return i->second;
  }
  auto i = cfg.sources.lower_bound(key + ".");
  if (i != cfg.sources.end() && i->first.rfind(key + ".", 0) == 0) {
    return i->second;
  }
  return {};
}

// A value out of range, named as a type error names it: with the origin
// first, so that a value from a later --config file or from --set is found
// where it was set rather than searched for.
caf::error invalid(const node_config& cfg, const std::string& key,
                   const std::string& what) {
  auto origin = origin_of(cfg, key);
  if (origin.empty()) {
    return make_error(errc::config_invalid, key + ": " + what);
  }
  return bad(origin, key, what);
}

// The node's role, its cluster settings and its labels.
caf::error validate_cluster(const node_config& cfg) {
  auto& role = cfg.node.role;
  if (role != "all" && role != "head" && role != "worker") {
    return invalid(cfg, "node.role",
                   "must be head, worker or all, got '" + role + "'");
  }
  if (role == "worker" && cfg.cluster.join.empty()) {
    return invalid(cfg, "cluster.join",
                   "a worker needs the head's endpoint "
                   "(--join tcp://HEAD:5556)");
  }
  if (role != "worker" && !cfg.cluster.join.empty()) {
    return invalid(cfg, "cluster.join",
                   "only a worker joins a head (--role worker)");
  }
  if (cfg.node.preemption_poll_ms < 100) {
    return invalid(cfg, "node.preemption_poll_ms", "must be at least 100");
  }
  if (!cfg.node.preemption_notice_url.empty() &&
      cfg.node.preemption_notice_url.rfind("http://", 0) != 0 &&
      cfg.node.preemption_notice_url.rfind("https://", 0) != 0) {
    return invalid(cfg, "node.preemption_notice_url",
                   "expected an http:// or https:// URL, got '" +
                       cfg.node.preemption_notice_url + "'");
  }
  if (cfg.cluster.heartbeat_ms == 0 ||
      cfg.cluster.timeout_ms <= cfg.cluster.heartbeat_ms) {
    return invalid(cfg, "cluster.timeout_ms",
                   "must be larger than cluster.heartbeat_ms (> 0)");
  }
  if (cfg.cluster.suspect_ms == 0 ||
      cfg.cluster.suspect_ms > cfg.cluster.timeout_ms) {
    return invalid(cfg, "cluster.suspect_ms",
                   "must be in 1..cluster.timeout_ms");
  }
  std::string_view rest{cfg.node.labels};
  while (!rest.empty()) {
    auto comma = rest.find(',');
    auto item = rest.substr(0, comma);
    auto eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return invalid(cfg, "node.labels",
                     "expected k=v,k=v, got '" + cfg.node.labels + "'");
    }
    rest = comma == std::string_view::npos ? std::string_view{}
                                           : rest.substr(comma + 1);
  }
  return {};
}

// The gateway, HTTP, cache, router, supervisor and log settings.
caf::error validate_serving(const node_config& cfg) {
  if (cfg.gateway.endpoint.find("://") == std::string::npos) {
    return invalid(cfg, "gateway.endpoint",
                   "expected a ZeroMQ endpoint like tcp://127.0.0.1:5555, "
                   "got '" +
                       cfg.gateway.endpoint + "'");
  }
  if (cfg.gateway.max_frame_bytes < 64) {
    return invalid(cfg, "gateway.max_frame_bytes", "must be at least 64");
  }
  if (cfg.runtime.poll_spin_us > 10000) {
    return invalid(cfg, "runtime.poll_spin_us", "must be at most 10000");
  }
  if (cfg.gateway.io_threads < 1) {
    return invalid(cfg, "gateway.io_threads", "must be at least 1");
  }
  if (cfg.http.threads < 1) {
    return invalid(cfg, "http.threads", "must be at least 1");
  }
  if (!cfg.http.listen.empty() &&
      cfg.http.listen.rfind(':') == std::string::npos) {
    return invalid(cfg, "http.listen",
                   "expected HOST:PORT, got '" + cfg.http.listen + "'");
  }
  if (cfg.cache.window_fraction <= 0 || cfg.cache.window_fraction >= 1) {
    return invalid(cfg, "cache.window_fraction", "must be in (0, 1)");
  }
  if (cfg.router.queue_capacity == 0) {
    return invalid(cfg, "router.queue_capacity", "must be at least 1");
  }
  if (cfg.router.tick_ms == 0) {
    return invalid(cfg, "router.tick_ms", "must be at least 1");
  }
  if (cfg.supervisor.period_ms == 0) {
    return invalid(cfg, "supervisor.period_ms", "must be at least 1");
  }
  if (cfg.supervisor.backoff_max_ms < cfg.supervisor.backoff_initial_ms) {
    return invalid(cfg, "supervisor.backoff_max_ms",
                   "must not be below supervisor.backoff_initial_ms");
  }
  static const std::vector<std::string> levels{"trace", "debug", "info",
                                               "warn",  "error", "off"};
  if (std::find(levels.begin(), levels.end(), cfg.log.level) == levels.end()) {
    return invalid(cfg, "log.level",
                   "must be one of trace, debug, info, warn, "
                   "error, off; got '" +
                       cfg.log.level + "'");
  }
  return {};
}

// CURVE keys come in pairs of settings; admin_from is one of two words.
caf::error validate_security(const node_config& cfg) {
  auto& s = cfg.security;
  if (s.admin_from != "loopback" && s.admin_from != "any") {
    return invalid(cfg, "security.admin_from",
                   "must be \"loopback\" or \"any\", got '" + s.admin_from +
                       "'");
  }
  if (s.curve_secret_key_file.empty() != s.clients_file.empty()) {
    return invalid(cfg,
                   s.clients_file.empty() ? "security.clients_file"
                                          : "security.curve_secret_key_file",
                   "CURVE needs both security.curve_secret_key_file and "
                   "security.clients_file");
  }
  auto& c = cfg.cluster;
  if (!c.curve_secret_key_file.empty()) {
    if (cfg.node.role == "head" && c.workers_file.empty()) {
      return invalid(cfg, "cluster.workers_file",
                     "a head with cluster.curve_secret_key_file needs the "
                     "workers' public keys");
    }
    if (cfg.node.role == "worker" && c.head_public_key.empty()) {
      return invalid(cfg, "cluster.head_public_key",
                     "a worker with cluster.curve_secret_key_file needs the "
                     "head's public key");
    }
  }
  return {};
}

// The model repository (a directory, file:// or http(s)://) and the store.
caf::error validate_models(const node_config& cfg) {
  auto root = cfg.models.root;
  auto lower = root.substr(0, 8);
  for (auto& ch : lower) {
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }
  bool url = lower.rfind("http://", 0) == 0 || lower.rfind("https://", 0) == 0;
  if (lower.rfind("file://", 0) == 0) {
    root = root.substr(7);
  } else if (!url && root.find("://") != std::string::npos) {
    return invalid(cfg, "models.root",
                   "unsupported scheme in '" + root +
                       "' (a directory, file:// or http(s)://)");
  }
  std::error_code ec;
  if (!url && !std::filesystem::is_directory(root, ec)) {
    return invalid(cfg, "models.root",
                   "'" + cfg.models.root + "' is not a directory");
  }
  if (cfg.models.cache_dir.empty()) {
    return invalid(cfg, "models.cache_dir", "must not be empty");
  }
  if (cfg.models.parallel_ranges == 0 || cfg.models.parallel_ranges > 64) {
    return invalid(cfg, "models.parallel_ranges", "must be in 1..64");
  }
  if (cfg.models.fetch_timeout_ms < 100) {
    return invalid(cfg, "models.fetch_timeout_ms", "must be at least 100");
  }
  if (cfg.models.poll_ms > 0 && cfg.models.poll_ms < 100) {
    return invalid(cfg, "models.poll_ms", "must be 0 (off) or at least 100");
  }
  return {};
}

// Tenant names become metric label values: short, plain, and never the
// label of the tenants that are not configured.
caf::error validate_tenant_name(const node_config& cfg,
                                const std::string& name) {
  auto plain = [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' ||
           ch == '-' || ch == '.';
  };
  if (name.empty() || name.size() > 64 ||
      !std::all_of(name.begin(), name.end(), plain)) {
    return invalid(cfg, "tenants." + name,
                   "a tenant name is 1..64 letters, digits, '_', '-' or '.'");
  }
  if (name == "other") {
    return invalid(cfg, "tenants.other",
                   "'other' is reserved: it labels the "
                   "metrics of tenants not configured");
  }
  return {};
}

// [tenants.NAME] tables and the request log.
caf::error validate_tenants(const node_config& cfg) {
  if (cfg.tenants.size() > 1000) {
    return invalid(cfg, "tenants", "at most 1000 tenants");
  }
  for (auto& [name, t] : cfg.tenants) {
    auto key = "tenants." + name + ".";
    if (auto err = validate_tenant_name(cfg, name)) {
      return err;
    }
    if (!(t.rate >= 0) || t.rate > 1e9) {
      return invalid(cfg, key + "rate",
                     "must be in 0..1e9 requests per second");
    }
    if (t.max_priority > 9) {
      return invalid(cfg, key + "max_priority", "must be in 0..9");
    }
    if (t.weight < 1 || t.weight > 1000) {
      return invalid(cfg, key + "weight", "must be in 1..1000");
    }
  }
  if (!(cfg.log.requests_sample >= 0) || cfg.log.requests_sample > 1) {
    return invalid(cfg, "log.requests_sample", "must be in 0..1");
  }
  return {};
}

} // namespace

caf::error validate(const node_config& cfg) {
  for (auto* check : {&validate_cluster, &validate_serving, &validate_security,
                      &validate_models, &validate_tenants}) {
    if (auto err = check(cfg)) {
      return err;
    }
  }
  return {};
}

namespace {

void render_tenants(const node_config& cfg, bool with_sources,
                    std::string& out) {
  if (cfg.tenants.empty()) {
    out += "\n# [tenants.NAME]: none; every request is tenant 'default', "
           "without limits\n";
  }
  for (auto& [name, t] : cfg.tenants) {
    out += "\n[tenants." + name + "]\n";
    for (auto& s : tenant_settings()) {
      auto dotted = "tenants." + name + "." + s.key;
      out += "# " + s.doc + "\n" + s.key + " = " + s.render(t);
      if (with_sources) {
        auto i = cfg.sources.find(dotted);
        out += i == cfg.sources.end() ? "  # default" : "  # from " + i->second;
      }
      out += "\n";
    }
  }
}

} // namespace

std::string render_config(const node_config& cfg, bool with_sources) {
  std::string out = "# shoald effective configuration\n";
  std::string current;
  for (auto& s : settings()) {
    auto dot = s.key.find('.');
    auto sec = s.key.substr(0, dot);
    if (sec != current) {
      out += "\n[" + sec + "]\n";
      current = sec;
    }
    out += "# " + s.doc + "\n";
    out += s.key.substr(dot + 1) + " = " + s.render(cfg);
    if (with_sources) {
      auto i = cfg.sources.find(s.key);
      out += i == cfg.sources.end() ? "  # default" : "  # from " + i->second;
    }
    out += "\n";
  }
  render_tenants(cfg, with_sources, out);
  return out;
}

std::vector<std::pair<std::string, std::string>>
parse_labels(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t pos = 0;
  while (pos < text.size()) {
    auto comma = text.find(',', pos);
    if (comma == std::string::npos) {
      comma = text.size();
    }
    auto item = text.substr(pos, comma - pos);
    auto eq = item.find('=');
    if (eq != std::string::npos && eq > 0) {
      out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    }
    pos = comma + 1;
  }
  return out;
}

} // namespace shoal
