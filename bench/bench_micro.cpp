// bench_micro: the per-request CPU costs of shoal's cache-hit path, each
// next to a baseline measured in the same run (a memcpy of the same ~1 KiB
// request frame), so the ratios stay meaningful on a noisy machine.
//
//   memcpy_frame      baseline: copy the encoded request frame
//   decode_request    decode + validate a request with a 1 KiB tensor
//   encode_reply      encode a cache-hit reply with 1 KiB outputs_encoded
//   make_cache_key    key (canonical bytes + XXH3-128) of a 1 KiB input
//   cache_get_hit     result_cache::get of a resident key
//   cache_put_churn   result_cache::put of distinct keys into a full cache
//   hit_path          all of the above the gateway does for one hit
//   hit_path_plain    the hit path of a request naming a tenant, with the
//                     receipt time the gateway takes, without tenants
//   hit_path_tenants  the same with the tenant accounting the gateway does
//                     (resolve, models, rate bucket, priority, counter);
//                     its ratio to hit_path_plain is printed at the end
//   tenant_accounting the accounting alone, as a share of hit_path_plain
//   hit_path_paired   both hit paths in alternating timed blocks of the same
//                     loop: their ratio without the noise between two runs
//                     (the figure the 2% target is read from)
//
// After the Google Benchmark output, a table gives each time as a multiple
// of the memcpy baseline; --json FILE writes that table, --quick runs each
// benchmark for 0.05 s.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>
#include <unistd.h>

#include "actors/serving/result_cache.hpp"
#include "actors/serving/tenants.hpp"
#include "bench/harness/cli.hpp"
#include "bench/harness/json.hpp"
#include "bench/harness/load.hpp"
#include "bench/harness/report.hpp"
#include "bench/harness/run.hpp"
#include "net/wire/codec.hpp"
#include "net/wire/exec.hpp"
#include "net/wire/message.hpp"

namespace {

// 1 KiB of f32, as model echo takes: the request the end-to-end benchmarks
// send.
using shoal::bench::input_value;
using shoal::bench::row_floats;

shoal::tensor make_tensor(std::string name, uint64_t seed) {
  shoal::tensor t;
  t.name = std::move(name);
  t.type = shoal::dtype::f32;
  t.shape = {1, row_floats};
  t.data.resize(row_floats * sizeof(float));
  for (size_t i = 0; i < row_floats; ++i) {
    float v = input_value(i);
    std::memcpy(t.data.data() + i * sizeof(float), &v, sizeof(float));
  }
  std::memcpy(t.data.data(), &seed, sizeof(seed));
  return t;
}

std::string request_frame() {
  shoal::request r;
  r.id = shoal::request_id::of(1);
  r.model = "echo";
  r.inputs.push_back(make_tensor("x", 0));
  std::string out;
  shoal::encode_request(r, out);
  return out;
}

std::string encoded_outputs() {
  std::vector<shoal::tensor> ts;
  ts.push_back(make_tensor("y", 0));
  std::string out;
  shoal::encode_tensors(ts, out);
  return out;
}

shoal::cached_result_ptr make_result() {
  auto r = std::make_shared<shoal::cached_result>();
  r->outputs_encoded = encoded_outputs();
  r->model = "echo";
  r->version = 2;
  r->node = "vm";
  return r;
}

// -- baseline
// ---------------------------------------------------------------------

void memcpy_frame(benchmark::State& state) {
  auto frame = request_frame();
  std::string dst(frame.size(), '\0');
  for (auto _ : state) {
    benchmark::DoNotOptimize(frame.data());
    std::memcpy(dst.data(), frame.data(), frame.size());
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(frame.size()));
  state.SetLabel(std::to_string(frame.size()) + " B");
}
BENCHMARK(memcpy_frame);

// -- codec
// ------------------------------------------------------------------------

void decode_request(benchmark::State& state) {
  auto frame = request_frame();
  shoal::codec_limits limits;
  shoal::request req;
  for (auto _ : state) {
    req = shoal::request{}; // as the gateway does per frame
    auto err =
        shoal::decode_request(reinterpret_cast<const uint8_t*>(frame.data()),
                              frame.size(), limits, req);
    if (err) {
      state.SkipWithError("decode_request failed");
      break;
    }
    benchmark::DoNotOptimize(req);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(frame.size()));
}
BENCHMARK(decode_request);

shoal::reply hit_reply(const shoal::cached_result& hit) {
  shoal::reply r;
  r.id = shoal::request_id::of(1);
  r.outputs_encoded = hit.outputs_encoded;
  r.source = shoal::reply_source::cache;
  r.model = hit.model;
  r.version = hit.version;
  r.node = hit.node;
  r.timing_us = shoal::timing{0, 0, 12};
  return r;
}

void encode_reply(benchmark::State& state) {
  auto hit = make_result();
  auto r = hit_reply(*hit);
  std::string out;
  for (auto _ : state) {
    out.clear(); // capacity kept, as the gateway's buffer
    shoal::encode_reply(r, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(out.size()));
}
BENCHMARK(encode_reply);

// -- cache
// ------------------------------------------------------------------------

void make_cache_key(benchmark::State& state) {
  std::vector<shoal::tensor> inputs{make_tensor("x", 0)};
  for (auto _ : state) {
    auto key = shoal::make_cache_key("echo", 2, inputs);
    benchmark::DoNotOptimize(key);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(inputs[0].data.size()));
}
BENCHMARK(make_cache_key);

// A cache holding `n` distinct entries of model echo; key 0 made hot.
std::unique_ptr<shoal::result_cache> filled_cache(uint64_t max_bytes, size_t n,
                                                  shoal::cache_key& hot) {
  auto cache = std::make_unique<shoal::result_cache>(
      shoal::result_cache::config{max_bytes});
  auto value = make_result();
  for (size_t i = 0; i < n; ++i) {
    std::vector<shoal::tensor> inputs{make_tensor("x", i + 1)};
    cache->put(shoal::make_cache_key("echo", 2, inputs), value,
               std::chrono::milliseconds{0});
  }
  std::vector<shoal::tensor> inputs{make_tensor("x", 0)};
  hot = shoal::make_cache_key("echo", 2, inputs);
  cache->put(hot, value, std::chrono::milliseconds{0});
  for (int i = 0; i < 16; ++i) {
    cache->get(hot);
  }
  return cache;
}

void cache_get_hit(benchmark::State& state) {
  shoal::cache_key hot;
  auto cache = filled_cache(64u << 20, 10000, hot);
  if (!cache->get(hot)) {
    state.SkipWithError("hot key not resident");
    return;
  }
  for (auto _ : state) {
    auto hit = cache->get(hot);
    benchmark::DoNotOptimize(hit);
  }
  state.SetLabel(std::to_string(cache->stats().entries) + " entries");
}
BENCHMARK(cache_get_hit);

void cache_put_churn(benchmark::State& state) {
  // 4 MiB hold ~1700 entries; 16384 distinct keys keep evicting.
  constexpr size_t n_keys = 16384;
  shoal::result_cache cache{shoal::result_cache::config{4u << 20}};
  auto value = make_result();
  std::vector<shoal::cache_key> keys;
  keys.reserve(n_keys);
  for (size_t i = 0; i < n_keys; ++i) {
    std::vector<shoal::tensor> inputs{make_tensor("x", i + 1)};
    keys.push_back(shoal::make_cache_key("echo", 2, inputs));
  }
  for (size_t i = 0; i < n_keys; ++i) { // fill, so every put churns
    cache.put(keys[i], value, std::chrono::milliseconds{0});
  }
  size_t i = 0;
  for (auto _ : state) {
    // The copy of the key (~1 KiB) is part of the cost: put takes it by
    // value and the router moves its own.
    cache.put(keys[i], value, std::chrono::milliseconds{0});
    if (++i == n_keys) {
      i = 0;
    }
  }
  auto st = cache.stats();
  state.SetLabel(std::to_string(st.entries) + " entries, " +
                 std::to_string(st.evictions + st.rejections) +
                 " evicted or rejected");
}
BENCHMARK(cache_put_churn);

// -- the whole hit path
// -------------------------------------------------------------

void hit_path(benchmark::State& state) {
  auto frame = request_frame();
  shoal::codec_limits limits;
  shoal::cache_key hot;
  auto cache = filled_cache(64u << 20, 10000, hot);
  shoal::request req;
  std::string out;
  for (auto _ : state) {
    req = shoal::request{};
    if (shoal::decode_request(reinterpret_cast<const uint8_t*>(frame.data()),
                              frame.size(), limits, req)) {
      state.SkipWithError("decode_request failed");
      break;
    }
    auto key = shoal::make_cache_key(req.model, 2, req.inputs);
    auto hit = cache->get(key);
    if (!hit) {
      state.SkipWithError("miss");
      break;
    }
    auto r = hit_reply(*hit);
    r.id = req.id;
    out.clear();
    shoal::encode_reply(r, out);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(hit_path);

// -- tenant accounting on the hit path
// ----------------------------------------------

std::string tenant_frame() {
  shoal::request r;
  r.id = shoal::request_id::of(1);
  r.model = "echo";
  r.tenant = "paid";
  r.inputs.push_back(make_tensor("x", 0));
  std::string out;
  shoal::encode_request(r, out);
  return out;
}

// Four tenants, as a platform might have; "paid" has a rate far above what
// one thread sends (so every request passes) and a models allowlist.
std::unique_ptr<shoal::tenant_table> bench_tenants() {
  std::map<std::string, shoal::tenant_limits> cfg;
  cfg["default"].rate = 10;
  cfg["free"].rate = 100;
  cfg["batch"].weight = 2;
  auto& paid = cfg["paid"];
  paid.rate = 1e9;
  paid.burst = 1000000;
  paid.models = {"resnet", "echo"};
  paid.weight = 4;
  return std::make_unique<shoal::tenant_table>(cfg);
}

// What the gateway's hit path works on: a request frame naming a tenant, a
// cache holding its answer, the decoded request and the reply buffer.
struct hit_fixture {
  std::string frame = tenant_frame();
  shoal::codec_limits limits;
  shoal::cache_key hot;
  std::unique_ptr<shoal::result_cache> cache =
      filled_cache(64u << 20, 10000, hot);
  shoal::request req;
  std::string out;
  std::unique_ptr<shoal::tenant_memo> memo;
};

// One hit as the gateway answers it, with its tenant accounting when
// `tenants` is set; the reason when something went wrong, else null.
const char* hit_once(hit_fixture& f, shoal::tenant_table* tenants) {
  auto recv_ns = shoal::now_ns();
  f.req = shoal::request{};
  if (shoal::decode_request(reinterpret_cast<const uint8_t*>(f.frame.data()),
                            f.frame.size(), f.limits, f.req)) {
    return "decode_request failed";
  }
  shoal::tenant_table::id who;
  if (tenants) {
    if (!f.memo) {
      f.memo = std::make_unique<shoal::tenant_memo>(*tenants);
    }
    who = f.memo->resolve(f.req.tenant);
    if (!f.memo->allows_model(who.index, f.req.model) ||
        tenants->take_token(who.index, recv_ns) != 0) {
      return "tenant refused";
    }
    f.req.priority = tenants->cap_priority(who.index, f.req.priority);
  }
  auto key = shoal::make_cache_key(f.req.model, 2, f.req.inputs);
  auto hit = f.cache->get(key);
  if (!hit) {
    return "miss";
  }
  auto r = hit_reply(*hit);
  r.id = f.req.id;
  f.out.clear();
  shoal::encode_reply(r, f.out);
  if (tenants) {
    tenants->count_on_gateway(who.label, r.code);
  }
  benchmark::DoNotOptimize(f.out.data());
  return nullptr;
}

void hit_path_with(benchmark::State& state, shoal::tenant_table* tenants) {
  hit_fixture f;
  for (auto _ : state) {
    if (auto err = hit_once(f, tenants)) {
      state.SkipWithError(err);
      break;
    }
  }
}

// The two hit paths on the same fixture, in alternating blocks (which goes
// first alternates too), each block timed: a preempted block or a cache
// placed differently in memory skews one pair, not the comparison, as it
// does between two separately run benchmarks. Reports the median of the
// per-pair ratios (counter `tenants_over_plain`).
void hit_path_paired(benchmark::State& state) {
  constexpr int block = 64;
  hit_fixture f;
  auto tenants = bench_tenants();
  std::vector<double> ratios;
  auto run_block = [&](shoal::tenant_table* t) -> int64_t {
    auto start = shoal::now_ns();
    for (int i = 0; i < block; ++i) {
      if (auto err = hit_once(f, t)) {
        state.SkipWithError(err);
        return -1;
      }
    }
    return shoal::now_ns() - start;
  };
  for (auto _ : state) {
    bool plain_first = ratios.size() % 2 == 0;
    auto a = run_block(plain_first ? nullptr : tenants.get());
    auto b = run_block(plain_first ? tenants.get() : nullptr);
    if (a <= 0 || b <= 0) {
      break;
    }
    auto plain = plain_first ? a : b;
    ratios.push_back(static_cast<double>(plain_first ? b : a) / plain);
  }
  if (!ratios.empty()) {
    std::nth_element(ratios.begin(), ratios.begin() + ratios.size() / 2,
                     ratios.end());
    state.counters["tenants_over_plain"] = ratios[ratios.size() / 2];
  }
  state.SetItemsProcessed(state.iterations() * 2 * block);
}
// The accounting alone, for one request: what hit_path_tenants adds.
void tenant_accounting(benchmark::State& state) {
  auto tenants = bench_tenants();
  std::string name = "paid";
  std::string model = "echo";
  uint8_t priority = 5;
  int64_t now = shoal::now_ns();
  for (auto _ : state) {
    benchmark::DoNotOptimize(name.data());
    auto who = tenants->resolve(name);
    now += 1000; // a request a microsecond, far below paid's rate
    if (!tenants->allows_model(who.index, model) ||
        tenants->take_token(who.index, now) != 0) {
      state.SkipWithError("tenant refused");
      break;
    }
    priority = tenants->cap_priority(who.index, priority);
    tenants->count_on_gateway(who.label, shoal::status::ok);
    benchmark::DoNotOptimize(priority);
  }
}
BENCHMARK(tenant_accounting);

void hit_path_plain(benchmark::State& state) {
  hit_path_with(state, nullptr);
}
BENCHMARK(hit_path_plain);

void hit_path_tenants(benchmark::State& state) {
  auto tenants = bench_tenants();
  hit_path_with(state, tenants.get());
}
BENCHMARK(hit_path_tenants);
BENCHMARK(hit_path_paired);

// One benchmark's times and their multiples of the baseline's.
struct ratio_row {
  std::string name;
  double real = 0, cpu = 0;     // ns per iteration
  double x_real = 0, x_cpu = 0; // / memcpy_frame's
};

// Console output as usual, then each benchmark as a multiple of the baseline.
class ratio_reporter : public benchmark::ConsoleReporter {
public:
  ratio_reporter()
      : ConsoleReporter(::isatty(STDOUT_FILENO) ? OO_ColorTabular
                                                : OO_Tabular) {
    // nop
  }

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      if (r.error_occurred) {
        continue;
      }
      note_paired(r);
      auto& t = times_[r.run_name.function_name];
      // With repetitions, the median aggregate wins over single runs.
      if (r.run_type == Run::RT_Aggregate) {
        if (r.aggregate_name == "median") {
          t = {r.GetAdjustedRealTime(), r.GetAdjustedCPUTime(), true};
        }
      } else if (!t.median) {
        t = {r.GetAdjustedRealTime(), r.GetAdjustedCPUTime(), false};
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }

  // hit_path_paired's median ratio (over repetitions, when there are
  // some); NaN when it did not run.
  double paired() const noexcept { return paired_.value; }

  // Every benchmark that ran, in the table's order; empty without the
  // baseline.
  std::vector<ratio_row> rows() const {
    std::vector<ratio_row> out;
    auto base = times_.find("memcpy_frame");
    if (base == times_.end() || base->second.cpu <= 0 ||
        base->second.real <= 0) {
      return out;
    }
    for (const auto& name : order_) {
      auto it = times_.find(name);
      if (it == times_.end()) {
        continue;
      }
      const auto& t = it->second;
      out.push_back({name, t.real, t.cpu, t.real / base->second.real,
                     t.cpu / base->second.cpu});
    }
    return out;
  }

private:
  void note_paired(const Run& r) {
    auto c = r.counters.find("tenants_over_plain");
    if (r.run_name.function_name != "hit_path_paired" ||
        c == r.counters.end()) {
      return;
    }
    if (r.run_type == Run::RT_Aggregate) {
      if (r.aggregate_name == "median") {
        paired_ = {c->second.value, true};
      }
    } else if (!paired_.median) {
      paired_ = {c->second.value, false};
    }
  }

  struct paired_ratio {
    double value = std::nan("");
    bool median = false;
  };
  paired_ratio paired_;

  struct times {
    double real = 0;
    double cpu = 0;
    bool median = false;
  };

  std::vector<std::string> order_{
      "memcpy_frame",     "decode_request",   "encode_reply", "make_cache_key",
      "cache_get_hit",    "cache_put_churn",  "hit_path",     "hit_path_plain",
      "hit_path_tenants", "tenant_accounting"};
  std::map<std::string, times> times_;
};

// CPU time is the steadier ratio on a loaded machine (a preempted iteration
// inflates real time only).
void print_ratios(const std::vector<ratio_row>& rows, double paired) {
  if (!std::isnan(paired)) {
    std::printf("\ntenant accounting, paired blocks: hit path with tenants / "
                "without = %.4f (target <= 1.02)\n",
                paired);
  }
  if (rows.empty()) {
    return;
  }
  std::printf("\n%-18s %10s %10s %10s %10s\n", "benchmark", "real (ns)",
              "cpu (ns)", "x memcpy", "x memcpy");
  std::printf("%-18s %10s %10s %10s %10s\n", "", "", "", "(real)", "(cpu)");
  for (const auto& r : rows) {
    std::printf("%-18s %10.1f %10.1f %10.2f %10.2f\n", r.name.c_str(), r.real,
                r.cpu, r.x_real, r.x_cpu);
  }
  const ratio_row* plain = nullptr;
  const ratio_row* tenants = nullptr;
  const ratio_row* alone = nullptr;
  for (const auto& r : rows) {
    plain = r.name == "hit_path_plain" ? &r : plain;
    tenants = r.name == "hit_path_tenants" ? &r : tenants;
    alone = r.name == "tenant_accounting" ? &r : alone;
  }
  if (plain && alone && plain->cpu > 0) {
    std::printf("tenant accounting alone / hit_path_plain = %.4f (cpu), "
                "%.4f (real)\n",
                alone->cpu / plain->cpu, alone->real / plain->real);
  }
  if (plain && tenants && plain->cpu > 0) {
    std::printf("\ntenant accounting: hit_path_tenants / hit_path_plain = "
                "%.4f (cpu), %.4f (real)\n",
                tenants->cpu / plain->cpu, tenants->real / plain->real);
  }
}

shoal::bench::json rows_json(const std::vector<ratio_row>& rows) {
  auto out = shoal::bench::json::array();
  for (const auto& r : rows) {
    out.push(shoal::bench::json::object()
                 .set("name", r.name)
                 .set("real_ns", r.real)
                 .set("cpu_ns", r.cpu)
                 .set("x_memcpy_real", r.x_real)
                 .set("x_memcpy_cpu", r.x_cpu));
  }
  return out;
}

// Google Benchmark's own arguments: argv[0], --benchmark_min_time for
// --quick, and whatever the shared parser did not know.
std::vector<std::string> benchmark_args(char* argv0, bool quick,
                                        const std::vector<std::string>& rest) {
  std::vector<std::string> args{argv0};
  if (quick) {
    args.emplace_back("--benchmark_min_time=0.05");
  }
  args.insert(args.end(), rest.begin(), rest.end());
  return args;
}

int run(const shoal::bench::common_options& common,
        std::vector<std::string> args) {
  std::vector<char*> cargs;
  for (auto& a : args) {
    cargs.push_back(a.data());
  }
  int n = static_cast<int>(cargs.size());
  cargs.push_back(nullptr);
  benchmark::Initialize(&n, cargs.data());
  if (benchmark::ReportUnrecognizedArguments(n, cargs.data())) {
    return 1;
  }
  shoal::bench::report rep{"bench_micro"};
  ratio_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  rep.finish();
  auto rows = reporter.rows();
  print_ratios(rows, reporter.paired());
  rep.doc().set("config",
                shoal::bench::json::object().set("quick", common.quick));
  rep.doc().set("results", rows_json(rows));
  rep.doc().set("tenants_over_plain_paired", reporter.paired());
  rep.write(common.json);
  benchmark::Shutdown();
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  shoal::bench::common_options common;
  shoal::bench::arg_parser p{
      "bench_micro",
      "per-request CPU costs of the hit path against a memcpy of the frame; "
      "Google Benchmark's --benchmark_* flags pass through"};
  p.add_common(common, "--benchmark_min_time=0.05", false);
  std::vector<std::string> rest;
  p.parse(argc, argv, &rest);
  return shoal::bench::run_guarded("bench_micro", [&] {
    return run(common, benchmark_args(argv[0], common.quick, rest));
  });
}
