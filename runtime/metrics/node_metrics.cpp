#include "runtime/metrics/node_metrics.hpp"

#include <set>

#include "actors/serving/result_cache.hpp"
#include "actors/serving/tenants.hpp"

namespace shoal {

namespace {

constexpr size_t n_status = 10;
constexpr size_t n_source = 4;

std::vector<double> batch_buckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
}

} // namespace

// Handles of one model's children, created on first use so that the hot
// path only reads atomics.
struct node_metrics::per_model {
  std::string name;
  std::array<std::array<std::atomic<metrics::counter*>, n_source>, n_status>
      requests{};
  metrics::histogram* request_duration = nullptr;
  metrics::histogram* queue_duration = nullptr;
  metrics::histogram* compute_duration = nullptr;
  metrics::histogram* batch_size = nullptr;
  metrics::gauge* waiting = nullptr;
  metrics::gauge* executors = nullptr;
  metrics::histogram* load_duration = nullptr;
};

node_metrics::node_metrics(metrics::registry& reg, std::string node_name)
    : reg_(reg), node_(std::move(node_name)),
      requests_(reg.counters("shoal_requests_total",
                             "Replies sent to clients, by model, status and "
                             "source.",
                             {"model", "status", "source"})),
      op_requests_(reg.counters("shoal_op_requests_total",
                                "Replies to every op but a served model's "
                                "infer (ping, models, status, load, unload, "
                                "drain, reload; infer of an unknown model; "
                                "invalid "
                                "for frames that could not be decoded), by "
                                "op and status.",
                                {"op", "status"})),
      request_duration_(reg.histograms(
          "shoal_request_duration_seconds",
          "Time from receipt of a request to its reply.", {"model"})),
      queue_duration_(reg.histograms(
          "shoal_queue_duration_seconds",
          "Time a request waited before its batch started.", {"model"})),
      compute_duration_(reg.histograms("shoal_compute_duration_seconds",
                                       "Backend time per batch.", {"model"})),
      waiting_(reg.gauges("shoal_requests_waiting",
                          "Requests queued for a model and not yet running "
                          "(the autoscaling signal).",
                          {"model"})),
      executors_(
          reg.gauges("shoal_executors",
                     "Executor replicas serving a model, reported by the node "
                     "that runs them.",
                     {"model", "node"})),
      spawns_(reg.counters("shoal_executor_spawns_total",
                           "Executors started, by reason (lazy, restart, "
                           "load).",
                           {"reason"})),
      redispatched_(reg.counters("shoal_requests_redispatched_total",
                                 "Requests re-run because their executor died.")
                        .with({})),
      load_duration_(reg.histograms(
          "shoal_model_load_duration_seconds",
          "Time to load a model into a new replica.", {"model"},
          {0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300})),
      store_bytes_(reg.counters("shoal_model_store_downloaded_bytes_total",
                                "Model file bytes downloaded or copied from "
                                "the repository.")
                       .with({})),
      store_files_(reg.counters("shoal_model_store_files_total",
                                "Model files made ready for a load, by how: "
                                "fetched (downloaded or hashed in place) or "
                                "reused (verified copy unchanged).",
                                {"result"})),
      batch_size_(reg.histograms("shoal_batch_size",
                                 "Requests per executed batch.", {"model"},
                                 batch_buckets())),
      cache_hits_(reg.counters("shoal_cache_hits_total", "Result cache hits.")
                      .with({})),
      cache_misses_(
          reg.counters("shoal_cache_misses_total", "Result cache misses.")
              .with({})),
      cache_evictions_(reg.counters("shoal_cache_evictions_total",
                                    "Cache entries evicted to make room.")
                           .with({})),
      cache_bytes_(reg.gauges("shoal_cache_bytes",
                              "Bytes held by the result cache (keys, values, "
                              "overhead).")
                       .with({})),
      cache_entries_(
          reg.gauges("shoal_cache_entries", "Entries in the result cache.")
              .with({})),
      cluster_nodes_(reg.gauges("shoal_cluster_nodes",
                                "Nodes known to this node, by state.",
                                {"state"})),
      preemption_notices_(
          reg.counters(
                 "shoal_preemption_notices_total",
                 "Spot preemption notices seen (node.preemption_notice_url "
                 "or node.preemption_notice_file); each starts a drain.")
              .with({})),
      // Registered on every node, GPU or not, so that dashboards and
      // alerts find the families (with no samples where there is no GPU).
      gpu_used_(reg.gauges("shoal_gpu_memory_used_bytes",
                           "GPU memory in use by every process on the "
                           "device, as the driver reports it.",
                           {"device"})),
      gpu_total_(reg.gauges("shoal_gpu_memory_total_bytes",
                            "GPU memory of the device.", {"device"})),
      gpu_held_(reg.gauges("shoal_gpu_memory_held_bytes",
                           "GPU memory held by this node's replicas "
                           "(weights, activations, workspace).",
                           {"device"})),
      gpu_replicas_(reg.gauges("shoal_gpu_replicas",
                               "This node's executor replicas on the device.",
                               {"device"})) {
  // A standalone node is a cluster of one.
  cluster_nodes_.with({"up"}).set(1);
  for (auto s : {"suspect", "draining", "down"}) {
    cluster_nodes_.with({s}).set(0);
  }
  for (auto r : {"lazy", "restart", "load"}) {
    spawns_.with({r});
  }
}

node_metrics::~node_metrics() = default;

node_metrics::per_model& node_metrics::model(std::string_view name) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (auto i = models_.find(name); i != models_.end()) {
    return *i->second;
  }
  auto pm = std::make_unique<per_model>();
  pm->name = std::string{name};
  std::vector<std::string> l{pm->name};
  pm->request_duration = &request_duration_.with(l);
  pm->queue_duration = &queue_duration_.with(l);
  pm->compute_duration = &compute_duration_.with(l);
  pm->batch_size = &batch_size_.with(l);
  pm->waiting = &waiting_.with(l);
  pm->executors = &executors_.with({pm->name, node_});
  pm->load_duration = &load_duration_.with(l);
  auto& ref = *pm;
  models_.emplace(pm->name, std::move(pm));
  return ref;
}

void node_metrics::reply(std::string_view model_name, status s,
                         reply_source src, double total_seconds) {
  auto& pm = model(model_name);
  auto si = static_cast<size_t>(s) % n_status;
  auto ri = static_cast<size_t>(src) % n_source;
  auto* c = pm.requests[si][ri].load(std::memory_order_acquire);
  if (!c) {
    // A reply that never reached a source (refused, failed) has none, and
    // label values are never empty.
    auto source =
        src == reply_source::none ? std::string_view{"none"} : to_string(src);
    c = &requests_.with(
        {pm.name, std::string{to_string(s)}, std::string{source}});
    pm.requests[si][ri].store(c, std::memory_order_release);
  }
  c->inc();
  pm.request_duration->observe(total_seconds);
}

void node_metrics::op_reply(op_kind op, status s) {
  op_requests_.with({std::string{to_string(op)}, std::string{to_string(s)}})
      .inc();
}

void node_metrics::queue_time(std::string_view m, double seconds) {
  model(m).queue_duration->observe(seconds);
}

void node_metrics::compute_time(std::string_view m, double seconds) {
  model(m).compute_duration->observe(seconds);
}

void node_metrics::batch(std::string_view m, uint32_t size) {
  model(m).batch_size->observe(size);
}

void node_metrics::waiting(std::string_view m, uint64_t n) {
  model(m).waiting->set(static_cast<double>(n));
}

void node_metrics::executors(std::string_view m, int64_t delta) {
  model(m).executors->inc(static_cast<double>(delta));
}

void node_metrics::spawn(std::string_view reason) {
  spawns_.with({std::string{reason}}).inc();
}

void node_metrics::redispatched(uint64_t n) {
  redispatched_.inc(static_cast<double>(n));
}

void node_metrics::model_load(std::string_view m, double seconds) {
  model(m).load_duration->observe(seconds);
}

void node_metrics::model_files(uint64_t bytes, uint64_t fetched,
                               uint64_t reused) {
  store_bytes_.inc(static_cast<double>(bytes));
  store_files_.with({"fetched"}).inc(static_cast<double>(fetched));
  store_files_.with({"reused"}).inc(static_cast<double>(reused));
}

void node_metrics::cluster_nodes(std::string_view state, uint64_t n) {
  cluster_nodes_.with({std::string{state}}).set(static_cast<double>(n));
}

void node_metrics::preemption_notice() {
  preemption_notices_.inc();
}

void node_metrics::invalid_frame() {
  op_requests_
      .with({"invalid", std::string{to_string(status::invalid_argument)}})
      .inc();
}

void node_metrics::watch_cache(std::shared_ptr<result_cache> cache) {
  // Counters only go up, so the scrape adds what happened since the last.
  struct seen {
    std::mutex mtx; // two scrapes at once must not both add the delta
    cache_stats stats;
  };
  auto last_seen = std::make_shared<seen>();
  reg_.on_collect([this, cache, last_seen] {
    std::lock_guard<std::mutex> guard{last_seen->mtx};
    auto* last = &last_seen->stats;
    auto s = cache->stats();
    cache_hits_.inc(static_cast<double>(s.hits - last->hits));
    cache_misses_.inc(static_cast<double>(s.misses - last->misses));
    cache_evictions_.inc(static_cast<double>(s.evictions - last->evictions));
    cache_bytes_.set(static_cast<double>(s.bytes));
    cache_entries_.set(static_cast<double>(s.entries));
    *last = s;
  });
}

void node_metrics::watch_tenants(std::shared_ptr<tenant_table> tenants) {
  auto& requests = reg_.counters(
      "shoal_tenant_requests_total",
      "Infer requests answered, by tenant (configured names; other for the "
      "rest) and status.",
      {"tenant", "status"});
  auto& rejected = reg_.counters(
      "shoal_tenant_rejected_total",
      "Infer requests refused for a tenant limit, by tenant and reason "
      "(rate, inflight, model, queue).",
      {"tenant", "reason"});
  struct seen {
    std::mutex mtx; // two scrapes at once must not both add the delta
    std::vector<uint64_t> counts;
  };
  auto last_seen = std::make_shared<seen>();
  auto labels = tenants->labels();
  last_seen->counts.assign(labels * (status_count + tenant_reject_count), 0);
  reg_.on_collect([&requests, &rejected, tenants, last_seen, labels] {
    std::lock_guard<std::mutex> guard{last_seen->mtx};
    auto* last = last_seen->counts.data();
    for (uint16_t l = 0; l < labels; ++l) {
      auto& name = tenants->label_name(l);
      for (size_t s = 0; s < status_count; ++s, ++last) {
        auto now = tenants->requests(l, static_cast<status>(s));
        if (now != *last) {
          auto code = std::string{to_string(static_cast<status>(s))};
          requests.with({name, code}).inc(static_cast<double>(now - *last));
          *last = now;
        }
      }
      for (size_t r = 0; r < tenant_reject_count; ++r, ++last) {
        auto now = tenants->rejections(l, static_cast<tenant_reject>(r));
        if (now != *last) {
          auto why = std::string{to_string(static_cast<tenant_reject>(r))};
          rejected.with({name, why}).inc(static_cast<double>(now - *last));
          *last = now;
        }
      }
    }
  });
}

void node_metrics::watch_devices(
    std::function<std::vector<device_sample>()> source) {
  struct seen {
    std::mutex mtx; // two scrapes at once must agree on what was exported
    std::set<std::string> names;
  };
  auto last_seen = std::make_shared<seen>();
  reg_.on_collect([this, source = std::move(source), last_seen] {
    auto samples = source();
    std::lock_guard<std::mutex> guard{last_seen->mtx};
    std::set<std::string> names;
    for (auto& s : samples) {
      std::vector<std::string> l{s.name};
      gpu_used_.with(l).set(static_cast<double>(s.used_bytes));
      gpu_total_.with(l).set(static_cast<double>(s.total_bytes));
      gpu_held_.with(l).set(static_cast<double>(s.held_bytes));
      gpu_replicas_.with(l).set(static_cast<double>(s.replicas));
      names.insert(s.name);
    }
    // A device that vanished (reset, fell off the bus) is not shown as if
    // it still had its last values.
    for (auto& name : last_seen->names) {
      if (names.count(name)) {
        continue;
      }
      for (auto* fam : {&gpu_used_, &gpu_total_, &gpu_held_, &gpu_replicas_}) {
        fam->remove({name});
      }
    }
    last_seen->names = std::move(names);
  });
}

} // namespace shoal
