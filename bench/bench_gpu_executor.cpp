// GPU executor throughput on the example MLP and CNN at batch 1, 8 and 64
// (target: executor >= 0.9x the same model run by PyTorch at the same batch
// size and precision; the PyTorch side is bench/torch_baseline.py, and
// bench/gpu_vs_torch.sh runs both in one run and compares them).
//
//   bench_gpu_executor [--models DIR] [--seconds S] [--batches 1,8,64]
//                      [--tf32] [--inflight K] [--rounds R] [--json FILE]
//
// For each model and batch size, each phase for S seconds (default 3) after
// a warm-up:
//   backend   the model's GPU backend alone, pipelined as an executor under
//             load drives it: max_in_flight() batches started at all times
//             (start() the next one as soon as finish() returned the oldest).
//             From profile(): kernel time, input and output copy time per
//             batch; overhead = wall time per batch - kernel time.
//   executor  an executor actor kept saturated with K requests of `batch`
//             rows in flight (default max_in_flight() + 2: the batches on the
//             device plus queued ones, so that it never waits for the
//             sender); its max_batch is the batch size, so every request is
//             one batch. Results are encoded as for a client.
// Inputs are random f32 of the model's input shape, cycled from a pool of 8
// per batch size, so no two consecutive batches carry the same bytes.
//
// Without a GPU (or without the cuda feature) it exits 77, which meson
// reports as skipped. It exits 1 when something broke: a failed load or
// batch, or outputs that differ from the model's reference outputs.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/serving/executor.hpp"
#include "bench/harness/cli.hpp"
#include "bench/harness/json.hpp"
#include "bench/harness/report.hpp"
#include "bench/harness/run.hpp"
#include "gpu/backend.hpp"
#include "gpu/device/device.hpp"
#include "gpu/graph/graph_options.hpp"
#include "gpu/model/manifest.hpp"
#include "gpu/model/safetensors.hpp"
#include "net/wire/error.hpp"
#include "runtime/metrics/node_metrics.hpp"
#include "runtime/metrics/registry.hpp"
#include "runtime/model/repository.hpp"
#include "tests/support/process.hpp"

#ifndef SHOAL_SOURCE_ROOT
#define SHOAL_SOURCE_ROOT ""
#endif

using namespace shoal;
namespace fs = std::filesystem;
using bench_clock = std::chrono::steady_clock;

namespace {

using bench::json;
using bench::json_num;

constexpr int exit_skip = 77; // meson's "skipped"
constexpr size_t pool_size = 8;

struct options {
  bench::common_options common;
  std::string models; // empty: generate into a temporary directory
  double seconds = 3;
  std::vector<uint64_t> batches{1, 8, 64};
  std::vector<std::string> names{"mlp", "cnn"};
  bool tf32 = false;
  uint64_t inflight = 0; // 0: max_in_flight() + 2
  int rounds = 1;
  bool probe = false; // only say whether there is a GPU
  // "cpu": the same phases on the CPU backend, to try the bench itself on a
  // machine without a GPU (its numbers say nothing about the GPU target).
  std::string device = "gpu";
};

// Something broke: the run cannot go on.
[[noreturn]] void fail(const std::string& what) {
  throw bench::bench_error{what};
}

template <class T, class F>
std::vector<T> split_list(const std::string& s, F&& convert) {
  std::vector<T> out;
  std::stringstream in{s};
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) {
      out.push_back(convert(item));
    }
  }
  return out;
}

void declare(bench::arg_parser& p, options& o, std::string& names,
             std::string& batches) {
  p.add_common(o.common, "1 s per phase", false);
  p.option("--models", "DIR", o.models,
           "repository holding mlp/1 and cnn/1 as scripts/make_models.py "
           "writes them (default: generated into a temporary directory with "
           "$PYTHON, /usr/bin/python3 or python3)");
  p.option("--names", "a,b", names, "models to run (mlp,cnn)");
  p.option("--seconds", "S", o.seconds, "per phase, after a warm-up (3)");
  p.option("--batches", "LIST", batches, "batch sizes (1,8,64)");
  p.flag("--tf32", o.tf32, "allow TF32 for f32 dense and conv layers");
  p.option("--inflight", "K", o.inflight,
           "executor requests in flight (the backend's max_in_flight() + 2)");
  p.option("--rounds", "R", o.rounds, "repeat every phase, report means (1)");
  p.flag("--probe", o.probe, "print the GPUs and exit");
  p.option("--device", "gpu|cpu", o.device,
           "cpu runs the phases on the CPU backend (tries the benchmark "
           "without a GPU)");
}

options parse_args(int argc, char** argv) {
  options o;
  std::string names = "mlp,cnn", batches = "1,8,64";
  bench::arg_parser p{"bench_gpu_executor",
                      "GPU executor throughput and overhead per model and "
                      "batch size; exits 77 (skipped) without a usable GPU"};
  declare(p, o, names, batches);
  p.parse(argc, argv);
  try {
    o.names = split_list<std::string>(names, [](auto& s) { return s; });
    o.batches =
        split_list<uint64_t>(batches, [](auto& s) { return std::stoull(s); });
  } catch (const std::logic_error&) {
    std::fprintf(stderr, "bad value for --batches: %s\n", batches.c_str());
    std::exit(2);
  }
  if (o.common.quick && !p.given("--seconds")) {
    o.seconds = 1;
  }
  bool bad_batch = std::any_of(o.batches.begin(), o.batches.end(),
                               [](uint64_t b) { return b == 0; });
  if (o.device != "gpu" && o.device != "cpu") {
    std::fprintf(stderr, "--device is gpu or cpu\n");
    std::exit(2);
  }
  if (o.seconds <= 0 || o.rounds < 1 || o.batches.empty() || bad_batch ||
      o.names.empty()) {
    std::fprintf(stderr, "--seconds, --rounds and every batch size must be "
                         "positive\n");
    std::exit(2);
  }
  return o;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    out += c == '\'' ? std::string{"'\\''"} : std::string(1, c);
  }
  return out + "'";
}

// Writes the example models into dir with the first Python that can (the
// generator needs numpy, which a machine's system Python may lack).
void make_models(const fs::path& dir) {
  std::vector<fs::path> scripts;
  if (*SHOAL_SOURCE_ROOT) {
    scripts.emplace_back(fs::path{SHOAL_SOURCE_ROOT} / "scripts" /
                         "make_models.py");
  }
  scripts.emplace_back(fs::path{"scripts"} / "make_models.py");
  auto script = std::find_if(scripts.begin(), scripts.end(),
                             [](auto& p) { return fs::exists(p); });
  if (script == scripts.end()) {
    fail("scripts/make_models.py not found (looked in " SHOAL_SOURCE_ROOT
         " and the current directory); pass --models DIR");
  }
  std::vector<std::string> pythons;
  if (auto* env = std::getenv("PYTHON"); env && *env) {
    pythons.emplace_back(env);
  }
  pythons.emplace_back("/usr/bin/python3");
  pythons.emplace_back("python3");
  for (auto& py : pythons) {
    auto cmd = shell_quote(py) + " " + shell_quote(script->string()) +
               " --out " + shell_quote(dir.string()) + " >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) {
      return;
    }
  }
  fail("could not generate the models with $PYTHON, /usr/bin/python3 or "
       "python3 (make_models.py needs numpy); pass --models DIR");
}

// The example model's manifest, made to run on the GPU: the manifests ask
// for the CPU, and at most 32 rows per batch. Changed in memory rather than
// in a copy of model.toml, so the generated repository stays as it is.
model_spec gpu_spec(const fs::path& root, const std::string& name,
                    const options& o, uint64_t max_batch) {
  auto path = root / name / "1" / "model.toml";
  auto spec = parse_manifest(path.string(), name, 1);
  if (!spec) {
    fail(reason_of(spec.error()));
  }
  spec->backend = o.device == "gpu" ? "cuda" : "cpu";
  spec->device = o.device;
  edit_options<graph_options>(*spec, [&](auto& g) { g.allow_tf32 = o.tf32; });
  spec->max_batch = static_cast<uint32_t>(max_batch);
  // A full batch runs at once; the bench never sends a partial one.
  spec->max_delay = std::chrono::microseconds{0};
  if (spec->inputs.size() != 1 || spec->outputs.size() != 1) {
    fail(path.string() + ": expected one input and one output");
  }
  return std::move(*spec);
}

std::vector<uint64_t> batch_shape(const io_spec& io, uint64_t rows) {
  std::vector<uint64_t> shape;
  for (auto d : io.shape) {
    shape.push_back(d < 0 ? rows : static_cast<uint64_t>(d));
  }
  return shape;
}

// Random inputs in [0, 1), as the reference inputs are.
std::vector<std::vector<tensor>> input_pool(const model_spec& spec,
                                            uint64_t rows, std::mt19937& rng) {
  std::uniform_real_distribution<float> d{0.0f, 1.0f};
  std::vector<std::vector<tensor>> pool;
  for (size_t i = 0; i < pool_size; ++i) {
    tensor t;
    t.name = spec.inputs[0].name;
    t.type = dtype::f32;
    t.shape = batch_shape(spec.inputs[0], rows);
    std::vector<float> v(*t.element_count());
    for (auto& x : v) {
      x = d(rng);
    }
    t.data.resize(v.size() * sizeof(float));
    std::memcpy(t.data.data(), v.data(), t.data.size());
    pool.push_back({std::move(t)});
  }
  return pool;
}

void check_outputs(const caf::expected<std::vector<tensor>>& out, uint64_t rows,
                   const std::string& what) {
  if (!out) {
    fail(what + ": " + reason_of(out.error()));
  }
  if (out->size() != 1 || out->front().shape.empty() ||
      out->front().shape[0] != rows || out->front().type != dtype::f32) {
    fail(what + ": outputs are not one f32 tensor of " + std::to_string(rows) +
         " rows");
  }
}

// Largest absolute difference between the backend's outputs for the
// reference inputs and the outputs numpy computed in float64; -1 when the
// model has no reference file. A benchmark of wrong outputs means nothing.
double reference_error(backend& be, const model_spec& spec) {
  auto ref = safetensors_file::open(spec.dir + "/reference.safetensors");
  if (!ref) {
    return -1;
  }
  double worst = 0;
  for (uint64_t n : {1, 7, 32}) {
    auto* x = ref->find("input.b" + std::to_string(n));
    auto* y = ref->find("output.b" + std::to_string(n));
    if (!x || !y || n > spec.max_batch) {
      continue;
    }
    tensor in;
    in.name = spec.inputs[0].name;
    in.type = x->type;
    in.shape = x->shape;
    in.data.assign(x->data, x->data + x->bytes);
    auto out = be.run({in}, n);
    check_outputs(out, n, spec.name + " reference batch " + std::to_string(n));
    auto want = to_f32(*y);
    if (!want) {
      fail(reason_of(want.error()));
    }
    auto& got = out->front().data;
    if (got.size() != want->size() * sizeof(float)) {
      fail(spec.name + ": reference output size differs");
    }
    for (size_t i = 0; i < want->size(); ++i) {
      float g;
      std::memcpy(&g, got.data() + i * sizeof(float), sizeof(float));
      double e = std::fabs(double{g} - double{(*want)[i]});
      worst = std::isnan(e) ? INFINITY : std::max(worst, e);
    }
  }
  return worst;
}

struct backend_stats {
  double batches_per_s = 0;
  double wall_s = 0; // per batch
  bool profiled = false;
  double kernel_s = 0; // per batch, from profile()
  double copy_in_s = 0;
  double copy_out_s = 0;
};

// Keeps `depth` batches started for `seconds`, then drains, so that every
// batch started in the window also finished in it and profile() covers
// exactly the batches counted.
std::pair<uint64_t, double>
pipelined_window(backend& be, const std::vector<std::vector<tensor>>& pool,
                 uint64_t rows, size_t depth, double seconds) {
  uint64_t started = 0, finished = 0;
  auto start_one = [&] {
    if (auto err = be.start(pool[started++ % pool.size()], rows)) {
      fail("start: " + reason_of(err));
    }
  };
  auto finish_one = [&] {
    check_outputs(be.finish(), rows, "finish");
    ++finished;
  };
  auto t0 = bench_clock::now();
  auto until = t0 + std::chrono::duration<double>(seconds);
  for (size_t i = 0; i < depth; ++i) {
    start_one();
  }
  while (bench_clock::now() < until) {
    finish_one();
    start_one();
  }
  while (finished < started) {
    finish_one();
  }
  auto wall = std::chrono::duration<double>(bench_clock::now() - t0).count();
  return {finished, wall};
}

backend_stats backend_phase(backend& be,
                            const std::vector<std::vector<tensor>>& pool,
                            uint64_t rows, double seconds) {
  size_t depth = std::max<size_t>(1, be.max_in_flight());
  // Warm-up: lazy module loading, library heuristics, allocator growth.
  pipelined_window(be, pool, rows, depth, std::min(0.5, seconds));
  auto p0 = be.profile();
  auto [n, wall] = pipelined_window(be, pool, rows, depth, seconds);
  auto p1 = be.profile();
  backend_stats s;
  s.batches_per_s = n / wall;
  s.wall_s = wall / n;
  auto profiled = p1.batches - p0.batches;
  if (profiled > 0) {
    s.profiled = true;
    s.kernel_s = (p1.kernel_s - p0.kernel_s) / profiled;
    s.copy_in_s = (p1.copy_in_s - p0.copy_in_s) / profiled;
    s.copy_out_s = (p1.copy_out_s - p0.copy_out_s) / profiled;
  }
  return s;
}

// An executor actor on its own thread (as GPU models run) and the scoped
// actor that feeds it. The destructor stops it and waits until it is gone:
// it records into metrics owned by the caller, and the actor system waits
// for it on the way out.
class executor_session {
public:
  executor_session(caf::actor_system& sys, model_spec_ptr spec,
                   std::shared_ptr<node_metrics> m)
      : self_(sys), spec_(std::move(spec)) {
    // No load env: the generated files are loaded as they are, unverified.
    std::shared_ptr<const load_env> env;
    exec_ = self_->spawn<caf::detached>(executor_actor, spec_,
                                        caf::actor{self_}, m, env);
    self_->monitor(exec_);
  }

  ~executor_session() { stop(); }

  // Waits until the executor loaded the model on the device it was asked
  // for.
  void await_ready() {
    std::string device;
    self_->receive([&](ready_atom, const std::string&, uint64_t, caf::actor,
                       const std::string& d) { device = d; },
                   [&](caf::down_msg& dm) {
                     gone_ = true;
                     broke_ =
                         "executor failed to load: " + reason_of(dm.reason);
                   },
                   caf::after(std::chrono::seconds{120}) >>
                       [&] { broke_ = "executor did not load within 120 s"; });
    check();
    if (device.rfind(spec_->device, 0) != 0) {
      broke_ = "executor loaded " + spec_->name + " on " + device + ", not " +
               spec_->device;
    }
    check();
  }

  void send(const std::vector<tensor>& inputs, uint64_t rows) {
    exec_item item;
    item.ticket = ++sent_;
    item.inputs = inputs; // the client's copy
    item.rows = rows;
    self_->send(exec_, exec_atom::value, std::move(item));
  }

  // One batch's results; how many requests they answer.
  size_t receive_batch() {
    size_t n = 0;
    self_->receive(
        [&](done_atom, std::vector<exec_result>& results) {
          for (auto& r : results) {
            broke_ = r.code != 0 ? "executor error: " + r.error : broke_;
          }
          n = results.size();
        },
        [&](caf::down_msg& dm) {
          gone_ = true;
          broke_ = "executor died: " + reason_of(dm.reason);
        },
        caf::after(std::chrono::seconds{30}) >>
            [&] { broke_ = "executor stalled: no batch for 30 s"; });
    check();
    return n;
  }

  void stop() {
    if (gone_) {
      return;
    }
    self_->send_exit(exec_, caf::exit_reason::user_shutdown);
    while (!gone_) {
      self_->receive([&](caf::down_msg&) { gone_ = true; },
                     [](done_atom, std::vector<exec_result>&) {},
                     caf::after(std::chrono::seconds{30}) >> [&] { stuck(); });
    }
  }

private:
  void check() {
    if (!broke_.empty()) {
      stop();
      fail(broke_);
    }
  }

  // Stuck in the backend: the actor system would wait for it forever on
  // the way out.
  [[noreturn]] void stuck() {
    std::fprintf(stderr, "bench_gpu_executor: %s: the executor does not stop\n",
                 broke_.empty() ? "end of phase" : broke_.c_str());
    std::_Exit(1);
  }

  caf::scoped_actor self_;
  model_spec_ptr spec_;
  executor_handle exec_;
  bool gone_ = false;
  std::string broke_;
  uint64_t sent_ = 0;
};

// Batches per second of an executor kept saturated with `inflight`
// requests of `rows` rows (one batch each: max_batch is `rows`).
double executor_phase(caf::actor_system& sys, model_spec_ptr spec,
                      std::shared_ptr<node_metrics> m,
                      const std::vector<std::vector<tensor>>& pool,
                      uint64_t rows, size_t inflight, double seconds) {
  executor_session s{sys, std::move(spec), std::move(m)};
  s.await_ready();
  uint64_t sent = 0, batches = 0;
  auto send_one = [&] { s.send(pool[++sent % pool.size()], rows); };
  auto receive_one = [&] {
    auto answered = s.receive_batch();
    ++batches;
    for (size_t i = 0; i < answered; ++i) {
      send_one();
    }
  };
  for (size_t i = 0; i < inflight; ++i) {
    send_one();
  }
  auto warm_until = bench_clock::now() +
                    std::chrono::duration<double>(std::min(0.5, seconds));
  while (bench_clock::now() < warm_until) {
    receive_one();
  }
  batches = 0;
  auto t0 = bench_clock::now();
  auto until = t0 + std::chrono::duration<double>(seconds);
  while (bench_clock::now() < until) {
    receive_one();
  }
  auto elapsed = std::chrono::duration<double>(bench_clock::now() - t0).count();
  s.stop();
  return batches / elapsed;
}

struct result {
  std::string model;
  uint64_t batch = 0;
  size_t depth = 1;    // the backend's max_in_flight()
  size_t inflight = 0; // executor requests in flight
  backend_stats be;    // means over the rounds
  double exec_batches_per_s = 0;
  double ref_error = -1;
};

// One result per model and batch size, in the order gpu_vs_torch.sh
// prints them; its keys are what that script reads.
json results_json(const std::vector<result>& rs) {
  auto out = json::array();
  for (auto& r : rs) {
    auto prof = [&](double v) {
      return r.be.profiled ? json{v * 1e3} : json{};
    };
    double overhead = r.be.wall_s - r.be.kernel_s;
    out.push(json::object()
                 .set("model", r.model)
                 .set("batch", r.batch)
                 .set("max_in_flight", r.depth)
                 .set("backend_batches_per_s", r.be.batches_per_s)
                 .set("backend_rows_per_s", r.be.batches_per_s * r.batch)
                 .set("wall_ms", r.be.wall_s * 1e3)
                 .set("kernel_ms", prof(r.be.kernel_s))
                 .set("copy_in_ms", prof(r.be.copy_in_s))
                 .set("copy_out_ms", prof(r.be.copy_out_s))
                 .set("overhead_ms", prof(overhead))
                 .set("overhead_pct", r.be.profiled
                                          ? json{100 * overhead / r.be.wall_s}
                                          : json{})
                 .set("executor_batches_per_s", r.exec_batches_per_s)
                 .set("executor_rows_per_s", r.exec_batches_per_s * r.batch)
                 .set("executor_inflight", r.inflight)
                 .set("ref_max_abs_err",
                      r.ref_error < 0 ? json{} : json{r.ref_error}));
  }
  return out;
}

void print_table(const std::vector<result>& rs) {
  std::printf("\n%-5s %5s | %10s %11s | %8s %8s %8s %8s %16s | %10s %6s\n",
              "model", "batch", "backend/s", "rows/s", "wall ms", "kernel",
              "copy-in", "copy-out", "overhead ms (%)", "executor/s", "x be");
  std::printf("%s\n", std::string(118, '-').c_str());
  for (auto& r : rs) {
    char prof[80];
    if (r.be.profiled) {
      double overhead = r.be.wall_s - r.be.kernel_s;
      std::snprintf(prof, sizeof(prof), "%8.4f %8.4f %8.4f %8.4f (%5.1f%%)",
                    r.be.kernel_s * 1e3, r.be.copy_in_s * 1e3,
                    r.be.copy_out_s * 1e3, overhead * 1e3,
                    100 * overhead / r.be.wall_s);
    } else {
      std::snprintf(prof, sizeof(prof), "%8s %8s %8s %16s", "n/a", "n/a", "n/a",
                    "n/a");
    }
    std::printf("%-5s %5llu | %10.0f %11.0f | %8.4f %s | %10.0f %6.3f\n",
                r.model.c_str(), static_cast<unsigned long long>(r.batch),
                r.be.batches_per_s, r.be.batches_per_s * r.batch,
                r.be.wall_s * 1e3, prof, r.exec_batches_per_s,
                r.exec_batches_per_s / r.be.batches_per_s);
  }
}

// The devices to run on; nullopt after printing why the run is skipped.
std::optional<std::vector<gpu_device_info>> find_devices(const options& o) {
  if (o.device == "cpu") {
    return std::vector<gpu_device_info>{
        {0, "cpu", "the CPU backend, not a GPU", 0, 0}};
  }
  if (!cuda_built()) {
    std::fprintf(stderr, "bench_gpu_executor: skipped: %s\n",
                 gpu_absent_reason().c_str());
    return std::nullopt;
  }
  auto gpus = gpu_devices();
  if (gpus.empty()) {
    std::fprintf(stderr, "bench_gpu_executor: skipped: no usable GPU: %s\n",
                 gpu_absent_reason().c_str());
    return std::nullopt;
  }
  return gpus;
}

// One backend per model for the backend phase, loaded once for the widest
// batch; executors load their own, sized for their batch.
struct model_run {
  model_spec spec;
  backend_ptr be;
  std::vector<std::vector<std::vector<tensor>>> pools; // per batch size
};

// Loads a model, checks it against its reference outputs and makes its
// input pools and result rows; false when its outputs are wrong.
bool prepare_model(const options& o, const fs::path& root,
                   const std::string& name, std::mt19937& rng,
                   std::vector<model_run>& models, std::vector<result>& rs) {
  uint64_t widest = *std::max_element(o.batches.begin(), o.batches.end());
  double tolerance = o.tf32 ? 2e-2 : 5e-3;
  model_run mr{gpu_spec(root, name, o, widest), nullptr, {}};
  auto be = load_backend(mr.spec);
  if (!be) {
    fail(name + ": " + reason_of(be.error()));
  }
  mr.be = std::move(*be);
  if (mr.be->device().rfind(o.device, 0) != 0) {
    fail(name + " loaded on " + mr.be->device() + ", not a GPU");
  }
  auto err = reference_error(*mr.be, mr.spec);
  if (err > tolerance) {
    std::fprintf(stderr,
                 "%s: outputs differ from the reference by %.3g (tolerance "
                 "%.1g)\n",
                 name.c_str(), err, tolerance);
  }
  for (auto b : o.batches) {
    mr.pools.push_back(input_pool(mr.spec, b, rng));
    result r;
    r.model = name;
    r.batch = b;
    r.depth = std::max<size_t>(1, mr.be->max_in_flight());
    r.inflight = o.inflight ? o.inflight : r.depth + 2;
    r.ref_error = err;
    rs.push_back(r);
  }
  models.push_back(std::move(mr));
  return err <= tolerance;
}

void add_round(result& r, const backend_stats& s, double exec, int rounds) {
  double w = 1.0 / rounds;
  r.be.batches_per_s += w * s.batches_per_s;
  r.be.wall_s += w * s.wall_s;
  r.be.profiled = s.profiled;
  r.be.kernel_s += w * s.kernel_s;
  r.be.copy_in_s += w * s.copy_in_s;
  r.be.copy_out_s += w * s.copy_out_s;
  r.exec_batches_per_s += w * exec;
}

void measure(const options& o, std::vector<model_run>& models,
             std::vector<result>& rs) {
  caf::actor_system_config cfg;
  cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  metrics::registry reg; // outlives every executor below
  auto m = std::make_shared<node_metrics>(reg, "bench");
  for (int round = 0; round < o.rounds; ++round) {
    size_t k = 0;
    for (auto& mr : models) {
      for (size_t bi = 0; bi < o.batches.size(); ++bi, ++k) {
        auto& r = rs[k];
        auto& pool = mr.pools[bi];
        auto s = backend_phase(*mr.be, pool, r.batch, o.seconds);
        auto espec = std::make_shared<model_spec>(mr.spec);
        espec->max_batch = static_cast<uint32_t>(r.batch);
        auto e =
            executor_phase(sys, espec, m, pool, r.batch, r.inflight, o.seconds);
        std::printf("  round %d %-4s batch %-3llu backend %9.0f  executor "
                    "%9.0f batches/s\n",
                    round + 1, r.model.c_str(),
                    static_cast<unsigned long long>(r.batch), s.batches_per_s,
                    e);
        std::fflush(stdout);
        add_round(r, s, e, o.rounds);
      }
    }
  }
}

void print_summary(const options& o, const std::vector<result>& rs) {
  print_table(rs);
  std::printf("\nbackend: %zu batch(es) kept started (max_in_flight); "
              "overhead = wall per batch - kernel time\n",
              rs.empty() ? size_t{1} : rs.front().depth);
  for (auto& r : rs) {
    if (r.batch == o.batches.front()) {
      std::printf("%s: reference outputs, max abs error %s (tolerance %.1g)\n",
                  r.model.c_str(),
                  r.ref_error < 0 ? "n/a (no reference.safetensors)"
                                  : json_num(r.ref_error).c_str(),
                  o.tf32 ? 2e-2 : 5e-3);
    }
  }
}

// --models, or the example models generated into `generated`, a
// temporary directory removed however the run ends.
fs::path model_root(const options& o,
                    std::unique_ptr<shoal::test::temp_dir>& generated) {
  if (!o.models.empty()) {
    return o.models;
  }
  generated = std::make_unique<shoal::test::temp_dir>("shoal-bench-gpu");
  make_models(generated->path());
  return generated->path();
}

int run(const options& o) {
  auto gpus = find_devices(o);
  if (!gpus) {
    return exit_skip;
  }
  if (o.probe) {
    for (auto& g : *gpus) {
      std::printf("%s: %s, %.1f of %.1f GiB free\n", g.name.c_str(),
                  g.product.c_str(), g.free_bytes() / 1073741824.0,
                  g.total_bytes / 1073741824.0);
    }
    return 0;
  }
  bench::report rep{"bench_gpu_executor"};
  std::unique_ptr<shoal::test::temp_dir> generated;
  auto root = model_root(o, generated);
  // Executors log each load at info: noise between the rounds' lines.
  spdlog::set_level(spdlog::level::warn);
  std::mt19937 rng{5};
  std::vector<model_run> models;
  std::vector<result> rs;
  bool right = true;
  for (auto& name : o.names) {
    right = prepare_model(o, root, name, rng, models, rs) && right;
  }
  const auto& gpu = gpus->front();
  std::printf("%s (%s), %.1f s per phase, TF32 %s, %d round(s); executor: "
              "max_batch = batch, max_delay 0\n",
              gpu.name.c_str(), gpu.product.c_str(), o.seconds,
              o.tf32 ? "allowed" : "off", o.rounds);
  measure(o, models, rs);
  rep.finish();
  print_summary(o, rs);
  rep.doc()
      .set("device", gpu.name)
      .set("product", gpu.product)
      .set("seconds", o.seconds)
      .set("rounds", o.rounds)
      .set("tf32", o.tf32)
      .set("results", results_json(rs));
  rep.write(o.common.json);
  return right ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  auto o = parse_args(argc, argv);
  return bench::run_guarded("bench_gpu_executor", [&] { return run(o); });
}
