// bench_hotpath: shoal's serving hot paths measured against a raw ZeroMQ
// DEALER/ROUTER echo of the same payload, in the same run, so that ratios
// stay meaningful on a noisy machine (the project's performance targets):
//
// - latency, 1 in flight: cache hit p50 <= 1.2x echo p50, p99 <= 1.5x echo
//   p99; miss path (zero-cost synthetic model) p50 <= 1.3x echo p50;
// - throughput, 64 in flight: cache hit >= 0.6x echo;
// - memory: an idle standalone node stays under 64 MiB RSS; under a stream of
//   1 million distinct requests its RSS stays within the cache's byte budget
//   + 64 MiB.
//
// Both servers are separate processes: the echo server is this binary forked
// before any thread exists; the node is `shoald`, forked and exec'd. Both are
// driven by the same client code (bench/harness). See bench/README.md.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "bench/harness/cli.hpp"
#include "bench/harness/echo_server.hpp"
#include "bench/harness/load.hpp"
#include "bench/harness/proc_stats.hpp"
#include "bench/harness/report.hpp"
#include "bench/harness/run.hpp"
#include "bench/harness/stats.hpp"
#include "tests/support/node_process.hpp"

namespace {

using namespace shoal::bench;
using namespace std::chrono_literals;
using shoal::test::node_process;

constexpr uint64_t mib = 1024 * 1024;

// -- options ------------------------------------------------------------------

struct options {
  common_options common;
  uint64_t requests = 20000; // measured round trips per phase and round
  uint64_t warmup = 2000;    // round trips before the first round
  int rounds = 3;            // interleaved rounds; the median is reported
  double duration_s = 5;     // throughput window per phase and round
  uint64_t inflight = 64;    // throughput and memory phases
  uint64_t mem_requests = 1000000;
  uint64_t cache_bytes = 64 * mib;
  bool no_memory = false;
  std::string node_set; // space-separated K=V settings for every node
};

options parse_args(int argc, char** argv) {
  options o;
  arg_parser p{"bench_hotpath",
               "shoald's hot paths against a ZeroMQ echo of the same frame"};
  p.add_common(o.common,
               "3000 round trips, 2 s windows, 100000 memory requests", true);
  p.option("--requests", "N", o.requests,
           "round trips per latency phase and round (20000)");
  p.option("--warmup", "N", o.warmup, "round trips before measuring (2000)");
  p.option("--rounds", "N", o.rounds,
           "interleaved rounds, median reported (3)");
  p.option("--duration", "S", o.duration_s,
           "throughput window per phase and round (5)");
  p.option("--inflight", "N", o.inflight,
           "requests in flight for throughput/memory (64)");
  p.option("--mem-requests", "N", o.mem_requests,
           "distinct requests of the memory phase (1000000)");
  p.option("--cache-bytes", "N", o.cache_bytes,
           "cache.max_bytes of the memory node (64 MiB)");
  p.flag("--no-memory", o.no_memory, "skip the memory phase");
  p.option("--node-set", "'K=V ...'", o.node_set,
           "settings for the node, space-separated (e.g. "
           "'runtime.poll_spin_us=0')");
  p.parse(argc, argv);
  if (o.common.quick) {
    o.requests = p.given("--requests") ? o.requests : 3000;
    o.warmup = p.given("--warmup") ? o.warmup : 500;
    o.duration_s = p.given("--duration") ? o.duration_s : 2;
    o.mem_requests = p.given("--mem-requests") ? o.mem_requests : 100000;
  }
  o.rounds = std::max(1, o.rounds);
  o.inflight = std::max<uint64_t>(1, o.inflight);
  return o;
}

// -- nodes --------------------------------------------------------------------

// A standalone shoald on free ports, answering pings. Started again (up to
// three times) when it lost a race for one of its ports.
std::unique_ptr<node_process> start_node(const options& opts,
                                         const std::vector<std::string>& sets,
                                         const std::string& tag) {
  shoal::test::node_options no;
  no.shoald = opts.common.shoald;
  no.name = "standalone";
  no.spawn.own_process_group = true;
  no.args = set_args(opts.node_set);
  for (const auto& s : sets) {
    no.args.insert(no.args.end(), {"--set", s});
  }
  for (int attempt = 1;; ++attempt) {
    auto n = std::make_unique<node_process>(no);
    if (n->wait_ready(30s)) {
      return n;
    }
    auto& proc = n->process();
    bool exited = !proc.running();
    if (exited && shoal::test::lost_port_race(proc) && attempt < 3) {
      continue;
    }
    auto tail = shoal::test::read_tail(proc.log_path());
    throw bench_error{"node " + tag + " (" + no.shoald +
                      ") did not answer a ping (" + proc.describe_exit() +
                      "); log:\n" + tail};
  }
}

// Stops the node with SIGTERM; it must drain and exit 0.
void stop_node(node_process& n, const std::string& tag) {
  auto code = n.stop(15s);
  if (code != 0) {
    throw bench_error{"node " + tag + " did not stop cleanly (" +
                      n.process().describe_exit() + "); log:\n" +
                      shoal::test::read_tail(n.process().log_path())};
  }
}

// Samples VmRSS every 100 ms on its own thread.
class rss_sampler {
public:
  explicit rss_sampler(pid_t pid) : pid_(pid), thread_([this] { run(); }) {
    // nop
  }

  ~rss_sampler() { stop(); }

  void stop() {
    if (thread_.joinable()) {
      done_ = true;
      thread_.join();
    }
  }

  uint64_t peak() const noexcept { return peak_; }
  size_t samples() const noexcept { return samples_; }

private:
  void run() {
    while (!done_) {
      peak_ = std::max<uint64_t>(peak_, rss_bytes(pid_));
      ++samples_;
      std::this_thread::sleep_for(100ms);
    }
  }

  pid_t pid_;
  std::atomic<bool> done_{false};
  std::atomic<uint64_t> peak_{0};
  std::atomic<size_t> samples_{0};
  std::thread thread_;
};

// -- results ------------------------------------------------------------------

enum phase_id { ph_echo, ph_hit, ph_miss, ph_count };
const char* const phase_names[] = {"echo", "hit", "miss"};

struct memory_result {
  uint64_t idle_rss = 0;
  uint64_t peak_rss = 0;
  uint64_t final_rss = 0;
  double rate = 0;
  double seconds = 0;
  uint64_t requests = 0;
  std::optional<double> cache_bytes, cache_entries, cache_evictions;
};

struct results {
  std::vector<percentiles> latency_rounds[ph_count];
  std::vector<double> tput_echo, tput_hit;
  uint64_t idle_rss = 0; // of the main node
  memory_result mem;
};

// -- phases -------------------------------------------------------------------

// The load of one latency phase: its client, frames and checker.
struct latency_load {
  client* c;
  frame_source src;
  reply_checker chk;
};

void latency_warmup(const options& opts, client& shoal_client,
                    latency_load (&load)[ph_count]) {
  // The first hit request is a miss that fills the cache; the first miss
  // spawns the echo executor.
  auto first =
      reply_checker::shoal_replies(shoal::reply_source::executor, "", 1024);
  zmq::message_t msg;
  shoal_client.send(load[ph_hit].src.next());
  shoal_client.recv(msg);
  first.check(msg, load[ph_hit].src.current());
  require_clean(first, "cache fill");
  std::printf("latency: warmup %" PRIu64 " round trips per phase\n",
              opts.warmup);
  for (int p = 0; p < ph_count; ++p) {
    run_latency(*load[p].c, load[p].src, load[p].chk, opts.warmup,
                std::string{phase_names[p]} + " warmup");
  }
}

void latency_phase(const options& opts, client& echo, client& shoal_client,
                   results& res) {
  using shoal::reply_source;
  latency_load load[ph_count] = {
      {&echo, frame_source::fixed(), reply_checker::echo()},
      {&shoal_client, frame_source::fixed(),
       reply_checker::shoal_replies(reply_source::cache, "", 1024)},
      {&shoal_client, frame_source::distinct(1),
       reply_checker::shoal_replies(reply_source::executor, "", 1024)}};
  latency_warmup(opts, shoal_client, load);
  for (int round = 0; round < opts.rounds; ++round) {
    // Rotate the order so no phase always follows the same one.
    for (int k = 0; k < ph_count; ++k) {
      int p = (k + round) % ph_count;
      auto& l = load[p];
      auto s = summarize(
          run_latency(*l.c, l.src, l.chk, opts.requests, phase_names[p]));
      res.latency_rounds[p].push_back(s);
      std::printf("  round %d %-5s p50 %8.1f  p90 %8.1f  p99 %8.1f  p99.9 "
                  "%8.1f us\n",
                  round + 1, phase_names[p], s.p50, s.p90, s.p99, s.p999);
      std::fflush(stdout);
    }
  }
}

void throughput_phase(const options& opts, client& echo, client& shoal_client,
                      results& res) {
  auto echo_src = frame_source::fixed();
  auto hit_src = frame_source::fixed();
  auto echo_chk = reply_checker::echo();
  auto hit_chk =
      reply_checker::shoal_replies(shoal::reply_source::cache, "", 1024);
  std::chrono::duration<double> window{opts.duration_s};
  auto warm = std::chrono::duration<double>{std::min(1.0, opts.duration_s / 4)};
  std::printf("throughput: %" PRIu64 " in flight, %.1f s windows (%.2f s "
              "warmup)\n",
              opts.inflight, opts.duration_s, warm.count());
  for (int round = 0; round < opts.rounds; ++round) {
    bool echo_first = round % 2 == 0;
    for (int k = 0; k < 2; ++k) {
      bool is_echo = (k == 0) == echo_first;
      auto r = is_echo
                   ? run_stream(echo, echo_src, echo_chk, opts.inflight, warm,
                                window, 0, "echo throughput")
                   : run_stream(shoal_client, hit_src, hit_chk, opts.inflight,
                                warm, window, 0, "hit throughput");
      (is_echo ? res.tput_echo : res.tput_hit).push_back(r.rate);
      std::printf("  round %d %-5s %10.0f req/s\n", round + 1,
                  is_echo ? "echo" : "hit", r.rate);
      std::fflush(stdout);
    }
  }
}

// A stream of distinct requests at the memory node while its RSS is
// sampled.
void memory_stream(zmq::context_t& ctx, const options& opts, node_process& n,
                   memory_result& mem) {
  client c{ctx, n.endpoint()};
  auto src = frame_source::distinct(uint64_t{1} << 32);
  auto chk =
      reply_checker::shoal_replies(shoal::reply_source::executor, "", 1024);
  rss_sampler sampler{n.pid()};
  auto r = run_stream(c, src, chk, opts.inflight, 0s, 0s, opts.mem_requests,
                      "memory stream");
  // A last sample after the stream, once the node has settled.
  std::this_thread::sleep_for(300ms);
  sampler.stop();
  mem.final_rss = rss_bytes(n.pid());
  mem.peak_rss = std::max(sampler.peak(), mem.final_rss);
  mem.rate = r.rate;
  mem.seconds = r.seconds;
  mem.requests = r.replies;
  std::printf("  %.1f s, %.0f req/s, peak RSS %.1f MiB (%zu samples), "
              "final %.1f MiB\n",
              r.seconds, r.rate, mem.peak_rss / double(mib), sampler.samples(),
              mem.final_rss / double(mib));
}

void memory_phase(zmq::context_t& ctx, const options& opts, results& res) {
  auto n = start_node(
      opts, {"cache.max_bytes=" + std::to_string(opts.cache_bytes)}, "stream");
  auto& mem = res.mem;
  std::this_thread::sleep_for(500ms);
  mem.idle_rss = rss_bytes(n->pid());
  std::printf("memory: %" PRIu64 " distinct requests, %" PRIu64
              " in flight, cache.max_bytes %" PRIu64
              " (node idle RSS %.1f MiB)\n",
              opts.mem_requests, opts.inflight, opts.cache_bytes,
              mem.idle_rss / double(mib));
  std::fflush(stdout);
  memory_stream(ctx, opts, *n, mem);
  auto [code, text] = shoal::test::http_get(n->http_port(), "/metrics", 5s);
  if (code != 200) {
    std::fprintf(stderr, "metrics: no answer from port %d\n", n->http_port());
  }
  mem.cache_bytes = shoal::test::sample(text, "shoal_cache_bytes");
  mem.cache_entries = shoal::test::sample(text, "shoal_cache_entries");
  mem.cache_evictions =
      shoal::test::sample(text, "shoal_cache_evictions_total");
  stop_node(*n, "stream");
}

// -- report -------------------------------------------------------------------

void print_latency(const options& opts, const results& res) {
  std::printf("\nlatency, 1 in flight, median of %d rounds of %" PRIu64
              " round trips (us)\n",
              opts.rounds, opts.requests);
  std::printf("%-6s %9s %9s %9s %9s %9s\n", "phase", "p50", "p90", "p99",
              "p99.9", "mean");
  for (int p = 0; p < ph_count; ++p) {
    auto m = median_of_rounds(res.latency_rounds[p]);
    std::printf("%-6s %9.1f %9.1f %9.1f %9.1f %9.1f\n", phase_names[p], m.p50,
                m.p90, m.p99, m.p999, m.mean);
  }
}

void add_checks(const options& opts, const results& res, report& rep) {
  auto echo_l = median_of_rounds(res.latency_rounds[ph_echo]);
  auto hit_l = median_of_rounds(res.latency_rounds[ph_hit]);
  auto miss_l = median_of_rounds(res.latency_rounds[ph_miss]);
  rep.add(check_row::at_most("cache hit p50 (us)", hit_l.p50, echo_l.p50, 1.2));
  rep.add(check_row::at_most("cache hit p99 (us)", hit_l.p99, echo_l.p99, 1.5));
  rep.add(check_row::at_least("cache hit throughput (req/s)",
                              median(res.tput_hit), median(res.tput_echo),
                              0.6));
  rep.add(check_row::at_most("miss p50 (us)", miss_l.p50, echo_l.p50, 1.3));
  check_row idle{"idle node RSS (MiB)", res.idle_rss / double(mib)};
  idle.target = "< 64";
  idle.pass = res.idle_rss < 64 * mib;
  rep.add(idle);
  if (opts.no_memory) {
    return;
  }
  auto budget = opts.cache_bytes + 64 * mib;
  check_row peak{"peak RSS, " + std::to_string(res.mem.requests) +
                     " distinct (MiB)",
                 res.mem.peak_rss / double(mib), budget / double(mib),
                 res.mem.peak_rss / double(budget)};
  peak.target = "<= " + fmt(budget / double(mib), 0);
  peak.pass = res.mem.peak_rss <= budget;
  rep.add(peak);
}

void print_memory(const options& opts, const memory_result& mem) {
  auto opt = [](const std::optional<double>& v, double scale) {
    return v ? fmt(*v / scale, 1) : std::string{"n/a"};
  };
  std::printf("memory node: shoal_cache_bytes %s MiB (budget %.1f MiB), "
              "entries %s, evictions %s; idle RSS %.1f MiB, final RSS %.1f "
              "MiB\n",
              opt(mem.cache_bytes, double(mib)).c_str(),
              opts.cache_bytes / double(mib), opt(mem.cache_entries, 1).c_str(),
              opt(mem.cache_evictions, 1).c_str(), mem.idle_rss / double(mib),
              mem.final_rss / double(mib));
}

json config_json(const options& opts) {
  return json::object()
      .set("quick", opts.common.quick)
      .set("requests", opts.requests)
      .set("rounds", opts.rounds)
      .set("duration_s", opts.duration_s)
      .set("inflight", opts.inflight)
      .set("mem_requests", opts.mem_requests)
      .set("cache_bytes", opts.cache_bytes)
      .set("shoald", opts.common.shoald)
      .set("node_set", opts.node_set);
}

json memory_json(const options& opts, const results& res) {
  const auto& m = res.mem;
  return json::object()
      .set("idle_rss_bytes", res.idle_rss)
      .set("stream_node_idle_rss_bytes", m.idle_rss)
      .set("stream_requests", m.requests)
      .set("stream_seconds", m.seconds)
      .set("stream_rps", m.rate)
      .set("peak_rss_bytes", m.peak_rss)
      .set("final_rss_bytes", m.final_rss)
      .set("cache_max_bytes", opts.cache_bytes)
      .set("shoal_cache_bytes", m.cache_bytes)
      .set("shoal_cache_entries", m.cache_entries)
      .set("shoal_cache_evictions_total", m.cache_evictions);
}

void fill_json(const options& opts, const results& res, report& rep) {
  auto& doc = rep.doc();
  doc.set("config", config_json(opts));
  auto& lat = doc["latency"];
  for (int p = 0; p < ph_count; ++p) {
    auto rounds = json::array();
    for (const auto& r : res.latency_rounds[p]) {
      rounds.push(to_json(r));
    }
    lat[phase_names[p]]
        .set("median_of_rounds",
             to_json(median_of_rounds(res.latency_rounds[p])))
        .set("rounds", std::move(rounds));
  }
  doc["throughput_rps"]
      .set("echo", median(res.tput_echo))
      .set("hit", median(res.tput_hit))
      .set("echo_rounds", json::array_of(res.tput_echo))
      .set("hit_rounds", json::array_of(res.tput_hit));
  doc.set("memory", memory_json(opts, res));
}

// -- the run ------------------------------------------------------------------

void main_node_phases(const options& opts, const echo_server& echo,
                      results& res) {
  zmq::context_t ctx{1};
  {
    auto n = start_node(opts, {}, "main");
    std::this_thread::sleep_for(1s);
    res.idle_rss = rss_bytes(n->pid());
    std::printf("node pid %d at %s, idle RSS %.1f MiB\n",
                static_cast<int>(n->pid()), n->endpoint().c_str(),
                res.idle_rss / double(mib));
    std::fflush(stdout);
    client echo_client{ctx, echo.endpoint};
    client shoal_client{ctx, n->endpoint()};
    latency_phase(opts, echo_client, shoal_client, res);
    throughput_phase(opts, echo_client, shoal_client, res);
    stop_node(*n, "main");
  }
  if (!opts.no_memory) {
    memory_phase(ctx, opts, res);
  }
}

int run(const options& opts) {
  // Forked first, while this process has no threads.
  auto echo = start_echo_server();
  report rep{"bench_hotpath"};
  auto frame_bytes = frame_source::fixed().current().size();
  std::printf("bench_hotpath: shoald %s\n", opts.common.shoald.c_str());
  std::printf("load average before: %s\n", rep.load_before().c_str());
  std::printf("request frame %zu bytes (tensor x f32 [1,%zu] = %zu bytes); "
              "echo server %s (pid %d)\n",
              frame_bytes, row_floats, row_floats * sizeof(float),
              echo.endpoint.c_str(), static_cast<int>(echo.proc->pid()));
  results res;
  main_node_phases(opts, echo, res);
  rep.finish();
  print_latency(opts, res);
  add_checks(opts, res, rep);
  rep.print_checks("baseline: raw ZeroMQ DEALER/ROUTER echo of the same " +
                   std::to_string(frame_bytes) +
                   "-byte frame; for peak RSS: cache.max_bytes + 64 MiB");
  if (!opts.no_memory) {
    print_memory(opts, res.mem);
  }
  std::printf("load average after: %s (%u cores)\n", rep.load_after().c_str(),
              std::thread::hardware_concurrency());
  fill_json(opts, res, rep);
  rep.write(opts.common.json);
  echo.proc->stop(5s);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  auto opts = parse_args(argc, argv);
  return run_main("bench_hotpath", [&] {
    require_executable(opts.common.shoald, "use --shoald PATH or SHOALD=PATH");
    return run(opts);
  });
}
