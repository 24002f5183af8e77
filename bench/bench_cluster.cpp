// bench_cluster: shoal in cluster mode, on loopback, against a raw ZeroMQ
// DEALER/ROUTER echo of the same payload measured in the same run.
//
// 1. Miss path, 1 in flight: client -> head (gateway, router) -> node link
//    -> worker (zero-cost model `echo`) -> head -> client, with distinct
//    inputs so that every request reaches the worker. Target: p50 <= 2.5x
//    echo p50 (two hops instead of one). A standalone node's miss path runs
//    in the same rounds for context, and all three are also driven at 32
//    requests in flight.
// 2. Failover: SIGKILL of the worker holding the replica with requests in
//    flight (time until they are all answered from the survivor), SIGSTOP
//    (time until the head's status op reports the worker down), and the
//    respawn of the only replica on a survivor once its worker is down.
//
// Every server is a separate process: the echo server is this binary forked
// before any thread exists; the nodes are `shoald`, forked and exec'd, each
// on its own free ports with its own model cache in a temporary directory
// (tests/support's cluster). See bench/README.md.

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
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
#include "tests/support/cluster.hpp"
#include "tests/support/node_process.hpp"

namespace {

using namespace shoal::bench;
using namespace std::chrono_literals;
using ms_double = std::chrono::duration<double, std::milli>;

// -- options ------------------------------------------------------------------

struct options {
  common_options common;
  std::string models;        // models.root; empty: shoald's default
  bool keep = false;         // keep the temporary directories (logs)
  uint64_t requests = 10000; // measured round trips per phase and round
  uint64_t warmup = 1000;
  int rounds = 3;                  // interleaved rounds; the median is reported
  double duration_s = 3;           // throughput window per phase and round
  uint64_t inflight = 32;          // throughput phase
  uint64_t fo_inflight = 8;        // requests in flight at a SIGKILL / SIGSTOP
  int repeats = 3;                 // runs of each failover scenario
  uint64_t short_timeout_ms = 300; // second SIGKILL series; 0: skip
  bool failover_only = false;      // skip the miss path phases
  // Settings for every cluster node, "KEY=VALUE ..." (e.g. an empty
  // cluster.secret, to see what CURVE and the HMAC cost on the link).
  std::string node_set;
};

void declare(arg_parser& p, options& o) {
  p.add_common(o.common, "short run for meson test --benchmark (~1 min)", true);
  p.option("--rounds", "N", o.rounds,
           "interleaved latency/throughput rounds (3)");
  p.option("--requests", "N", o.requests,
           "round trips per latency phase and round (10000; quick 2000)");
  p.option("--warmup", "N", o.warmup, "round trips before measuring (1000)");
  p.option("--duration", "S", o.duration_s,
           "throughput window per phase and round (3; quick 1)");
  p.option("--inflight", "N", o.inflight,
           "requests in flight for throughput (32)");
  p.option("--failover-inflight", "N", o.fo_inflight,
           "requests in flight at a kill/stop (8)");
  p.option("--repeats", "N", o.repeats,
           "runs of each failover scenario (3; quick 1)");
  p.option("--short-timeout-ms", "N", o.short_timeout_ms,
           "cluster.timeout_ms of the second SIGKILL series (300; 0 skips)");
  p.option("--models", "DIR", o.models,
           "models.root of every node (default: shoald's)");
  p.option("--node-set", "'K=V ...'", o.node_set,
           "settings for every head and worker, space-separated");
  p.flag("--keep", o.keep, "keep the temporary directories with the logs");
  p.flag("--failover-only", o.failover_only,
         "only the failover phase (no miss path latency or throughput)");
}

options parse_args(int argc, char** argv) {
  options o;
  arg_parser p{"bench_cluster",
               "the miss path through a head, and failover, against a "
               "ZeroMQ echo"};
  declare(p, o);
  p.parse(argc, argv);
  if (o.common.quick) {
    o.requests = p.given("--requests") ? o.requests : 2000;
    o.warmup = p.given("--warmup") ? o.warmup : 300;
    o.duration_s = p.given("--duration") ? o.duration_s : 1;
    o.repeats = p.given("--repeats") ? o.repeats : 1;
  }
  o.rounds = std::max(1, o.rounds);
  o.requests = std::max<uint64_t>(1, o.requests);
  o.duration_s = std::max(0.1, o.duration_s);
  o.inflight = std::max<uint64_t>(1, o.inflight);
  o.fo_inflight = std::max<uint64_t>(1, o.fo_inflight);
  o.repeats = std::max(1, o.repeats);
  if (o.short_timeout_ms != 0 && o.short_timeout_ms <= 100) {
    std::fprintf(stderr, "--short-timeout-ms must exceed the 100 ms "
                         "heartbeat interval\n");
    std::exit(2);
  }
  return o;
}

// -- deployments --------------------------------------------------------------

// A standalone node or a head with workers (tests/support's cluster),
// started again on other ports when a node lost a race for one of its
// ports. stop() requires a clean exit from every node but the victims.
class deployment {
public:
  // timeout_ms 0: a standalone node named `standalone`; otherwise a head
  // (cluster.timeout_ms = timeout_ms) and `workers` workers w1, w2, ...
  deployment(const options& opts, const std::string& tag, uint64_t timeout_ms,
             int workers)
      : opts_(opts), tag_(tag), timeout_ms_(timeout_ms) {
    for (int attempt = 1;; ++attempt) {
      cl_ = std::make_unique<shoal::test::cluster>(make_options());
      if (start(workers, attempt == 3)) {
        break;
      }
    }
  }

  deployment(const deployment&) = delete;
  deployment& operator=(const deployment&) = delete;

  ~deployment() {
    if (opts_.keep) {
      std::fprintf(stderr, "bench_cluster: kept %s\n", cl_->dir().c_str());
    }
  }

  shoal::test::cluster& nodes() noexcept { return *cl_; }
  const std::string& endpoint() const noexcept { return cl_->endpoint(); }

  // A running worker other than `name`.
  std::string other_worker(const std::string& name) {
    for (auto& w : cl_->worker_names()) {
      if (w != name && cl_->node(w)->running()) {
        return w;
      }
    }
    throw bench_error{"no worker other than " + name};
  }

  // A process this run signals on purpose: its exit is not checked.
  void mark_victim(const std::string& name) { victims_.insert(name); }

  // Stops every node (workers first, one SIGTERM each) and requires that
  // each drained and exited 0: a node that does not is a defect this
  // benchmark should not hide.
  void stop() {
    std::string bad;
    for (auto& e : cl_->shutdown(15s)) {
      if (e.code != 0 && victims_.count(e.name) == 0) {
        bad += "\n" + e.name + " did not stop cleanly (" + e.how + "); log " +
               e.log_path + ":\n" + shoal::test::read_tail(e.log_path);
      }
    }
    if (!bad.empty()) {
      throw bench_error{"deployment " + tag_ + ":" + bad};
    }
  }

  // The tails of every log, for an error message.
  std::string logs() const { return "\n" + cl_->logs(1500); }

private:
  shoal::test::cluster_options make_options() const {
    shoal::test::cluster_options co;
    co.shoald = opts_.common.shoald;
    co.models_root = opts_.models;
    // A stopping worker would otherwise wait up to 30 s for replacements.
    co.drain_grace_ms = 1000;
    co.timeout_ms = timeout_ms_;
    co.suspect_ms = std::min<uint64_t>(300, timeout_ms_);
    co.dir_prefix = "bench_cluster-" + tag_;
    co.keep_dir = opts_.keep;
    co.spawn.own_process_group = true;
    // A standalone node takes no cluster settings.
    if (timeout_ms_ != 0) {
      auto sets = set_args(opts_.node_set);
      co.extra_args.insert(co.extra_args.end(), sets.begin(), sets.end());
    }
    return co;
  }

  // One attempt; false when a node lost a port race and this is not the
  // `last` attempt.
  bool start(int workers, bool last) {
    if (timeout_ms_ == 0) {
      cl_->start_standalone("standalone");
    } else {
      cl_->start_head();
    }
    if (!cl_->wait_head_ready(30s)) {
      return retry_or_throw(cl_->head(), "did not answer a ping", last);
    }
    for (int i = 0; i < workers; ++i) {
      auto& w = cl_->add_worker();
      if (!joined(w)) {
        return retry_or_throw(w, "did not join the head", last);
      }
    }
    return true;
  }

  bool joined(shoal::test::cluster_node& w) {
    auto deadline = bench_clock::now() + 30s;
    while (bench_clock::now() < deadline && w.running()) {
      if (cl_->wait_up({w.name()}, 500ms)) {
        return true;
      }
    }
    return false;
  }

  bool retry_or_throw(shoal::test::cluster_node& n, const std::string& what,
                      bool last) {
    bool exited = !n.running();
    if (!last && exited && shoal::test::lost_port_race(n.process())) {
      return false;
    }
    throw bench_error{n.name() + " (" + opts_.common.shoald + ") " + what +
                      " (" + n.process().describe_exit() + ");" + logs()};
  }

  const options& opts_;
  std::string tag_;
  uint64_t timeout_ms_;
  std::unique_ptr<shoal::test::cluster> cl_;
  std::set<std::string> victims_;
};

// The `status` op on a DEALER of its own, polled next to a request stream
// on one thread: send() and read() never block.
class status_poller {
public:
  status_poller(zmq::context_t& ctx, const std::string& endpoint)
      : sock_(ctx, zmq::socket_type::dealer) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.connect(endpoint);
  }

  void send() {
    sent_at_ = bench_clock::now();
    auto f = op_frame(shoal::op_kind::status, ++id_);
    sock_.send(zmq::buffer(f), zmq::send_flags::none);
    outstanding_ = true;
  }

  // Sends a status request every `every`, one at a time (a lost one is
  // replaced after 1 s).
  void maybe_send(std::chrono::milliseconds every) {
    auto now = bench_clock::now();
    if (outstanding_ ? now - sent_at_ > 1s : now - sent_at_ >= every) {
      send();
    }
  }

  // The state of `name` when a reply to the latest request is readable now
  // (older ones are dropped).
  std::optional<std::string> read_state(const std::string& name) {
    zmq::message_t msg;
    if (!sock_.recv(msg, zmq::recv_flags::dontwait)) {
      return std::nullopt;
    }
    auto r = decode(msg);
    if (!r || r->id.num != id_ || r->code != shoal::status::ok) {
      return std::nullopt;
    }
    outstanding_ = false;
    for (auto& n : r->nodes) {
      if (n.name == name) {
        return n.state;
      }
    }
    return std::string{};
  }

  zmq::socket_t& socket() noexcept { return sock_; }

private:
  zmq::socket_t sock_;
  uint64_t id_ = 0;
  bool outstanding_ = false;
  bench_clock::time_point sent_at_{};
};

// -- results ------------------------------------------------------------------

enum phase_id { ph_echo, ph_standalone, ph_cluster, ph_count };
const char* const phase_names[] = {"echo", "standalone", "cluster"};

struct failover_run {
  std::string victim, survivor;
  size_t at_signal = 0;          // requests outstanding at the signal
  size_t by_survivor = 0;        // ... answered by the survivor (re-dispatched)
  double down_ms = nan_v;        // the head's status op reports the victim down
  double metric_down_ms = nan_v; // shoal_cluster_nodes{state="down"} >= 1
  double first_ms = nan_v;       // first reply from the survivor
  double last_ms = nan_v;        // last outstanding request answered
  double up_again_ms = nan_v;    // SIGSTOP: after SIGCONT, up again
  double redispatched = nan_v;   // shoal_requests_redispatched_total delta
};

struct respawn_run {
  std::string victim, survivor;
  double down_ms = nan_v;  // SIGKILL -> status op reports down
  double serve_ms = nan_v; // request sent after that -> answered
  double next_ms = nan_v;  // the following request (warm replica)
};

struct results {
  std::vector<percentiles> latency_rounds[ph_count];
  std::vector<double> node_total_us[ph_count]; // node-reported totals
  std::vector<double> tput[ph_count];
  std::vector<failover_run> kill_runs, kill_short_runs, stop_runs;
  std::vector<respawn_run> respawn_runs;
};

// -- phase 1: miss path -------------------------------------------------------

// The three servers of the steady phases, a client and a checker each.
struct steady_setup {
  client* clients[ph_count];
  reply_checker checks[ph_count];
};

void first_requests(steady_setup& s) {
  // The first miss spawns the executor (on w1 for the cluster).
  auto src = frame_source::distinct(uint64_t{1} << 50);
  for (int p = ph_standalone; p < ph_count; ++p) {
    auto r = call(*s.clients[p], src,
                  std::string{phase_names[p]} + " first request");
    auto us = r.timing_us ? std::to_string(r.timing_us->total_us) + " us"
                          : std::string{"?"};
    std::printf("%s: first request (spawns the replica) %s on %s\n",
                phase_names[p], us.c_str(), r.node.c_str());
  }
}

void steady_latency(const options& opts, steady_setup& s, results& res) {
  auto echo_src = frame_source::fixed();
  frame_source miss_src[] = {frame_source::distinct(1),
                             frame_source::distinct(1),
                             frame_source::distinct(1)};
  auto src_of = [&](int p) -> frame_source& {
    return p == ph_echo ? echo_src : miss_src[p];
  };
  std::printf("latency, 1 in flight: warmup %" PRIu64 " round trips per "
              "phase\n",
              opts.warmup);
  for (int p = 0; p < ph_count; ++p) {
    run_latency(*s.clients[p], src_of(p), s.checks[p], opts.warmup,
                std::string{phase_names[p]} + " warmup");
    s.checks[p].node_totals().clear();
  }
  for (int round = 0; round < opts.rounds; ++round) {
    // Rotate the order so slow drift of a noisy VM hits every phase alike.
    for (int k = 0; k < ph_count; ++k) {
      int p = (k + round) % ph_count;
      auto st = summarize(run_latency(*s.clients[p], src_of(p), s.checks[p],
                                      opts.requests, phase_names[p]));
      res.latency_rounds[p].push_back(st);
      std::printf("  round %d %-10s p50 %8.1f  p90 %8.1f  p99 %8.1f us\n",
                  round + 1, phase_names[p], st.p50, st.p90, st.p99);
      std::fflush(stdout);
    }
  }
  for (int p = 0; p < ph_count; ++p) {
    res.node_total_us[p] = s.checks[p].node_totals();
  }
}

void steady_throughput(const options& opts, steady_setup& s, results& res) {
  std::chrono::duration<double> window{opts.duration_s};
  auto warm = std::chrono::duration<double>{std::min(0.5, opts.duration_s / 4)};
  std::printf("throughput: %" PRIu64 " in flight, %.1f s windows (%.2f s "
              "warmup)\n",
              opts.inflight, opts.duration_s, warm.count());
  frame_source src[] = {frame_source::fixed(),
                        frame_source::distinct(uint64_t{1} << 40),
                        frame_source::distinct(uint64_t{1} << 40)};
  for (int round = 0; round < opts.rounds; ++round) {
    for (int k = 0; k < ph_count; ++k) {
      int p = (k + round) % ph_count;
      auto r =
          run_stream(*s.clients[p], src[p], s.checks[p], opts.inflight, warm,
                     window, 0, std::string{phase_names[p]} + " throughput");
      res.tput[p].push_back(r.rate);
      std::printf("  round %d %-10s %10.0f req/s\n", round + 1, phase_names[p],
                  r.rate);
      std::fflush(stdout);
    }
  }
}

void steady_phases(zmq::context_t& ctx, const options& opts,
                   const std::string& echo_ep, results& res) {
  deployment standalone{opts, "standalone", 0, 0};
  deployment cl{opts, "steady", 1000, 1};
  std::printf("standalone node pid %d; cluster: head pid %d, worker w1 pid "
              "%d\n",
              static_cast<int>(standalone.nodes().head().pid()),
              static_cast<int>(cl.nodes().head().pid()),
              static_cast<int>(cl.nodes().node("w1")->pid()));
  client echo_c{ctx, echo_ep}, alone_c{ctx, standalone.endpoint()},
      cluster_c{ctx, cl.endpoint()};
  using shoal::reply_source;
  steady_setup s{
      {&echo_c, &alone_c, &cluster_c},
      {reply_checker::echo(),
       reply_checker::shoal_replies(reply_source::executor, "standalone", 16),
       reply_checker::shoal_replies(reply_source::executor, "w1", 16)}};
  first_requests(s);
  steady_latency(opts, s, res);
  steady_throughput(opts, s, res);
  cl.stop();
  standalone.stop();
}

// -- phase 2: failover --------------------------------------------------------

// A cluster of a head and two workers; `fo_inflight` distinct requests kept
// in flight; `sig` (SIGKILL or SIGSTOP) sent to the worker that holds the
// echo replica. Measures, on one thread, the replies (by id) and the head's
// status op polled every 10 ms on its own socket.
class failover_driver {
public:
  failover_driver(zmq::context_t& ctx, const options& opts, std::string tag,
                  uint64_t timeout_ms, int sig)
      : opts_(opts), tag_(std::move(tag)), timeout_ms_(timeout_ms), sig_(sig),
        cl_(opts, tag_, timeout_ms, 2), c_(ctx, cl_.endpoint()),
        status_(ctx, cl_.endpoint()), src_(frame_source::distinct(1)) {}

  failover_run run() {
    // The first request places the only replica of echo v2.
    run_.victim = call(c_, src_, tag_ + " first request").node;
    run_.survivor = cl_.other_worker(run_.victim);
    auto before = redispatched();
    for (size_t i = 0; i < opts_.fo_inflight; ++i) {
      send_one();
    }
    measure();
    run_.at_signal = at_signal_.size();
    // With a zero-cost model most of what is in flight may be replies
    // already on their way back; if none was re-dispatched, the run has no
    // re-dispatch time to give.
    if (run_.by_survivor == 0) {
      run_.last_ms = nan_v;
    }
    drain();
    run_.redispatched = redispatched() - before;
    recover_victim();
    cl_.stop();
    return run_;
  }

private:
  double redispatched() {
    auto text = cl_.nodes().head_metrics();
    return shoal::test::sample(text, "shoal_requests_redispatched_total")
        .value_or(0);
  }

  void send_one() {
    c_.send(src_.next());
    open_.insert(src_.last_id());
  }

  double since_signal() const { return ms_since(*signalled_); }

  // Until every request in flight at the signal is answered and the victim
  // is reported down (for SIGSTOP, in /metrics too).
  void measure() {
    auto start = bench_clock::now();
    auto deadline =
        start + 300ms + std::chrono::milliseconds{timeout_ms_} + 20s;
    for (;;) {
      check_interrupted();
      auto now = bench_clock::now();
      if (now > deadline) {
        throw bench_error{
            tag_ + ": " + std::to_string(unanswered_) + " of " +
            std::to_string(at_signal_.size()) +
            " requests in flight at the signal unanswered, or the victim "
            "never reported down, 20 s after the detector's timeout;" +
            cl_.logs()};
      }
      // 300 ms of steady state first: every in-flight slot is busy and the
      // replica is warm when the signal lands.
      if (!signalled_ && now - start >= 300ms) {
        send_signal();
      }
      if (signalled_ && poll_detection(now)) {
        return;
      }
      wait_and_read();
    }
  }

  void send_signal() {
    for (auto id : open_) {
      at_signal_.emplace(id, false);
    }
    unanswered_ = at_signal_.size();
    if (sig_ == SIGKILL) {
      cl_.mark_victim(run_.victim); // a thawed one must still exit cleanly
    }
    signalled_ = bench_clock::now();
    cl_.nodes().node(run_.victim)->signal(sig_);
    status_.send();
  }

  // True when the run is complete.
  bool poll_detection(bench_clock::time_point now) {
    if (std::isnan(run_.down_ms)) {
      status_.maybe_send(10ms);
    }
    if (sig_ == SIGSTOP && std::isnan(run_.metric_down_ms) &&
        now - metrics_at_ >= 10ms) {
      metrics_at_ = now;
      auto down = shoal::test::sample(cl_.nodes().head_metrics(),
                                      "shoal_cluster_nodes{state=\"down\"}");
      if (down.value_or(0) >= 1) {
        run_.metric_down_ms = since_signal();
      }
    }
    bool metric_done = sig_ != SIGSTOP || !std::isnan(run_.metric_down_ms);
    return unanswered_ == 0 && !std::isnan(run_.down_ms) && metric_done;
  }

  void wait_and_read() {
    zmq::pollitem_t items[] = {
        {static_cast<void*>(c_.socket()), 0, ZMQ_POLLIN, 0},
        {static_cast<void*>(status_.socket()), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 2, 5ms);
    if ((items[1].revents & ZMQ_POLLIN) != 0 && std::isnan(run_.down_ms) &&
        status_.read_state(run_.victim) == "down") {
      run_.down_ms = since_signal();
    }
    zmq::message_t msg;
    while (c_.try_recv(msg)) {
      on_reply(msg);
    }
  }

  void on_reply(const zmq::message_t& msg) {
    auto t = bench_clock::now();
    auto r = decode(msg);
    if (!r || r->id.k != shoal::request_id::kind::num) {
      throw bench_error{tag_ + ": undecodable reply or one without its id"};
    }
    if (r->code != shoal::status::ok) {
      throw bench_error{tag_ + ": request " + std::to_string(r->id.num) +
                        " failed: " + std::string{shoal::to_string(r->code)} +
                        ": " + r->error + cl_.logs()};
    }
    if (open_.erase(r->id.num) == 0) {
      throw bench_error{tag_ + ": a second reply for id " +
                        std::to_string(r->id.num)};
    }
    if (signalled_ && r->node == run_.survivor && std::isnan(run_.first_ms)) {
      run_.first_ms = ms_double(t - *signalled_).count();
    }
    if (auto a = at_signal_.find(r->id.num);
        a != at_signal_.end() && !a->second) {
      a->second = true;
      --unanswered_;
      run_.last_ms = ms_double(t - *signalled_).count();
      run_.by_survivor += r->node == run_.survivor ? 1 : 0;
    }
    // Closed loop until all that was in flight at the signal is answered.
    if (unanswered_ > 0 || !signalled_) {
      send_one();
    }
  }

  // What was sent after the signal and is still open gets answered too.
  void drain() {
    auto deadline = bench_clock::now() + 10s;
    zmq::message_t msg;
    while (!open_.empty()) {
      check_interrupted();
      if (bench_clock::now() > deadline) {
        throw bench_error{tag_ + ": " + std::to_string(open_.size()) +
                          " requests sent after the signal unanswered" +
                          cl_.logs()};
      }
      zmq::pollitem_t item{static_cast<void*>(c_.socket()), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 20ms);
      while (c_.try_recv(msg)) {
        auto r = decode(msg);
        if (!r || r->code != shoal::status::ok) {
          throw bench_error{tag_ + ": a request sent after the signal failed"};
        }
        open_.erase(r->id.num);
      }
    }
  }

  void recover_victim() {
    auto* victim = cl_.nodes().node(run_.victim);
    if (sig_ != SIGSTOP) {
      victim->kill(); // reaped: its exit is known
      return;
    }
    victim->signal(SIGCONT);
    auto t0 = bench_clock::now();
    if (cl_.nodes().wait_state(run_.victim, "up", 10s, 10ms)) {
      run_.up_again_ms = ms_since(t0);
    }
  }

  const options& opts_;
  std::string tag_;
  uint64_t timeout_ms_;
  int sig_;
  deployment cl_;
  client c_;
  status_poller status_;
  frame_source src_;
  failover_run run_;
  std::set<uint64_t> open_;            // ids sent and not answered
  std::map<uint64_t, bool> at_signal_; // id -> answered
  size_t unanswered_ = 0;
  std::optional<bench_clock::time_point> signalled_;
  bench_clock::time_point metrics_at_{};
};

// The only replica's worker is SIGKILLed while idle; once the head reports
// it down, one request: the respawn on the survivor and its first answer.
respawn_run respawn_once(zmq::context_t& ctx, const options& opts,
                         const std::string& tag) {
  deployment cl{opts, tag, 1000, 2};
  respawn_run run;
  client c{ctx, cl.endpoint()};
  auto src = frame_source::distinct(1);
  run.victim = call(c, src, tag + " first request").node;
  run.survivor = cl.other_worker(run.victim);
  cl.mark_victim(run.victim);
  auto killed = bench_clock::now();
  cl.nodes().node(run.victim)->kill();
  if (!cl.nodes().wait_state(run.victim, "down", 15s, 10ms)) {
    throw bench_error{tag + ": " + run.victim + " not reported down 15 s " +
                      "after SIGKILL" + cl.logs()};
  }
  run.down_ms = ms_since(killed);
  auto t0 = bench_clock::now();
  auto r = call(c, src, tag + " request after the kill");
  run.serve_ms = ms_since(t0);
  if (r.node != run.survivor) {
    throw bench_error{tag + ": answered by '" + r.node + "', not " +
                      run.survivor};
  }
  t0 = bench_clock::now();
  call(c, src, tag + " second request");
  run.next_ms = ms_since(t0);
  cl.stop();
  return run;
}

void print_failover(const char* what, const failover_run& r) {
  std::printf("  %s %s: %zu in flight, %zu of them answered by %s "
              "(redispatched_total +%s); down in status %s ms",
              what, r.victim.c_str(), r.at_signal, r.by_survivor,
              r.survivor.c_str(), fmt(r.redispatched, 0).c_str(),
              fmt(r.down_ms, 0).c_str());
  if (!std::isnan(r.metric_down_ms)) {
    std::printf(", in /metrics %.0f ms", r.metric_down_ms);
  }
  std::printf("; first reply from %s %s ms, last in-flight answered %s ms",
              r.survivor.c_str(), fmt(r.first_ms, 0).c_str(),
              fmt(r.last_ms, 0).c_str());
  if (!std::isnan(r.up_again_ms)) {
    std::printf("; up again %.0f ms after SIGCONT", r.up_again_ms);
  }
  std::printf("\n");
  std::fflush(stdout);
}

void failover_series(zmq::context_t& ctx, const options& opts,
                     const std::string& kind, uint64_t timeout_ms, int sig,
                     std::vector<failover_run>& runs) {
  auto label = std::string{sig == SIGKILL ? "SIGKILL" : "SIGSTOP"} +
               " (timeout " + std::to_string(timeout_ms) + " ms)";
  for (int i = 0; i < opts.repeats; ++i) {
    auto tag = kind + std::to_string(i + 1);
    runs.push_back(failover_driver{ctx, opts, tag, timeout_ms, sig}.run());
    print_failover(label.c_str(), runs.back());
  }
}

void failover_phases(zmq::context_t& ctx, const options& opts, results& res) {
  std::printf("failover: head + 2 workers, %" PRIu64 " requests in flight, "
              "%d run(s) each\n",
              opts.fo_inflight, opts.repeats);
  failover_series(ctx, opts, "kill", 1000, SIGKILL, res.kill_runs);
  if (opts.short_timeout_ms > 0) {
    failover_series(ctx, opts, "kill-short", opts.short_timeout_ms, SIGKILL,
                    res.kill_short_runs);
  }
  failover_series(ctx, opts, "stop", 1000, SIGSTOP, res.stop_runs);
  for (int i = 0; i < opts.repeats; ++i) {
    auto r = respawn_once(ctx, opts, "respawn" + std::to_string(i + 1));
    res.respawn_runs.push_back(r);
    std::printf("  respawn: %s SIGKILLed idle, down in status %.0f ms; then "
                "a request served by a new replica on %s in %.2f ms (the next "
                "one %.2f ms)\n",
                r.victim.c_str(), r.down_ms, r.survivor.c_str(), r.serve_ms,
                r.next_ms);
    std::fflush(stdout);
  }
}

// -- report -------------------------------------------------------------------

template <class Run>
std::vector<double> column(const std::vector<Run>& runs, double Run::*m) {
  std::vector<double> xs;
  for (auto& r : runs) {
    if (!std::isnan(r.*m)) {
      xs.push_back(r.*m);
    }
  }
  return xs;
}

// One line of the failover table: an event's times over the runs.
struct failover_line {
  std::string event;
  double timeout_ms;
  std::vector<double> ms;
};

std::vector<failover_line> failover_lines(const options& opts,
                                          const results& res) {
  std::vector<failover_line> out;
  auto series = [&](const std::string& sig,
                    const std::vector<failover_run>& runs, double timeout) {
    if (runs.empty()) {
      return;
    }
    auto add = [&](const std::string& what, double t, double failover_run::*m) {
      out.push_back({what, t, column(runs, m)});
    };
    add(sig + ": head's status op reports it down", timeout,
        &failover_run::down_ms);
    if (sig == "SIGSTOP") {
      add(sig + ": shoal_cluster_nodes{state=\"down\"} >= 1", timeout,
          &failover_run::metric_down_ms);
    }
    add(sig + ": first reply from the survivor", timeout,
        &failover_run::first_ms);
    add(sig + ": all requests in flight at it answered OK", timeout,
        &failover_run::last_ms);
    if (sig == "SIGSTOP") {
      add("SIGCONT: reported up again (from SIGCONT)", nan_v,
          &failover_run::up_again_ms);
    }
  };
  series("SIGKILL", res.kill_runs, 1000);
  series("SIGKILL", res.kill_short_runs,
         static_cast<double>(opts.short_timeout_ms));
  series("SIGSTOP", res.stop_runs, 1000);
  const auto& rr = res.respawn_runs;
  if (!rr.empty()) {
    out.push_back({"respawn: SIGKILL (idle) -> reported down", 1000,
                   column(rr, &respawn_run::down_ms)});
    out.push_back({"respawn: then a request served by a new replica", nan_v,
                   column(rr, &respawn_run::serve_ms)});
    out.push_back({"respawn: the next request (a plain miss)", nan_v,
                   column(rr, &respawn_run::next_ms)});
  }
  return out;
}

// Failover times: median and max over the runs, and the median as a
// multiple of cluster.timeout_ms, the floor for anything that waits for a
// SIGKILLed or frozen process to be declared down.
void print_failover_table(const options& opts,
                          const std::vector<failover_line>& lines) {
  std::printf("\nfailover (ms), %d run(s) each: median, max, median / "
              "cluster.timeout_ms\n",
              opts.repeats);
  std::printf("%-52s %8s %8s %8s %7s\n", "event (from the signal)", "timeout",
              "median", "max", "ratio");
  std::printf("%s\n", std::string(88, '-').c_str());
  for (const auto& l : lines) {
    std::printf("%-52s %8s %8s %8s %7s\n", l.event.c_str(),
                fmt(l.timeout_ms, 0).c_str(), fmt(median(l.ms), 1).c_str(),
                fmt(max_of(l.ms), 1).c_str(),
                fmt(median(l.ms) / l.timeout_ms, 2).c_str());
  }
}

void print_latency(const options& opts, const results& res) {
  std::printf("\nlatency, 1 in flight, median of %d rounds of %" PRIu64
              " round trips (us)\n",
              opts.rounds, opts.requests);
  std::printf("%-11s %9s %9s %9s %9s %16s %11s\n", "phase", "p50", "p90", "p99",
              "mean", "node total p50", "throughput");
  for (int p = 0; p < ph_count; ++p) {
    auto lat = median_of_rounds(res.latency_rounds[p]);
    std::printf("%-11s %9.1f %9.1f %9.1f %9.1f %16s %11.0f\n", phase_names[p],
                lat.p50, lat.p90, lat.p99, lat.mean,
                fmt(median(res.node_total_us[p])).c_str(), median(res.tput[p]));
  }
  std::printf("(node total: timing_us.total of a 1-in-16 sample, receipt to "
              "reply at the front node; throughput: req/s, %" PRIu64
              " in flight)\n",
              opts.inflight);
}

void add_checks(const results& res, report& rep) {
  percentiles lat[ph_count];
  double tput[ph_count];
  for (int p = 0; p < ph_count; ++p) {
    lat[p] = median_of_rounds(res.latency_rounds[p]);
    tput[p] = median(res.tput[p]);
  }
  rep.add(check_row::at_most("cluster miss p50 (us)", lat[ph_cluster].p50,
                             lat[ph_echo].p50, 2.5));
  rep.add(check_row::info("cluster miss p90 (us)", lat[ph_cluster].p90,
                          lat[ph_echo].p90));
  rep.add(check_row::info("cluster miss p99 (us)", lat[ph_cluster].p99,
                          lat[ph_echo].p99));
  rep.add(check_row::info("standalone miss p50 (us)", lat[ph_standalone].p50,
                          lat[ph_echo].p50));
  rep.add(check_row::info("cluster / standalone miss p50 (us)",
                          lat[ph_cluster].p50, lat[ph_standalone].p50));
  rep.add(check_row::info("cluster miss throughput (req/s)", tput[ph_cluster],
                          tput[ph_echo]));
  rep.add(check_row::info("standalone miss throughput (req/s)",
                          tput[ph_standalone], tput[ph_echo]));
}

// Failover targets, against the failure detector's timeout (1000 ms): a
// SIGKILLed worker's closed connection is noticed at once, so what it had
// in flight is answered well before the timeout; a frozen one closes
// nothing and is declared down by the timeout itself, counted from its
// last message (under load, the moment of the freeze), so the target is
// the timeout plus 50 ms for the status op's 10 ms polling and scheduling.
void add_failover_checks(const results& res, report& rep) {
  auto kill = column(res.kill_runs, &failover_run::last_ms);
  auto stop = column(res.stop_runs, &failover_run::down_ms);
  rep.add(check_row::at_most("SIGKILL -> in-flight answered, median (ms)",
                             median(kill), 1000, 0.3)
              .decimals(1));
  rep.add(check_row::info("SIGKILL -> in-flight answered, max (ms)",
                          max_of(kill), 1000)
              .decimals(1));
  auto stop_row = check_row::at_most("SIGSTOP -> declared down, median (ms)",
                                     median(stop), 1000, 1.05);
  stop_row.target = "<= 1.05x";
  rep.add(stop_row.decimals(1));
  rep.add(
      check_row::info("SIGSTOP -> declared down, max (ms)", max_of(stop), 1000)
          .decimals(1));
}

// -- JSON ---------------------------------------------------------------------

json failover_json(const failover_run& r) {
  return json::object()
      .set("victim", r.victim)
      .set("survivor", r.survivor)
      .set("at_signal", r.at_signal)
      .set("by_survivor", r.by_survivor)
      .set("down_ms", r.down_ms)
      .set("metric_down_ms", r.metric_down_ms)
      .set("first_ms", r.first_ms)
      .set("last_ms", r.last_ms)
      .set("up_again_ms", r.up_again_ms)
      .set("redispatched", r.redispatched);
}

json failover_section(const results& res,
                      const std::vector<failover_line>& lines) {
  auto runs = [](const std::vector<failover_run>& rs) {
    auto a = json::array();
    for (const auto& r : rs) {
      a.push(failover_json(r));
    }
    return a;
  };
  auto respawn = json::array();
  for (const auto& r : res.respawn_runs) {
    respawn.push(json::object()
                     .set("victim", r.victim)
                     .set("survivor", r.survivor)
                     .set("down_ms", r.down_ms)
                     .set("serve_ms", r.serve_ms)
                     .set("next_ms", r.next_ms));
  }
  auto summary = json::array();
  for (const auto& l : lines) {
    summary.push(json::object()
                     .set("event", l.event)
                     .set("timeout_ms", l.timeout_ms)
                     .set("median_ms", median(l.ms))
                     .set("max_ms", max_of(l.ms)));
  }
  return json::object()
      .set("kill", runs(res.kill_runs))
      .set("kill_short_timeout", runs(res.kill_short_runs))
      .set("stop", runs(res.stop_runs))
      .set("respawn", std::move(respawn))
      .set("summary", std::move(summary));
}

void fill_json(const options& opts, const results& res,
               const std::vector<failover_line>& lines, report& rep) {
  auto& doc = rep.doc();
  doc["config"]
      .set("quick", opts.common.quick)
      .set("requests", opts.requests)
      .set("rounds", opts.rounds)
      .set("duration_s", opts.duration_s)
      .set("inflight", opts.inflight)
      .set("failover_inflight", opts.fo_inflight)
      .set("repeats", opts.repeats)
      .set("short_timeout_ms", opts.short_timeout_ms)
      .set("failover_only", opts.failover_only)
      .set("shoald", opts.common.shoald);
  for (int p = 0; p < ph_count; ++p) {
    auto rounds = json::array();
    for (const auto& r : res.latency_rounds[p]) {
      rounds.push(to_json(r));
    }
    doc["latency"][phase_names[p]]
        .set("median_of_rounds",
             to_json(median_of_rounds(res.latency_rounds[p])))
        .set("node_total_p50_us", median(res.node_total_us[p]))
        .set("rounds", std::move(rounds));
    doc["throughput_rps"][phase_names[p]]
        .set("median", median(res.tput[p]))
        .set("rounds", json::array_of(res.tput[p]));
  }
  doc.set("failover", failover_section(res, lines));
}

// -- the run ------------------------------------------------------------------

int run(const options& opts) {
  // Forked first, while this process has no threads.
  auto echo = start_echo_server();
  report rep{"bench_cluster"};
  auto frame_bytes = frame_source::fixed().current().size();
  std::printf("bench_cluster: shoald %s%s\n", opts.common.shoald.c_str(),
              opts.common.quick ? " (quick)" : "");
  std::printf("load average before: %s\n", rep.load_before().c_str());
  std::printf("request frame %zu bytes (echo v2, x f32 [1,%zu]); echo server "
              "%s (pid %d); models %s\n",
              frame_bytes, row_floats, echo.endpoint.c_str(),
              static_cast<int>(echo.proc->pid()),
              opts.models.empty() ? "shoald's default root"
                                  : opts.models.c_str());
  std::fflush(stdout);
  results res;
  zmq::context_t ctx{1};
  if (!opts.failover_only) {
    steady_phases(ctx, opts, echo.endpoint, res);
  }
  failover_phases(ctx, opts, res);
  rep.finish();
  if (!opts.failover_only) {
    print_latency(opts, res);
    add_checks(res, rep);
  }
  add_failover_checks(res, rep);
  rep.print_checks("baseline: raw ZeroMQ DEALER/ROUTER echo of the same " +
                   std::to_string(frame_bytes) +
                   "-byte frame; for cluster / standalone: the standalone "
                   "node; for failover: cluster.timeout_ms");
  auto lines = failover_lines(opts, res);
  print_failover_table(opts, lines);
  std::printf("load average after: %s (%u cores)\n", rep.load_after().c_str(),
              std::thread::hardware_concurrency());
  fill_json(opts, res, lines, rep);
  rep.write(opts.common.json);
  echo.proc->stop(5s);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  auto opts = parse_args(argc, argv);
  return run_main(
      "bench_cluster",
      [&] {
        require_executable(opts.common.shoald,
                           "use --shoald PATH or SHOALD=PATH");
        return run(opts);
      },
      opts.keep ? "" : "(--keep keeps the nodes' logs)");
}
