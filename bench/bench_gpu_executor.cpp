// GPU executor throughput on the example MLP and CNN at batch 1, 8 and 64
// (issue 5: executor >= 0.9x the same model run by PyTorch at the same batch
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
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/serving/executor.hpp"
#include "bench/bench_json.hpp"
#include "gpu/backend.hpp"
#include "gpu/device/device.hpp"
#include "gpu/graph/graph_options.hpp"
#include "net/wire/error.hpp"
#include "runtime/metrics/registry.hpp"
#include "gpu/model/manifest.hpp"
#include "runtime/model/repository.hpp"
#include "runtime/metrics/node_metrics.hpp"
#include "gpu/model/safetensors.hpp"

#ifndef SHOAL_SOURCE_ROOT
#define SHOAL_SOURCE_ROOT ""
#endif

using namespace shoal;
namespace fs = std::filesystem;
using bench_clock = std::chrono::steady_clock;

namespace {

using shoal::bench::json_escape;
using shoal::bench::json_num;

constexpr int exit_skip = 77; // meson's "skipped"
constexpr size_t pool_size = 8;

struct options {
  std::string models; // empty: generate into a temporary directory
  double seconds = 3;
  std::vector<uint64_t> batches{1, 8, 64};
  std::vector<std::string> names{"mlp", "cnn"};
  bool tf32 = false;
  size_t inflight = 0; // 0: max_in_flight() + 2
  int rounds = 1;
  std::string json;
  bool probe = false; // only say whether there is a GPU
  // "cpu": the same phases on the CPU backend, to try the bench itself on a
  // machine without a GPU (its numbers answer nothing of issue 5).
  std::string device = "gpu";
};

[[noreturn]] void usage(int code) {
  std::fprintf(
      code == 0 ? stdout : stderr,
      "usage: bench_gpu_executor [options]\n"
      "  --models DIR     model repository holding mlp/1 and cnn/1 as\n"
      "                   scripts/make_models.py writes them (default: run\n"
      "                   make_models.py into a temporary directory with\n"
      "                   $PYTHON, /usr/bin/python3 or python3)\n"
      "  --names a,b      models to run (default mlp,cnn)\n"
      "  --seconds S      per phase, after a warm-up (default 3)\n"
      "  --batches LIST   batch sizes (default 1,8,64)\n"
      "  --tf32           allow TF32 for f32 dense and conv layers\n"
      "  --inflight K     executor requests in flight (default the\n"
      "                   backend's max_in_flight() + 2)\n"
      "  --rounds R       repeat every phase R times, report means "
      "(default 1)\n"
      "  --json FILE      also write the results as JSON\n"
      "  --probe          print the GPUs and exit\n"
      "  --device cpu     run the phases on the CPU backend instead (tries\n"
      "                   the benchmark itself without a GPU)\n"
      "Exits 77 (skipped) without a usable GPU.\n");
  std::exit(code);
}

template <class T, class F>
std::vector<T> split_list(const std::string& s, F&& convert) {
  std::vector<T> out;
  std::stringstream in{s};
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty())
      out.push_back(convert(item));
  return out;
}

options parse_args(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        usage(2);
      }
      return argv[++i];
    };
    try {
      if (a == "--help" || a == "-h")
        usage(0);
      else if (a == "--models")
        o.models = value();
      else if (a == "--names")
        o.names = split_list<std::string>(value(), [](auto& s) { return s; });
      else if (a == "--seconds")
        o.seconds = std::stod(value());
      else if (a == "--batches")
        o.batches = split_list<uint64_t>(
            value(), [](auto& s) { return std::stoull(s); });
      else if (a == "--tf32")
        o.tf32 = true;
      else if (a == "--inflight")
        o.inflight = std::stoul(value());
      else if (a == "--rounds")
        o.rounds = std::stoi(value());
      else if (a == "--json")
        o.json = value();
      else if (a == "--probe")
        o.probe = true;
      else if (a == "--device")
        o.device = value();
      else {
        std::fprintf(stderr, "unknown option %s\n", a.c_str());
        usage(2);
      }
    } catch (const std::logic_error&) { // stod and friends
      std::fprintf(stderr, "bad value for %s\n", a.c_str());
      usage(2);
    }
  }
  bool bad_batch = std::any_of(o.batches.begin(), o.batches.end(),
                               [](uint64_t b) { return b == 0; });
  if (o.device != "gpu" && o.device != "cpu") {
    std::fprintf(stderr, "--device is gpu or cpu\n");
    usage(2);
  }
  if (o.seconds <= 0 || o.rounds < 1 || o.batches.empty() || bad_batch ||
      o.names.empty()) {
    std::fprintf(stderr, "--seconds, --rounds and every batch size must be "
                         "positive\n");
    usage(2);
  }
  return o;
}

// Something broke: the run cannot go on.
struct bench_failure {
  std::string what;
};

[[noreturn]] void fail(const std::string& what) {
  throw bench_failure{what};
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s)
    out += c == '\'' ? std::string{"'\\''"} : std::string(1, c);
  return out + "'";
}

// Removes the generated models however main() is left.
struct temp_dir {
  fs::path path;
  ~temp_dir() {
    if (!path.empty()) {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  }
};

// Writes the example models into dir with the first Python that can (the
// generator needs numpy, which a machine's system Python may lack).
void make_models(const fs::path& dir) {
  std::vector<fs::path> scripts;
  if (*SHOAL_SOURCE_ROOT)
    scripts.emplace_back(fs::path{SHOAL_SOURCE_ROOT} / "scripts" /
                         "make_models.py");
  scripts.emplace_back(fs::path{"scripts"} / "make_models.py");
  auto script = std::find_if(scripts.begin(), scripts.end(),
                             [](auto& p) { return fs::exists(p); });
  if (script == scripts.end())
    fail("scripts/make_models.py not found (looked in " SHOAL_SOURCE_ROOT
         " and the current directory); pass --models DIR");
  std::vector<std::string> pythons;
  if (auto* env = std::getenv("PYTHON"); env && *env)
    pythons.emplace_back(env);
  pythons.emplace_back("/usr/bin/python3");
  pythons.emplace_back("python3");
  for (auto& py : pythons) {
    auto cmd = shell_quote(py) + " " + shell_quote(script->string()) +
               " --out " + shell_quote(dir.string()) + " >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0)
      return;
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
  if (!spec)
    fail(reason_of(spec.error()));
  spec->backend = o.device == "gpu" ? "cuda" : "cpu";
  spec->device = o.device;
  edit_options<graph_options>(*spec, [&](auto& g) { g.allow_tf32 = o.tf32; });
  spec->max_batch = static_cast<uint32_t>(max_batch);
  // A full batch runs at once; the bench never sends a partial one.
  spec->max_delay = std::chrono::microseconds{0};
  if (spec->inputs.size() != 1 || spec->outputs.size() != 1)
    fail(path.string() + ": expected one input and one output");
  return std::move(*spec);
}

std::vector<uint64_t> batch_shape(const io_spec& io, uint64_t rows) {
  std::vector<uint64_t> shape;
  for (auto d : io.shape)
    shape.push_back(d < 0 ? rows : static_cast<uint64_t>(d));
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
    for (auto& x : v)
      x = d(rng);
    t.data.resize(v.size() * sizeof(float));
    std::memcpy(t.data.data(), v.data(), t.data.size());
    pool.push_back({std::move(t)});
  }
  return pool;
}

void check_outputs(const caf::expected<std::vector<tensor>>& out, uint64_t rows,
                   const std::string& what) {
  if (!out)
    fail(what + ": " + reason_of(out.error()));
  if (out->size() != 1 || out->front().shape.empty() ||
      out->front().shape[0] != rows || out->front().type != dtype::f32)
    fail(what + ": outputs are not one f32 tensor of " + std::to_string(rows) +
         " rows");
}

// Largest absolute difference between the backend's outputs for the
// reference inputs and the outputs numpy computed in float64; -1 when the
// model has no reference file. A benchmark of wrong outputs means nothing.
double reference_error(backend& be, const model_spec& spec) {
  auto ref = safetensors_file::open(spec.dir + "/reference.safetensors");
  if (!ref)
    return -1;
  double worst = 0;
  for (uint64_t n : {1, 7, 32}) {
    auto* x = ref->find("input.b" + std::to_string(n));
    auto* y = ref->find("output.b" + std::to_string(n));
    if (!x || !y || n > spec.max_batch)
      continue;
    tensor in;
    in.name = spec.inputs[0].name;
    in.type = x->type;
    in.shape = x->shape;
    in.data.assign(x->data, x->data + x->bytes);
    auto out = be.run({in}, n);
    check_outputs(out, n, spec.name + " reference batch " + std::to_string(n));
    auto want = to_f32(*y);
    if (!want)
      fail(reason_of(want.error()));
    auto& got = out->front().data;
    if (got.size() != want->size() * sizeof(float))
      fail(spec.name + ": reference output size differs");
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
    if (auto err = be.start(pool[started++ % pool.size()], rows))
      fail("start: " + reason_of(err));
  };
  auto finish_one = [&] {
    check_outputs(be.finish(), rows, "finish");
    ++finished;
  };
  auto t0 = bench_clock::now();
  auto until = t0 + std::chrono::duration<double>(seconds);
  for (size_t i = 0; i < depth; ++i)
    start_one();
  while (bench_clock::now() < until) {
    finish_one();
    start_one();
  }
  while (finished < started)
    finish_one();
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

// Batches per second of an executor kept saturated with `inflight`
// requests of `rows` rows (one batch each: max_batch is `rows`).
double executor_phase(caf::actor_system& sys, model_spec_ptr spec,
                      std::shared_ptr<node_metrics> m,
                      const std::vector<std::vector<tensor>>& pool,
                      uint64_t rows, size_t inflight, double seconds) {
  caf::scoped_actor self{sys};
  // No load env: the generated files are loaded as they are, unverified.
  std::shared_ptr<const load_env> env;
  auto exec = self->spawn<caf::detached>(executor_actor, spec, caf::actor{self},
                                         m, env);
  self->monitor(exec);
  bool gone = false;
  std::string device, broke;
  // Stops the executor and waits until it is gone: it records into metrics
  // owned by the caller, and the actor system waits for it on the way out.
  auto stop = [&] {
    if (gone)
      return;
    self->send_exit(exec, caf::exit_reason::user_shutdown);
    while (!gone)
      self->receive([&](caf::down_msg&) { gone = true; },
                    [](done_atom, std::vector<exec_result>&) {},
                    caf::after(std::chrono::seconds{30}) >>
                        [&] {
                          // Stuck in the backend: the actor system would wait
                          // for it forever on the way out.
                          std::fprintf(stderr,
                                       "bench_gpu_executor: %s: the executor "
                                       "does not stop\n",
                                       broke.empty() ? "end of phase"
                                                     : broke.c_str());
                          std::_Exit(1);
                        });
  };
  auto check = [&] {
    if (broke.empty())
      return;
    stop();
    fail(broke);
  };
  self->receive([&](ready_atom, const std::string&, uint64_t, caf::actor,
                    const std::string& d) { device = d; },
                [&](caf::down_msg& dm) {
                  gone = true;
                  broke = "executor failed to load: " + reason_of(dm.reason);
                },
                caf::after(std::chrono::seconds{120}) >>
                    [&] { broke = "executor did not load within 120 s"; });
  check();
  if (device.rfind(spec->device, 0) != 0)
    broke = "executor loaded " + spec->name + " on " + device + ", not " +
            spec->device;
  check();
  uint64_t sent = 0, batches = 0;
  auto send_one = [&] {
    exec_item item;
    item.ticket = ++sent;
    item.inputs = pool[sent % pool.size()]; // the client's copy
    item.rows = rows;
    self->send(exec, exec_atom::value, std::move(item));
  };
  auto receive_one = [&] {
    self->receive(
        [&](done_atom, std::vector<exec_result>& results) {
          ++batches;
          for (auto& r : results) {
            if (r.code != 0)
              broke = "executor error: " + r.error;
            send_one();
          }
        },
        [&](caf::down_msg& dm) {
          gone = true;
          broke = "executor died: " + reason_of(dm.reason);
        },
        caf::after(std::chrono::seconds{30}) >>
            [&] { broke = "executor stalled: no batch for 30 s"; });
    check();
  };
  for (size_t i = 0; i < inflight; ++i)
    send_one();
  auto warm_until = bench_clock::now() +
                    std::chrono::duration<double>(std::min(0.5, seconds));
  while (bench_clock::now() < warm_until)
    receive_one();
  batches = 0;
  auto t0 = bench_clock::now();
  auto until = t0 + std::chrono::duration<double>(seconds);
  while (bench_clock::now() < until)
    receive_one();
  auto elapsed = std::chrono::duration<double>(bench_clock::now() - t0).count();
  stop();
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

void write_json(const std::string& path, const options& o,
                const gpu_device_info& gpu, const std::vector<result>& rs) {
  std::ofstream out{path};
  if (!out)
    fail("cannot write " + path);
  out << "{\n  \"device\": \"" << json_escape(gpu.name) << "\", \"product\": \""
      << json_escape(gpu.product) << "\", \"seconds\": " << json_num(o.seconds)
      << ", \"rounds\": " << o.rounds
      << ", \"tf32\": " << (o.tf32 ? "true" : "false") << ",\n  \"results\": [";
  for (size_t i = 0; i < rs.size(); ++i) {
    auto& r = rs[i];
    auto prof = [&](double v) {
      return r.be.profiled ? json_num(v * 1e3) : std::string{"null"};
    };
    double overhead = r.be.wall_s - r.be.kernel_s;
    out << (i ? ",\n" : "\n") << "    {\"model\": \"" << json_escape(r.model)
        << "\", \"batch\": " << r.batch << ", \"max_in_flight\": " << r.depth
        << ", \"backend_batches_per_s\": " << json_num(r.be.batches_per_s)
        << ", \"backend_rows_per_s\": "
        << json_num(r.be.batches_per_s * r.batch)
        << ", \"wall_ms\": " << json_num(r.be.wall_s * 1e3)
        << ", \"kernel_ms\": " << prof(r.be.kernel_s)
        << ", \"copy_in_ms\": " << prof(r.be.copy_in_s)
        << ", \"copy_out_ms\": " << prof(r.be.copy_out_s)
        << ", \"overhead_ms\": " << prof(overhead) << ", \"overhead_pct\": "
        << (r.be.profiled ? json_num(100 * overhead / r.be.wall_s) : "null")
        << ", \"executor_batches_per_s\": " << json_num(r.exec_batches_per_s)
        << ", \"executor_rows_per_s\": "
        << json_num(r.exec_batches_per_s * r.batch)
        << ", \"executor_inflight\": " << r.inflight
        << ", \"ref_max_abs_err\": "
        << (r.ref_error < 0 ? "null" : json_num(r.ref_error)) << "}";
  }
  out << "\n  ]\n}\n";
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

int run(const options& o) {
  std::vector<gpu_device_info> gpus;
  if (o.device == "cpu") {
    gpus.push_back({0, "cpu", "the CPU backend, not a GPU", 0, 0});
  } else if (!cuda_built()) {
    std::fprintf(stderr, "bench_gpu_executor: skipped: %s\n",
                 gpu_absent_reason().c_str());
    return exit_skip;
  } else {
    gpus = gpu_devices();
    if (gpus.empty()) {
      std::fprintf(stderr, "bench_gpu_executor: skipped: no usable GPU: %s\n",
                   gpu_absent_reason().c_str());
      return exit_skip;
    }
  }
  if (o.probe) {
    for (auto& g : gpus)
      std::printf("%s: %s, %.1f of %.1f GiB free\n", g.name.c_str(),
                  g.product.c_str(), g.free_bytes() / 1073741824.0,
                  g.total_bytes / 1073741824.0);
    return 0;
  }
  temp_dir generated;
  fs::path root = o.models;
  if (root.empty()) {
    auto parent = std::getenv("TMPDIR") ? std::string{std::getenv("TMPDIR")}
                                        : std::string{"/tmp"};
    auto tmpl = parent + "/shoal-bench-gpu-XXXXXX";
    if (!::mkdtemp(tmpl.data()))
      fail("mkdtemp " + tmpl + ": " + std::strerror(errno));
    generated.path = root = tmpl;
    make_models(root);
  }
  uint64_t widest = *std::max_element(o.batches.begin(), o.batches.end());
  // Executors log each load at info: noise between the rounds' lines.
  spdlog::set_level(spdlog::level::warn);
  caf::actor_system_config cfg;
  cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  metrics::registry reg; // outlives every executor below
  auto m = std::make_shared<node_metrics>(reg, "bench");
  std::mt19937 rng{5};
  double tolerance = o.tf32 ? 2e-2 : 5e-3;
  bool wrong = false;

  // One backend per model for the backend phase, loaded once for the widest
  // batch; executors load their own, sized for their batch.
  struct model_run {
    model_spec spec;
    backend_ptr be;
    std::vector<std::vector<std::vector<tensor>>> pools; // per batch size
  };
  std::vector<model_run> models;
  std::vector<result> rs;
  for (auto& name : o.names) {
    model_run mr{gpu_spec(root, name, o, widest), nullptr, {}};
    auto be = load_backend(mr.spec);
    if (!be)
      fail(name + ": " + reason_of(be.error()));
    mr.be = std::move(*be);
    if (mr.be->device().rfind(o.device, 0) != 0)
      fail(name + " loaded on " + mr.be->device() + ", not a GPU");
    auto err = reference_error(*mr.be, mr.spec);
    if (err > tolerance) {
      std::fprintf(stderr,
                   "%s: outputs differ from the reference by %.3g "
                   "(tolerance %.1g)\n",
                   name.c_str(), err, tolerance);
      wrong = true;
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
  }
  std::printf("%s (%s), %.1f s per phase, TF32 %s, %d round(s); executor: "
              "max_batch = batch, max_delay 0\n",
              gpus[0].name.c_str(), gpus[0].product.c_str(), o.seconds,
              o.tf32 ? "allowed" : "off", o.rounds);
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
        double w = 1.0 / o.rounds;
        r.be.batches_per_s += w * s.batches_per_s;
        r.be.wall_s += w * s.wall_s;
        r.be.profiled = s.profiled;
        r.be.kernel_s += w * s.kernel_s;
        r.be.copy_in_s += w * s.copy_in_s;
        r.be.copy_out_s += w * s.copy_out_s;
        r.exec_batches_per_s += w * e;
      }
    }
  }
  print_table(rs);
  std::printf("\nbackend: %zu batch(es) kept started (max_in_flight); "
              "overhead = wall per batch - kernel time\n",
              rs.empty() ? size_t{1} : rs.front().depth);
  for (auto& r : rs)
    if (r.batch == o.batches.front())
      std::printf("%s: reference outputs, max abs error %s (tolerance %.1g)\n",
                  r.model.c_str(),
                  r.ref_error < 0 ? "n/a (no reference.safetensors)"
                                  : json_num(r.ref_error).c_str(),
                  tolerance);
  if (!o.json.empty())
    write_json(o.json, o, gpus[0], rs);
  return wrong ? 1 : 0;
}

} // namespace

int main(int argc, char** argv) {
  auto o = parse_args(argc, argv);
  try {
    return run(o);
  } catch (const bench_failure& f) {
    std::fprintf(stderr, "bench_gpu_executor: %s\n", f.what.c_str());
    return 1;
  }
}
