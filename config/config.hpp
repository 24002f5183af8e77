// The node's configuration: defaults, then a TOML file, then SHOAL_*
// environment variables, then command-line flags, each overriding the last.
// Every setting is declared once in config.cpp with its documentation.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <caf/expected.hpp>

namespace shoal {

// One tenant's limits ([tenants.NAME]); config.cpp documents each.
struct tenant_limits {
  double rate = 0;                 // requests per second; 0: unlimited
  uint64_t burst = 0;              // 0: one second's worth, at least 1
  uint64_t max_inflight = 0;       // 0: unlimited
  uint64_t max_priority = 0;       // most urgent priority it may use
  std::vector<std::string> models; // empty: every model
  uint64_t weight = 1;
};

struct node_config {
  struct node_section {
    std::string name;
    std::string role = "all";
    std::string labels;        // k=v,k=v
    uint64_t memory_bytes = 0; // placement budget; 0: unlimited
    std::string preemption_notice_url;
    uint64_t preemption_poll_ms = 2000;
    std::string preemption_notice_file;
  } node;
  struct cluster_section {
    std::string listen = "tcp://127.0.0.1:5556";
    std::string join;
    std::string secret;
    std::string secret_file;
    std::string curve_secret_key_file;
    std::string workers_file;
    std::string head_public_key;
    uint64_t heartbeat_ms = 100;
    uint64_t suspect_ms = 300;
    uint64_t timeout_ms = 1000;
  } cluster;
  struct gateway_section {
    std::string endpoint = "tcp://127.0.0.1:5555";
    uint64_t max_frame_bytes = 64u << 20;
    uint64_t default_timeout_ms = 30000;
    uint64_t max_inflight = 100000;
    int io_threads = 1;
  } gateway;
  struct http_section {
    std::string listen = "127.0.0.1:9310";
    int threads = 2;
    uint64_t timeout_ms = 10000;
    uint64_t max_connections = 1024;
  } http;
  struct models_section {
    std::string root;
    std::string cache_dir;
    uint64_t parallel_ranges = 4;
    uint64_t range_threshold_bytes = 8u << 20;
    uint64_t fetch_timeout_ms = 300000;
    uint64_t fetch_retries = 3;
    uint64_t max_file_bytes = uint64_t{64} << 30;
    uint64_t poll_ms = 0;
  } models;
  struct cache_section {
    uint64_t max_bytes = 256u << 20;
    uint64_t default_ttl_ms = 0;
    double window_fraction = 0.01;
  } cache;
  struct router_section {
    uint64_t queue_capacity = 1024;
    uint64_t max_redispatch = 3;
    uint64_t tick_ms = 5;
    uint64_t inflight_per_replica = 0;
    uint64_t scale_out_queue = 64;
    uint64_t scale_out_after_ms = 2000;
    uint64_t max_replicas = 4;
  } router;
  struct executor_section {
    uint64_t idle_ttl_ms = 300000;
    bool detached = true;
  } executor;
  struct supervisor_section {
    uint64_t max_restarts = 5;
    uint64_t period_ms = 10000;
    uint64_t backoff_initial_ms = 50;
    uint64_t backoff_max_ms = 5000;
  } supervisor;
  struct runtime_section {
    uint64_t scheduler_threads = 0;
    uint64_t drain_grace_ms = 30000;
    uint64_t poll_spin_us = 100;
  } runtime;
  struct security_section {
    std::string curve_secret_key_file;
    std::string clients_file;
    std::string admin_from = "loopback";
  } security;
  struct log_section {
    std::string level = "info";
    bool requests = false;
    std::string requests_file;
    double requests_sample = 1.0;
  } log;
  // [tenants.NAME]; names without a table share [tenants.default].
  std::map<std::string, tenant_limits> tenants;
  struct torch_section {
    uint64_t threads = 0; // 0: every core the process may run on
  } torch;
  struct jobs_section {
    std::string path; // empty: <models.cache_dir>/jobs/jobs.db
    uint64_t result_ttl_ms = 86'400'000;
    uint64_t max_result_bytes = 1u << 20;
    std::string results_dir; // empty: beside the database
    uint64_t max_queued = 10000;
  } jobs;
  // Where each value that is not a default came from, by "section.key": a
  // file, "environment SHOAL_...", or "--set". --print-config shows it.
  std::map<std::string, std::string> sources;
};

// Applies `files` in order, each overriding the ones before (a base, then
// an environment's), then the environment. Fails with
// errc::config_invalid naming the file (or variable) and the key.
caf::expected<node_config> load_config(const std::vector<std::string>& files);

// The same with one file (none when empty).
caf::expected<node_config> load_config(const std::string& file);

// Sets one key ("section.key") from a string, as the environment and
// command-line overlays do; `origin` names where the value came from.
caf::error set_config_value(node_config& cfg, const std::string& dotted,
                            const std::string& value,
                            const std::string& origin);

// Cross-field checks (role, endpoint shapes, fractions, model root).
caf::error validate(const node_config& cfg);

// The effective configuration as TOML, one documented line per setting;
// `with_sources` adds after each value where it came from.
std::string render_config(const node_config& cfg, bool with_sources = false);

// Default model root: $SHOAL_MODEL_ROOT, else the shipped examples.
std::string default_model_root();

// node.labels ("k=v,k=v") as pairs, in order; items without '=' or with an
// empty key are skipped.
std::vector<std::pair<std::string, std::string>>
parse_labels(const std::string& text);

// Default model cache: $XDG_CACHE_HOME/shoal/models, else
// $HOME/.cache/shoal/models, else /tmp/shoal-models-<uid>.
std::string default_model_cache_dir();

} // namespace shoal
