// bench_scale: one head (`shoald --role head`) against many simulated
// workers, on loopback.
//
// The workers are light: one thread of this binary drives every one of them,
// each a DEALER socket of its own (one ZeroMQ context, epoll over the
// sockets' ZMQ_FDs) that speaks the real node link protocol with the link's
// own envelope and cluster codec functions: CURVE keys derived from the
// cluster secret, a hello listing one replica of the zero-cost model `echo`
// v2 (which the head adopts), heartbeats every 100 ms or the longer interval
// the head announces (as a member link does), `ready` for every
// `spawn`, and `done` with the correct outputs (y = 3x + 1) for every `exec`.
//
// Measured with one simulated worker (the baseline) and again with all of
// them (1000; --quick 200): the head's CPU while idle (membership alone),
// the `status` op's latency, the time to place a model's first replica,
// and the miss throughput spread over the workers' replicas; with all of
// them also the join time and the time until the head reports a frozen
// worker (one that stops heartbeating) down. See bench/README.md.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <string>
#include <thread>
#include <vector>

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <spdlog/fmt/fmt.h>
#include <zmq.hpp>

#include "bench/harness/cli.hpp"
#include "bench/harness/load.hpp"
#include "bench/harness/proc_stats.hpp"
#include "bench/harness/report.hpp"
#include "bench/harness/run.hpp"
#include "bench/harness/stats.hpp"
#include "net/link/cluster_codec.hpp"
#include "net/link/link_envelope.hpp"
#include "net/link/node_link.hpp"
#include "net/security/curve_keys.hpp"
#include "net/wire/codec.hpp"
#include "tests/support/cluster.hpp"

namespace {

using namespace shoal::bench;
using namespace std::chrono_literals;

// -- options ------------------------------------------------------------------

struct options {
  common_options common;
  bool keep = false;
  uint64_t workers = 1000;
  double idle_s = 5;          // CPU sampling window
  uint64_t status_calls = 40; // status op round trips per phase
  double duration_s = 3;      // throughput window
  uint64_t inflight = 64;     // throughput
  uint64_t timeout_ms = 1000; // cluster.timeout_ms of the head
  int ping_ms = 10000;        // ZMTP heartbeat interval of the members
};

options parse_args(int argc, char** argv) {
  options o;
  arg_parser p{"bench_scale",
               "one head against many simulated workers: membership CPU, "
               "status, placement, failure detection, miss throughput"};
  p.add_common(o.common, "200 workers, shorter windows (~1 min)", true);
  p.option("--workers", "N", o.workers, "simulated workers (1000; quick 200)");
  p.option("--idle", "S", o.idle_s, "CPU sampling window (5; quick 2)");
  p.option("--status-calls", "N", o.status_calls,
           "status round trips per phase (40; quick 15)");
  p.option("--duration", "S", o.duration_s, "throughput window (3; quick 1)");
  p.option("--inflight", "N", o.inflight,
           "requests in flight for throughput (64)");
  p.option("--member-ping-ms", "MS", o.ping_ms,
           "ZMTP ping interval of the simulated workers (10000, as a "
           "member link's: 10 x the timeout; 1000 and 100 for shoald "
           "before it)");
  p.flag("--keep", o.keep, "keep the temporary directory with the head's log");
  p.parse(argc, argv);
  if (o.common.quick) {
    o.workers = p.given("--workers") ? o.workers : 200;
    o.idle_s = p.given("--idle") ? o.idle_s : 2;
    o.status_calls = p.given("--status-calls") ? o.status_calls : 15;
    o.duration_s = p.given("--duration") ? o.duration_s : 1;
  }
  o.workers = std::max<uint64_t>(2, o.workers);
  o.idle_s = std::max(0.5, o.idle_s);
  o.status_calls = std::max<uint64_t>(3, o.status_calls);
  o.duration_s = std::max(0.2, o.duration_s);
  o.inflight = std::max<uint64_t>(1, o.inflight);
  return o;
}

// Two sockets and an eventfd per simulated worker, and the head's
// connections: more than the usual soft limit of 1024.
void raise_fd_limit(uint64_t workers) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    return;
  }
  rlim_t want = 4 * workers + 1024;
  if (rl.rlim_cur >= want) {
    return;
  }
  rl.rlim_cur = std::min(want, rl.rlim_max);
  ::setrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < want) {
    std::fprintf(stderr,
                 "bench_scale: open files limited to %llu; %" PRIu64
                 " workers may need %llu\n",
                 static_cast<unsigned long long>(rl.rlim_cur), workers,
                 static_cast<unsigned long long>(want));
  }
}

double thread_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec / 1e9;
}

// -- simulated workers --------------------------------------------------------

struct sim_member {
  std::string name;
  uint64_t inc = 0;
  uint64_t seq = 0;
  uint64_t hub_inc = 0;
  uint64_t last_hello_seq = 0;
  bool joined = false;
  bool frozen = false;
  // The heartbeat interval: 100 ms, or what the head announced.
  std::chrono::milliseconds ivl{100};
  // Its own heartbeat timer waits until then: it answers the head's.
  bench_clock::time_point hold_until{};
  uint64_t next_replica = 2; // 1 is the adopted echo replica
  zmq::socket_t sock;
  int fd = -1;
  bench_clock::time_point last_sent{};
};

// Every simulated worker, driven by one thread. The main thread only sets
// targets (how many, which one to freeze) and reads counters.
class member_driver {
public:
  member_driver(std::string endpoint, std::string secret, size_t max_members,
                int ping_ms, std::chrono::milliseconds max_ivl)
      : endpoint_(std::move(endpoint)), secret_(std::move(secret)),
        ping_ms_(ping_ms), max_ivl_(max_ivl),
        execs_(new std::atomic<uint64_t>[max_members]), max_(max_members) {
    for (size_t i = 0; i < max_; ++i) {
      execs_[i] = 0;
    }
    auto hub = shoal::derive_key_pair(secret_, "hub");
    own_ = shoal::derive_key_pair(secret_, "member");
    hub_public_ = hub.public_key;
    ctx_.set(zmq::ctxopt::max_sockets, static_cast<int>(max_ + 64));
    ctx_.set(zmq::ctxopt::io_threads, 2);
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (wake_fd_ < 0 || ep_ < 0) {
      throw bench_error{"eventfd/epoll_create1 failed"};
    }
    add_fd(wake_fd_, max_);
    thread_ = std::thread{[this] { run(); }};
  }

  member_driver(const member_driver&) = delete;
  member_driver& operator=(const member_driver&) = delete;

  ~member_driver() {
    stop_ = true;
    wake();
    thread_.join();
    members_.clear();
    ctx_.close();
    ::close(wake_fd_);
    ::close(ep_);
  }

  static std::string name_of(size_t i) { return fmt::format("s{:04}", i + 1); }

  // Grows to `n` members (never shrinks).
  void set_members(size_t n) {
    target_ = std::min(n, max_);
    wake();
  }

  // Member `i` stops sending (heartbeats included) and reading.
  void freeze(size_t i) {
    freeze_ = static_cast<int64_t>(i);
    wake();
  }

  // Execs answered by member i so far.
  uint64_t execs(size_t i) const { return execs_[i].load(); }
  uint64_t rejoins() const { return rejoins_.load(); }
  uint64_t bad_frames() const { return bad_.load(); }
  // CPU seconds of the driver thread so far.
  double cpu_seconds() const { return cpu_.load(); }

private:
  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof(one));
  }

  void add_fd(int fd, size_t index) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = index;
    if (::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw bench_error{"epoll_ctl failed"};
    }
  }

  void add_member() {
    auto m = std::make_unique<sim_member>();
    size_t index = members_.size();
    m->name = name_of(index);
    m->inc = shoal::new_incarnation();
    m->sock = zmq::socket_t{ctx_, zmq::socket_type::dealer};
    auto key = [](const shoal::curve_key& k) {
      return zmq::const_buffer{k.data(), k.size()};
    };
    m->sock.set(zmq::sockopt::linger, 0);
    m->sock.set(zmq::sockopt::sndhwm, 0);
    m->sock.set(zmq::sockopt::rcvhwm, 0);
    m->sock.set(zmq::sockopt::curve_serverkey, key(hub_public_));
    m->sock.set(zmq::sockopt::curve_publickey, key(own_.public_key));
    m->sock.set(zmq::sockopt::curve_secretkey, key(own_.secret_key));
    m->sock.set(zmq::sockopt::routing_id,
                m->name + "/" + fmt::format("{:x}", m->inc));
    m->sock.set(zmq::sockopt::immediate, 1);
    m->sock.set(zmq::sockopt::reconnect_ivl, 100);
    // ZMTP pings as a member's link sends them: the head answers each.
    m->sock.set(zmq::sockopt::heartbeat_ivl, ping_ms_);
    m->sock.set(zmq::sockopt::heartbeat_timeout, 1000);
    m->sock.connect(endpoint_);
    m->fd = m->sock.get(zmq::sockopt::fd);
    add_fd(m->fd, index);
    members_.push_back(std::move(m));
    // Spread the first hellos (and so the heartbeats) over an interval.
    auto first = bench_clock::now() +
                 std::chrono::microseconds{(index * 7919) % 100'000};
    timers_.push({first, index});
  }

  bool transmit(size_t i, std::string_view type, uint64_t to_inc,
                std::string_view body) {
    auto& m = *members_[i];
    frame_.clear();
    shoal::link_envelope env{type, m.name, m.inc, to_inc, ++m.seq, body};
    if (shoal::encode_envelope(env, secret_, limits_, frame_)) {
      return false;
    }
    dirty_.push_back(i);
    m.last_sent = bench_clock::now();
    return m.sock.send(zmq::buffer(frame_), zmq::send_flags::dontwait)
        .has_value();
  }

  template <class Body>
  void send_op(size_t i, const Body& body) {
    std::string b;
    shoal::encode(body, b);
    transmit(i, shoal::to_string(shoal::op_of(body)), members_[i]->hub_inc, b);
  }

  void send_hello(size_t i) {
    shoal::worker_hello h;
    h.replicas.push_back({1, "echo", echo_version, "cpu", 0});
    std::string body;
    shoal::encode(h, body);
    transmit(i, "link.hello", 0, body);
    members_[i]->last_hello_seq = members_[i]->seq;
  }

  // Hello until welcomed, then a heartbeat whenever nothing else went to
  // the hub during the last half interval.
  void on_timer(size_t i, bench_clock::time_point now) {
    auto& m = *members_[i];
    if (m.frozen) {
      return;
    }
    if (!m.joined) {
      send_hello(i);
    } else if (now - m.last_sent >= m.ivl / 2) {
      transmit(i, "link.hb", m.hub_inc, {});
    }
  }

  // The interval the head announced with a welcome or heartbeat, as a
  // member link takes it (100 ms from a head that announces none).
  void learn_ivl(sim_member& m, std::string_view body) {
    m.ivl = 100ms;
    if (body.size() != 9 || static_cast<uint8_t>(body[0]) != 0xcf) {
      return;
    }
    uint64_t ms = 0;
    for (size_t k = 1; k < 9; ++k) {
      ms = (ms << 8) | static_cast<uint8_t>(body[k]);
    }
    m.ivl = std::clamp(std::chrono::milliseconds{static_cast<int64_t>(
                           std::min<uint64_t>(ms, 1u << 30))},
                       std::chrono::milliseconds{100}, max_ivl_);
  }

  // The head's heartbeat, answered at once as a member link does (unless
  // something else went to the head during the last half interval); the
  // member's own timer waits for 1.25 intervals.
  void answer_hb(size_t i, std::string_view body) {
    auto& m = *members_[i];
    learn_ivl(m, body);
    auto now = bench_clock::now();
    if (m.joined && now - m.last_sent >= m.ivl / 2) {
      transmit(i, "link.hb", m.hub_inc, {});
    }
    m.hold_until = now + m.ivl + m.ivl / 4;
  }

  // The hub asks for a hello: it restarted, or declared this member down.
  void on_rejoin(size_t i, std::string_view body) {
    auto& m = *members_[i];
    uint64_t refused = 0;
    if (body.size() != 9 || static_cast<uint8_t>(body[0]) != 0xcf) {
      return;
    }
    for (size_t k = 1; k < 9; ++k) {
      refused = (refused << 8) | static_cast<uint8_t>(body[k]);
    }
    if (refused < m.last_hello_seq) {
      return;
    }
    ++rejoins_;
    m.joined = false;
    m.inc = shoal::new_incarnation();
    send_hello(i);
  }

  void on_exec(size_t i, std::string_view body) {
    shoal::exec_msg x;
    if (shoal::decode(std::string{body}, x)) {
      ++bad_;
      return;
    }
    shoal::done_msg d;
    d.replica = x.replica;
    for (auto& item : x.items) {
      shoal::exec_result r;
      r.ticket = item.ticket;
      r.code = static_cast<uint8_t>(shoal::status::ok);
      r.batch_size = 1;
      std::vector<shoal::tensor> outs;
      if (!item.inputs.empty()) {
        auto y = std::move(item.inputs[0]);
        y.name = "y";
        for (size_t k = 0; k + sizeof(float) <= y.data.size();
             k += sizeof(float)) {
          float v;
          std::memcpy(&v, y.data.data() + k, sizeof(v));
          v = 3 * v + 1;
          std::memcpy(y.data.data() + k, &v, sizeof(v));
        }
        outs.push_back(std::move(y));
      }
      shoal::encode_tensors(outs, r.outputs_encoded);
      d.results.push_back(std::move(r));
    }
    execs_[i].fetch_add(1, std::memory_order_relaxed);
    send_op(i, d);
  }

  void on_op(size_t i, std::string_view type, std::string_view body) {
    auto op = shoal::parse_cluster_op(type);
    if (op == shoal::cluster_op::exec) {
      return on_exec(i, body);
    }
    if (op == shoal::cluster_op::spawn) {
      shoal::spawn_msg s;
      if (shoal::decode(std::string{body}, s)) {
        ++bad_;
        return;
      }
      auto& m = *members_[i];
      send_op(i, shoal::replica_desc{m.next_replica++, s.model, s.version,
                                     "cpu", 0});
    }
    // retire, drain: nothing to stop here.
  }

  void handle(size_t i, const zmq::message_t& msg) {
    auto& m = *members_[i];
    auto env = shoal::decode_envelope(msg.data<uint8_t>(), msg.size(), secret_,
                                      limits_);
    if (!env) {
      ++bad_;
      return;
    }
    if (env->to_inc != 0 && env->to_inc != m.inc) {
      return; // to an earlier incarnation
    }
    if (env->type == "link.welcome") {
      m.joined = true;
      m.hub_inc = env->inc;
      return learn_ivl(m, env->body);
    }
    if (env->type == "link.hb") {
      return answer_hb(i, env->body);
    }
    if (env->type == "link.rejoin") {
      return on_rejoin(i, env->body);
    }
    if (!m.joined) {
      if (env->to_inc != m.inc) {
        return;
      }
      // The welcome went over another connection; this one counts.
      m.joined = true;
      m.hub_inc = env->inc;
    }
    if (env->type.substr(0, 5) == "link.") {
      return;
    }
    on_op(i, env->type, env->body);
  }

  // Reads until the socket has nothing: that also resets its ZMQ_FD.
  void drain(size_t i) {
    auto& m = *members_[i];
    if (m.frozen) {
      return;
    }
    for (;;) {
      zmq::message_t msg;
      if (!m.sock.recv(msg, zmq::recv_flags::dontwait)) {
        return;
      }
      handle(i, msg);
    }
  }

  void apply_targets() {
    while (members_.size() < target_.load()) {
      add_member();
    }
    auto f = freeze_.exchange(-1);
    if (f >= 0 && static_cast<size_t>(f) < members_.size()) {
      auto& m = *members_[static_cast<size_t>(f)];
      m.frozen = true;
      ::epoll_ctl(ep_, EPOLL_CTL_DEL, m.fd, nullptr);
    }
  }

  int fire_timers() {
    auto now = bench_clock::now();
    while (!timers_.empty() && timers_.top().first <= now) {
      auto [at, i] = timers_.top();
      timers_.pop();
      if (members_[i]->hold_until > now) {
        timers_.push({members_[i]->hold_until, i});
        continue;
      }
      on_timer(i, now);
      auto ivl = members_[i]->ivl;
      auto next = at + ivl;
      timers_.push({next <= now ? now + ivl : next, i});
    }
    if (timers_.empty()) {
      return 100;
    }
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(
        timers_.top().first - bench_clock::now());
    return static_cast<int>(std::clamp<int64_t>(wait.count(), 0, 100));
  }

  void run() {
    std::vector<epoll_event> events(512);
    while (!stop_) {
      apply_targets();
      int wait = fire_timers();
      while (!dirty_.empty()) {
        auto d = std::move(dirty_);
        dirty_.clear();
        for (auto i : d) {
          drain(i);
        }
      }
      int n = ::epoll_wait(ep_, events.data(), static_cast<int>(events.size()),
                           wait);
      for (int k = 0; k < n; ++k) {
        auto i = static_cast<size_t>(events[k].data.u64);
        if (i == max_) {
          uint64_t v;
          [[maybe_unused]] auto r = ::read(wake_fd_, &v, sizeof(v));
        } else {
          drain(i);
        }
      }
      cpu_ = thread_cpu_seconds();
    }
  }

  using timer = std::pair<bench_clock::time_point, size_t>;

  std::string endpoint_, secret_;
  int ping_ms_;
  std::chrono::milliseconds max_ivl_;
  shoal::curve_key_pair own_;
  shoal::curve_key hub_public_{};
  shoal::envelope_limits limits_;
  zmq::context_t ctx_;
  std::unique_ptr<std::atomic<uint64_t>[]> execs_;
  size_t max_;
  int wake_fd_ = -1, ep_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> target_{0};
  std::atomic<int64_t> freeze_{-1};
  std::atomic<uint64_t> rejoins_{0}, bad_{0};
  std::atomic<double> cpu_{0};
  // Driver thread only.
  std::vector<std::unique_ptr<sim_member>> members_;
  std::priority_queue<timer, std::vector<timer>, std::greater<>> timers_;
  std::vector<size_t> dirty_;
  std::string frame_;
  std::thread thread_;
};

// -- the head -----------------------------------------------------------------

// The models the head serves: echo v2 (what the workers' hellos list) and
// two more zero-cost models that no worker runs, placed by a first request.
std::string write_models(const std::string& dir) {
  auto root = dir + "/models";
  auto model = [&](const std::string& name, int version) {
    auto d = root + "/" + name + "/" + std::to_string(version);
    std::filesystem::create_directories(d);
    std::ofstream m{d + "/model.toml"};
    m << "backend = \"synthetic\"\n"
         "[[inputs]]\nname = \"x\"\ndtype = \"f32\"\nshape = [-1, 256]\n"
         "[[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [-1, 256]\n"
         "[batching]\nmax_batch = 32\nmax_delay_us = 0\n"
         "[synthetic]\nscale = 3.0\noffset = 1.0\n";
  };
  model("echo", static_cast<int>(echo_version));
  model("place-1", 1);
  model("place-n", 1);
  return root;
}

struct status_sample {
  double ms = 0;
  size_t up = 0;     // workers listed up
  size_t nodes = 0;  // every node listed, the head included
  std::string state; // of the node asked about
  size_t bytes = 0;  // reply frame
};

// The `status` op on a DEALER of its own, one at a time.
class status_client {
public:
  status_client(zmq::context_t& ctx, const std::string& endpoint)
      : c_(ctx, endpoint) {}

  status_sample call(const std::string& node = {}) {
    auto start = bench_clock::now();
    c_.send(op_frame(shoal::op_kind::status, ++id_));
    zmq::message_t msg;
    for (;;) {
      c_.recv(msg);
      auto r = decode(msg);
      if (!r) {
        throw bench_error{"status: undecodable reply"};
      }
      if (r->id.num != id_) {
        continue; // a late reply to an earlier call
      }
      if (r->code != shoal::status::ok) {
        throw bench_error{"status: " + r->error};
      }
      status_sample s;
      s.ms = ms_since(start);
      s.nodes = r->nodes.size();
      s.bytes = msg.size();
      for (auto& n : r->nodes) {
        s.up += n.role == "worker" && n.state == "up";
        if (n.name == node) {
          s.state = n.state;
        }
      }
      return s;
    }
  }

private:
  client c_;
  uint64_t id_ = 0;
};

// Until the head lists `n` workers up; the time it took, NaN after `limit`.
double wait_workers_up(status_client& sc, size_t n,
                       std::chrono::milliseconds limit) {
  auto start = bench_clock::now();
  while (bench_clock::now() - start < limit) {
    check_interrupted();
    if (sc.call().up >= n) {
      return ms_since(start);
    }
    std::this_thread::sleep_for(50ms);
  }
  return nan_v;
}

// -- phases -------------------------------------------------------------------

struct phase_result {
  size_t workers = 0;
  double join_ms = nan_v; // until the head listed them all up
  double cpu_pct = nan_v; // head CPU while idle, % of one core
  double driver_cpu_pct = nan_v;
  percentiles status_ms; // status op round trip
  size_t status_bytes = 0;
  double ping_ms = nan_v;    // ping op round trip, p50
  double place_ms = nan_v;   // first request of an unplaced model
  double next_ms = nan_v;    // the request after it
  double tput = nan_v;       // miss throughput, req/s
  size_t served_by = 0;      // workers that ran part of it
  double detect_ms = nan_v;  // frozen worker -> listed down
  double suspect_ms = nan_v; // frozen worker -> listed suspect
};

double head_cpu_pct(pid_t head, const member_driver& drv, double seconds,
                    double* driver_pct) {
  auto c0 = cpu_seconds(head);
  auto d0 = drv.cpu_seconds();
  auto t0 = bench_clock::now();
  auto until = t0 + std::chrono::duration<double>{seconds};
  while (bench_clock::now() < until) {
    check_interrupted();
    std::this_thread::sleep_for(50ms);
  }
  double wall = ms_since(t0) / 1000;
  *driver_pct = 100 * (drv.cpu_seconds() - d0) / wall;
  return 100 * (cpu_seconds(head) - c0) / wall;
}

std::string model_frame(const std::string& model, uint64_t id) {
  shoal::request r;
  r.id = shoal::request_id::of(id);
  r.model = model;
  r.cache = shoal::cache_mode::bypass;
  shoal::tensor t;
  t.name = "x";
  t.shape = {1, row_floats};
  t.data.resize(row_floats * sizeof(float));
  r.inputs.push_back(std::move(t));
  std::string out;
  shoal::encode_request(r, out);
  return out;
}

// One request of `model`; its round trip in ms.
double timed_call(client& c, const std::string& model, uint64_t id) {
  auto start = bench_clock::now();
  c.send(model_frame(model, id));
  zmq::message_t msg;
  c.recv(msg);
  double ms = ms_since(start);
  auto r = decode(msg);
  if (!r || r->code != shoal::status::ok) {
    throw bench_error{
        model + ": " +
        (r ? std::string{shoal::to_string(r->code)} + " " + r->error
           : std::string{"undecodable reply"})};
  }
  return ms;
}

void measure_steady(const options& opts, zmq::context_t& ctx,
                    shoal::test::cluster& cl, member_driver& drv,
                    const std::string& place_model, phase_result& res) {
  std::this_thread::sleep_for(1s); // let joins and adoptions settle
  res.cpu_pct =
      head_cpu_pct(cl.head().pid(), drv, opts.idle_s, &res.driver_cpu_pct);
  std::printf("  head CPU while idle: %.2f %% of a core (driver thread %.1f "
              "%%)\n",
              res.cpu_pct, res.driver_cpu_pct);
  status_client sc{ctx, cl.endpoint()};
  std::vector<double> lat;
  for (uint64_t k = 0; k < opts.status_calls; ++k) {
    auto s = sc.call();
    lat.push_back(s.ms);
    res.status_bytes = s.bytes;
    std::this_thread::sleep_for(20ms);
  }
  res.status_ms = summarize(lat);
  std::printf("  status: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%zu bytes)\n",
              res.status_ms.p50, res.status_ms.p99, max_of(lat),
              res.status_bytes);
  client c{ctx, cl.endpoint()};
  std::vector<double> pings;
  for (uint64_t k = 0; k < opts.status_calls; ++k) {
    auto start = bench_clock::now();
    c.send(op_frame(shoal::op_kind::ping, k + 1));
    zmq::message_t msg;
    c.recv(msg);
    pings.push_back(ms_since(start));
  }
  res.ping_ms = median(pings);
  std::printf("  ping (the gateway alone): p50 %.2f ms\n", res.ping_ms);
  res.place_ms = timed_call(c, place_model, 1);
  res.next_ms = timed_call(c, place_model, 2);
  std::printf("  first request of %s (placement, spawn, ready, exec): %.2f "
              "ms; the next %.2f ms\n",
              place_model.c_str(), res.place_ms, res.next_ms);
  std::vector<uint64_t> before(res.workers);
  for (size_t i = 0; i < res.workers; ++i) {
    before[i] = drv.execs(i);
  }
  // Inputs no earlier phase sent: every request misses the cache.
  auto src = frame_source::distinct((uint64_t{1} << 40) +
                                    (uint64_t{res.workers} << 32));
  auto chk =
      reply_checker::shoal_replies(shoal::reply_source::executor, "", 16);
  auto warm = std::chrono::duration<double>{std::min(0.5, opts.duration_s)};
  auto r = run_stream(c, src, chk, opts.inflight, warm,
                      std::chrono::duration<double>{opts.duration_s}, 0,
                      "miss throughput");
  require_clean(chk, "miss throughput");
  res.tput = r.rate;
  for (size_t i = 0; i < res.workers; ++i) {
    res.served_by += drv.execs(i) > before[i];
  }
  std::printf("  miss throughput, %" PRIu64 " in flight: %.0f req/s, served "
              "by %zu worker(s)\n",
              opts.inflight, res.tput, res.served_by);
  std::fflush(stdout);
}

// Freezes one worker and polls the status op until the head lists it down.
void measure_detection(zmq::context_t& ctx, shoal::test::cluster& cl,
                       member_driver& drv, size_t victim, phase_result& res) {
  status_client sc{ctx, cl.endpoint()};
  auto name = member_driver::name_of(victim);
  auto start = bench_clock::now();
  drv.freeze(victim);
  while (ms_since(start) < 10'000) {
    check_interrupted();
    auto s = sc.call(name);
    if (s.state == "suspect" && std::isnan(res.suspect_ms)) {
      res.suspect_ms = ms_since(start);
    }
    if (s.state == "down") {
      res.detect_ms = ms_since(start);
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  std::printf("  frozen worker %s: suspect after %.0f ms, down after %.0f "
              "ms\n",
              name.c_str(), res.suspect_ms, res.detect_ms);
}

// -- report -------------------------------------------------------------------

check_row absolute(std::string metric, double v, double base,
                   std::string target, bool pass) {
  auto r = check_row::info(std::move(metric), v, base);
  r.target = std::move(target);
  r.pass = pass;
  return r;
}

void add_checks(const options& opts, const phase_result& one,
                const phase_result& all, report& rep) {
  auto n = std::to_string(all.workers);
  rep.add(absolute("head CPU idle, " + n + " workers (% core)", all.cpu_pct,
                   one.cpu_pct, "< 10 %", all.cpu_pct < 10)
              .decimals(2));
  rep.add(absolute("status p50, " + n + " workers (ms)", all.status_ms.p50,
                   one.status_ms.p50, "< 50 ms", all.status_ms.p50 < 50)
              .decimals(2));
  rep.add(check_row::info("status p99, " + n + " workers (ms)",
                          all.status_ms.p99, one.status_ms.p99)
              .decimals(2));
  rep.add(check_row::info("first replica placed and served (ms)", all.place_ms,
                          one.place_ms)
              .decimals(2));
  rep.add(absolute("frozen worker listed down (ms)", all.detect_ms,
                   static_cast<double>(opts.timeout_ms), "<= 1500",
                   all.detect_ms <= 1500)
              .decimals(0));
  rep.add(check_row::info("miss throughput over " +
                              std::to_string(all.served_by) +
                              " workers (req/s)",
                          all.tput, one.tput)
              .decimals(0));
  rep.add(check_row::info("join of " + n + " workers (ms)", all.join_ms, nan_v)
              .decimals(0));
}

shoal::bench::json to_json(const phase_result& p) {
  return json::object()
      .set("workers", static_cast<uint64_t>(p.workers))
      .set("join_ms", p.join_ms)
      .set("head_cpu_pct", p.cpu_pct)
      .set("driver_cpu_pct", p.driver_cpu_pct)
      .set("status_ms", json::object()
                            .set("p50", p.status_ms.p50)
                            .set("p99", p.status_ms.p99)
                            .set("mean", p.status_ms.mean))
      .set("status_bytes", static_cast<uint64_t>(p.status_bytes))
      .set("ping_ms", p.ping_ms)
      .set("place_ms", p.place_ms)
      .set("next_ms", p.next_ms)
      .set("throughput_rps", p.tput)
      .set("served_by", static_cast<uint64_t>(p.served_by))
      .set("suspect_ms", p.suspect_ms)
      .set("detect_ms", p.detect_ms);
}

// -- the run ------------------------------------------------------------------

shoal::test::cluster_options cluster_opts(const options& opts,
                                          const std::string& models) {
  shoal::test::cluster_options co;
  co.shoald = opts.common.shoald;
  co.models_root = models;
  co.drain_grace_ms = 1000;
  co.timeout_ms = opts.timeout_ms;
  co.dir_prefix = "bench_scale";
  co.keep_dir = opts.keep;
  co.spawn.own_process_group = true;
  return co;
}

void stop_head(shoal::test::cluster& cl) {
  for (auto& e : cl.shutdown(15s)) {
    if (e.code != 0) {
      throw bench_error{e.name + " did not stop cleanly (" + e.how + "); log " +
                        e.log_path + ":\n" +
                        shoal::test::read_tail(e.log_path)};
    }
  }
}

int run(const options& opts) {
  raise_fd_limit(opts.workers);
  report rep{"bench_scale"};
  std::printf("bench_scale: shoald %s, %" PRIu64 " simulated workers%s\n",
              opts.common.shoald.c_str(), opts.workers,
              opts.common.quick ? " (quick)" : "");
  std::printf("load average before: %s\n", rep.load_before().c_str());
  shoal::test::temp_dir models_dir{"bench_scale-models"};
  auto models = write_models(models_dir.path());
  shoal::test::cluster cl{cluster_opts(opts, models)};
  cl.start_head();
  if (!cl.wait_head_ready(30s)) {
    throw bench_error{"the head did not answer a ping:\n" + cl.logs(4000)};
  }
  std::printf("head pid %d, link %s\n", static_cast<int>(cl.head().pid()),
              cl.link_endpoint().c_str());
  if (opts.keep) {
    std::printf("head log and caches kept in %s\n", cl.dir().c_str());
  }
  zmq::context_t ctx{1};
  // A member link's longest heartbeat interval: a quarter of the timeout.
  auto max_ivl = std::max<std::chrono::milliseconds>(
      100ms,
      std::chrono::milliseconds{static_cast<int64_t>(opts.timeout_ms / 4)});
  member_driver drv{cl.link_endpoint(), cl.secret(), opts.workers, opts.ping_ms,
                    max_ivl};
  status_client sc{ctx, cl.endpoint()};
  phase_result one, all;
  std::printf("phase 1: one simulated worker (the baseline)\n");
  one.workers = 1;
  drv.set_members(1);
  one.join_ms = wait_workers_up(sc, 1, 30s);
  if (std::isnan(one.join_ms)) {
    throw bench_error{"the simulated worker did not join:\n" + cl.logs(4000)};
  }
  measure_steady(opts, ctx, cl, drv, "place-1", one);
  std::printf("phase 2: %" PRIu64 " simulated workers\n", opts.workers);
  all.workers = opts.workers;
  drv.set_members(opts.workers);
  all.join_ms = wait_workers_up(sc, opts.workers, 60s);
  if (std::isnan(all.join_ms)) {
    // A head that cannot keep up: measured as it is, join time NaN.
    std::printf("  only %zu of %" PRIu64 " listed up after 60 s\n",
                sc.call().up, opts.workers);
  } else {
    std::printf("  all %" PRIu64 " listed up after %.0f ms\n", opts.workers,
                all.join_ms);
  }
  measure_steady(opts, ctx, cl, drv, "place-n", all);
  measure_detection(ctx, cl, drv, opts.workers / 2, all);
  std::printf("driver: %" PRIu64 " rejoins asked by the head, %" PRIu64
              " bad frames\n",
              drv.rejoins(), drv.bad_frames());
  stop_head(cl);
  rep.finish();
  add_checks(opts, one, all, rep);
  rep.print_checks("baseline: the same head with one simulated worker; for "
                   "detection, cluster.timeout_ms");
  std::printf("load average after: %s (%u cores)\n", rep.load_after().c_str(),
              std::thread::hardware_concurrency());
  rep.doc()["config"]
      .set("quick", opts.common.quick)
      .set("workers", opts.workers)
      .set("idle_s", opts.idle_s)
      .set("status_calls", opts.status_calls)
      .set("duration_s", opts.duration_s)
      .set("inflight", opts.inflight)
      .set("timeout_ms", opts.timeout_ms)
      .set("member_ping_ms", opts.ping_ms)
      .set("shoald", opts.common.shoald);
  rep.doc().set("one_worker", to_json(one)).set("all_workers", to_json(all));
  rep.write(opts.common.json);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  auto opts = parse_args(argc, argv);
  return run_main(
      "bench_scale",
      [&] {
        require_executable(opts.common.shoald,
                           "use --shoald PATH or SHOALD=PATH");
        return run(opts);
      },
      opts.keep ? "" : "(--keep keeps the head's log)");
}
