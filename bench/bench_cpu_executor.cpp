// Executor throughput at saturation on an MLP (784 -> 512 -> 10, batch 32)
// against the same layers run in a tight loop with OpenBLAS, in one run
// (issue 3: executor >= 0.9x the tight loop).
//
//   bench_cpu_executor [--seconds S] [--inflight K]
//
// Three phases, each for S seconds (default 3), interleaved twice:
//   loop      cpu::dense/relu/dense/softmax on preallocated buffers
//   backend   the cpu backend's run() (input copy, output tensor)
//   executor  an executor actor kept saturated with K (default 2) requests
//             of 32 rows in flight (one running, one queued behind it);
//             results encoded as for a client. Deeper queues only add the
//             sender's input copies, which compete with OpenBLAS's threads
//             on a 2-core machine.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <caf/all.hpp>

#include "actors/serving/executor.hpp"
#include "gpu/backend.hpp"
#include "gpu/cpu/cpu_layers.hpp"
#include "net/wire/error.hpp"
#include "runtime/metrics/registry.hpp"
#include "gpu/model/manifest.hpp"
#include "runtime/model/repository.hpp"
#include "runtime/metrics/node_metrics.hpp"
#include "gpu/model/safetensors.hpp"

using namespace shoal;
namespace fs = std::filesystem;
using bench_clock = std::chrono::steady_clock;

namespace {

constexpr size_t in = 784, hidden = 512, out = 10, rows = 32;

tensor f32_tensor(std::vector<uint64_t> shape, const std::vector<float>& v) {
  tensor t;
  t.type = dtype::f32;
  t.shape = std::move(shape);
  t.data.resize(v.size() * 4);
  std::memcpy(t.data.data(), v.data(), t.data.size());
  return t;
}

std::vector<float> values(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> d{0.0f, scale};
  std::vector<float> v(n);
  for (auto& x : v)
    x = d(rng);
  return v;
}

struct weights {
  std::vector<float> w1, b1, w2, b2;
};

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

double loop_rate(const weights& w, const std::vector<float>& x,
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
      std::fprintf(stderr, "run failed: %s\n", reason_of(r.error()).c_str());
      std::exit(1);
    }
  });
}

double executor_rate(caf::actor_system& sys, model_spec_ptr spec,
                     std::shared_ptr<node_metrics> m, const tensor& x,
                     size_t inflight, double seconds) {
  caf::scoped_actor self{sys};
  // No load env: the weights are loaded as they are, unverified.
  std::shared_ptr<const load_env> env;
  auto exec = backend_may_block(*spec)
                  ? self->spawn<caf::detached>(executor_actor, spec,
                                               caf::actor{self}, m, env)
                  : self->spawn(executor_actor, spec, caf::actor{self}, m, env);
  self->receive([](ready_atom, const std::string&, uint64_t, caf::actor,
                   const std::string&) {});
  uint64_t ticket = 0, done = 0;
  auto send_one = [&] {
    exec_item item;
    item.ticket = ++ticket;
    item.inputs = {x};
    item.rows = rows;
    self->send(exec, exec_atom::value, std::move(item));
  };
  for (size_t i = 0; i < inflight; ++i)
    send_one();
  auto t0 = bench_clock::now();
  auto until = t0 + std::chrono::duration<double>(seconds);
  while (bench_clock::now() < until) {
    self->receive([&](done_atom, std::vector<exec_result>& results) {
      for (auto& r : results) {
        if (r.code != 0) {
          std::fprintf(stderr, "executor error: %s\n", r.error.c_str());
          std::exit(1);
        }
        ++done;
        send_one();
      }
    });
  }
  auto elapsed = std::chrono::duration<double>(bench_clock::now() - t0).count();
  // Wait until it is gone: it records into metrics owned by the caller.
  self->monitor(exec);
  self->send_exit(exec, caf::exit_reason::user_shutdown);
  bool down = false;
  while (!down)
    self->receive([&](caf::down_msg&) { down = true; },
                  [](done_atom, std::vector<exec_result>&) {});
  return done / elapsed;
}

} // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  size_t inflight = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--seconds")
      seconds = std::stod(argv[i + 1]);
    else if (a == "--inflight")
      inflight = std::stoul(argv[i + 1]);
  }
  std::mt19937 rng{3};
  weights w{values(hidden * in, rng, 0.05f), values(hidden, rng, 0.1f),
            values(out * hidden, rng, 0.05f), values(out, rng, 0.1f)};
  auto x = values(rows * in, rng, 1.0f);
  char tmpl[] = "/tmp/shoal-bench-XXXXXX";
  fs::path dir = fs::path{::mkdtemp(tmpl)} / "mlp" / "1";
  fs::create_directories(dir);
  if (auto err =
          write_safetensors((dir / "model.safetensors").string(),
                            {{"fc1.weight", f32_tensor({hidden, in}, w.w1)},
                             {"fc1.bias", f32_tensor({hidden}, w.b1)},
                             {"fc2.weight", f32_tensor({out, hidden}, w.w2)},
                             {"fc2.bias", f32_tensor({out}, w.b2)}})) {
    std::fprintf(stderr, "%s\n", reason_of(err).c_str());
    return 1;
  }
  std::ofstream{dir / "model.toml"}
      << "backend = \"cpu\"\n[[inputs]]\nname = \"x\"\ndtype = \"f32\"\n"
         "shape = [-1, 784]\n[[outputs]]\nname = \"probs\"\ndtype = \"f32\"\n"
         "shape = [-1, 10]\n[batching]\nmax_batch = 32\nmax_delay_us = 0\n"
         "[weights]\nfile = \"model.safetensors\"\n"
         "[[layers]]\nop = \"dense\"\nweight = \"fc1.weight\"\nbias = "
         "\"fc1.bias\"\n[[layers]]\nop = \"relu\"\n[[layers]]\nop = \"dense\"\n"
         "weight = \"fc2.weight\"\nbias = \"fc2.bias\"\n[[layers]]\nop = "
         "\"softmax\"\n";
  auto spec = parse_manifest((dir / "model.toml").string(), "mlp", 1);
  if (!spec) {
    std::fprintf(stderr, "%s\n", reason_of(spec.error()).c_str());
    return 1;
  }
  auto spec_ptr = std::make_shared<const model_spec>(*spec);
  auto be = load_backend(*spec_ptr);
  if (!be) {
    std::fprintf(stderr, "%s\n", reason_of(be.error()).c_str());
    return 1;
  }
  auto xt = f32_tensor({rows, in}, x);
  caf::actor_system_config cfg;
  cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  metrics::registry reg; // outlives every executor below
  auto m = std::make_shared<node_metrics>(reg, "bench");
  std::printf("MLP 784-512-10, batch %zu, %.1f s per phase, %zu requests "
              "in flight\n",
              rows, seconds, inflight);
  double loop = 0, backend_r = 0, exec = 0;
  for (int round = 0; round < 2; ++round) {
    auto l = loop_rate(w, x, seconds);
    auto b = backend_rate(**be, xt, seconds);
    auto e = executor_rate(sys, spec_ptr, m, xt, inflight, seconds);
    std::printf("  round %d: loop %.0f  backend %.0f  executor %.0f "
                "batches/s\n",
                round + 1, l, b, e);
    loop += l / 2;
    backend_r += b / 2;
    exec += e / 2;
  }
  std::printf("\n%-10s %12s %8s\n", "phase", "batches/s", "ratio");
  std::printf("%-10s %12.0f %8.3f\n", "loop", loop, 1.0);
  std::printf("%-10s %12.0f %8.3f\n", "backend", backend_r, backend_r / loop);
  std::printf("%-10s %12.0f %8.3f   target >= 0.9x loop: %s\n", "executor",
              exec, exec / loop, exec / loop >= 0.9 ? "PASS" : "FAIL");
  fs::remove_all(dir.parent_path().parent_path());
  return 0;
}
