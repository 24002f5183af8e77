// Cluster chaos: a head and workers as real shoald processes; workers are
// killed (SIGKILL), frozen (SIGSTOP), preempted (SIGTERM), added and
// drained while a client keeps requests in flight, the head is restarted,
// and forged frames are sent to the node link. Each test asserts what a
// user notices: every request answered exactly once, correctly, and the
// head's view of the cluster. Measured numbers are printed (lines starting
// with "[measured]") so they can be quoted.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <csignal>
#include <unistd.h>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "net/client/client.hpp"
#include "net/link/cluster_codec.hpp"
#include "net/link/node_link.hpp"
#include "net/wire/error.hpp"
#include "tests/chaos/cluster_process.hpp"

using namespace shoal;
using namespace shoal::chaos;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

double ms_between(steady::time_point a, steady::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// -- requests with known answers ----------------------------------------------

// The synthetic test models (examples/models/*/1/model.toml) compute
// y = scale * x + offset elementwise: echo v1 2x+1, echo v2 3x+1, slow
// 2x+1 (20 ms per batch, batches of up to 8).
struct model_kind {
  std::string name;
  size_t width;
};
const model_kind echo_model{"echo", 256};
const model_kind slow_model{"slow", 16};

// x[0] = id makes every input distinct, so no request is answered by the
// cache or coalesced with another; cache bypass makes sure of it. Small
// integers keep the expected floats exact.
request make_infer(const model_kind& m, uint64_t id) {
  request r;
  r.op = op_kind::infer;
  r.id = request_id::of(id);
  r.model = m.name;
  r.cache = cache_mode::bypass;
  tensor t;
  t.name = "x";
  t.type = dtype::f32;
  t.shape = {1, m.width};
  t.data.resize(m.width * 4);
  for (size_t i = 0; i < m.width; ++i) {
    float v = i == 0 ? static_cast<float>(id % 1000000) : static_cast<float>(i);
    std::memcpy(t.data.data() + i * 4, &v, 4);
  }
  r.inputs.push_back(std::move(t));
  return r;
}

// Empty when the outputs are what the model computes for make_infer(m, id).
std::string check_outputs(const model_kind& m, uint64_t id, const reply& rep) {
  double scale = 2.0;
  if (m.name == "echo" && rep.version.value_or(0) == 2) {
    scale = 3.0;
  }
  if (rep.outputs.size() != 1) {
    return "expected 1 output, got " + std::to_string(rep.outputs.size());
  }
  auto& t = rep.outputs[0];
  if (t.name != "y" || t.type != dtype::f32 || t.shape.size() != 2 ||
      t.shape[1] != m.width || t.data.size() != m.width * 4) {
    return "output tensor has the wrong name, dtype or shape";
  }
  for (size_t i = 0; i < m.width; ++i) {
    float x = i == 0 ? static_cast<float>(id % 1000000) : static_cast<float>(i);
    float want = static_cast<float>(scale * x + 1.0);
    float got;
    std::memcpy(&got, t.data.data() + i * 4, 4);
    if (got != want) {
      return "y[" + std::to_string(i) + "] = " + std::to_string(got) +
             ", expected " + std::to_string(want);
    }
  }
  return {};
}

// -- load: a closed loop with a fixed number of requests in flight ----------

struct outcome {
  const model_kind* model = nullptr;
  steady::time_point sent;
  steady::time_point ended;
  int ends = 0; // handler calls for this id: must be exactly 1
  bool ok = false;
  std::string what; // status or client error, when not OK
  std::string node;
  std::string wrong; // set when the outputs are wrong
};

struct load_options {
  std::string endpoint;
  // Requests in flight per model; the models are served side by side.
  size_t depth_per_model = 16;
  std::vector<const model_kind*> models{&echo_model, &slow_model};
  std::chrono::milliseconds duration{20000};
  // retries = 0: a reply that never comes shows up as a timeout error
  // rather than being papered over by a resend.
  std::chrono::milliseconds timeout{10000};
  // Resends per request (same id); with retries a late reply to an earlier
  // attempt is legal and shows up as unmatched.
  int retries = 0;
  // The request's own deadline (timeout_ms), counted by the node; 0: none
  // (the node's default applies).
  uint64_t deadline_ms = 0;
};

// Runs the load on its own thread (the client is single-threaded and
// belongs to it). The main thread reads the atomics while it runs and the
// outcomes after join().
class load_driver {
public:
  explicit load_driver(load_options opts) : opts_(std::move(opts)) {}
  // An early stop (a failed assertion left the test): submit no more.
  ~load_driver() {
    stop_ = true;
    join();
  }

  void start() {
    thread_ = std::thread([this] { run(); });
  }

  // Waits until the load has run its duration and what was in flight has
  // ended (bounded by the request timeout).
  void join() {
    if (thread_.joinable()) {
      thread_.join();
    }
  }

  // Blocks until `n` more requests have ended OK (bounded).
  bool wait_ok(uint64_t n, std::chrono::milliseconds limit) {
    auto target = ok_.load() + n;
    auto deadline = steady::now() + limit;
    while (ok_.load() < target) {
      if (steady::now() >= deadline) {
        return false;
      }
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

  uint64_t ok() const { return ok_.load(); }
  uint64_t failed() const { return failed_.load(); }

  // After join():
  const std::map<uint64_t, outcome>& outcomes() const { return outcomes_; }
  uint64_t unmatched() const { return unmatched_; }
  uint64_t left_in_flight() const { return left_in_flight_; }
  double seconds() const { return ms_between(started_, finished_) / 1000.0; }

  // What went wrong, in a few lines (first 10 problems).
  std::string problems() const {
    std::string out;
    int shown = 0;
    for (auto& [id, o] : outcomes_) {
      if (o.ends == 1 && o.ok && o.wrong.empty()) {
        continue;
      }
      if (shown++ == 10) {
        out += "  ...\n";
        break;
      }
      out += "  id " + std::to_string(id) + " (" + o.model->name +
             "): ends=" + std::to_string(o.ends) +
             (o.ok ? " OK" : " " + o.what) +
             (o.wrong.empty() ? "" : " wrong output: " + o.wrong) +
             (o.node.empty() ? "" : " node=" + o.node) + "\n";
    }
    return out;
  }

  // Summary line with the counts a user cares about.
  void print_summary(const std::string& label) const {
    uint64_t ok = 0, bad = 0;
    std::map<std::string, uint64_t> by_node, by_model;
    double max_ms = 0;
    for (auto& [id, o] : outcomes_) {
      (o.ok && o.wrong.empty() && o.ends == 1) ? ++ok : ++bad;
      if (o.ok) {
        ++by_node[o.node];
      }
      ++by_model[o.model->name];
      if (o.ends > 0) {
        max_ms = std::max(max_ms, ms_between(o.sent, o.ended));
      }
    }
    std::cout << "[measured] " << label << ": " << outcomes_.size()
              << " requests in " << seconds() << " s ("
              << static_cast<uint64_t>(outcomes_.size() / seconds())
              << " replies/s), " << ok << " OK, " << bad
              << " not OK, unmatched replies " << unmatched_
              << ", slowest request " << max_ms << " ms; served by";
    for (auto& [n, c] : by_node) {
      std::cout << ' ' << n << '=' << c;
    }
    std::cout << "; by model";
    for (auto& [m, c] : by_model) {
      std::cout << ' ' << m << '=' << c;
    }
    std::cout << std::endl;
  }

  // For the requests sent before `t` and ended after it: how many, and how
  // long after `t` the last one ended (the time to re-dispatch and finish
  // what was in flight at an incident).
  std::pair<size_t, double> straddling(steady::time_point t,
                                       const std::string& model = {}) const {
    size_t n = 0;
    double last = 0;
    for (auto& [id, o] : outcomes_) {
      if (!model.empty() && o.model->name != model) {
        continue;
      }
      if (o.sent < t && o.ends > 0 && o.ended > t) {
        ++n;
        last = std::max(last, ms_between(t, o.ended));
      }
    }
    return {n, last};
  }

private:
  void run() {
    client_options co;
    co.endpoint = opts_.endpoint;
    co.timeout = opts_.timeout;
    co.retries = 0;
    auto c = client::connect(co);
    if (!c) {
      std::cerr << "load: " << reason_of(c.error()) << '\n';
      return;
    }
    auto& cl = **c;
    started_ = steady::now();
    auto stop_at = started_ + opts_.duration;
    uint64_t next_id = 1;
    auto submit = [&](const model_kind* m) {
      auto id = next_id++;
      auto& o = outcomes_[id];
      o.model = m;
      o.sent = steady::now();
      auto req = make_infer(*m, id);
      if (opts_.deadline_ms > 0) {
        req.timeout_ms = opts_.deadline_ms;
      }
      cl.submit(
          std::move(req),
          [this, id, m, &o](caf::expected<reply> r) {
            ++o.ends;
            o.ended = steady::now();
            if (!r) {
              o.what = "client error: " + reason_of(r.error());
            } else if (r->code != status::ok) {
              o.what = std::string{to_string(r->code)} + ": " + r->error;
              o.node = r->node;
            } else {
              o.ok = true;
              o.node = r->node;
              o.wrong = check_outputs(*m, id, *r);
            }
            (o.ok && o.wrong.empty()) ? ++ok_ : ++failed_;
            if (!stop_ && steady::now() < stop_at_) {
              refill_.push_back(m);
            }
          },
          opts_.timeout, opts_.retries);
    };
    stop_at_ = stop_at;
    for (auto* m : opts_.models) {
      for (size_t i = 0; i < opts_.depth_per_model; ++i) {
        submit(m);
      }
    }
    while (!stop_ && steady::now() < stop_at) {
      cl.poll(5ms);
      for (auto* m : refill_) {
        submit(m);
      }
      refill_.clear();
    }
    // Let what is in flight finish; every request ends within its timeout.
    auto drain_until = steady::now() + opts_.timeout * (opts_.retries + 1) + 2s;
    while (cl.in_flight() > 0 && steady::now() < drain_until) {
      cl.poll(20ms);
    }
    finished_ = steady::now();
    // A late duplicate would arrive after its request ended: give it a
    // moment to show up in unmatched_replies().
    auto linger_until = steady::now() + 300ms;
    while (steady::now() < linger_until) {
      cl.poll(20ms);
    }
    left_in_flight_ = cl.in_flight();
    unmatched_ = cl.unmatched_replies();
  }

  load_options opts_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> ok_{0};
  std::atomic<uint64_t> failed_{0};
  steady::time_point stop_at_;
  std::vector<const model_kind*> refill_;
  std::map<uint64_t, outcome> outcomes_;
  steady::time_point started_;
  steady::time_point finished_;
  uint64_t unmatched_ = 0;
  uint64_t left_in_flight_ = 0;
};

// The load's verdict: every id ended exactly once, OK, with correct outputs,
// no reply without a request, nothing left in flight.
void expect_all_ok(const load_driver& load, bool allow_unmatched = false) {
  EXPECT_GT(load.outcomes().size(), 0u);
  size_t not_once = 0, not_ok = 0, wrong = 0;
  for (auto& [id, o] : load.outcomes()) {
    not_once += o.ends != 1;
    not_ok += !o.ok;
    wrong += !o.wrong.empty();
  }
  EXPECT_EQ(not_once, 0u) << "requests not ended exactly once\n"
                          << load.problems();
  EXPECT_EQ(not_ok, 0u) << "requests not OK\n" << load.problems();
  EXPECT_EQ(wrong, 0u) << "wrong outputs\n" << load.problems();
  if (!allow_unmatched) {
    EXPECT_EQ(load.unmatched(), 0u) << "replies that matched no request "
                                       "(duplicates or late replies)";
  }
  EXPECT_EQ(load.left_in_flight(), 0u);
}

// -- the fixture
// ----------------------------------------------------------------

// Bounds the whole test: the waits are bounded one by one, this catches
// what they do not (a hung poll, a deadlock in the harness). The nodes die
// with the test binary (PR_SET_PDEATHSIG).
constexpr unsigned test_limit_s = 90;

extern "C" void on_alarm(int) {
  constexpr char msg[] = "\ntest_chaos: test ran past its time limit\n";
  [[maybe_unused]] auto w = ::write(2, msg, sizeof(msg) - 1);
  std::_Exit(1);
}

class chaos : public ::testing::Test {
protected:
  void SetUp() override {
    std::signal(SIGALRM, on_alarm);
    ::alarm(test_limit_s);
  }

  void TearDown() override {
    ::alarm(0);
    if (cluster_ && HasFailure()) {
      std::cerr << "==== node logs ====\n" << cluster_->logs();
    }
    cluster_.reset();
  }

  // A head and `workers` workers, all up.
  void start(size_t workers, cluster_options opts = {}) {
    cluster_ = std::make_unique<cluster>(std::move(opts));
    cluster_->start_head();
    ASSERT_TRUE(cluster_->wait_head_ready(15s)) << "the head did not answer";
    std::vector<std::string> names;
    for (size_t i = 0; i < workers; ++i) {
      names.push_back(cluster_->add_worker().name());
    }
    ASSERT_TRUE(cluster_->wait_up(names, 15s)) << "workers not up";
  }

  // One request per model so that placement (lazy) happens before the
  // chaos starts.
  void warm_up(const std::vector<const model_kind*>& models) {
    uint64_t id = 900000000;
    for (auto* m : models) {
      auto rep = cluster_->call(make_infer(*m, id), 15s);
      ASSERT_TRUE(rep) << m->name << ": " << reason_of(rep.error());
      ASSERT_EQ(rep->code, status::ok) << m->name << ": " << rep->error;
      EXPECT_EQ(check_outputs(*m, id, *rep), "");
      ++id;
    }
  }

  // model -> workers holding a replica of it, per the head's status op.
  std::map<std::string, std::vector<std::string>> replicas() {
    std::map<std::string, std::vector<std::string>> out;
    auto rep = cluster_->status();
    if (!rep || rep->code != status::ok) {
      return out;
    }
    for (auto& n : rep->nodes) {
      if (n.state == "up") {
        for (auto& [model, count] : n.replicas) {
          if (count > 0) {
            out[model].push_back(n.name);
          }
        }
      }
    }
    return out;
  }

  // The worker holding `model` (the first listed), waiting until one does.
  std::string holder_of(const std::string& model) {
    auto deadline = steady::now() + 5s;
    for (;;) {
      auto r = replicas();
      if (!r[model].empty()) {
        return r[model].front();
      }
      if (steady::now() >= deadline) {
        return {};
      }
      std::this_thread::sleep_for(20ms);
    }
  }

  double head_metric(const std::string& series) {
    return sample(cluster_->head_metrics(), series).value_or(-1);
  }

  load_options load_opts() {
    load_options o;
    o.endpoint = cluster_->endpoint();
    return o;
  }

  std::unique_ptr<cluster> cluster_;
};

// The log lines that mention dropped frames, indented.
std::string drop_lines_of(const std::string& log) {
  std::string out;
  std::istringstream in{log};
  std::string line;
  while (std::getline(in, line)) {
    std::string lower = line;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    // A link frame that fails its checks is dropped; with CURVE links (a
    // cluster.secret derives them) a stranger's key is refused, or its
    // handshake fails, before any frame is read.
    if (lower.find("drop") != std::string::npos ||
        lower.find("refused a node key") != std::string::npos ||
        lower.find("handshake with") != std::string::npos) {
      out += "  " + line + "\n";
    }
  }
  return out;
}

std::string describe(const reply& status_reply) {
  std::string out;
  for (auto& n : status_reply.nodes) {
    out += "  " + n.name + " " + n.role + " " + n.state;
    for (auto& [m, c] : n.replicas) {
      out += " " + m + "=" + std::to_string(c);
    }
    out += "\n";
  }
  return out;
}

} // namespace

// The same load against one standalone node (every role in one process):
// the baseline for the cluster's replies/s, and a check of the load
// driver itself.
TEST_F(chaos, baseline_standalone_node) {
  cluster_ = std::make_unique<cluster>();
  cluster_->start_standalone();
  ASSERT_TRUE(cluster_->wait_head_ready(15s)) << "the node did not answer";
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto opts = load_opts();
  opts.duration = 5s;
  load_driver load{opts};
  load.start();
  load.join();
  expect_all_ok(load);
  load.print_summary("standalone baseline");
}

// (a) A worker holding replicas vanishes (SIGKILL) under load: nothing
// accepted is lost, every id gets exactly one correct reply.
TEST_F(chaos, sigkill_worker_under_load_loses_nothing) {
  ASSERT_NO_FATAL_FAILURE(start(3));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto victim = holder_of("slow");
  ASSERT_FALSE(victim.empty()) << "no worker reports a replica of slow";
  std::cout << "[info] replicas: echo on " << holder_of("echo") << ", slow on "
            << victim << "; killing " << victim << std::endl;
  // shoal_executors: each node counts the executors it runs, so a sum over
  // every scraped node is the cluster's, and a node's own is right.
  auto series = [](const std::string& node) {
    return "shoal_executors{model=\"slow\",node=\"" + node + "\"}";
  };
  EXPECT_GE(sample(cluster_->node(victim)->metrics(), series(victim)), 1.0);
  EXPECT_EQ(sample(cluster_->head_metrics(), series("head")).value_or(0), 0.0)
      << "the head counts a worker's executor as its own";
  auto before = std::max(0.0, head_metric("shoal_requests_redispatched_total"));

  auto opts = load_opts();
  opts.duration = 20s;
  load_driver load{opts};
  load.start();
  std::this_thread::sleep_for(5s);
  auto ok_at_kill = load.ok();
  auto killed_at = steady::now();
  cluster_->node(victim)->signal(SIGKILL);
  ASSERT_EQ(cluster_->node(victim)->wait_exit(2s),
            std::optional<int>{128 + SIGKILL});
  // The head notices: the victim is reported down.
  bool down = cluster_->wait_state(victim, "down", 3s);
  auto down_ms = ms_between(killed_at, steady::now());
  EXPECT_TRUE(down) << victim << " not reported down 3 s after SIGKILL";
  // Serving goes on: another 200 OK replies after the kill.
  EXPECT_TRUE(load.wait_ok(200, 10s)) << "serving stalled after the kill";
  load.join();

  expect_all_ok(load);
  auto [straddled, last_ms] = load.straddling(killed_at, "slow");
  auto after = head_metric("shoal_requests_redispatched_total");
  std::cout << "[measured] sigkill " << victim << ": reported down after "
            << down_ms << " ms; " << straddled
            << " slow requests were in flight at the kill, the last answered "
            << last_ms << " ms after it; redispatched_total " << before
            << " -> " << after << "; " << ok_at_kill << " OK before the kill"
            << std::endl;
  load.print_summary("sigkill");
  EXPECT_GT(straddled, 0u) << "nothing was in flight at the kill";
  EXPECT_GE(after - before, 1.0)
      << "shoal_requests_redispatched_total did not move";
  // Requests after the kill were served by the survivors only.
  for (auto& [id, o] : load.outcomes()) {
    if (o.ok && o.sent > killed_at + 100ms) {
      ASSERT_NE(o.node, victim) << "id " << id << " served by the dead node";
    }
  }
}

// A worker SIGKILLed under load is noticed through its closed connection,
// not the heartbeat timeout: with the default detector (down after 1 s of
// silence) every request in flight at the kill, those on the victim
// included, is answered OK within 600 ms of it, once each.
TEST_F(chaos, sigkill_worker_is_detected_by_its_closed_connection) {
  ASSERT_NO_FATAL_FAILURE(start(3));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto victim = holder_of("slow");
  ASSERT_FALSE(victim.empty()) << "no worker reports a replica of slow";

  auto opts = load_opts();
  opts.duration = 8s;
  load_driver load{opts};
  load.start();
  ASSERT_TRUE(load.wait_ok(200, 10s)) << "the load did not get going";
  auto killed_at = steady::now();
  cluster_->node(victim)->signal(SIGKILL);
  bool down = cluster_->wait_state(victim, "down", 3s);
  auto down_ms = ms_between(killed_at, steady::now());
  EXPECT_TRUE(down) << victim << " not reported down 3 s after SIGKILL";
  ASSERT_EQ(cluster_->node(victim)->wait_exit(2s),
            std::optional<int>{128 + SIGKILL});
  EXPECT_TRUE(load.wait_ok(200, 10s)) << "serving stalled after the kill";
  load.join();

  expect_all_ok(load);
  auto [straddled, last_ms] = load.straddling(killed_at);
  auto [on_victim, victim_last_ms] = load.straddling(killed_at, "slow");
  std::cout << "[measured] sigkill " << victim << " (closed connection): "
            << "reported down in status after " << down_ms << " ms; "
            << straddled << " requests in flight at the kill (" << on_victim
            << " of slow, held by " << victim << "), the last answered "
            << last_ms << " ms after it (slow: " << victim_last_ms
            << " ms); cluster.timeout_ms default 1000" << std::endl;
  load.print_summary("sigkill, closed connection");
  EXPECT_GT(on_victim, 0u) << "nothing was in flight on the victim";
  EXPECT_LE(last_ms, 600.0)
      << "requests in flight at the kill were answered only after " << last_ms
      << " ms: the head waited for the heartbeat timeout?";
  // The head says why: the connection, not the timeout.
  auto log = cluster_->head().log();
  EXPECT_NE(log.find("worker " + victim + " down: connection closed"),
            std::string::npos)
      << "the head did not report " << victim << "'s closed connection";
}

// (b) A frozen worker (SIGSTOP: alive, silent) is declared down within the
// failure detector's timeout; its work is re-dispatched; after SIGCONT its
// stale results never reach a client twice.
TEST_F(chaos, sigstop_worker_is_declared_down_quickly) {
  ASSERT_NO_FATAL_FAILURE(start(3));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto victim = holder_of("slow");
  ASSERT_FALSE(victim.empty());
  auto* proc = cluster_->node(victim);

  auto opts = load_opts();
  opts.duration = 16s;
  load_driver load{opts};
  load.start();
  std::this_thread::sleep_for(4s);
  auto frozen_at = steady::now();
  proc->signal(SIGSTOP);
  std::optional<double> status_down_ms, metric_down_ms;
  auto deadline = frozen_at + 5s;
  while (steady::now() < deadline && !(status_down_ms && metric_down_ms)) {
    if (!status_down_ms && cluster_->node_state(victim) == "down") {
      status_down_ms = ms_between(frozen_at, steady::now());
    }
    if (!metric_down_ms &&
        sample(cluster_->head_metrics(), "shoal_cluster_nodes{state=\"down\"}")
                .value_or(0) >= 1) {
      metric_down_ms = ms_between(frozen_at, steady::now());
    }
    std::this_thread::sleep_for(50ms);
  }
  std::cout << "[measured] sigstop " << victim << ": status op reports down "
            << (status_down_ms ? std::to_string(*status_down_ms) + " ms"
                               : std::string{"never (5 s)"})
            << " after SIGSTOP, shoal_cluster_nodes{state=\"down\"} >= 1 after "
            << (metric_down_ms ? std::to_string(*metric_down_ms) + " ms"
                               : std::string{"never (5 s)"})
            << " (cluster.timeout_ms default 1000)" << std::endl;
  EXPECT_TRUE(status_down_ms && *status_down_ms <= 1500)
      << "status op did not report " << victim << " down within 1.5 s";
  EXPECT_TRUE(metric_down_ms && *metric_down_ms <= 1500)
      << "shoal_cluster_nodes{state=\"down\"} not >= 1 within 1.5 s";
  EXPECT_TRUE(load.wait_ok(200, 10s)) << "serving stalled while frozen";

  // Thaw: whatever the worker finished while frozen is stale now and must
  // not produce a second reply; the worker may come back as a member.
  std::this_thread::sleep_for(1s);
  auto thawed_at = steady::now();
  proc->signal(SIGCONT);
  bool back = cluster_->wait_state(victim, "up", 5s);
  std::cout << "[measured] sigcont " << victim << ": "
            << (back
                    ? "reported up again after " +
                          std::to_string(ms_between(thawed_at, steady::now())) +
                          " ms"
                    : std::string{"not up again within 5 s"})
            << std::endl;
  EXPECT_TRUE(back) << victim << " did not re-register after SIGCONT";
  load.join();
  expect_all_ok(load);
  auto [straddled, last_ms] = load.straddling(frozen_at, "slow");
  std::cout << "[measured] sigstop: " << straddled
            << " slow requests in flight at the freeze, the last answered "
            << last_ms << " ms after it" << std::endl;
  load.print_summary("sigstop");
  EXPECT_TRUE(proc->running()) << "the thawed worker exited";
}

// (c) A preemption notice (SIGTERM): the worker drains (finishes its
// in-flight work, takes no new work), exits 0, and no client sees an error.
TEST_F(chaos, sigterm_worker_drains_without_errors) {
  cluster_options co;
  co.drain_grace_ms = 5000;
  ASSERT_NO_FATAL_FAILURE(start(3, co));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto victim = holder_of("slow");
  ASSERT_FALSE(victim.empty());
  auto* proc = cluster_->node(victim);

  auto opts = load_opts();
  opts.duration = 15s;
  load_driver load{opts};
  load.start();
  std::this_thread::sleep_for(4s);
  auto termed_at = steady::now();
  proc->signal(SIGTERM);
  // The head may show the worker draining on the way out.
  std::set<std::string> seen_states;
  std::optional<int> code;
  auto deadline = termed_at + 5s + 3s; // drain grace + margin
  while (steady::now() < deadline) {
    if (auto s = cluster_->node_state(victim)) {
      seen_states.insert(*s);
    }
    if ((code = proc->wait_exit(20ms))) {
      break;
    }
  }
  auto exit_ms = ms_between(termed_at, steady::now());
  ASSERT_TRUE(code) << victim << " still running 8 s after SIGTERM "
                    << "(drain grace 5 s)";
  EXPECT_EQ(*code, 0) << victim << " exit code after SIGTERM";
  EXPECT_TRUE(load.wait_ok(200, 10s)) << "serving stalled after the drain";
  load.join();
  expect_all_ok(load);
  std::string states;
  for (auto& s : seen_states) {
    states += " " + s;
  }
  auto [straddled, last_ms] = load.straddling(termed_at, "slow");
  std::cout << "[measured] sigterm " << victim << ": exited with " << *code
            << " after " << exit_ms << " ms; states seen at the head:" << states
            << "; " << straddled << " slow requests in flight at the SIGTERM, "
            << "the last answered " << last_ms << " ms after it" << std::endl;
  load.print_summary("sigterm");
  for (auto& [id, o] : load.outcomes()) {
    if (o.ok && o.sent > termed_at + 1s) {
      ASSERT_NE(o.node, victim)
          << "id " << id << " served by the drained worker 1 s after SIGTERM";
    }
  }
  // A worker that left is not a failure: it is dropped from the status at
  // once and never counted down (what the node-down alert watches), also
  // once its connection has closed and its heartbeats stopped (past
  // cluster.timeout_ms).
  EXPECT_EQ(seen_states.count("down"), 0u) << victim << " listed down";
  std::this_thread::sleep_for(1500ms);
  auto rep = cluster_->status();
  ASSERT_TRUE(rep && rep->code == status::ok);
  for (auto& n : rep->nodes) {
    EXPECT_NE(n.name, victim)
        << "still listed (" << n.state << ") after it left";
  }
  EXPECT_EQ(head_metric("shoal_cluster_nodes{state=\"down\"}"), 0.0);
}

// (d) A worker added while serving gets placements: once the only old
// worker is gone, the new one serves everything.
TEST_F(chaos, added_worker_receives_placements) {
  ASSERT_NO_FATAL_FAILURE(start(1));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto opts = load_opts();
  opts.duration = 12s;
  load_driver load{opts};
  load.start();
  std::this_thread::sleep_for(2s);
  auto added_at = steady::now();
  auto& w2 = cluster_->add_worker("capacity=spot,zone=b");
  ASSERT_TRUE(cluster_->wait_up({w2.name()}, 10s)) << "w2 did not come up";
  std::cout << "[measured] add: " << w2.name() << " up (status op) after "
            << ms_between(added_at, steady::now()) << " ms" << std::endl;
  // Its labels are listed, and Prometheus service discovery on the head
  // follows the cluster: the new worker's metrics target appears.
  auto st = cluster_->status();
  ASSERT_TRUE(st && st->code == status::ok);
  for (auto& n : st->nodes) {
    if (n.name == w2.name()) {
      std::vector<std::pair<std::string, std::string>> want{
          {"capacity", "spot"}, {"zone", "b"}};
      auto got = n.labels;
      std::sort(got.begin(), got.end());
      EXPECT_EQ(got, want) << "labels of " << w2.name();
    }
  }
  auto target = "127.0.0.1:" + std::to_string(w2.http_port());
  auto [sd_code, sd] = http_get(cluster_->head_http_port(), "/sd");
  EXPECT_EQ(sd_code, 200);
  EXPECT_NE(sd.find(target), std::string::npos)
      << "/sd does not list " << target << ": " << sd;
  EXPECT_EQ(http_get(w2.http_port(), "/healthz").first, 200);
  EXPECT_EQ(http_get(w2.http_port(), "/readyz").first, 200);
  std::this_thread::sleep_for(1s);
  auto killed_at = steady::now();
  cluster_->node("w1")->signal(SIGKILL);
  EXPECT_TRUE(load.wait_ok(200, 10s)) << "serving stalled: w2 took no work";
  auto r = replicas();
  std::cout << "[info] replicas after the kill: echo on "
            << (r["echo"].empty() ? "-" : r["echo"].front()) << ", slow on "
            << (r["slow"].empty() ? "-" : r["slow"].front()) << std::endl;
  load.join();
  expect_all_ok(load);
  std::optional<double> first_w2;
  std::set<std::string> models_on_w2;
  for (auto& [id, o] : load.outcomes()) {
    if (o.ok && o.node == w2.name()) {
      models_on_w2.insert(o.model->name);
      auto t = ms_between(killed_at, o.ended);
      if (t > 0 && (!first_w2 || t < *first_w2)) {
        first_w2 = t;
      }
    }
  }
  EXPECT_EQ(models_on_w2.size(), 2u) << "w2 did not serve both models";
  std::cout << "[measured] add: after SIGKILL of w1 the first reply from "
            << w2.name() << " came "
            << (first_w2 ? std::to_string(*first_w2) + " ms"
                         : std::string{"never"})
            << " later" << std::endl;
  load.print_summary("add");
  auto after = replicas();
  EXPECT_FALSE(after["echo"].empty() || after["slow"].empty());
  for (auto& [model, holders] : after) {
    for (auto& h : holders) {
      EXPECT_EQ(h, w2.name()) << model << " listed on " << h;
    }
  }
}

// `drain NODE` (shoalctl drain) sent to the head: the node's work moves to
// the others, the node exits 0, no client sees an error.
TEST_F(chaos, drain_op_moves_work_and_the_worker_exits) {
  cluster_options co;
  co.drain_grace_ms = 5000;
  ASSERT_NO_FATAL_FAILURE(start(2, co));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto victim = holder_of("slow");
  ASSERT_FALSE(victim.empty());
  auto opts = load_opts();
  opts.duration = 12s;
  load_driver load{opts};
  load.start();
  std::this_thread::sleep_for(3s);
  request d;
  d.op = op_kind::drain;
  d.node = victim;
  auto drained_at = steady::now();
  auto rep = cluster_->call(d, 10s);
  ASSERT_TRUE(rep) << reason_of(rep.error());
  EXPECT_EQ(rep->code, status::ok) << rep->error;
  EXPECT_EQ(rep->node, victim);
  auto code = cluster_->node(victim)->wait_exit(8s);
  auto exit_ms = ms_between(drained_at, steady::now());
  EXPECT_EQ(code, std::optional<int>{0})
      << victim << " did not exit 0 within drain grace + 3 s";
  EXPECT_TRUE(load.wait_ok(200, 10s));
  load.join();
  expect_all_ok(load);
  std::cout << "[measured] drain " << victim << ": exited after " << exit_ms
            << " ms" << std::endl;
  load.print_summary("drain");
  // Unknown node: NOT_FOUND (protocol.md, section 8).
  d.node = "no-such-node";
  rep = cluster_->call(d, 5s);
  ASSERT_TRUE(rep);
  EXPECT_EQ(rep->code, status::not_found) << rep->error;
}

// (e) The head restarts (SIGKILL, then a new head on the same ports): the
// coordinator's state is soft, so the workers re-register with their
// replicas and requests succeed again.
TEST_F(chaos, head_restart_workers_reregister) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto before = cluster_->status();
  ASSERT_TRUE(before && before->code == status::ok);
  std::map<std::string, std::vector<std::pair<std::string, uint64_t>>>
      replicas_before;
  for (auto& n : before->nodes) {
    if (n.role == "worker") {
      replicas_before[n.name] = n.replicas;
    }
  }
  std::cout << "[info] before the restart:\n" << describe(*before);

  auto& old_head = cluster_->head();
  old_head.signal(SIGKILL);
  ASSERT_TRUE(old_head.wait_exit(2s));
  auto restarted_at = steady::now();
  cluster_->start_head();
  ASSERT_TRUE(cluster_->wait_head_ready(10s)) << "the new head did not answer";
  auto ready_ms = ms_between(restarted_at, steady::now());
  auto ready_at = steady::now();
  // Re-registered: every worker up with the replicas it had.
  std::optional<double> registered_ms;
  reply last;
  while (steady::now() < ready_at + 5s) {
    auto s = cluster_->status(500ms);
    if (s && s->code == status::ok) {
      last = *s;
      size_t matched = 0;
      for (auto& n : s->nodes) {
        if (n.role == "worker" && n.state == "up" &&
            replicas_before.count(n.name) &&
            n.replicas == replicas_before[n.name]) {
          ++matched;
        }
      }
      if (matched == replicas_before.size()) {
        registered_ms = ms_between(ready_at, steady::now());
        break;
      }
    }
    std::this_thread::sleep_for(20ms);
  }
  std::cout << "[measured] head restart: new head answers ping " << ready_ms
            << " ms after start; workers re-registered with "
            << "their replicas "
            << (registered_ms ? std::to_string(*registered_ms) + " ms"
                              : std::string{"not within 5 s"})
            << " after that" << std::endl;
  ASSERT_TRUE(registered_ms) << "status after the restart:\n" << describe(last);
  EXPECT_LE(*registered_ms, 2000.0);
  // Requests succeed again, on the replicas the workers kept.
  auto t0 = steady::now();
  for (auto* m : {&echo_model, &slow_model}) {
    auto rep = cluster_->call(make_infer(*m, 4242), 10s);
    ASSERT_TRUE(rep) << reason_of(rep.error());
    ASSERT_EQ(rep->code, status::ok) << rep->error;
    EXPECT_EQ(check_outputs(*m, 4242, *rep), "");
  }
  std::cout << "[measured] head restart: first requests answered in "
            << ms_between(t0, steady::now()) << " ms" << std::endl;
  auto opts = load_opts();
  opts.duration = 3s;
  load_driver load{opts};
  load.start();
  load.join();
  expect_all_ok(load);
  load.print_summary("after head restart");
}

// The same with SIGTERM: an orderly head shutdown, then a new head.
TEST_F(chaos, head_sigterm_and_restart_workers_reregister) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto& old_head = cluster_->head();
  old_head.signal(SIGTERM);
  auto code = old_head.wait_exit(10s);
  ASSERT_TRUE(code) << "the head did not exit on SIGTERM";
  EXPECT_EQ(*code, 0);
  auto restarted_at = steady::now();
  cluster_->start_head();
  ASSERT_TRUE(cluster_->wait_head_ready(10s));
  EXPECT_TRUE(cluster_->wait_up({"w1", "w2"}, 2s))
      << "workers not up on the new head within 2 s of it answering";
  std::cout << "[measured] head sigterm+restart: workers up "
            << ms_between(restarted_at, steady::now())
            << " ms after the new head started" << std::endl;
  auto rep = cluster_->call(make_infer(slow_model, 77), 10s);
  ASSERT_TRUE(rep) << reason_of(rep.error());
  EXPECT_EQ(rep->code, status::ok) << rep->error;
}

// The only worker vanishes and a replacement joins 1.5 s later: requests
// accepted meanwhile wait for a replica instead of failing (their timeout
// is 10 s), and the replacement serves them.
TEST_F(chaos, only_worker_lost_then_replaced_loses_nothing) {
  ASSERT_NO_FATAL_FAILURE(start(1));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto opts = load_opts();
  opts.duration = 10s;
  load_driver load{opts};
  load.start();
  std::this_thread::sleep_for(3s);
  auto killed_at = steady::now();
  cluster_->node("w1")->signal(SIGKILL);
  std::this_thread::sleep_for(1500ms);
  auto& w2 = cluster_->add_worker();
  ASSERT_TRUE(cluster_->wait_up({w2.name()}, 10s));
  auto up_ms = ms_between(killed_at, steady::now());
  EXPECT_TRUE(load.wait_ok(200, 10s)) << "the replacement took no work";
  load.join();
  expect_all_ok(load);
  auto [straddled, last_ms] = load.straddling(killed_at);
  std::cout << "[measured] lone worker lost: replacement up " << up_ms
            << " ms after the kill; " << straddled
            << " requests in flight at the kill, the last answered " << last_ms
            << " ms after it" << std::endl;
  load.print_summary("lone worker replaced");
}

// Two of three workers vanish at once (a spot reclaim takes several nodes).
TEST_F(chaos, two_workers_killed_at_once_loses_nothing) {
  ASSERT_NO_FATAL_FAILURE(start(3));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto r = replicas();
  // Kill the holders of both models (or two workers if one holds both).
  std::set<std::string> victims{r["echo"].empty() ? "w1" : r["echo"].front(),
                                r["slow"].empty() ? "w2" : r["slow"].front()};
  for (auto w : {"w1", "w2", "w3"}) {
    if (victims.size() < 2) {
      victims.insert(w);
    }
  }
  std::string names;
  for (auto& v : victims) {
    names += " " + v;
  }
  auto opts = load_opts();
  opts.duration = 12s;
  load_driver load{opts};
  load.start();
  std::this_thread::sleep_for(4s);
  auto killed_at = steady::now();
  for (auto& v : victims) {
    cluster_->node(v)->signal(SIGKILL);
  }
  for (auto& v : victims) {
    EXPECT_TRUE(cluster_->wait_state(v, "down", 3s)) << v << " not down";
  }
  EXPECT_TRUE(load.wait_ok(200, 10s)) << "the survivor took no work";
  load.join();
  expect_all_ok(load);
  auto [straddled, last_ms] = load.straddling(killed_at);
  std::cout << "[measured] killed" << names << " at once: " << straddled
            << " requests in flight, the last answered " << last_ms
            << " ms after the kill" << std::endl;
  load.print_summary("two killed");
}

// A worker crashes and its supervisor restarts it at once under the same
// name, before the head's failure detector fires: the new incarnation
// replaces the old session, whose in-flight work must be re-dispatched
// (the old process will never answer it).
TEST_F(chaos, worker_restarted_under_same_name_before_timeout) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto victim = holder_of("slow");
  ASSERT_FALSE(victim.empty());
  auto opts = load_opts();
  opts.duration = 10s;
  load_driver load{opts};
  load.start();
  std::this_thread::sleep_for(3s);
  auto killed_at = steady::now();
  auto* old = cluster_->node(victim);
  old->signal(SIGKILL);
  ASSERT_TRUE(old->wait_exit(2s));
  cluster_->restart(victim);
  EXPECT_TRUE(load.wait_ok(200, 10s)) << "serving stalled";
  EXPECT_TRUE(cluster_->wait_state(victim, "up", 5s))
      << "the restarted " << victim << " is not up";
  load.join();
  expect_all_ok(load);
  auto [straddled, last_ms] = load.straddling(killed_at, "slow");
  std::cout << "[measured] " << victim
            << " killed and restarted at once: " << straddled
            << " slow requests in flight, the last answered " << last_ms
            << " ms after the kill" << std::endl;
  load.print_summary("same-name restart");
  auto& head = cluster_->head();
  auto log = head.log();
  std::cout << "[info] head saw the restart as: "
            << (log.find("restarted") != std::string::npos
                    ? "a new incarnation (node restarted)"
                    : "no 'restarted' line in its log")
            << std::endl;
}

// A freeze shorter than cluster.timeout_ms (the node turns suspect, not
// down): requests are only delayed; nothing fails, nothing is answered
// twice.
TEST_F(chaos, brief_freeze_below_timeout_only_delays) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto victim = holder_of("slow");
  ASSERT_FALSE(victim.empty());
  auto before = head_metric("shoal_requests_redispatched_total");
  auto opts = load_opts();
  opts.duration = 8s;
  load_driver load{opts};
  load.start();
  std::this_thread::sleep_for(3s);
  auto* proc = cluster_->node(victim);
  std::set<std::string> seen;
  auto frozen_at = steady::now();
  proc->signal(SIGSTOP);
  while (steady::now() < frozen_at + 600ms) {
    if (auto st = cluster_->node_state(victim)) {
      seen.insert(*st);
    }
    std::this_thread::sleep_for(20ms);
  }
  proc->signal(SIGCONT);
  load.join();
  expect_all_ok(load);
  EXPECT_EQ(seen.count("down"), 0u)
      << victim << " reported down after a 600 ms freeze (timeout 1000 ms)";
  std::string states;
  for (auto& st : seen) {
    states += " " + st;
  }
  auto [straddled, last_ms] = load.straddling(frozen_at, "slow");
  std::cout << "[measured] 600 ms freeze of " << victim << ": states seen"
            << states << "; redispatched_total " << before << " -> "
            << head_metric("shoal_requests_redispatched_total") << "; "
            << straddled << " slow requests in flight, the last answered "
            << last_ms << " ms after the freeze" << std::endl;
  load.print_summary("brief freeze");
}

// A worker dies while it is still loading a replica (lazy placement): the
// requests waiting for that replica are placed elsewhere and answered.
TEST_F(chaos, worker_killed_while_loading_a_replica) {
  // A copy of the example models plus one that takes 1.5 s to load.
  char tmpl[] = "/tmp/shoal-chaos-models-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string root = tmpl;
  struct remove_dir {
    std::string path;
    ~remove_dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  } cleanup{root};
  const char* src = std::getenv("SOURCE_ROOT");
  ASSERT_NE(src, nullptr) << "SOURCE_ROOT is not set";
  std::filesystem::copy(std::string{src} + "/examples/models", root,
                        std::filesystem::copy_options::recursive);
  std::filesystem::create_directories(root + "/slowload/1");
  {
    std::ofstream m{root + "/slowload/1/model.toml"};
    m << "backend = \"synthetic\"\n"
         "[[inputs]]\nname = \"x\"\ndtype = \"f32\"\nshape = [-1, 16]\n"
         "[[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [-1, 16]\n"
         "[batching]\nmax_batch = 8\nmax_delay_us = 1000\n"
         "[synthetic]\nload_ms = 1500\n";
  }
  cluster_options co;
  co.models_root = root;
  ASSERT_NO_FATAL_FAILURE(start(2, co));
  const model_kind slowload{"slowload", 16};
  client_options o;
  o.endpoint = cluster_->endpoint();
  o.timeout = 15s;
  o.retries = 0;
  auto c = client::connect(o);
  ASSERT_TRUE(c);
  std::map<uint64_t, caf::expected<reply>> replies;
  auto sent_at = steady::now();
  for (uint64_t id = 1; id <= 8; ++id) {
    (*c)->submit(make_infer(slowload, id),
                 [&replies, id](auto r) { replies.emplace(id, std::move(r)); });
  }
  // The head logs where it places the replica; kill that worker mid-load.
  std::string victim;
  auto& head = cluster_->head();
  while (victim.empty() && steady::now() < sent_at + 1s) {
    (*c)->poll(10ms);
    auto log = head.log();
    auto pos = log.find("placing slowload v1 on ");
    if (pos != std::string::npos) {
      pos += std::strlen("placing slowload v1 on ");
      victim = log.substr(pos, log.find_first_of(" \n", pos) - pos);
    }
  }
  ASSERT_FALSE(victim.empty()) << "no 'placing slowload v1 on' in the head log";
  ASSERT_NE(cluster_->node(victim), nullptr) << victim;
  std::this_thread::sleep_for(300ms);
  auto killed_at = steady::now();
  cluster_->node(victim)->signal(SIGKILL);
  while (replies.size() < 8 && steady::now() < sent_at + 20s) {
    (*c)->poll(20ms);
  }
  ASSERT_EQ(replies.size(), 8u) << "requests left without a reply";
  for (auto& [id, r] : replies) {
    ASSERT_TRUE(r) << "id " << id << ": " << reason_of(r.error());
    EXPECT_EQ(r->code, status::ok) << "id " << id << ": " << r->error;
    EXPECT_NE(r->node, victim);
    EXPECT_EQ(check_outputs(slowload, id, *r), "");
  }
  EXPECT_EQ((*c)->unmatched_replies(), 0u);
  std::cout << "[measured] killed " << victim << " 300 ms into a 1500 ms "
            << "replica load: all 8 waiting requests answered "
            << ms_between(killed_at, steady::now()) << " ms after the kill"
            << std::endl;
}

// The head restarts under load: requests it held are lost with it, but a
// client that retries (same id) gets every request answered once the new
// head is up.
TEST_F(chaos, head_restart_under_load_with_client_retries) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto opts = load_opts();
  opts.duration = 10s;
  opts.timeout = 2s;
  opts.retries = 3;
  load_driver load{opts};
  load.start();
  std::this_thread::sleep_for(3s);
  auto& old_head = cluster_->head();
  auto killed_at = steady::now();
  old_head.signal(SIGKILL);
  ASSERT_TRUE(old_head.wait_exit(2s));
  cluster_->start_head();
  ASSERT_TRUE(cluster_->wait_head_ready(10s));
  auto ready_ms = ms_between(killed_at, steady::now());
  EXPECT_TRUE(load.wait_ok(200, 10s)) << "no replies after the head restart";
  load.join();
  expect_all_ok(load, /*allow_unmatched=*/true);
  auto [straddled, last_ms] = load.straddling(killed_at);
  std::cout << "[measured] head SIGKILL + restart under load: new head "
            << "answers " << ready_ms << " ms after the kill; " << straddled
            << " requests in flight at the kill, the last answered " << last_ms
            << " ms after it (client timeout 2 s, 3 retries); late replies "
            << load.unmatched() << std::endl;
  load.print_summary("head restart under load");
}

// The head freezes (SIGSTOP) for 2.5 s under load, longer than the
// failure detector's timeout on both sides: the workers declare it down
// and keep trying to rejoin; when it thaws its own timers have expired
// too. Requests it held must still be answered once, correctly (the client
// timeout, 10 s, covers the freeze).
TEST_F(chaos, head_frozen_then_thawed_answers_everything_once) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto opts = load_opts();
  opts.duration = 9s;
  // A deadline the node must honour: a request it lost track of would
  // still be answered (DEADLINE_EXCEEDED) before the client gives up.
  opts.deadline_ms = 6000;
  load_driver load{opts};
  load.start();
  std::this_thread::sleep_for(3s);
  auto& head = cluster_->head();
  auto frozen_at = steady::now();
  head.signal(SIGSTOP);
  std::this_thread::sleep_for(2500ms);
  head.signal(SIGCONT);
  auto thawed_at = steady::now();
  bool up = cluster_->wait_up({"w1", "w2"}, 5s);
  auto up_ms = ms_between(thawed_at, steady::now());
  EXPECT_TRUE(up) << "workers not up again 5 s after the head thawed";
  EXPECT_TRUE(load.wait_ok(200, 10s)) << "no replies after the head thawed";
  load.join();
  expect_all_ok(load);
  auto [straddled, last_ms] = load.straddling(frozen_at);
  std::cout << "[measured] head frozen 2.5 s: " << straddled
            << " requests in flight at the freeze, the last answered "
            << last_ms << " ms after it; workers up " << up_ms
            << " ms after the thaw" << std::endl;
  load.print_summary("head freeze");
  EXPECT_TRUE(head.running());
}

// A worker started with the wrong cluster secret is never admitted: the
// head does not list it, places nothing on it, and logs the drops.
TEST_F(chaos, worker_with_wrong_secret_is_not_admitted) {
  ASSERT_NO_FATAL_FAILURE(start(1));
  // The last --set wins, so this replaces the cluster's secret.
  auto& rogue = cluster_->add_worker(
      {}, {"--set", "cluster.secret=not-the-cluster-secret"});
  std::this_thread::sleep_for(2s);
  EXPECT_TRUE(rogue.running()) << "a worker that cannot join should keep "
                                  "trying, not exit";
  auto st = cluster_->status();
  ASSERT_TRUE(st && st->code == status::ok);
  for (auto& n : st->nodes) {
    EXPECT_NE(n.name, rogue.name()) << "a worker with the wrong secret is "
                                       "listed as "
                                    << n.state;
  }
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model, &slow_model}));
  auto r = replicas();
  for (auto& [model, holders] : r) {
    for (auto& h : holders) {
      EXPECT_EQ(h, "w1") << model << " placed on " << h;
    }
  }
  auto log = cluster_->head().log();
  // With CURVE links the rogue worker derives another head key from its
  // secret, so its handshake fails before the head's ZAP handler sees it;
  // the socket monitors of both links still see the failure, and say so.
  auto rogue_log = rogue.log();
  EXPECT_NE(log.find("handshake with a node at"), std::string::npos);
  EXPECT_NE(log.find("cluster.secret differs"), std::string::npos);
  EXPECT_NE(rogue_log.find("handshake with the head at"), std::string::npos);
  EXPECT_NE(rogue_log.find("cluster.secret differs"), std::string::npos);
  EXPECT_EQ(rogue_log.find("joined head"), std::string::npos);
  std::cout << "[info] head log about the rogue worker:\n"
            << drop_lines_of(log) << "[info] the rogue worker's own log:\n"
            << rogue_log;
}

// -- forged node-link frames
// ----------------------------------------------------

namespace {

// Just enough MessagePack to forge link envelopes
// (net/link_envelope.hpp) without the cluster secret.
struct mp {
  std::string out;
  mp& map(uint8_t n) {
    out += static_cast<char>(0x80 | n);
    return *this;
  }
  mp& str(const std::string& s) {
    if (s.size() < 32) {
      out += static_cast<char>(0xa0 | s.size());
    } else {
      out += static_cast<char>(0xd9);
      out += static_cast<char>(s.size());
    }
    out += s;
    return *this;
  }
  mp& uint(uint64_t v) {
    out += static_cast<char>(0xcf);
    for (int i = 7; i >= 0; --i) {
      out += static_cast<char>((v >> (8 * i)) & 0xff);
    }
    return *this;
  }
  mp& bin(const std::string& b) {
    out += static_cast<char>(0xc4);
    out += static_cast<char>(b.size());
    out += b;
    return *this;
  }
};

std::string forged_envelope(const std::string& type, const std::string& from,
                            uint64_t seq, std::mt19937_64& rng,
                            bool with_mac = true) {
  std::string mac(32, '\0');
  for (auto& c : mac) {
    c = static_cast<char>(rng());
  }
  mp m;
  m.map(with_mac ? 7 : 6)
      .str("v")
      .uint(1)
      .str("t")
      .str(type)
      .str("from")
      .str(from)
      .str("inc")
      .uint(0x1234567890ull)
      .str("seq")
      .uint(seq)
      .str("body")
      .bin("");
  if (with_mac) {
    m.str("mac").bin(mac);
  }
  return m.out;
}

size_t count_drop_lines(const std::string& log) {
  size_t n = 0;
  std::istringstream in{log};
  std::string line;
  while (std::getline(in, line)) {
    std::string lower = line;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    n += lower.find("drop") != std::string::npos;
  }
  return n;
}

} // namespace

// (f) Garbage and wrong-secret frames on the head's cluster.listen: dropped
// and logged; the head keeps serving and the intruder never becomes a node.
TEST_F(chaos, forged_link_frames_are_dropped_and_logged) {
  ASSERT_NO_FATAL_FAILURE(start(1));
  ASSERT_NO_FATAL_FAILURE(warm_up({&echo_model}));
  zmq::context_t ctx;
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::routing_id, "intruder");
  // A plain socket never completes the CURVE handshake, so its sends would
  // wait for a peer forever: give up on each after a moment.
  s.set(zmq::sockopt::sndtimeo, 10);
  s.connect(cluster_->link_endpoint());
  std::mt19937_64 rng{7};
  auto& head = cluster_->head();
  auto drops0 = count_drop_lines(head.log());

  // Phase 1: garbage. Random bytes, an empty frame, msgpack that is not a
  // map, a map of wrong types, a multi-frame message, a huge claimed length.
  for (int i = 0; i < 200; ++i) {
    std::string junk(static_cast<size_t>(rng() % 300), '\0');
    for (auto& c : junk) {
      c = static_cast<char>(rng());
    }
    s.send(zmq::buffer(junk), zmq::send_flags::none);
  }
  s.send(zmq::buffer(std::string{}), zmq::send_flags::none);
  s.send(zmq::buffer(std::string{"\x93\x01\x02\x03"}), zmq::send_flags::none);
  s.send(zmq::buffer(mp{}.map(2).str("v").str("one").str("t").uint(5).out),
         zmq::send_flags::none);
  s.send(zmq::buffer(std::string{"\xdf\xff\xff\xff\xff", 5}),
         zmq::send_flags::none);
  s.send(zmq::buffer(std::string{"a"}), zmq::send_flags::sndmore);
  s.send(zmq::buffer(std::string{"b"}), zmq::send_flags::none);
  auto deadline = steady::now() + 3s;
  while (count_drop_lines(head.log()) <= drops0 && steady::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  auto drops1 = count_drop_lines(head.log());
  // The links run CURVE (keys derived from cluster.secret): a plain socket
  // never completes its handshake, so its frames are not even read and
  // nothing needs logging. What matters is below: no answer, no node, and
  // the head serving on. (Frame checks themselves: fuzz_link, node_link.)
  (void)drops1;
  (void)drops0;

  // Phase 2: well-formed envelopes with a wrong MAC (as if signed with
  // another secret) and without one: a hello from a stranger, and a
  // heartbeat claiming to be the real worker w1. Resent until a new drop
  // line shows up, since drop logging is rate-limited.
  uint64_t seq = 1;
  deadline = steady::now() + 4s;
  while (count_drop_lines(head.log()) <= drops1 && steady::now() < deadline) {
    s.send(zmq::buffer(forged_envelope("link.hello", "intruder", seq++, rng)),
           zmq::send_flags::none);
    s.send(zmq::buffer(forged_envelope("link.hb", "w1", seq++, rng)),
           zmq::send_flags::none);
    s.send(zmq::buffer(
               forged_envelope("link.hello", "intruder", seq++, rng, false)),
           zmq::send_flags::none);
    std::this_thread::sleep_for(200ms);
  }
  // Nothing forged earns an answer (no welcome, no rejoin): the head must
  // not talk to a peer that cannot prove it holds the secret.
  size_t answers = 0;
  zmq::message_t in;
  while (s.recv(in, zmq::recv_flags::dontwait)) {
    ++answers;
  }
  EXPECT_EQ(answers, 0u) << "the head answered forged frames";
  auto drops2 = count_drop_lines(head.log());
  (void)drops2;
  std::cout << "[info] head log lines about dropped frames:\n"
            << drop_lines_of(head.log());

  // The head keeps serving, w1 stays up, the intruder is nobody.
  EXPECT_TRUE(head.running()) << "the head exited";
  auto rep = cluster_->call(make_infer(echo_model, 31337), 10s);
  ASSERT_TRUE(rep) << reason_of(rep.error());
  EXPECT_EQ(rep->code, status::ok) << rep->error;
  EXPECT_EQ(rep->node, "w1");
  auto st = cluster_->status();
  ASSERT_TRUE(st && st->code == status::ok);
  for (auto& n : st->nodes) {
    EXPECT_NE(n.name, "intruder") << "a forged hello registered a node";
    if (n.name == "w1") {
      EXPECT_EQ(n.state, "up");
    }
  }
  auto m = cluster_->head_metrics();
  EXPECT_FALSE(m.empty()) << "the head's /metrics stopped answering";
}

// Placement by device on workers without a GPU: a `gpu` model is refused at
// once (UNAVAILABLE naming the model and its estimate, not a wait until the
// deadline), an `any` model runs on a worker's CPU, and the status op lists
// each node's devices (none here).
TEST_F(chaos, gpu_model_without_a_gpu_worker_fails_fast) {
  char tmpl[] = "/tmp/shoal-chaos-models-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string root = tmpl;
  struct remove_dir {
    std::string path;
    ~remove_dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  } cleanup{root};
  // relu over 4 f32: a graph with no weights file.
  for (std::string device : {"gpu", "any"}) {
    std::filesystem::create_directories(root + "/" + device + "-relu/1");
    std::ofstream m{root + "/" + device + "-relu/1/model.toml"};
    m << "backend = \"cpu\"\n"
         "[[inputs]]\nname = \"x\"\ndtype = \"f32\"\nshape = [-1, 4]\n"
         "[[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [-1, 4]\n"
         "[resources]\ndevice = \""
      << device
      << "\"\nmemory_bytes = 1048576\n"
         "[[layers]]\nop = \"relu\"\n";
  }
  cluster_options co;
  co.models_root = root;
  ASSERT_NO_FATAL_FAILURE(start(2, co));
  auto st = cluster_->status();
  ASSERT_TRUE(st && st->code == status::ok);
  ASSERT_EQ(st->nodes.size(), 3u);
  for (auto& n : st->nodes) {
    if (!n.devices.empty()) {
      GTEST_SKIP() << n.name << " has a GPU: this test is about none";
    }
  }

  auto relu = [](const std::string& model, uint64_t id) {
    request r;
    r.id = request_id::of(id);
    r.model = model;
    r.cache = cache_mode::bypass;
    tensor t;
    t.name = "x";
    t.shape = {1, 4};
    float x[4] = {-1, 2, -3, 4};
    t.data.resize(sizeof(x));
    std::memcpy(t.data.data(), x, sizeof(x));
    r.inputs.push_back(std::move(t));
    return r;
  };
  auto sent = steady::now();
  auto rep = cluster_->call(relu("gpu-relu", 1), 10s);
  auto took = ms_between(sent, steady::now());
  ASSERT_TRUE(rep) << reason_of(rep.error());
  EXPECT_EQ(rep->code, status::unavailable);
  EXPECT_NE(rep->error.find("no worker has a GPU with room for gpu-relu v1 "
                            "(needs 1048576 bytes)"),
            std::string::npos)
      << rep->error;
  EXPECT_LT(took, 2000) << "the spawn waited instead of failing";

  rep = cluster_->call(relu("any-relu", 2), 10s);
  ASSERT_TRUE(rep) << reason_of(rep.error());
  ASSERT_EQ(rep->code, status::ok) << rep->error;
  EXPECT_TRUE(rep->node == "w1" || rep->node == "w2") << rep->node;
  ASSERT_EQ(rep->outputs.size(), 1u);
  float y[4];
  ASSERT_EQ(rep->outputs[0].data.size(), sizeof(y));
  std::memcpy(y, rep->outputs[0].data.data(), sizeof(y));
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 2.0f);
  EXPECT_EQ(y[3], 4.0f);
  EXPECT_EQ(holder_of("any-relu"), rep->node);
  std::cout << "[measured] gpu model refused in " << took
            << " ms with no GPU in the cluster" << std::endl;
}

// The head's side of GPUs, with a fake worker that speaks the node link
// and claims one GPU (no GPU needed): its hello's devices and its `devices`
// updates show in status, a `gpu` model is placed on it while its GPU has
// room, and refused once the GPU is full.
TEST_F(chaos, head_places_gpu_models_by_reported_gpu_memory) {
  char tmpl[] = "/tmp/shoal-chaos-models-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string root = tmpl;
  struct remove_dir {
    std::string path;
    ~remove_dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  } cleanup{root};
  std::filesystem::create_directories(root + "/gpu-relu/1");
  {
    std::ofstream m{root + "/gpu-relu/1/model.toml"};
    m << "backend = \"cpu\"\n"
         "[[inputs]]\nname = \"x\"\ndtype = \"f32\"\nshape = [-1, 4]\n"
         "[[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [-1, 4]\n"
         "[resources]\ndevice = \"gpu\"\nmemory_bytes = 1073741824\n"
         "[[layers]]\nop = \"relu\"\n";
  }
  cluster_options co;
  co.models_root = root;
  ASSERT_NO_FATAL_FAILURE(start(0, co));

  constexpr uint64_t gib = uint64_t{1} << 30;
  node_device gpu;
  gpu.name = "gpu:0";
  gpu.product = "Fake GPU 16GB";
  gpu.total_bytes = 16 * gib;
  gpu.used_bytes = 1 * gib;
  worker_hello hello;
  hello.devices = {gpu};
  node_link_config lc;
  lc.role = link_role::member;
  lc.name = "g1";
  lc.secret = cluster_->secret();
  // A node that knows the secret derives the link's CURVE keys from it.
  lc.curve.enabled = true;
  lc.curve.own = derive_key_pair(lc.secret, "member");
  lc.curve.hub_public_key = derive_key_pair(lc.secret, "hub").public_key;
  lc.endpoint = cluster_->link_endpoint();
  encode(hello, lc.hello);
  std::mutex mtx;
  std::vector<std::string> spawns; // models the head asked g1 to start
  std::shared_ptr<node_link> link;
  link_handlers lh;
  lh.on_message = [&](const std::string&, uint64_t, std::string_view type,
                      std::string_view body) {
    if (parse_cluster_op(type) != cluster_op::spawn) {
      return;
    }
    spawn_msg m;
    if (decode(std::string{body}, m)) {
      return;
    }
    {
      std::lock_guard guard{mtx};
      spawns.push_back(m.model);
    }
    // Refused, so that the test needs no executor behind this worker.
    std::lock_guard guard{mtx};
    if (link) {
      send(*link, "", spawn_fail_msg{m.model, m.version, "fake worker"});
    }
  };
  lh.on_peer_state = [](const std::string&, uint64_t, peer_state,
                        const std::string&) {};
  auto started = node_link::start(lc, std::move(lh));
  ASSERT_TRUE(started) << reason_of(started.error());
  {
    std::lock_guard guard{mtx};
    link = std::shared_ptr<node_link>{std::move(*started)};
  }
  ASSERT_TRUE(cluster_->wait_up({"g1"}, 10s)) << "the fake worker is not up";

  // The hello's GPU is in status.
  auto devices_of_g1 = [&]() -> std::vector<node_device> {
    auto st = cluster_->status();
    if (!st || st->code != status::ok) {
      return {};
    }
    for (auto& n : st->nodes) {
      if (n.name == "g1") {
        return n.devices;
      }
    }
    return {};
  };
  auto g1 = devices_of_g1();
  ASSERT_EQ(g1.size(), 1u);
  EXPECT_EQ(g1[0], gpu);
  // shoalctl prints it under its node.
  if (const char* ctl = std::getenv("SHOALCTL")) {
    auto cmd = std::string{ctl} + " --endpoint " + cluster_->endpoint() +
               " status 2>&1";
    std::string out;
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
      char buf[4096];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) {
        out.append(buf, n);
      }
      ::pclose(p);
    }
    EXPECT_NE(out.find("\ng1 "), std::string::npos) << out;
    EXPECT_NE(out.find("\n  gpu:0  Fake GPU 16GB  1.0 GiB used of 16.0 GiB  "
                       "replicas -\n"),
              std::string::npos)
        << out;
  }

  auto relu = [](uint64_t id) {
    request r;
    r.id = request_id::of(id);
    r.model = "gpu-relu";
    r.cache = cache_mode::bypass;
    tensor t;
    t.name = "x";
    t.shape = {1, 4};
    t.data.resize(16);
    r.inputs.push_back(std::move(t));
    return r;
  };
  // 15 GiB free: placed on g1 (which refuses it).
  auto rep = cluster_->call(relu(1), 10s);
  ASSERT_TRUE(rep) << reason_of(rep.error());
  EXPECT_EQ(rep->code, status::unavailable);
  EXPECT_NE(rep->error.find("g1: fake worker"), std::string::npos)
      << rep->error;
  {
    std::lock_guard guard{mtx};
    EXPECT_EQ(spawns, std::vector<std::string>{"gpu-relu"});
  }

  // The GPU fills up (another process): the update reaches status...
  gpu.used_bytes = 15 * gib + gib / 2;
  ASSERT_FALSE(send(*link, "", devices_msg{{gpu}}));
  auto deadline = steady::now() + 5s;
  for (;;) {
    g1 = devices_of_g1();
    bool seen = !g1.empty() && g1[0].used_bytes == gpu.used_bytes;
    if (seen || steady::now() >= deadline) {
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(g1.size(), 1u);
  EXPECT_EQ(g1[0].used_bytes, gpu.used_bytes);
  // ... and placement: half a GiB left, the model needs one.
  std::this_thread::sleep_for(1100ms); // the router's fail-fast second
  rep = cluster_->call(relu(2), 10s);
  ASSERT_TRUE(rep) << reason_of(rep.error());
  EXPECT_EQ(rep->code, status::unavailable);
  EXPECT_NE(rep->error.find("no worker has a GPU with room for gpu-relu v1 "
                            "(needs 1073741824 bytes)"),
            std::string::npos)
      << rep->error;
  {
    std::lock_guard guard{mtx};
    EXPECT_EQ(spawns.size(), 1u) << "placed on a full GPU";
  }
  send(*link, "", leave_msg{});
  std::this_thread::sleep_for(20ms);
  std::shared_ptr<node_link> gone;
  {
    std::lock_guard guard{mtx};
    gone = std::move(link);
  }
  gone->stop();
}
