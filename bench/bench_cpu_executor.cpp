// Executor throughput at saturation on an MLP (784 -> 512 -> 10, batch 32)
// against the same layers run in a tight loop with OpenBLAS, in one run
// (target: executor >= 0.9x the tight loop).
//
//   bench_cpu_executor [--seconds S] [--inflight K] [--quick] [--json FILE]
//
// Three phases, each for S seconds (default 3; --quick 1), interleaved
// twice:
//   loop      cpu::dense/relu/dense/softmax on preallocated buffers
//   backend   the cpu backend's run() (input copy, output tensor)
//   executor  an executor actor kept saturated with K (default 2) requests
//             of 32 rows in flight (one running, one queued behind it);
//             results encoded as for a client. Deeper queues only add the
//             sender's input copies, which compete with OpenBLAS's threads
//             on a 2-core machine.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <caf/all.hpp>

#include "actors/serving/executor.hpp"
#include "bench/harness/cli.hpp"
#include "bench/harness/report.hpp"
#include "bench/harness/run.hpp"
#include "gpu/backend.hpp"
#include "gpu/cpu/cpu_layers.hpp"
#include "gpu/model/manifest.hpp"
#include "gpu/model/safetensors.hpp"
#include "net/wire/error.hpp"
#include "runtime/metrics/node_metrics.hpp"
#include "runtime/metrics/registry.hpp"
#include "runtime/model/repository.hpp"
#include "tests/support/process.hpp"
#include "tests/support/tensors.hpp"

using namespace shoal;
namespace fs = std::filesystem;
using bench_clock = std::chrono::steady_clock;

namespace {

using bench::bench_error;
using bench::check_row;
using bench::json;

constexpr size_t in = 784, hidden = 512, out = 10, rows = 32;
constexpr int rounds = 2;

struct options {
  bench::common_options common;
  double seconds = 3;
  uint64_t inflight = 2;
};

options parse_args(int argc, char** argv) {
  options o;
  bench::arg_parser p{"bench_cpu_executor",
                      "CPU executor throughput against an OpenBLAS loop"};
  p.add_common(o.common, "1 s per phase", false);
  p.option("--seconds", "S", o.seconds, "per phase (3; quick 1)");
  p.option("--inflight", "K", o.inflight, "executor requests in flight (2)");
  p.parse(argc, argv);
  if (o.common.quick && !p.given("--seconds")) {
    o.seconds = 1;
  }
  if (o.seconds <= 0 || o.inflight == 0) {
    std::fprintf(stderr, "--seconds and --inflight must be positive\n");
    std::exit(2);
  }
  return o;
}

// Batches per second of `step` run for `seconds`.
template <class F>
double rate(double seconds, F&& step) {
  auto until = bench_clock::now() + std::chrono::duration<double>(seconds);
  uint64_t n = 0;
  auto t0 = bench_clock::now();
  while (bench_clock::now() < until) {
    step();
    ++n;
  }
  return n / std::chrono::duration<double>(bench_clock::now() - t0).count();
}

double loop_rate(const test::mlp_weights& w, const std::vector<float>& x,
                 double seconds) {
  std::vector<float> h(rows * hidden), y(rows * out);
  return rate(seconds, [&] {
    cpu::dense(x.data(), rows, in, w.w1.data(), w.b1.data(), hidden, h.data());
    cpu::relu(h.data(), h.size());
    cpu::dense(h.data(), rows, hidden, w.w2.data(), w.b2.data(), out, y.data());
    cpu::softmax(y.data(), rows, out);
  });
}

double backend_rate(backend& be, const tensor& x, double seconds) {
  std::vector<tensor> inputs{x};
  return rate(seconds, [&] {
    auto r = be.run(inputs, rows);
    if (!r) {
      throw bench_error{"run failed: " + reason_of(r.error())};
    }
  });
}

executor_handle spawn_executor(caf::scoped_actor& self, model_spec_ptr spec,
                               std::shared_ptr<node_metrics> m) {
  // No load env: the weights are loaded as they are, unverified.
  std::shared_ptr<const load_env> env;
  auto exec = backend_may_block(*spec)
                  ? self->spawn<caf::detached>(executor_actor, spec,
                                               caf::actor{self}, m, env)
                  : self->spawn(executor_actor, spec, caf::actor{self}, m, env);
  self->receive([](ready_atom, const std::string&, uint64_t, caf::actor,
                   const std::string&) {});
  return exec;
}

double executor_rate(caf::actor_system& sys, model_spec_ptr spec,
                     std::shared_ptr<node_metrics> m, const tensor& x,
                     size_t inflight, double seconds) {
  caf::scoped_actor self{sys};
  auto exec = spawn_executor(self, spec, m);
  uint64_t ticket = 0, done = 0;
  std::string failed;
  auto send_one = [&] {
    exec_item item;
    item.ticket = ++ticket;
    item.inputs = {x};
    item.rows = rows;
    self->send(exec, exec_atom::value, std::move(item));
  };
  for (size_t i = 0; i < inflight; ++i) {
    send_one();
  }
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
  // Wait until it is gone: it records into metrics owned by the caller.
  self->monitor(exec);
  self->send_exit(exec, caf::exit_reason::user_shutdown);
  for (bool down = false; !down;) {
    self->receive([&](caf::down_msg&) { down = true; },
                  [](done_atom, std::vector<exec_result>&) {});
  }
  if (!failed.empty()) {
    throw bench_error{"executor error: " + failed};
  }
  return done / elapsed;
}

// Writes the MLP's weights and manifest under `dir` (mlp/1) and loads its
// spec.
model_spec_ptr write_model(const fs::path& dir, const test::mlp_weights& w) {
  auto model_dir = dir / "mlp" / "1";
  fs::create_directories(model_dir);
  if (auto err = write_safetensors((model_dir / "model.safetensors").string(),
                                   w.tensors())) {
    throw bench_error{reason_of(err)};
  }
  std::ofstream{model_dir / "model.toml"}
      << test::cpu_manifest(in, out, "max_batch = 32\nmax_delay_us = 0\n");
  auto spec = parse_manifest((model_dir / "model.toml").string(), "mlp", 1);
  if (!spec) {
    throw bench_error{reason_of(spec.error())};
  }
  return std::make_shared<const model_spec>(*spec);
}

struct rates {
  double loop = 0, backend = 0, executor = 0;
};

rates measure(const options& o, const fs::path& dir) {
  std::mt19937 rng{3};
  auto w = test::random_mlp(in, hidden, out, rng, 0.05f, 0.1f);
  auto x = test::random_values(rows * in, rng, 1.0f);
  auto spec = write_model(dir, w);
  auto be = load_backend(*spec);
  if (!be) {
    throw bench_error{reason_of(be.error())};
  }
  auto xt = test::f32_tensor({rows, in}, x);
  caf::actor_system_config cfg;
  cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  metrics::registry reg; // outlives every executor below
  auto m = std::make_shared<node_metrics>(reg, "bench");
  rates mean;
  for (int round = 0; round < rounds; ++round) {
    auto l = loop_rate(w, x, o.seconds);
    auto b = backend_rate(**be, xt, o.seconds);
    auto e = executor_rate(sys, spec, m, xt, o.inflight, o.seconds);
    std::printf("  round %d: loop %.0f  backend %.0f  executor %.0f "
                "batches/s\n",
                round + 1, l, b, e);
    mean.loop += l / rounds;
    mean.backend += b / rounds;
    mean.executor += e / rounds;
  }
  return mean;
}

int run(const options& o) {
  bench::report rep{"bench_cpu_executor"};
  std::printf("MLP 784-512-10, batch %zu, %.1f s per phase, %llu requests "
              "in flight\n",
              rows, o.seconds, static_cast<unsigned long long>(o.inflight));
  // Removed however the run ends.
  shoal::test::temp_dir dir{"shoal-bench"};
  auto r = measure(o, dir.path());
  rep.finish();
  std::printf("\n%-10s %12s %8s\n", "phase", "batches/s", "ratio");
  std::printf("%-10s %12.0f %8.3f\n", "loop", r.loop, 1.0);
  std::printf("%-10s %12.0f %8.3f\n", "backend", r.backend, r.backend / r.loop);
  std::printf("%-10s %12.0f %8.3f\n", "executor", r.executor,
              r.executor / r.loop);
  rep.add(check_row::at_least("executor (batches/s)", r.executor, r.loop, 0.9));
  rep.add(check_row::info("backend run() (batches/s)", r.backend, r.loop));
  rep.print_checks("baseline: the same layers in a tight OpenBLAS loop");
  rep.doc()["config"]
      .set("seconds", o.seconds)
      .set("inflight", o.inflight)
      .set("rows", rows)
      .set("rounds", rounds);
  rep.doc()["batches_per_s"]
      .set("loop", r.loop)
      .set("backend", r.backend)
      .set("executor", r.executor);
  rep.write(o.common.json);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  auto o = parse_args(argc, argv);
  return bench::run_guarded("bench_cpu_executor", [&] { return run(o); });
}
