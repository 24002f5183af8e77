// The torch backend against libtorch alone, in one run:
//   throughput  an executor of the example resnet18 (batch 1 and 8) and
//               text model (batch 1 and 32), kept saturated with 2
//               requests of B rows in flight, against the same module in
//               a tight libtorch loop (bench/torch_loop.cpp, a process of
//               its own) at the same batch and thread count (target:
//               executor >= 0.95x the loop);
//   cold start  resnet18 in a process that has not loaded the plugin:
//               plugin load, then a cold request (spawn, module load,
//               warm-up, the batch), then the first request after ready
//               against the steady state (target: within 1.2x);
//   memory      the process's RSS before the plugin, with it, and with a
//               resnet18 replica, against the weights' size and against
//               the RSS of a process that links libtorch.
//
//   bench_torch_executor [--seconds S] [--threads T] [--quick] [--json F]
//
// Needs the build's example models (scripts/make_models.py --torch) and
// the plugin; exits 77 (skipped) without them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include <caf/all.hpp>

#include "actors/serving/executor.hpp"
#include "bench/harness/cli.hpp"
#include "bench/harness/proc_stats.hpp"
#include "bench/harness/report.hpp"
#include "bench/harness/run.hpp"
#include "bench/harness/stats.hpp"
#include "gpu/model/manifest.hpp"
#include "gpu/registry.hpp"
#include "gpu/torch/torch_backend.hpp"
#include "net/wire/error.hpp"
#include "runtime/metrics/node_metrics.hpp"
#include "runtime/metrics/registry.hpp"
#include "tests/support/process.hpp"

using namespace shoal;
namespace fs = std::filesystem;
using bench_clock = std::chrono::steady_clock;

namespace {

using bench::bench_error;
using bench::check_row;
using bench::ms_since;

struct options {
  bench::common_options common;
  double seconds = 3;
  uint64_t threads = 0;
};

options parse_args(int argc, char** argv) {
  options o;
  bench::arg_parser p{"bench_torch_executor",
                      "torch executor against a tight libtorch loop"};
  p.add_common(o.common, "1 s per phase", false);
  p.option("--seconds", "S", o.seconds, "per phase (3; quick 1)");
  p.option("--threads", "T", o.threads, "intra-op threads (0: every core)");
  p.parse(argc, argv);
  if (o.common.quick && !p.given("--seconds")) {
    o.seconds = 1;
  }
  if (o.threads == 0) {
    o.threads = std::max(1u, std::thread::hardware_concurrency());
  }
  return o;
}

struct workload {
  std::string model;
  uint64_t rows;
};

model_spec_ptr read_spec(const std::string& model, uint64_t max_batch) {
  auto dir = fs::path{SHOAL_EXAMPLE_MODELS} / model / "1";
  auto spec = parse_manifest((dir / "model.toml").string(), model, 1);
  if (!spec) {
    throw bench_error{reason_of(spec.error())};
  }
  // Batches of exactly the rows asked for, with no wait for more.
  spec->max_batch = static_cast<uint32_t>(max_batch);
  spec->max_delay = std::chrono::microseconds{0};
  return std::make_shared<const model_spec>(*spec);
}

// One request of `rows` rows of the model's first input (zeros: token id
// 0 is a valid one, and convolutions take as long on zeros).
tensor input_of(const model_spec& spec, uint64_t rows) {
  auto& in = spec.inputs.front();
  tensor t;
  t.name = in.name;
  t.type = in.type;
  uint64_t n = 1;
  for (auto d : in.shape) {
    t.shape.push_back(d < 0 ? rows : static_cast<uint64_t>(d));
    n *= t.shape.back();
  }
  t.data.assign(n * dtype_size(in.type), 0);
  return t;
}

std::string shape_arg(const tensor& t) {
  std::string out;
  for (auto d : t.shape) {
    out += (out.empty() ? "" : ",") + std::to_string(d);
  }
  return out;
}

// torch_loop's `key value` lines.
std::map<std::string, double> run_loop(const model_spec& spec, const tensor& x,
                                       const options& o, double seconds) {
  shoal::test::temp_dir dir{"shoal-torch-loop"};
  auto log = dir.path() + "/loop.log";
  shoal::test::child_process proc{
      {SHOAL_TORCH_LOOP, spec.dir + "/model.pt", std::string{to_string(x.type)},
       shape_arg(x), std::to_string(o.threads), std::to_string(seconds)},
      log};
  auto rc = proc.wait_exit(std::chrono::seconds{300});
  if (rc != 0) {
    throw bench_error{"torch_loop: " + proc.describe_exit() + ": " +
                      proc.log()};
  }
  std::map<std::string, double> out;
  std::istringstream in{proc.log()};
  std::string key;
  double value = 0;
  while (in >> key >> value) {
    out[key] = value;
  }
  return out;
}

executor_handle spawn_ready(caf::scoped_actor& self, model_spec_ptr spec,
                            std::shared_ptr<node_metrics> m) {
  std::shared_ptr<const load_env> env;
  auto exec = self->spawn<caf::detached>(executor_actor, spec, caf::actor{self},
                                         m, env);
  self->receive(
      [](ready_atom, const std::string&, uint64_t, caf::actor,
         const std::string&) {},
      [&](caf::error& err) { throw bench_error{reason_of(err)}; },
      caf::after(std::chrono::minutes{5}) >>
          [] { throw bench_error{"the executor did not become ready"}; });
  return exec;
}

void stop_executor(caf::scoped_actor& self, const executor_handle& exec) {
  self->monitor(exec);
  self->send_exit(exec, caf::exit_reason::user_shutdown);
  for (bool down = false; !down;) {
    self->receive([&](caf::down_msg&) { down = true; },
                  [](done_atom, std::vector<exec_result>&) {});
  }
}

// Sends one item and waits for its result; its latency in ms.
double one_request(caf::scoped_actor& self, const executor_handle& exec,
                   const tensor& x, uint64_t rows, uint64_t ticket) {
  exec_item item;
  item.ticket = ticket;
  item.inputs = {x};
  item.rows = rows;
  auto t0 = bench_clock::now();
  self->send(exec, exec_atom::value, std::move(item));
  self->receive([&](done_atom, std::vector<exec_result>& results) {
    if (results.empty() || results.front().code != 0) {
      throw bench_error{"executor error: " +
                        (results.empty() ? "" : results.front().error)};
    }
  });
  return ms_since(t0);
}

double executor_rate(caf::scoped_actor& self, const executor_handle& exec,
                     const tensor& x, uint64_t rows, double seconds) {
  uint64_t ticket = 0, done = 0;
  std::string failed;
  auto send_one = [&] {
    exec_item item;
    item.ticket = ++ticket;
    item.inputs = {x};
    item.rows = rows;
    self->send(exec, exec_atom::value, std::move(item));
  };
  send_one();
  send_one();
  auto t0 = bench_clock::now();
  auto until = t0 + std::chrono::duration<double>(seconds);
  while (bench_clock::now() < until && failed.empty()) {
    self->receive([&](done_atom, std::vector<exec_result>& results) {
      for (auto& r : results) {
        failed = r.code != 0 ? r.error : failed;
        ++done;
        send_one();
      }
    });
  }
  auto elapsed = std::chrono::duration<double>(bench_clock::now() - t0).count();
  for (uint64_t left = 2; left > 0;) { // the two still in flight
    self->receive([&](done_atom, std::vector<exec_result>& r) {
      left -= std::min<uint64_t>(left, r.size());
    });
  }
  if (!failed.empty()) {
    throw bench_error{"executor error: " + failed};
  }
  return done / elapsed;
}

struct throughput {
  double executor = 0, loop = 0;
};

throughput measure_throughput(caf::actor_system& sys,
                              std::shared_ptr<node_metrics> m,
                              const workload& w, const options& o) {
  auto spec = read_spec(w.model, w.rows);
  auto x = input_of(*spec, w.rows);
  caf::scoped_actor self{sys};
  auto exec = spawn_ready(self, spec, m);
  throughput mean;
  constexpr int rounds = 2;
  for (int round = 0; round < rounds; ++round) {
    auto e = executor_rate(self, exec, x, w.rows, o.seconds);
    auto l = run_loop(*spec, x, o, o.seconds)["batches_per_s"];
    std::printf("  %s b%llu round %d: executor %.2f  loop %.2f batches/s\n",
                w.model.c_str(), static_cast<unsigned long long>(w.rows),
                round + 1, e, l);
    mean.executor += e / rounds;
    mean.loop += l / rounds;
  }
  stop_executor(self, exec);
  return mean;
}

struct cold_start {
  double plugin_ms = 0;      // dlopen of the plugin and libtorch
  double cold_ms = 0;        // spawn, module load, warm-up, first batch
  double first_ms = 0;       // the first request after ready
  double steady_ms = 0;      // median of later single requests
  uint64_t rss_idle = 0;     // before the plugin
  uint64_t rss_plugin = 0;   // with the plugin, no model
  uint64_t rss_replica = 0;  // with a resnet18 replica
  uint64_t weights = 0;      // model.pt's size
  double libtorch_rss = 0;   // a process that links libtorch, no model
  double libtorch_model = 0; // the same with the module loaded
};

void measure_latency(caf::scoped_actor& self, const executor_handle& exec,
                     const tensor& x, cold_start& c) {
  c.first_ms = one_request(self, exec, x, 1, 2);
  std::vector<double> lat;
  for (uint64_t i = 0; i < 15; ++i) {
    lat.push_back(one_request(self, exec, x, 1, 3 + i));
  }
  std::sort(lat.begin(), lat.end());
  c.steady_ms = lat[lat.size() / 2];
}

// Runs first: in this process nothing has loaded the plugin yet.
cold_start measure_cold(caf::actor_system& sys, std::shared_ptr<node_metrics> m,
                        const options& o) {
  cold_start c;
  c.rss_idle = bench::rss_bytes(::getpid());
  auto t0 = bench_clock::now();
  auto version = torch_runtime_version();
  if (!version) {
    throw bench_error{reason_of(version.error())};
  }
  c.plugin_ms = ms_since(t0);
  c.rss_plugin = bench::rss_bytes(::getpid());
  auto spec = read_spec("resnet18", 8);
  auto x = input_of(*spec, 1);
  c.weights = fs::file_size(spec->dir + "/model.pt");
  caf::scoped_actor self{sys};
  t0 = bench_clock::now();
  auto exec = spawn_ready(self, spec, m);
  one_request(self, exec, x, 1, 1);
  c.cold_ms = ms_since(t0);
  c.rss_replica = bench::rss_bytes(::getpid());
  measure_latency(self, exec, x, c);
  stop_executor(self, exec);
  auto loop = run_loop(*spec, x, o, 0.2);
  c.libtorch_rss = loop["rss_start_kb"] * 1024;
  c.libtorch_model = loop["rss_loaded_kb"] * 1024;
  return c;
}

void report_cold(bench::report& rep, const cold_start& c) {
  auto mib = [](double b) { return b / (1 << 20); };
  std::printf("\nresnet18 cold start: plugin load %.0f ms; cold request "
              "(spawn, load, warm-up, batch) %.0f ms; first request after "
              "ready %.1f ms, steady %.1f ms\n",
              c.plugin_ms, c.cold_ms, c.first_ms, c.steady_ms);
  std::printf("memory: idle %.0f MiB, with the plugin %.0f MiB, with a "
              "resnet18 replica %.0f MiB (weights %.0f MiB); a process "
              "linking libtorch: %.0f MiB, %.0f MiB with the module\n",
              mib(c.rss_idle), mib(c.rss_plugin), mib(c.rss_replica),
              mib(c.weights), mib(c.libtorch_rss), mib(c.libtorch_model));
  rep.add(check_row::at_most("first request after ready (ms)", c.first_ms,
                             c.steady_ms, 1.2));
  rep.add(check_row::info("cold request (ms) / plugin load (ms)", c.cold_ms,
                          c.plugin_ms));
  rep.add(check_row::info("replica RSS (MiB) / weights (MiB)",
                          mib(c.rss_replica - c.rss_plugin), mib(c.weights)));
  rep.add(check_row::info("plugin RSS (MiB) / libtorch process (MiB)",
                          mib(c.rss_plugin - c.rss_idle), mib(c.libtorch_rss)));
}

int run(const options& o) {
  for (auto* model : {"resnet18", "text"}) {
    if (!fs::exists(fs::path{SHOAL_EXAMPLE_MODELS} / model / "1/model.pt")) {
      std::printf("SKIP: no %s example model under %s\n", model,
                  SHOAL_EXAMPLE_MODELS);
      return 77;
    }
  }
  node_config cfg;
  cfg.torch.threads = o.threads;
  configure_backends(cfg);
  bench::report rep{"bench_torch_executor"};
  caf::actor_system_config sys_cfg;
  sys_cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system sys{sys_cfg};
  metrics::registry reg; // outlives every executor below
  auto m = std::make_shared<node_metrics>(reg, "bench");
  std::printf("%llu intra-op thread(s), %.1f s per phase\n",
              static_cast<unsigned long long>(o.threads), o.seconds);
  auto cold = measure_cold(sys, m, o);
  for (auto& w : std::vector<workload>{
           {"resnet18", 1}, {"resnet18", 8}, {"text", 1}, {"text", 32}}) {
    auto t = measure_throughput(sys, m, w, o);
    rep.add(check_row::at_least(w.model + " b" + std::to_string(w.rows) +
                                    " (batches/s)",
                                t.executor, t.loop, 0.95));
  }
  report_cold(rep, cold);
  rep.finish();
  rep.print_checks("baseline: the same module in a tight libtorch loop");
  rep.doc()["config"].set("seconds", o.seconds).set("threads", o.threads);
  rep.write(o.common.json);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  auto o = parse_args(argc, argv);
  return bench::run_guarded("bench_torch_executor", [&] { return run(o); });
}
