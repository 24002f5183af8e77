// bench_cluster: shoal in cluster mode, on loopback, against a raw ZeroMQ
// DEALER/ROUTER echo of the same payload measured in the same run.
//
// 1. Miss path, 1 in flight: client -> head (gateway, router) -> node link
//    -> worker (zero-cost model `echo`) -> head -> client, with distinct
//    inputs so that every request reaches the worker. Target from the
//    tracker: p50 <= 2.5x echo p50 (two hops instead of one). A standalone
//    node's miss path runs in the same rounds for context, and all three
//    are also driven at 32 requests in flight.
// 2. Failover: SIGKILL of the worker holding the replica with requests in
//    flight (time until they are all answered from the survivor), SIGSTOP
//    (time until the head's status op reports the worker down), and the
//    respawn of the only replica on a survivor once its worker is down.
//
// Every server is a separate process: the echo server is this binary forked
// before any thread exists; the nodes are `shoald`, forked and exec'd, each
// on its own free ports with its own model cache in a temporary directory.
// See bench/README.md.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zmq.hpp>

#include "net/wire/codec.hpp"
#include "net/wire/message.hpp"

#ifndef SHOAL_BENCH_SHOALD
#define SHOAL_BENCH_SHOALD ""
#endif

namespace {

using namespace std::chrono_literals;
using bench_clock = std::chrono::steady_clock;
using ms_double = std::chrono::duration<double, std::milli>;

const double nan_v = std::nan("");

// -- errors and interruption --------------------------------------------------

// Something broke (not a missed target): the run ends non-zero.
struct bench_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_interrupt(int) {
  g_interrupted = 1;
}

// SIGINT/SIGTERM/SIGHUP without SA_RESTART: a blocked ZeroMQ call fails
// with EINTR (cppzmq throws), loops check the flag, and the stack unwinds
// through the destructors that stop the nodes and remove the directory.
void install_interrupt_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP})
    ::sigaction(sig, &sa, nullptr);
}

void check_interrupted() {
  if (g_interrupted)
    throw bench_error{"interrupted"};
}

// -- options ------------------------------------------------------------------

struct options {
  std::string shoald;
  std::string models; // models.root; empty: shoald's default
  bool quick = false;
  bool keep = false;       // keep the temporary directory (logs)
  size_t requests = 10000; // measured round trips per phase and round
  size_t warmup = 1000;
  int rounds = 3;                  // interleaved rounds; the median is reported
  double duration_s = 3;           // throughput window per phase and round
  size_t inflight = 32;            // throughput phase
  size_t fo_inflight = 8;          // requests in flight at a SIGKILL / SIGSTOP
  int repeats = 3;                 // runs of each failover scenario
  uint64_t short_timeout_ms = 300; // second SIGKILL series; 0: skip
};

std::string exe_relative_shoald() {
  // <build>/bench/bench_cluster -> <build>/shoald.
  char buf[4096];
  auto n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0)
    return "shoald";
  std::string self{buf, static_cast<size_t>(n)};
  auto dir = self.substr(0, self.rfind('/'));
  return dir.substr(0, dir.rfind('/')) + "/shoald";
}

std::string default_shoald() {
  if (const char* env = std::getenv("SHOALD"); env && *env)
    return env;
  if (std::string built = SHOAL_BENCH_SHOALD; !built.empty())
    return built;
  return exe_relative_shoald();
}

void usage(const char* argv0) {
  std::printf(
      "usage: %s [options]\n"
      "  --shoald PATH         node binary (default: $SHOALD, else the build\n"
      "                        tree's shoald: %s)\n"
      "  --quick               short run for meson test --benchmark (~1 min)\n"
      "  --rounds N            interleaved latency/throughput rounds (3)\n"
      "  --requests N          round trips per latency phase and round "
      "(10000; quick 2000)\n"
      "  --warmup N            round trips before measuring (1000)\n"
      "  --duration S          throughput window per phase and round (3; "
      "quick 1)\n"
      "  --inflight N          requests in flight for throughput (32)\n"
      "  --failover-inflight N requests in flight at a kill/stop (8)\n"
      "  --repeats N           runs of each failover scenario (3; quick 1)\n"
      "  --short-timeout-ms N  cluster.timeout_ms of the second SIGKILL "
      "series (300; 0 skips)\n"
      "  --models DIR          models.root of every node (default: shoald's)\n"
      "  --keep                keep the temporary directory with the logs\n",
      argv0, default_shoald().c_str());
}

options parse_args(int argc, char** argv) {
  options opts;
  opts.shoald = default_shoald();
  bool set_requests = false, set_duration = false, set_warmup = false,
       set_repeats = false;
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", argv[i]);
      std::exit(2);
    }
    return argv[++i];
  };
  try {
    for (int i = 1; i < argc; ++i) {
      std::string_view a = argv[i];
      if (a == "--shoald")
        opts.shoald = need(i);
      else if (a == "--models")
        opts.models = need(i);
      else if (a == "--quick")
        opts.quick = true;
      else if (a == "--keep")
        opts.keep = true;
      else if (a == "--rounds")
        opts.rounds = std::max(1, std::stoi(need(i)));
      else if (a == "--requests")
        opts.requests = std::max<size_t>(1, std::stoull(need(i))),
        set_requests = true;
      else if (a == "--warmup")
        opts.warmup = std::stoull(need(i)), set_warmup = true;
      else if (a == "--duration")
        opts.duration_s = std::max(0.1, std::stod(need(i))),
        set_duration = true;
      else if (a == "--inflight")
        opts.inflight = std::max<size_t>(1, std::stoull(need(i)));
      else if (a == "--failover-inflight")
        opts.fo_inflight = std::max<size_t>(1, std::stoull(need(i)));
      else if (a == "--repeats")
        opts.repeats = std::max(1, std::stoi(need(i))), set_repeats = true;
      else if (a == "--short-timeout-ms")
        opts.short_timeout_ms = std::stoull(need(i));
      else if (a == "-h" || a == "--help")
        usage(argv[0]), std::exit(0);
      else {
        std::fprintf(stderr, "unknown argument: %s\n", argv[i]);
        usage(argv[0]);
        std::exit(2);
      }
    }
  } catch (const std::logic_error&) { // stoi and friends
    std::fprintf(stderr, "bad number in the arguments\n");
    std::exit(2);
  }
  if (opts.quick) {
    if (!set_requests)
      opts.requests = 2000;
    if (!set_warmup)
      opts.warmup = 300;
    if (!set_duration)
      opts.duration_s = 1;
    if (!set_repeats)
      opts.repeats = 1;
  }
  if (opts.short_timeout_ms != 0 && opts.short_timeout_ms <= 100) {
    std::fprintf(stderr, "--short-timeout-ms must exceed the 100 ms "
                         "heartbeat interval\n");
    std::exit(2);
  }
  return opts;
}

// -- processes and files ------------------------------------------------------

std::string read_tail(const std::string& path, size_t max_bytes = 2000) {
  std::ifstream in{path, std::ios::binary};
  std::string s{std::istreambuf_iterator<char>{in}, {}};
  return s.size() > max_bytes ? s.substr(s.size() - max_bytes) : s;
}

std::string describe_status(int st) {
  if (WIFEXITED(st))
    return "exit " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st))
    return std::string{"signal "} + strsignal(WTERMSIG(st));
  return "status " + std::to_string(st);
}

// A child process, addressed only by its pid. The destructor stops it
// (SIGCONT, SIGTERM, bounded wait, SIGKILL), so no error path leaves one
// behind; PR_SET_PDEATHSIG covers this process dying without unwinding.
class child_process {
public:
  child_process() = default;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() {
    if (pid_ > 0)
      stop(5s);
  }

  void adopt(pid_t pid, std::string log_path = {}) {
    pid_ = pid;
    log_ = std::move(log_path);
  }

  pid_t pid() const noexcept { return pid_; }
  const std::string& log() const noexcept { return log_; }
  bool running() { return !poll_exit(); }

  void signal(int sig) {
    if (pid_ > 0)
      ::kill(pid_, sig);
  }

  // The wait status once the process has exited, without blocking.
  std::optional<int> poll_exit() {
    if (pid_ <= 0)
      return exit_status_;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      exit_status_ = st;
    }
    return exit_status_;
  }

  // Asks it to stop; wait_stopped() collects it. Split so that a cluster's
  // processes drain in parallel.
  void request_stop() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGCONT); // a SIGSTOPped process cannot act on SIGTERM
    ::kill(pid_, SIGTERM);
  }

  int wait_stopped(std::chrono::milliseconds grace) {
    auto deadline = bench_clock::now() + grace;
    while (bench_clock::now() < deadline) {
      if (poll_exit())
        return *exit_status_;
      std::this_thread::sleep_for(10ms);
    }
    if (pid_ <= 0)
      return exit_status_.value_or(0);
    std::fprintf(stderr, "pid %d ignored SIGTERM for %lld ms; killing it\n",
                 static_cast<int>(pid_), static_cast<long long>(grace.count()));
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    exit_status_ = st;
    killed_ = true;
    return st;
  }

  int stop(std::chrono::milliseconds grace) {
    request_stop();
    return wait_stopped(grace);
  }

  // SIGKILL and reap: a failover victim.
  void kill_now() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    exit_status_ = st;
  }

  bool killed() const noexcept { return killed_; }

private:
  pid_t pid_ = -1;
  std::string log_;
  std::optional<int> exit_status_;
  bool killed_ = false;
};

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it
// unless --keep.
class temp_dir {
public:
  explicit temp_dir(bool keep) : keep_(keep) {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string{base && *base ? base : "/tmp"} + "/bench_cluster.XXXXXX";
    if (!::mkdtemp(tmpl.data()))
      throw bench_error{"mkdtemp: " + std::string{std::strerror(errno)}};
    path_ = tmpl;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    if (keep_)
      std::fprintf(stderr, "bench_cluster: kept %s\n", path_.c_str());
    else
      std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const noexcept { return path_; }

private:
  std::string path_;
  bool keep_;
};

uint16_t free_tcp_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    throw bench_error{"socket: " + std::string{std::strerror(errno)}};
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw bench_error{"bind: " + std::string{std::strerror(errno)}};
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string loadavg() {
  std::ifstream in{"/proc/loadavg"};
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// HTTP/1.0 GET on 127.0.0.1:port; the body.
std::string http_get(uint16_t port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    throw bench_error{"socket: " + std::string{std::strerror(errno)}};
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    throw bench_error{"connect to metrics port " + std::to_string(port) + ": " +
                      std::strerror(errno)};
  }
  auto req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(req.size())) {
    ::close(fd);
    throw bench_error{"send of HTTP request failed"};
  }
  std::string resp;
  char buf[16384];
  for (;;) {
    auto n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0)
      break;
    resp.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  auto pos = resp.find("\r\n\r\n");
  if (resp.compare(0, 5, "HTTP/") != 0 || pos == std::string::npos)
    throw bench_error{"bad HTTP response from metrics endpoint"};
  return resp.substr(pos + 4);
}

// The value of one series in Prometheus text, `name` or `name{labels}`
// exactly as rendered; nullopt when absent.
std::optional<double> metric_sample(const std::string& text,
                                    std::string_view series) {
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line))
    if (line.size() > series.size() &&
        line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ')
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
  return std::nullopt;
}

// -- echo server
// ----------------------------------------------------------------

// The baseline: a ROUTER that sends every [identity, payload] straight back.
[[noreturn]] void echo_server_main(int report_fd) {
  try {
    zmq::context_t ctx{1};
    zmq::socket_t sock{ctx, zmq::socket_type::router};
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::sndhwm, 0);
    sock.set(zmq::sockopt::rcvhwm, 0);
    sock.bind("tcp://127.0.0.1:*");
    auto ep = sock.get(zmq::sockopt::last_endpoint);
    ep.push_back('\n');
    [[maybe_unused]] auto n = ::write(report_fd, ep.data(), ep.size());
    ::close(report_fd);
    std::vector<zmq::message_t> parts;
    for (;;) {
      parts.clear();
      do {
        zmq::message_t part;
        if (!sock.recv(part))
          break;
        parts.push_back(std::move(part));
      } while (parts.back().more());
      for (size_t i = 0; i < parts.size(); ++i)
        sock.send(parts[i], i + 1 < parts.size() ? zmq::send_flags::sndmore
                                                 : zmq::send_flags::none);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo server: %s\n", e.what());
    ::_exit(1);
  }
}

// Forks the echo server. Must run before this process starts any thread.
std::string start_echo_server(child_process& proc) {
  int fds[2];
  if (::pipe(fds) != 0)
    throw bench_error{"pipe: " + std::string{std::strerror(errno)}};
  auto parent = ::getpid();
  auto pid = ::fork();
  if (pid < 0)
    throw bench_error{"fork: " + std::string{std::strerror(errno)}};
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
      ::_exit(1);
    ::setpgid(0, 0); // a terminal's Ctrl-C goes to the bench, which stops it
    ::close(fds[0]);
    echo_server_main(fds[1]);
  }
  ::close(fds[1]);
  proc.adopt(pid);
  std::string ep;
  char c;
  while (::read(fds[0], &c, 1) == 1 && c != '\n')
    ep.push_back(c);
  ::close(fds[0]);
  if (ep.empty())
    throw bench_error{"echo server did not start"};
  return ep;
}

// -- frames -------------------------------------------------------------------

constexpr size_t row_floats = 256;    // model echo: x f32 [N, 256], 1 KiB a row
constexpr uint64_t model_version = 2; // newest version of echo: y = 3x + 1
constexpr uint64_t id_base = uint64_t{1} << 56;

float input_value(size_t i) {
  return static_cast<float>(i) * 0.25f;
}

// A pre-encoded infer request of model echo. distinct() frames carry a
// counter in the first 8 bytes of the tensor data and in the id (2^56 +
// counter, encoded as a full uint64 so its bytes can be patched in place),
// so that every request misses the cache and has its own id: ids must be
// unique among a client's open requests. A send copies the frame, so
// patching it for the next one is safe.
class frame_source {
public:
  static frame_source fixed() { return frame_source{1}; }

  static frame_source distinct(uint64_t first) {
    frame_source f{id_base};
    const char id_bytes[] = {'\xcf', 1, 0, 0, 0, 0, 0, 0, 0};
    auto id_pos = std::string_view{f.frame_}.find(
        std::string_view{id_bytes, sizeof(id_bytes)});
    if (id_pos == std::string_view::npos)
      throw bench_error{"request id not found in the encoded request"};
    f.id_patch_ = id_pos + 1;
    std::string data(row_floats * sizeof(float), '\0');
    for (size_t i = 0; i < row_floats; ++i) {
      float v = input_value(i);
      std::memcpy(data.data() + i * sizeof(float), &v, sizeof(float));
    }
    auto pos = std::string_view{f.frame_}.find(data);
    if (pos == std::string_view::npos)
      throw bench_error{"tensor data not found in the encoded request"};
    f.patch_ = pos;
    f.counter_ = first;
    return f;
  }

  // The frame to send next.
  const std::string& next() {
    if (patch_ != std::string::npos) {
      std::memcpy(frame_.data() + patch_, &counter_, sizeof(counter_));
      last_id_ = id_base | (counter_ & (id_base - 1));
      for (int i = 0; i < 8; ++i) // msgpack integers are big-endian
        frame_[id_patch_ + i] = static_cast<char>(last_id_ >> (56 - 8 * i));
      ++counter_;
    }
    return frame_;
  }

  const std::string& current() const noexcept { return frame_; }
  // The id of the frame next() returned last (distinct frames).
  uint64_t last_id() const noexcept { return last_id_; }

private:
  explicit frame_source(uint64_t id) {
    shoal::request r;
    r.id = shoal::request_id::of(id);
    r.op = shoal::op_kind::infer;
    r.model = "echo";
    shoal::tensor t;
    t.name = "x";
    t.type = shoal::dtype::f32;
    t.shape = {1, row_floats};
    t.data.resize(row_floats * sizeof(float));
    for (size_t i = 0; i < row_floats; ++i) {
      float v = input_value(i);
      std::memcpy(t.data.data() + i * sizeof(float), &v, sizeof(float));
    }
    r.inputs.push_back(std::move(t));
    shoal::encode_request(r, frame_);
  }

  std::string frame_;
  size_t patch_ = std::string::npos;
  size_t id_patch_ = std::string::npos;
  uint64_t counter_ = 0;
  uint64_t last_id_ = 0;
};

std::string op_frame(shoal::op_kind op, uint64_t id) {
  shoal::request r;
  r.id = shoal::request_id::of(id);
  r.op = op;
  std::string out;
  shoal::encode_request(r, out);
  return out;
}

std::optional<shoal::reply> decode(const zmq::message_t& msg) {
  shoal::reply r;
  if (shoal::decode_reply(static_cast<const uint8_t*>(msg.data()), msg.size(),
                          {}, r))
    return std::nullopt;
  return r;
}

// -- reply checks
// ---------------------------------------------------------------

// Checks every reply cheaply (echo: the bytes equal the frame sent; shoal:
// the encoded `status: OK`, `source: executor` and `node: NAME` pairs are
// present) and decodes every 16th fully, outside the timed section: output
// values, version, and the node-side `timing_us.total` (receipt to reply at
// the front node), which tells the wire from the node in the latency.
class reply_checker {
public:
  // `node` empty: the echo baseline.
  explicit reply_checker(std::string node) : node_(std::move(node)) {
    using namespace std::string_literals;
    status_ok_ = "\xa6status\xa2OK"s;
    source_ = "\xa6source\xa8"
              "executor"s;
    node_pair_ = "\xa4node"s + static_cast<char>(0xa0 + node_.size()) + node_;
  }

  bool check(const zmq::message_t& msg, const std::string& sent) {
    ++seen_;
    std::string_view body{static_cast<const char*>(msg.data()), msg.size()};
    if (node_.empty())
      return body == sent || fail("echo reply differs from the request frame");
    if (body.find(status_ok_) == std::string_view::npos ||
        body.find(source_) == std::string_view::npos ||
        body.find(node_pair_) == std::string_view::npos)
      return fail(explain(msg));
    return (seen_ & 15) != 1 || deep_check(msg);
  }

  uint64_t errors() const noexcept { return errors_; }
  uint64_t seen() const noexcept { return seen_; }
  const std::string& first_error() const noexcept { return first_error_; }
  // Node-side totals of the sampled replies (µs); cleared by the caller.
  std::vector<double>& node_totals() noexcept { return node_totals_; }

private:
  bool fail(std::string why) {
    if (errors_++ == 0)
      first_error_ = std::move(why);
    return false;
  }

  std::string explain(const zmq::message_t& msg) {
    auto r = decode(msg);
    if (!r)
      return "undecodable reply";
    return "expected OK from executor on " + node_ + ", got " +
           std::string{shoal::to_string(r->code)} + " from " +
           std::string{shoal::to_string(r->source)} + " on '" + r->node + "'" +
           (r->error.empty() ? "" : ": " + r->error);
  }

  bool deep_check(const zmq::message_t& msg) {
    auto r = decode(msg);
    if (!r)
      return fail("undecodable reply");
    if (r->code != shoal::status::ok ||
        r->source != shoal::reply_source::executor || r->node != node_)
      return fail(explain(msg));
    if (r->version != model_version || r->outputs.size() != 1 ||
        r->outputs[0].data.size() != row_floats * sizeof(float))
      return fail("unexpected outputs or version in reply");
    // y = 3x + 1 on an element the distinct frames do not patch.
    float y;
    std::memcpy(&y, r->outputs[0].data.data() + 5 * sizeof(float), sizeof(y));
    if (std::fabs(y - (3 * input_value(5) + 1)) > 1e-4f)
      return fail("wrong output value " + std::to_string(y));
    if (r->timing_us)
      node_totals_.push_back(static_cast<double>(r->timing_us->total_us));
    return true;
  }

  std::string node_;
  std::string status_ok_, source_, node_pair_;
  uint64_t seen_ = 0, errors_ = 0;
  std::string first_error_;
  std::vector<double> node_totals_;
};

void require_clean(const reply_checker& chk, const std::string& phase) {
  if (chk.errors() > 0)
    throw bench_error{phase + ": " + std::to_string(chk.errors()) +
                      " bad replies of " + std::to_string(chk.seen()) +
                      "; first: " + chk.first_error()};
}

// -- client -------------------------------------------------------------------

constexpr auto reply_timeout = 30s;

// One DEALER connected to one server; the same code drives echo and shoal.
class client {
public:
  client(zmq::context_t& ctx, const std::string& endpoint)
      : sock_(ctx, zmq::socket_type::dealer) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.set(
        zmq::sockopt::rcvtimeo,
        static_cast<int>(std::chrono::milliseconds{reply_timeout}.count()));
    sock_.connect(endpoint);
  }

  void send(const std::string& frame) {
    sock_.send(zmq::buffer(frame), zmq::send_flags::none);
  }

  // One reply; throws on timeout.
  void recv(zmq::message_t& msg) {
    if (!sock_.recv(msg))
      throw bench_error{"no reply within 30 s"};
    while (msg.more()) // never for DEALER/ROUTER echo or protocol v1
      if (!sock_.recv(msg))
        throw bench_error{"truncated multipart reply"};
  }

  bool try_recv(zmq::message_t& msg) {
    return sock_.recv(msg, zmq::recv_flags::dontwait).has_value();
  }

  zmq::socket_t& socket() noexcept { return sock_; }

private:
  zmq::socket_t sock_;
};

struct percentiles {
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;
};

// Nearest-rank percentile of sorted values.
double rank(const std::vector<double>& sorted, double q) {
  if (sorted.empty())
    return nan_v;
  auto r =
      static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, r == 0 ? 0 : r - 1)];
}

percentiles summarize(std::vector<double>& us) {
  percentiles p;
  if (us.empty())
    return p;
  std::sort(us.begin(), us.end());
  p.p50 = rank(us, 0.5);
  p.p90 = rank(us, 0.9);
  p.p99 = rank(us, 0.99);
  double sum = 0;
  for (auto v : us)
    sum += v;
  p.mean = sum / static_cast<double>(us.size());
  return p;
}

double median(std::vector<double> xs) {
  if (xs.empty())
    return nan_v;
  std::sort(xs.begin(), xs.end());
  auto n = xs.size();
  return n % 2 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2;
}

double max_of(const std::vector<double>& xs) {
  return xs.empty() ? nan_v : *std::max_element(xs.begin(), xs.end());
}

std::string fmt(double v, int prec = 1) {
  if (std::isnan(v))
    return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", prec, v);
  return buf;
}

// 1 in flight: `n` round trips; the latencies in microseconds.
std::vector<double> run_latency(client& c, frame_source& src,
                                reply_checker& chk, size_t n,
                                const std::string& phase) {
  std::vector<double> us;
  us.reserve(n);
  zmq::message_t msg;
  for (size_t i = 0; i < n; ++i) {
    const auto& frame = src.next();
    auto t0 = bench_clock::now();
    c.send(frame);
    c.recv(msg);
    auto t1 = bench_clock::now();
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    chk.check(msg, frame);
    if ((i & 255) == 0)
      check_interrupted();
  }
  require_clean(chk, phase);
  return us;
}

// `inflight` requests in flight for warmup + window; replies per second in
// the window. A reply is answered with the next request.
double run_stream(client& c, frame_source& src, reply_checker& chk,
                  size_t inflight, std::chrono::duration<double> warmup,
                  std::chrono::duration<double> window,
                  const std::string& phase) {
  zmq::message_t msg;
  uint64_t sent = 0, recvd = 0, counted = 0;
  auto start = bench_clock::now();
  auto window_start =
      start + std::chrono::duration_cast<bench_clock::duration>(warmup);
  auto window_end =
      window_start + std::chrono::duration_cast<bench_clock::duration>(window);
  for (size_t i = 0; i < inflight; ++i, ++sent)
    c.send(src.next());
  // Replies carry no sequence the echo could check against, so the echo
  // check compares with the (fixed) frame; distinct frames go to shoal only.
  const auto& expected = src.current();
  while (recvd < sent) {
    c.recv(msg);
    ++recvd;
    auto now = bench_clock::now();
    if (now >= window_start && now < window_end)
      ++counted;
    chk.check(msg, expected);
    if (now < window_end) {
      c.send(src.next());
      ++sent;
    }
    if ((recvd & 255) == 0)
      check_interrupted();
  }
  require_clean(chk, phase);
  return static_cast<double>(counted) / window.count();
}

// -- nodes --------------------------------------------------------------------

struct node_proc {
  std::string name;
  child_process proc;
  uint16_t http_port = 0;
};

// Forks and execs shoald with `args`, output to `log`.
void spawn_shoald(const options& opts, const std::vector<std::string>& args,
                  const std::string& log, child_process& proc) {
  std::vector<std::string> all{opts.shoald};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  auto parent = ::getpid();
  std::fflush(nullptr);
  auto pid = ::fork();
  if (pid < 0)
    throw bench_error{"fork: " + std::string{std::strerror(errno)}};
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
      ::_exit(127);
    ::setpgid(0, 0); // a terminal's Ctrl-C goes to the bench, which stops it
    int fd =
        ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0)
      ::dup2(devnull, STDIN_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  proc.adopt(pid, log);
}

// Arguments every node gets: its name, HTTP port, own model cache, a short
// drain grace (a stopping worker otherwise waits up to 30 s for
// replacements), and the cluster's failure detector timeout.
std::vector<std::string> common_args(const options& opts,
                                     const std::string& dir, const node_proc& n,
                                     uint64_t timeout_ms) {
  std::vector<std::string> sets{
      "node.name=" + n.name,
      "http.listen=127.0.0.1:" + std::to_string(n.http_port),
      "models.cache_dir=" + dir + "/" + n.name + ".cache",
      "runtime.drain_grace_ms=1000"};
  if (!opts.models.empty())
    sets.push_back("models.root=" + opts.models);
  if (timeout_ms > 0) {
    sets.push_back("cluster.secret=bench-cluster-secret");
    sets.push_back("cluster.timeout_ms=" + std::to_string(timeout_ms));
    sets.push_back("cluster.suspect_ms=" +
                   std::to_string(std::min<uint64_t>(300, timeout_ms)));
  }
  std::vector<std::string> args;
  for (auto& s : sets) {
    args.push_back("--set");
    args.push_back(s);
  }
  return args;
}

// The `status` op on a DEALER of its own. query() blocks; send() and read()
// let a failover loop poll it next to the request stream.
class status_client {
public:
  status_client(zmq::context_t& ctx, const std::string& endpoint)
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
    if (outstanding_ ? now - sent_at_ > 1s : now - sent_at_ >= every)
      send();
  }

  // One reply that is readable now; the nodes when it answers the latest
  // request (older ones are dropped).
  std::optional<std::vector<shoal::node_info>> read() {
    zmq::message_t msg;
    if (!sock_.recv(msg, zmq::recv_flags::dontwait))
      return std::nullopt;
    auto r = decode(msg);
    if (!r || r->id.num != id_ || r->code != shoal::status::ok)
      return std::nullopt;
    outstanding_ = false;
    return std::move(r->nodes);
  }

  std::optional<std::vector<shoal::node_info>>
  query(std::chrono::milliseconds wait) {
    send();
    auto deadline = bench_clock::now() + wait;
    while (bench_clock::now() < deadline) {
      zmq::pollitem_t item{static_cast<void*>(sock_), 0, ZMQ_POLLIN, 0};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - bench_clock::now());
      if (zmq::poll(&item, 1, std::max(left, 1ms)) > 0)
        if (auto nodes = read())
          return nodes;
    }
    return std::nullopt;
  }

  zmq::socket_t& socket() noexcept { return sock_; }

private:
  zmq::socket_t sock_;
  uint64_t id_ = 0;
  bool outstanding_ = false;
  bench_clock::time_point sent_at_{};
};

std::string state_of(const std::vector<shoal::node_info>& nodes,
                     const std::string& name) {
  for (auto& n : nodes)
    if (n.name == name)
      return n.state;
  return {};
}

bool ping(zmq::context_t& ctx, const std::string& endpoint,
          std::chrono::milliseconds wait) {
  // A fresh socket per attempt, so no stale ping reply is left queued.
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  s.set(zmq::sockopt::linger, 0);
  s.connect(endpoint);
  auto frame = op_frame(shoal::op_kind::ping, 7);
  s.send(zmq::buffer(frame), zmq::send_flags::dontwait);
  zmq::pollitem_t item{static_cast<void*>(s), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, wait) <= 0)
    return false;
  zmq::message_t msg;
  if (!s.recv(msg, zmq::recv_flags::dontwait))
    return false;
  auto r = decode(msg);
  return r && r->code == shoal::status::ok;
}

bool port_race(const std::string& log) {
  auto tail = read_tail(log);
  return tail.find("bind") != std::string::npos ||
         tail.find("in use") != std::string::npos;
}

// A standalone node (role all) or a head with workers, all on free ports.
// The destructor stops whatever is left; stop() also checks the exits.
class deployment {
public:
  // timeout_ms 0: a standalone node named `standalone`; otherwise a head
  // (cluster.timeout_ms = timeout_ms) and `workers` workers w1, w2, ...
  deployment(zmq::context_t& ctx, const options& opts, const std::string& dir,
             const std::string& tag, uint64_t timeout_ms, int workers)
      : ctx_(ctx), opts_(opts), dir_(dir + "/" + tag), timeout_ms_(timeout_ms) {
    std::filesystem::create_directories(dir_);
    start_front();
    if (timeout_ms_ == 0)
      return;
    status_ = std::make_unique<status_client>(ctx_, endpoint_);
    for (int i = 1; i <= workers; ++i) {
      std::string name = "w"; // not "w" + ...: a GCC 12 -Wrestrict false alarm
      add_worker(name += std::to_string(i));
    }
  }

  deployment(const deployment&) = delete;
  deployment& operator=(const deployment&) = delete;

  ~deployment() {
    for (auto& w : workers_)
      w->proc.request_stop();
    front_.proc.request_stop();
  }

  const std::string& endpoint() const noexcept { return endpoint_; }
  node_proc& front() noexcept { return front_; }
  status_client& status() { return *status_; }

  node_proc& worker(const std::string& name) {
    for (auto& w : workers_)
      if (w->name == name)
        return *w;
    throw bench_error{"no worker named '" + name + "'"};
  }

  std::string other_worker(const std::string& name) const {
    for (auto& w : workers_)
      if (w->name != name && w->proc.pid() > 0)
        return w->name;
    throw bench_error{"no worker other than " + name};
  }

  std::string head_metrics() { return http_get(front_.http_port, "/metrics"); }

  // Waits until the head reports `name` in `state`; the milliseconds it
  // took, or nullopt after `limit`.
  std::optional<double> wait_state(const std::string& name,
                                   const std::string& state,
                                   std::chrono::milliseconds limit,
                                   std::chrono::milliseconds every = 10ms) {
    auto start = bench_clock::now();
    while (bench_clock::now() - start < limit) {
      check_interrupted();
      if (auto nodes = status_->query(1s);
          nodes && state_of(*nodes, name) == state)
        return ms_double(bench_clock::now() - start).count();
      std::this_thread::sleep_for(every);
    }
    return std::nullopt;
  }

  // Stops every process that still runs (SIGTERM to all, then waits) and
  // requires a clean exit from each: a node that does not drain and exit 0
  // is a defect this benchmark should not hide.
  void stop() {
    std::vector<node_proc*> all;
    for (auto& w : workers_)
      all.push_back(w.get());
    all.push_back(&front_);
    for (auto* n : all)
      n->proc.request_stop();
    std::string bad;
    for (auto* n : all) {
      auto st = n->proc.wait_stopped(15s);
      if (victims_.count(n->name))
        continue;
      if (n->proc.killed() || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        bad += "\n" + n->name + " did not stop cleanly (" +
               describe_status(st) + "); log " + n->proc.log() + ":\n" +
               read_tail(n->proc.log());
    }
    if (!bad.empty())
      throw bench_error{"deployment " + dir_ + ":" + bad};
  }

  // A process this run signals on purpose: its exit is not checked.
  void mark_victim(const std::string& name) { victims_.insert(name); }

  // The tails of every log, for an error message.
  std::string logs() const {
    std::string s;
    auto add = [&](const node_proc& n) {
      s += "\n--- " + n.name + " (" + n.proc.log() + ")\n" +
           read_tail(n.proc.log(), 1500);
    };
    add(front_);
    for (auto& w : workers_)
      add(*w);
    return s;
  }

private:
  void start_front() {
    for (int attempt = 1;; ++attempt) {
      front_.name = timeout_ms_ ? "head" : "standalone";
      front_.http_port = free_tcp_port();
      endpoint_ = "tcp://127.0.0.1:" + std::to_string(free_tcp_port());
      auto args = common_args(opts_, dir_, front_, timeout_ms_);
      args.insert(args.end(), {"--set", "gateway.endpoint=" + endpoint_});
      if (timeout_ms_) {
        link_ = "tcp://127.0.0.1:" + std::to_string(free_tcp_port());
        args.insert(args.end(),
                    {"--role", "head", "--set", "cluster.listen=" + link_});
      }
      spawn_shoald(opts_, args, dir_ + "/" + front_.name + ".log", front_.proc);
      auto deadline = bench_clock::now() + 30s;
      while (bench_clock::now() < deadline && front_.proc.running()) {
        check_interrupted();
        if (ping(ctx_, endpoint_, 200ms))
          return;
      }
      auto exited = front_.proc.poll_exit();
      if (!exited)
        front_.proc.stop(2s);
      if (exited && port_race(front_.proc.log()) && attempt < 3)
        continue;
      throw bench_error{front_.name + " (" + opts_.shoald +
                        ") did not answer a ping" +
                        (exited ? " (" + describe_status(*exited) + ")" : "") +
                        "; log:\n" + read_tail(front_.proc.log())};
    }
  }

  void add_worker(const std::string& name) {
    auto& w = *workers_.emplace_back(std::make_unique<node_proc>());
    w.name = name;
    for (int attempt = 1;; ++attempt) {
      w.http_port = free_tcp_port();
      auto args = common_args(opts_, dir_, w, timeout_ms_);
      args.insert(args.end(), {"--role", "worker", "--join", link_});
      spawn_shoald(opts_, args, dir_ + "/" + name + ".log", w.proc);
      auto deadline = bench_clock::now() + 30s;
      while (bench_clock::now() < deadline && w.proc.running()) {
        check_interrupted();
        auto nodes = status_->query(1s);
        if (nodes && state_of(*nodes, name) == "up")
          return;
        std::this_thread::sleep_for(20ms);
      }
      auto exited = w.proc.poll_exit();
      if (!exited)
        w.proc.stop(2s);
      if (exited && port_race(w.proc.log()) && attempt < 3)
        continue;
      throw bench_error{"worker " + name + " did not join the head" +
                        (exited ? " (" + describe_status(*exited) + ")" : "") +
                        ";" + logs()};
    }
  }

  zmq::context_t& ctx_;
  const options& opts_;
  std::string dir_;
  uint64_t timeout_ms_;
  std::string endpoint_, link_;
  node_proc front_;
  std::vector<std::unique_ptr<node_proc>> workers_;
  std::unique_ptr<status_client> status_;
  std::set<std::string> victims_;
};

// One request through `c`; the reply, required OK.
shoal::reply call(client& c, frame_source& src, const std::string& what) {
  zmq::message_t msg;
  c.send(src.next());
  c.recv(msg);
  auto r = decode(msg);
  if (!r || r->code != shoal::status::ok)
    throw bench_error{
        what + ": " +
        (r ? std::string{shoal::to_string(r->code)} + ": " + r->error
           : std::string{"undecodable reply"})};
  return *r;
}

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
  std::string load_before, load_after;
  std::vector<percentiles> latency_rounds[ph_count];
  std::vector<double> node_total_us[ph_count]; // node-reported totals
  std::vector<double> tput[ph_count];
  std::vector<failover_run> kill_runs, kill_short_runs, stop_runs;
  std::vector<respawn_run> respawn_runs;
};

// -- phase 1: miss path
// ---------------------------------------------------------

void steady_phases(zmq::context_t& ctx, const options& opts,
                   const std::string& dir, const std::string& echo_ep,
                   results& res) {
  deployment standalone{ctx, opts, dir, "standalone", 0, 0};
  deployment cl{ctx, opts, dir, "steady", 1000, 1};
  std::printf("standalone node pid %d; cluster: head pid %d, worker w1 pid "
              "%d\n",
              static_cast<int>(standalone.front().proc.pid()),
              static_cast<int>(cl.front().proc.pid()),
              static_cast<int>(cl.worker("w1").proc.pid()));
  client echo_c{ctx, echo_ep}, alone_c{ctx, standalone.endpoint()},
      cluster_c{ctx, cl.endpoint()};
  client* clients[] = {&echo_c, &alone_c, &cluster_c};
  auto echo_src = frame_source::fixed();
  frame_source miss_src[] = {frame_source::distinct(1),
                             frame_source::distinct(1),
                             frame_source::distinct(1)};
  reply_checker checks[] = {reply_checker{""}, reply_checker{"standalone"},
                            reply_checker{"w1"}};
  auto src_of = [&](int p) -> frame_source& {
    return p == ph_echo ? echo_src : miss_src[p];
  };
  // The first miss spawns the executor (on w1 for the cluster).
  for (int p = ph_standalone; p < ph_count; ++p) {
    auto r = call(*clients[p], miss_src[p],
                  std::string{phase_names[p]} + " first request");
    std::printf(
        "%s: first request (spawns the replica) %s on %s\n", phase_names[p],
        r.timing_us ? (std::to_string(r.timing_us->total_us) + " us").c_str()
                    : "?",
        r.node.c_str());
  }
  std::printf("latency, 1 in flight: warmup %zu round trips per phase\n",
              opts.warmup);
  for (int p = 0; p < ph_count; ++p)
    run_latency(*clients[p], src_of(p), checks[p], opts.warmup,
                std::string{phase_names[p]} + " warmup");
  for (auto& c : checks)
    c.node_totals().clear();
  for (int round = 0; round < opts.rounds; ++round) {
    // Rotate the order so slow drift of a noisy VM hits every phase alike.
    for (int k = 0; k < ph_count; ++k) {
      int p = (k + round) % ph_count;
      auto us = run_latency(*clients[p], src_of(p), checks[p], opts.requests,
                            phase_names[p]);
      auto s = summarize(us);
      res.latency_rounds[p].push_back(s);
      std::printf("  round %d %-10s p50 %8.1f  p90 %8.1f  p99 %8.1f us\n",
                  round + 1, phase_names[p], s.p50, s.p90, s.p99);
      std::fflush(stdout);
    }
  }
  for (int p = 0; p < ph_count; ++p)
    res.node_total_us[p] = checks[p].node_totals();
  std::chrono::duration<double> window{opts.duration_s};
  auto warm = std::chrono::duration<double>{std::min(0.5, opts.duration_s / 4)};
  std::printf("throughput: %zu in flight, %.1f s windows (%.2f s warmup)\n",
              opts.inflight, opts.duration_s, warm.count());
  frame_source tput_src[] = {frame_source::fixed(),
                             frame_source::distinct(uint64_t{1} << 40),
                             frame_source::distinct(uint64_t{1} << 40)};
  for (int round = 0; round < opts.rounds; ++round) {
    for (int k = 0; k < ph_count; ++k) {
      int p = (k + round) % ph_count;
      auto rate =
          run_stream(*clients[p], tput_src[p], checks[p], opts.inflight, warm,
                     window, std::string{phase_names[p]} + " throughput");
      res.tput[p].push_back(rate);
      std::printf("  round %d %-10s %10.0f req/s\n", round + 1, phase_names[p],
                  rate);
      std::fflush(stdout);
    }
  }
  cl.stop();
  standalone.stop();
}

// -- phase 2: failover
// ------------------------------------------------------------

// A cluster of a head and two workers; `fo_inflight` distinct requests kept
// in flight; `sig` (SIGKILL or SIGSTOP) sent to the worker that holds the
// echo replica. Measures, on one thread, the replies (by id) and the head's
// status op polled every 10 ms on its own socket.
failover_run failover_once(zmq::context_t& ctx, const options& opts,
                           const std::string& dir, const std::string& tag,
                           uint64_t timeout_ms, int sig) {
  deployment cl{ctx, opts, dir, tag, timeout_ms, 2};
  failover_run run;
  client c{ctx, cl.endpoint()};
  auto src = frame_source::distinct(1);
  // The first request places the only replica of echo v2.
  run.victim = call(c, src, tag + " first request").node;
  run.survivor = cl.other_worker(run.victim);
  auto& victim = cl.worker(run.victim);
  auto redispatched = [&] {
    return metric_sample(cl.head_metrics(), "shoal_requests_redispatched_total")
        .value_or(0);
  };
  auto redispatched_before = redispatched();

  std::set<uint64_t> open;            // ids sent and not answered
  std::map<uint64_t, bool> at_signal; // id -> answered
  auto send_one = [&] {
    c.send(src.next());
    open.insert(src.last_id());
  };
  for (size_t i = 0; i < opts.fo_inflight; ++i)
    send_one();
  auto start = bench_clock::now();
  std::optional<bench_clock::time_point> signalled;
  auto since = [&](bench_clock::time_point t) {
    return ms_double(t - *signalled).count();
  };
  auto deadline = start + 300ms + std::chrono::milliseconds{timeout_ms} + 20s;
  size_t unanswered = 0;
  bench_clock::time_point metrics_at{};
  zmq::message_t msg;
  for (;;) {
    check_interrupted();
    auto now = bench_clock::now();
    if (now > deadline)
      throw bench_error{tag + ": " + std::to_string(unanswered) + " of " +
                        std::to_string(at_signal.size()) +
                        " requests in flight at the signal unanswered, or the "
                        "victim never reported down, 20 s after the detector's "
                        "timeout;" +
                        cl.logs()};
    // 300 ms of steady state first: every in-flight slot is busy and the
    // replica is warm when the signal lands.
    if (!signalled && now - start >= 300ms) {
      for (auto id : open)
        at_signal.emplace(id, false);
      unanswered = at_signal.size();
      if (sig == SIGKILL)
        cl.mark_victim(run.victim); // a thawed one must still exit cleanly
      signalled = bench_clock::now();
      victim.proc.signal(sig);
      cl.status().send();
    }
    if (signalled) {
      if (std::isnan(run.down_ms))
        cl.status().maybe_send(10ms);
      if (sig == SIGSTOP && std::isnan(run.metric_down_ms) &&
          now - metrics_at >= 10ms) {
        metrics_at = now;
        if (metric_sample(cl.head_metrics(),
                          "shoal_cluster_nodes{state=\"down\"}")
                .value_or(0) >= 1)
          run.metric_down_ms = since(bench_clock::now());
      }
      bool metric_done = sig != SIGSTOP || !std::isnan(run.metric_down_ms);
      if (unanswered == 0 && !std::isnan(run.down_ms) && metric_done)
        break;
    }
    zmq::pollitem_t items[] = {
        {static_cast<void*>(c.socket()), 0, ZMQ_POLLIN, 0},
        {static_cast<void*>(cl.status().socket()), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 2, 5ms);
    if (items[1].revents & ZMQ_POLLIN)
      if (auto nodes = cl.status().read();
          nodes && state_of(*nodes, run.victim) == "down" &&
          std::isnan(run.down_ms))
        run.down_ms = since(bench_clock::now());
    while (c.try_recv(msg)) {
      auto t = bench_clock::now();
      auto r = decode(msg);
      if (!r || r->id.k != shoal::request_id::kind::num)
        throw bench_error{tag + ": undecodable reply or one without its id"};
      if (r->code != shoal::status::ok)
        throw bench_error{tag + ": request " + std::to_string(r->id.num) +
                          " failed: " + std::string{shoal::to_string(r->code)} +
                          ": " + r->error + cl.logs()};
      if (open.erase(r->id.num) == 0)
        throw bench_error{tag + ": a second reply for id " +
                          std::to_string(r->id.num)};
      if (signalled && r->node == run.survivor && std::isnan(run.first_ms))
        run.first_ms = since(t);
      if (auto a = at_signal.find(r->id.num);
          a != at_signal.end() && !a->second) {
        a->second = true;
        --unanswered;
        run.last_ms = since(t);
        if (r->node == run.survivor)
          ++run.by_survivor;
      }
      // Closed loop until all that was in flight at the signal is answered.
      if (unanswered > 0 || !signalled)
        send_one();
    }
  }
  run.at_signal = at_signal.size();
  // With a zero-cost model most of what is in flight may be replies already
  // on their way back; if none was re-dispatched, the run has no
  // re-dispatch time to give.
  if (run.by_survivor == 0)
    run.last_ms = nan_v;
  // What was sent after the signal and is still open gets answered too.
  auto drain_deadline = bench_clock::now() + 10s;
  while (!open.empty()) {
    check_interrupted();
    if (bench_clock::now() > drain_deadline)
      throw bench_error{tag + ": " + std::to_string(open.size()) +
                        " requests sent after the signal unanswered" +
                        cl.logs()};
    zmq::pollitem_t item{static_cast<void*>(c.socket()), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, 20ms);
    while (c.try_recv(msg)) {
      auto r = decode(msg);
      if (!r || r->code != shoal::status::ok)
        throw bench_error{tag + ": a request sent after the signal failed"};
      open.erase(r->id.num);
    }
  }
  run.redispatched = redispatched() - redispatched_before;
  if (sig == SIGSTOP) {
    victim.proc.signal(SIGCONT);
    if (auto t = cl.wait_state(run.victim, "up", 10s, 10ms))
      run.up_again_ms = *t;
  } else {
    victim.proc.kill_now(); // reaped: its exit is known
  }
  cl.stop();
  return run;
}

// The only replica's worker is SIGKILLed while idle; once the head reports
// it down, one request: the respawn on the survivor and its first answer.
respawn_run respawn_once(zmq::context_t& ctx, const options& opts,
                         const std::string& dir, const std::string& tag) {
  deployment cl{ctx, opts, dir, tag, 1000, 2};
  respawn_run run;
  client c{ctx, cl.endpoint()};
  auto src = frame_source::distinct(1);
  run.victim = call(c, src, tag + " first request").node;
  run.survivor = cl.other_worker(run.victim);
  cl.mark_victim(run.victim);
  auto killed = bench_clock::now();
  cl.worker(run.victim).proc.kill_now();
  auto down = cl.wait_state(run.victim, "down", 15s, 10ms);
  if (!down)
    throw bench_error{tag + ": " + run.victim + " not reported down 15 s " +
                      "after SIGKILL" + cl.logs()};
  run.down_ms = ms_double(bench_clock::now() - killed).count();
  auto t0 = bench_clock::now();
  auto r = call(c, src, tag + " request after the kill");
  run.serve_ms = ms_double(bench_clock::now() - t0).count();
  if (r.node != run.survivor)
    throw bench_error{tag + ": answered by '" + r.node + "', not " +
                      run.survivor};
  t0 = bench_clock::now();
  call(c, src, tag + " second request");
  run.next_ms = ms_double(bench_clock::now() - t0).count();
  cl.stop();
  return run;
}

void print_failover(const char* what, const failover_run& r) {
  std::printf("  %s %s: %zu in flight, %zu of them answered by %s "
              "(redispatched_total +%s); down in status %s ms",
              what, r.victim.c_str(), r.at_signal, r.by_survivor,
              r.survivor.c_str(), fmt(r.redispatched, 0).c_str(),
              fmt(r.down_ms, 0).c_str());
  if (!std::isnan(r.metric_down_ms))
    std::printf(", in /metrics %.0f ms", r.metric_down_ms);
  std::printf("; first reply from %s %s ms, last in-flight answered %s ms",
              r.survivor.c_str(), fmt(r.first_ms, 0).c_str(),
              fmt(r.last_ms, 0).c_str());
  if (!std::isnan(r.up_again_ms))
    std::printf("; up again %.0f ms after SIGCONT", r.up_again_ms);
  std::printf("\n");
  std::fflush(stdout);
}

void failover_phases(zmq::context_t& ctx, const options& opts,
                     const std::string& dir, results& res) {
  std::printf("failover: head + 2 workers, %zu requests in flight, %d run(s) "
              "each\n",
              opts.fo_inflight, opts.repeats);
  int n = 0;
  auto tag = [&](const char* kind) {
    return std::string{kind} + std::to_string(++n);
  };
  for (int i = 0; i < opts.repeats; ++i) {
    res.kill_runs.push_back(
        failover_once(ctx, opts, dir, tag("kill"), 1000, SIGKILL));
    print_failover("SIGKILL (timeout 1000 ms)", res.kill_runs.back());
  }
  if (opts.short_timeout_ms > 0)
    for (int i = 0; i < opts.repeats; ++i) {
      res.kill_short_runs.push_back(failover_once(
          ctx, opts, dir, tag("kill"), opts.short_timeout_ms, SIGKILL));
      auto label =
          "SIGKILL (timeout " + std::to_string(opts.short_timeout_ms) + " ms)";
      print_failover(label.c_str(), res.kill_short_runs.back());
    }
  for (int i = 0; i < opts.repeats; ++i) {
    res.stop_runs.push_back(
        failover_once(ctx, opts, dir, tag("stop"), 1000, SIGSTOP));
    print_failover("SIGSTOP (timeout 1000 ms)", res.stop_runs.back());
  }
  for (int i = 0; i < opts.repeats; ++i) {
    auto r = respawn_once(ctx, opts, dir, tag("respawn"));
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

struct row {
  std::string metric;
  double value = nan_v;
  double baseline = nan_v;
  std::string target; // empty: information
  bool pass = true;
};

void print_rows(const std::vector<row>& rows) {
  std::printf("\n%-40s %10s %10s %7s %9s  %s\n", "metric", "shoal", "baseline",
              "ratio", "target", "result");
  std::printf("%s\n", std::string(88, '-').c_str());
  for (const auto& r : rows)
    std::printf("%-40s %10s %10s %7s %9s  %s\n", r.metric.c_str(),
                fmt(r.value).c_str(), fmt(r.baseline).c_str(),
                fmt(r.value / r.baseline, 2).c_str(),
                r.target.empty() ? "-" : r.target.c_str(),
                r.target.empty() ? "info"
                : r.pass         ? "PASS"
                                 : "FAIL");
}

percentiles median_of_rounds(const std::vector<percentiles>& rs) {
  auto med = [&](double percentiles::*m) {
    std::vector<double> xs;
    for (const auto& p : rs)
      xs.push_back(p.*m);
    return median(xs);
  };
  return {med(&percentiles::p50), med(&percentiles::p90),
          med(&percentiles::p99), med(&percentiles::mean)};
}

template <class Run>
std::vector<double> column(const std::vector<Run>& runs, double Run::*m) {
  std::vector<double> xs;
  for (auto& r : runs)
    if (!std::isnan(r.*m))
      xs.push_back(r.*m);
  return xs;
}

// Failover times: median and max over the runs, and the median as a
// multiple of cluster.timeout_ms, the floor for anything that waits for a
// SIGKILLed or frozen process to be declared down.
void print_failover_table(const options& opts, const results& res) {
  std::printf("\nfailover (ms), %d run(s) each: median, max, median / "
              "cluster.timeout_ms\n",
              opts.repeats);
  std::printf("%-52s %8s %8s %8s %7s\n", "event (from the signal)", "timeout",
              "median", "max", "ratio");
  std::printf("%s\n", std::string(88, '-').c_str());
  auto line = [](const std::string& what, double timeout,
                 std::vector<double> xs) {
    std::printf("%-52s %8s %8s %8s %7s\n", what.c_str(),
                fmt(timeout, 0).c_str(), fmt(median(xs), 1).c_str(),
                fmt(max_of(xs), 1).c_str(),
                fmt(median(xs) / timeout, 2).c_str());
  };
  auto series = [&](const std::string& sig,
                    const std::vector<failover_run>& runs, double timeout) {
    if (runs.empty())
      return;
    line(sig + ": head's status op reports it down", timeout,
         column(runs, &failover_run::down_ms));
    if (sig == "SIGSTOP")
      line(sig + ": shoal_cluster_nodes{state=\"down\"} >= 1", timeout,
           column(runs, &failover_run::metric_down_ms));
    line(sig + ": first reply from the survivor", timeout,
         column(runs, &failover_run::first_ms));
    line(sig + ": all requests in flight at it answered OK", timeout,
         column(runs, &failover_run::last_ms));
    if (sig == "SIGSTOP")
      line("SIGCONT: reported up again (from SIGCONT)", nan_v,
           column(runs, &failover_run::up_again_ms));
  };
  series("SIGKILL", res.kill_runs, 1000);
  series("SIGKILL", res.kill_short_runs,
         static_cast<double>(opts.short_timeout_ms));
  series("SIGSTOP", res.stop_runs, 1000);
  if (!res.respawn_runs.empty()) {
    line("respawn: SIGKILL (idle) -> reported down", 1000,
         column(res.respawn_runs, &respawn_run::down_ms));
    line("respawn: then a request served by a new replica", nan_v,
         column(res.respawn_runs, &respawn_run::serve_ms));
    line("respawn: the next request (a plain miss)", nan_v,
         column(res.respawn_runs, &respawn_run::next_ms));
  }
}

void report(const options& opts, results& res, size_t frame_bytes) {
  std::printf("\nlatency, 1 in flight, median of %d rounds of %zu round trips "
              "(us)\n",
              opts.rounds, opts.requests);
  std::printf("%-11s %9s %9s %9s %9s %16s %11s\n", "phase", "p50", "p90", "p99",
              "mean", "node total p50", "throughput");
  percentiles lat[ph_count];
  for (int p = 0; p < ph_count; ++p) {
    lat[p] = median_of_rounds(res.latency_rounds[p]);
    auto totals = res.node_total_us[p];
    std::sort(totals.begin(), totals.end());
    std::printf("%-11s %9.1f %9.1f %9.1f %9.1f %16s %11.0f\n", phase_names[p],
                lat[p].p50, lat[p].p90, lat[p].p99, lat[p].mean,
                fmt(rank(totals, 0.5)).c_str(), median(res.tput[p]));
  }
  std::printf("(node total: timing_us.total of a 1-in-16 sample, receipt to "
              "reply at the front node; throughput: req/s, %zu in flight)\n",
              opts.inflight);

  std::vector<row> rows;
  auto ratio_row = [&](std::string metric, double v, double b,
                       std::string target = {}, double limit = 0) {
    row r{std::move(metric), v, b, std::move(target), true};
    if (!r.target.empty())
      r.pass = v / b <= limit;
    rows.push_back(std::move(r));
  };
  ratio_row("cluster miss p50 (us)", lat[ph_cluster].p50, lat[ph_echo].p50,
            "<= 2.5x", 2.5);
  ratio_row("cluster miss p90 (us)", lat[ph_cluster].p90, lat[ph_echo].p90);
  ratio_row("cluster miss p99 (us)", lat[ph_cluster].p99, lat[ph_echo].p99);
  ratio_row("standalone miss p50 (us)", lat[ph_standalone].p50,
            lat[ph_echo].p50);
  ratio_row("cluster / standalone miss p50 (us)", lat[ph_cluster].p50,
            lat[ph_standalone].p50);
  ratio_row("cluster miss throughput (req/s)", median(res.tput[ph_cluster]),
            median(res.tput[ph_echo]));
  ratio_row("standalone miss throughput (req/s)",
            median(res.tput[ph_standalone]), median(res.tput[ph_echo]));

  print_rows(rows);
  std::printf(
      "(baseline: raw ZeroMQ DEALER/ROUTER echo of the same "
      "%zu-byte frame; for cluster / standalone: the standalone node)\n",
      frame_bytes);
  print_failover_table(opts, res);
  std::printf("load average after: %s (%u cores)\n", res.load_after.c_str(),
              std::thread::hardware_concurrency());
}

int run(const options& opts, const std::string& echo_ep, pid_t echo_pid) {
  results res;
  res.load_before = loadavg();
  auto frame_bytes = frame_source::fixed().current().size();
  std::printf("bench_cluster: shoald %s%s\n", opts.shoald.c_str(),
              opts.quick ? " (quick)" : "");
  std::printf("load average before: %s\n", res.load_before.c_str());
  std::printf(
      "request frame %zu bytes (echo v2, x f32 [1,%zu]); echo server "
      "%s (pid %d); models %s\n",
      frame_bytes, row_floats, echo_ep.c_str(), static_cast<int>(echo_pid),
      opts.models.empty() ? "shoald's default root" : opts.models.c_str());
  std::fflush(stdout);
  temp_dir dir{opts.keep};
  zmq::context_t ctx{1};
  steady_phases(ctx, opts, dir.path(), echo_ep, res);
  failover_phases(ctx, opts, dir.path(), res);
  res.load_after = loadavg();
  report(opts, res, frame_bytes);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  auto opts = parse_args(argc, argv);
  struct stat st;
  if (::stat(opts.shoald.c_str(), &st) != 0 || !(st.st_mode & S_IXUSR)) {
    std::fprintf(stderr,
                 "bench_cluster: no executable shoald at '%s' (use --shoald "
                 "PATH or SHOALD=PATH)\n",
                 opts.shoald.c_str());
    return 1;
  }
  std::signal(SIGPIPE, SIG_IGN);
  child_process echo_proc;
  try {
    // Forked first, while this process has no threads.
    auto echo_ep = start_echo_server(echo_proc);
    install_interrupt_handlers();
    auto rc = run(opts, echo_ep, echo_proc.pid());
    echo_proc.stop(5s);
    return rc;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "bench_cluster: FAILED: %s\n%s",
                 g_interrupted ? "interrupted" : e.what(),
                 opts.keep ? "" : "(--keep keeps the nodes' logs)\n");
    return g_interrupted ? 130 : 1;
  }
}
