// bench_curve: what CURVE costs on the cache-hit path. In one run, against
// the same 1 KiB request frame:
//
// - shoald without CURVE and shoald with CURVE (security.curve_secret_key_
//   file, one client in the clients file), cache hits only;
// - a raw ZeroMQ DEALER/ROUTER echo, plain and with CURVE (the baseline:
//   what libzmq's encryption costs by itself).
//
// Reported: hit p50 (1 in flight) and hit throughput (64 in flight) with
// CURVE, as ratios to CURVE off (the price of security in shoal) and to the
// CURVE echo (shoal's own overhead once both encrypt). Rounds are
// interleaved and rotated; the median round is reported.

#include <sys/stat.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "bench/harness/cli.hpp"
#include "bench/harness/echo_server.hpp"
#include "bench/harness/load.hpp"
#include "bench/harness/report.hpp"
#include "bench/harness/run.hpp"
#include "bench/harness/stats.hpp"
#include "net/security/curve_keys.hpp"
#include "tests/support/node_process.hpp"

namespace {

using namespace shoal::bench;
using namespace std::chrono_literals;
using shoal::test::node_process;

struct options {
  common_options common;
  uint64_t requests = 20000;
  uint64_t warmup = 2000;
  int rounds = 3;
  double duration_s = 5;
  uint64_t inflight = 64;
};

options parse_args(int argc, char** argv) {
  options o;
  arg_parser p{"bench_curve", "the cache-hit path with CURVE against without "
                              "and against a ZeroMQ CURVE echo"};
  p.add_common(o.common, "3000 round trips, 2 s windows", true);
  p.option("--requests", "N", o.requests,
           "round trips per latency phase and round (20000)");
  p.option("--warmup", "N", o.warmup, "round trips before measuring (2000)");
  p.option("--rounds", "N", o.rounds,
           "interleaved rounds, median reported (3)");
  p.option("--duration", "S", o.duration_s,
           "throughput window per phase and round (5)");
  p.option("--inflight", "N", o.inflight, "requests in flight (64)");
  p.parse(argc, argv);
  if (o.common.quick) {
    o.requests = p.given("--requests") ? o.requests : 3000;
    o.warmup = p.given("--warmup") ? o.warmup : 500;
    o.duration_s = p.given("--duration") ? o.duration_s : 2;
  }
  o.rounds = std::max(1, o.rounds);
  return o;
}

enum phase_id { ph_echo, ph_echo_curve, ph_hit, ph_hit_curve, ph_count };
const char* const phase_names[] = {"echo", "echo+curve", "hit", "hit+curve"};

struct results {
  std::vector<percentiles> latency[ph_count];
  std::vector<double> tput[ph_count];
};

struct keys {
  shoal::curve_key_pair server, client;
};

keys make_keys() {
  auto s = shoal::generate_key_pair();
  auto c = shoal::generate_key_pair();
  if (!s || !c) {
    throw bench_error{"cannot generate CURVE keys"};
  }
  return {*s, *c};
}

void write_private(const std::string& path, const std::string& text) {
  std::ofstream{path} << text;
  ::chmod(path.c_str(), 0600);
}

std::unique_ptr<node_process> start_node(const options& opts, const keys* k,
                                         const std::string& dir) {
  shoal::test::node_options no;
  no.shoald = opts.common.shoald;
  no.name = k ? "curve" : "plain";
  no.spawn.own_process_group = true;
  if (k != nullptr) {
    write_private(dir + "/server.key", shoal::z85_of(k->server.secret_key));
    write_private(dir + "/clients.toml",
                  "[[client]]\nname = \"bench\"\npublic_key = \"" +
                      shoal::z85_of(k->client.public_key) +
                      "\"\ntenant = \"bench\"\n");
    no.args = {"--set", "security.curve_secret_key_file=" + dir + "/server.key",
               "--set", "security.clients_file=" + dir + "/clients.toml"};
    no.ping.curve = true;
    no.ping.server_public_key = k->server.public_key;
    no.ping.public_key = k->client.public_key;
    no.ping.secret_key = k->client.secret_key;
  }
  auto n = std::make_unique<node_process>(no);
  if (!n->wait_ready(30s)) {
    throw bench_error{"node " + no.name + " did not answer a ping; log:\n" +
                      shoal::test::read_tail(n->process().log_path())};
  }
  return n;
}

struct load {
  client* c;
  frame_source src;
  reply_checker chk;
};

load make_load(client& c, int phase) {
  bool echo = phase == ph_echo || phase == ph_echo_curve;
  return {&c, frame_source::fixed(),
          echo ? reply_checker::echo()
               : reply_checker::shoal_replies(shoal::reply_source::cache, "",
                                              1024)};
}

void latency_phase(const options& opts, client* (&clients)[ph_count],
                   results& res) {
  std::vector<load> loads;
  for (int p = 0; p < ph_count; ++p) {
    loads.push_back(make_load(*clients[p], p));
  }
  for (int p : {ph_hit, ph_hit_curve}) {
    // The first request of each node fills its cache.
    auto fill =
        reply_checker::shoal_replies(shoal::reply_source::executor, "", 1);
    zmq::message_t msg;
    clients[p]->send(loads[p].src.next());
    clients[p]->recv(msg);
    fill.check(msg, loads[p].src.current());
    require_clean(fill, "cache fill");
  }
  for (int p = 0; p < ph_count; ++p) {
    run_latency(*loads[p].c, loads[p].src, loads[p].chk, opts.warmup,
                std::string{phase_names[p]} + " warmup");
  }
  for (int round = 0; round < opts.rounds; ++round) {
    for (int k = 0; k < ph_count; ++k) {
      int p = (k + round) % ph_count;
      auto& l = loads[p];
      auto s = summarize(
          run_latency(*l.c, l.src, l.chk, opts.requests, phase_names[p]));
      res.latency[p].push_back(s);
      std::printf("  round %d %-10s p50 %8.1f  p99 %8.1f us\n", round + 1,
                  phase_names[p], s.p50, s.p99);
      std::fflush(stdout);
    }
  }
}

void throughput_phase(const options& opts, client* (&clients)[ph_count],
                      results& res) {
  std::chrono::duration<double> window{opts.duration_s};
  auto warm = std::chrono::duration<double>{std::min(1.0, opts.duration_s / 4)};
  std::vector<load> loads;
  for (int p = 0; p < ph_count; ++p) {
    loads.push_back(make_load(*clients[p], p));
  }
  for (int round = 0; round < opts.rounds; ++round) {
    for (int k = 0; k < ph_count; ++k) {
      int p = (k + round) % ph_count;
      auto& l = loads[p];
      auto r = run_stream(*l.c, l.src, l.chk, opts.inflight, warm, window, 0,
                          std::string{phase_names[p]} + " throughput");
      res.tput[p].push_back(r.rate);
      std::printf("  round %d %-10s %10.0f req/s\n", round + 1, phase_names[p],
                  r.rate);
      std::fflush(stdout);
    }
  }
}

void add_checks(const results& res, report& rep) {
  auto p50 = [&](int p) { return median_of_rounds(res.latency[p]).p50; };
  auto tput = [&](int p) { return median(res.tput[p]); };
  rep.add(check_row::info("CURVE hit p50 vs CURVE off (us)", p50(ph_hit_curve),
                          p50(ph_hit)));
  rep.add(check_row::at_most("CURVE hit p50 vs CURVE echo (us)",
                             p50(ph_hit_curve), p50(ph_echo_curve), 1.2));
  rep.add(check_row::info("CURVE hit throughput vs CURVE off (req/s)",
                          tput(ph_hit_curve), tput(ph_hit))
              .decimals(0));
  rep.add(check_row::at_least("CURVE hit throughput vs CURVE echo (req/s)",
                              tput(ph_hit_curve), tput(ph_echo_curve), 0.6)
              .decimals(0));
  rep.add(check_row::info("CURVE echo p50 vs plain echo (us)",
                          p50(ph_echo_curve), p50(ph_echo)));
  rep.add(check_row::info("CURVE echo throughput vs plain echo (req/s)",
                          tput(ph_echo_curve), tput(ph_echo))
              .decimals(0));
}

void fill_json(const options& opts, const results& res, report& rep) {
  auto& doc = rep.doc();
  doc.set("config", json::object()
                        .set("quick", opts.common.quick)
                        .set("requests", opts.requests)
                        .set("rounds", opts.rounds)
                        .set("duration_s", opts.duration_s)
                        .set("inflight", opts.inflight));
  for (int p = 0; p < ph_count; ++p) {
    doc["latency"].set(phase_names[p],
                       to_json(median_of_rounds(res.latency[p])));
    doc["throughput_rps"].set(phase_names[p], median(res.tput[p]));
  }
}

int run(const options& opts) {
  auto k = make_keys();
  // Forked first, while this process has no threads.
  auto echo = start_echo_server();
  auto echo_curve = start_echo_server(k.server.secret_key);
  report rep{"bench_curve"};
  std::printf("bench_curve: shoald %s; load average before: %s\n",
              opts.common.shoald.c_str(), rep.load_before().c_str());
  shoal::test::temp_dir dir{"bench-curve"};
  results res;
  {
    auto plain = start_node(opts, nullptr, dir.path());
    auto curve = start_node(opts, &k, dir.path());
    zmq::context_t ctx{1};
    curve_client_keys ck{k.server.public_key, k.client.public_key,
                         k.client.secret_key};
    client c_echo{ctx, echo.endpoint};
    client c_echo_curve{ctx, echo_curve.endpoint, &ck};
    client c_hit{ctx, plain->endpoint()};
    client c_hit_curve{ctx, curve->endpoint(), &ck};
    client* clients[ph_count] = {&c_echo, &c_echo_curve, &c_hit, &c_hit_curve};
    std::printf("latency, 1 in flight\n");
    latency_phase(opts, clients, res);
    std::printf("throughput, %" PRIu64 " in flight\n", opts.inflight);
    throughput_phase(opts, clients, res);
  }
  rep.finish();
  add_checks(res, rep);
  rep.print_checks("baselines: shoald without CURVE, and a raw ZeroMQ "
                   "DEALER/ROUTER echo (with CURVE) of the same frame");
  std::printf("load average after: %s (%u cores)\n", rep.load_after().c_str(),
              std::thread::hardware_concurrency());
  fill_json(opts, res, rep);
  rep.write(opts.common.json);
  echo.proc->stop(5s);
  echo_curve.proc->stop(5s);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  auto opts = parse_args(argc, argv);
  return run_main("bench_curve", [&] {
    require_executable(opts.common.shoald, "use --shoald PATH or SHOALD=PATH");
    return run(opts);
  });
}
