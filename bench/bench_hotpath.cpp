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
// driven by the same client code: one cppzmq DEALER sending pre-encoded
// request frames. See bench/README.md.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
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

#include "bench/bench_json.hpp"
#include "net/wire/codec.hpp"
#include "net/wire/message.hpp"

#ifndef SHOAL_BENCH_SHOALD
#define SHOAL_BENCH_SHOALD ""
#endif

namespace {

using shoal::bench::json_escape;
using shoal::bench::json_num;

using namespace std::chrono_literals;
using bench_clock = std::chrono::steady_clock;

constexpr uint64_t mib = 1024 * 1024;

// -- errors -------------------------------------------------------------------

// Something broke (not a missed target): the run ends non-zero.
struct bench_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// -- options ------------------------------------------------------------------

struct options {
  std::string shoald;
  std::string json;
  bool quick = false;
  size_t requests = 20000; // measured round trips per phase and round
  size_t warmup = 2000;    // round trips before the first round
  int rounds = 3;          // interleaved rounds; the median is reported
  double duration_s = 5;   // throughput window per phase and round
  size_t inflight = 64;    // throughput and memory phases
  size_t mem_requests = 1000000;
  uint64_t cache_bytes = 64 * mib;
  bool memory = true;
};

void usage(const char* argv0) {
  std::printf(
      "usage: %s [options]\n"
      "  --shoald PATH       node binary (default: %s)\n"
      "  --quick             3000 round trips, 2 s windows, 100000 requests\n"
      "  --requests N        round trips per latency phase and round (20000)\n"
      "  --warmup N          round trips before measuring (2000)\n"
      "  --rounds N          interleaved rounds, median reported (3)\n"
      "  --duration S        throughput window per phase and round (5)\n"
      "  --inflight N        requests in flight for throughput/memory (64)\n"
      "  --mem-requests N    distinct requests of the memory phase (1000000)\n"
      "  --cache-bytes N     cache.max_bytes of the memory node (64 MiB)\n"
      "  --no-memory         skip the memory phase\n"
      "  --json FILE         also write the results as JSON\n",
      argv0, SHOAL_BENCH_SHOALD);
}

std::string default_shoald() {
  std::string built = SHOAL_BENCH_SHOALD;
  if (!built.empty())
    return built;
  // Fallback: <build>/bench/bench_hotpath -> <build>/shoald.
  char buf[4096];
  auto n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0)
    return "shoald";
  std::string self{buf, static_cast<size_t>(n)};
  auto dir = self.substr(0, self.rfind('/'));
  return dir.substr(0, dir.rfind('/')) + "/shoald";
}

options parse_args(int argc, char** argv) {
  options opts;
  opts.shoald = default_shoald();
  bool set_requests = false, set_duration = false, set_mem = false,
       set_warmup = false;
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", argv[i]);
      std::exit(2);
    }
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--shoald")
      opts.shoald = need(i);
    else if (a == "--json")
      opts.json = need(i);
    else if (a == "--quick")
      opts.quick = true;
    else if (a == "--requests")
      opts.requests = std::stoull(need(i)), set_requests = true;
    else if (a == "--warmup")
      opts.warmup = std::stoull(need(i)), set_warmup = true;
    else if (a == "--rounds")
      opts.rounds = std::max(1, std::stoi(need(i)));
    else if (a == "--duration")
      opts.duration_s = std::stod(need(i)), set_duration = true;
    else if (a == "--inflight")
      opts.inflight = std::max<size_t>(1, std::stoull(need(i)));
    else if (a == "--mem-requests")
      opts.mem_requests = std::stoull(need(i)), set_mem = true;
    else if (a == "--cache-bytes")
      opts.cache_bytes = std::stoull(need(i));
    else if (a == "--no-memory")
      opts.memory = false;
    else if (a == "-h" || a == "--help")
      usage(argv[0]), std::exit(0);
    else {
      std::fprintf(stderr, "unknown argument: %s\n", argv[i]);
      usage(argv[0]);
      std::exit(2);
    }
  }
  if (opts.quick) {
    if (!set_requests)
      opts.requests = 3000;
    if (!set_warmup)
      opts.warmup = 500;
    if (!set_duration)
      opts.duration_s = 2;
    if (!set_mem)
      opts.mem_requests = 100000;
  }
  return opts;
}

// -- processes ----------------------------------------------------------------

std::string read_tail(const std::string& path, size_t max_bytes = 2000) {
  std::ifstream in{path, std::ios::binary};
  std::string s{std::istreambuf_iterator<char>{in}, {}};
  return s.size() > max_bytes ? s.substr(s.size() - max_bytes) : s;
}

// A child process that is stopped (SIGTERM, bounded wait, then SIGKILL) when
// it goes out of scope, so no error path leaves a server behind.
class child_process {
public:
  child_process() = default;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() {
    if (pid_ > 0)
      stop();
  }

  void adopt(pid_t pid, std::string log_path = {}) {
    pid_ = pid;
    log_ = std::move(log_path);
  }

  pid_t pid() const noexcept { return pid_; }
  const std::string& log() const noexcept { return log_; }

  // Returns the wait status once the process has exited, without blocking.
  std::optional<int> poll_exit() {
    if (pid_ <= 0)
      return exit_status_;
    int st = 0;
    auto r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      exit_status_ = st;
    }
    return exit_status_;
  }

  // SIGTERM, then waits up to `grace`, then SIGKILL. Returns the wait status.
  int stop(std::chrono::milliseconds grace = 15s) {
    if (pid_ <= 0)
      return exit_status_.value_or(0);
    ::kill(pid_, SIGTERM);
    auto deadline = bench_clock::now() + grace;
    while (bench_clock::now() < deadline) {
      if (poll_exit())
        return *exit_status_;
      std::this_thread::sleep_for(10ms);
    }
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

  bool killed() const noexcept { return killed_; }

private:
  pid_t pid_ = -1;
  std::string log_;
  std::optional<int> exit_status_;
  bool killed_ = false;
};

std::string describe_status(int st) {
  if (WIFEXITED(st))
    return "exit " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st))
    return std::string{"signal "} + strsignal(WTERMSIG(st));
  return "status " + std::to_string(st);
}

uint16_t free_tcp_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    throw bench_error{"socket: " + std::string{std::strerror(errno)}};
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw bench_error{"bind: " + std::string{std::strerror(errno)}};
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

// /proc/PID/status VmRSS in bytes, or 0 once the process is gone.
uint64_t rss_bytes(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/status", static_cast<int>(pid));
  FILE* f = std::fopen(path, "r");
  if (!f)
    return 0;
  char line[256];
  uint64_t kb = 0;
  while (std::fgets(line, sizeof(line), f)) {
    if (std::strncmp(line, "VmRSS:", 6) == 0) {
      kb = std::strtoull(line + 6, nullptr, 10);
      break;
    }
  }
  std::fclose(f);
  return kb * 1024;
}

std::string loadavg() {
  std::ifstream in{"/proc/loadavg"};
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// HTTP/1.0 GET on 127.0.0.1:port; returns the body.
std::string http_get(uint16_t port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    throw bench_error{"socket: " + std::string{std::strerror(errno)}};
  timeval tv{5, 0};
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
  auto req = "GET " + path +
             " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
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

// The value of an unlabelled metric in Prometheus text, or nullopt.
std::optional<double> metric_value(const std::string& text,
                                   std::string_view name) {
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() <= name.size() || line.compare(0, name.size(), name) != 0)
      continue;
    auto c = line[name.size()];
    if (c != ' ' && c != '{')
      continue;
    auto sp = line.rfind(' ');
    if (sp == std::string::npos)
      continue;
    return std::strtod(line.c_str() + sp + 1, nullptr);
  }
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
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent)
      ::_exit(1);
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

// -- frames
// ---------------------------------------------------------------------

constexpr size_t row_floats = 256;    // model echo: x f32 [N, 256], 1 KiB a row
constexpr uint64_t model_version = 2; // newest version of echo: y = 3x + 1

float input_value(size_t i) {
  return static_cast<float>(i) * 0.25f;
}

shoal::request make_infer_request(uint64_t id) {
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
  return r;
}

// A pre-encoded request frame; distinct() frames carry a counter in the
// first 8 bytes of the tensor data, patched in place before each send (a
// send copies the frame, so patching afterwards is safe).
class frame_source {
public:
  static frame_source fixed() {
    frame_source f;
    shoal::encode_request(make_infer_request(1), f.frame_);
    return f;
  }

  static frame_source distinct(uint64_t first) {
    frame_source f;
    // An id of 2^56 is encoded as a full uint64 (0xcf + 8 bytes), so each
    // send can carry its own id: ids must be unique among a client's open
    // requests, or the node treats them as retries of one request.
    constexpr uint64_t id_base = uint64_t{1} << 56;
    auto req = make_infer_request(id_base);
    shoal::encode_request(req, f.frame_);
    const char id_bytes[] = {'\xcf', 1, 0, 0, 0, 0, 0, 0, 0};
    auto id_pos = std::string_view{f.frame_}.find(
        std::string_view{id_bytes, sizeof(id_bytes)});
    if (id_pos == std::string_view::npos)
      throw bench_error{"request id not found in the encoded request"};
    f.id_patch_ = id_pos + 1;
    const auto& data = req.inputs[0].data;
    std::string_view needle{reinterpret_cast<const char*>(data.data()),
                            data.size()};
    auto pos = std::string_view{f.frame_}.find(needle);
    if (pos == std::string_view::npos)
      throw bench_error{"tensor data not found in the encoded request"};
    f.patch_ = pos;
    f.counter_ = first;
    return f;
  }

  static frame_source ping() {
    frame_source f;
    shoal::request r;
    r.id = shoal::request_id::of(7);
    r.op = shoal::op_kind::ping;
    shoal::encode_request(r, f.frame_);
    return f;
  }

  // The frame to send next.
  const std::string& next() {
    if (patch_ != std::string::npos) {
      std::memcpy(frame_.data() + patch_, &counter_, sizeof(counter_));
      // msgpack integers are big-endian; the top byte stays 0x01.
      auto id = (uint64_t{1} << 56) | (counter_ & ((uint64_t{1} << 56) - 1));
      for (int i = 0; i < 8; ++i)
        frame_[id_patch_ + i] = static_cast<char>(id >> (56 - 8 * i));
      ++counter_;
    }
    return frame_;
  }

  const std::string& current() const noexcept { return frame_; }
  uint64_t counter() const noexcept { return counter_; }

private:
  std::string frame_;
  size_t patch_ = std::string::npos;
  size_t id_patch_ = std::string::npos;
  uint64_t counter_ = 0;
};

// -- reply checks
// ------------------------------------------------------------------

enum class expect { echo, cache, executor };

const char* to_string(expect e) {
  switch (e) {
  case expect::echo:
    return "echo";
  case expect::cache:
    return "cache";
  default:
    return "executor";
  }
}

// Checks every reply cheaply (echo: bytes equal the frame sent; shoal: the
// encoded `status: OK` and `source: ...` pairs are present) and decodes a
// sample fully (outside the timed section of a latency round trip).
class reply_checker {
public:
  explicit reply_checker(expect what) : what_(what) {
    using namespace std::string_literals;
    status_ok_ = "\xa6status\xa2OK"s;
    switch (what) {
    case expect::cache:
      source_ = "\xa6source\xa5"
                "cache"s;
      break;
    case expect::executor:
      source_ = "\xa6source\xa8"
                "executor"s;
      break;
    default:
      break;
    }
  }

  // Returns false on a bad reply (counted; the first reason is kept).
  bool check(const zmq::message_t& msg, const std::string& sent) {
    ++seen_;
    std::string_view body{static_cast<const char*>(msg.data()), msg.size()};
    if (what_ == expect::echo) {
      if (body != sent)
        return fail("echo reply differs from the request frame");
      return true;
    }
    if (body.find(status_ok_) == std::string_view::npos ||
        body.find(source_) == std::string_view::npos)
      return fail(explain(body));
    if ((seen_ & 1023) == 1)
      return deep_check(body);
    return true;
  }

  uint64_t errors() const noexcept { return errors_; }
  uint64_t seen() const noexcept { return seen_; }
  const std::string& first_error() const noexcept { return first_error_; }

private:
  bool fail(std::string why) {
    if (errors_++ == 0)
      first_error_ = std::move(why);
    return false;
  }

  std::string explain(std::string_view body) {
    shoal::reply r;
    if (auto err = shoal::decode_reply(
            reinterpret_cast<const uint8_t*>(body.data()), body.size(), {}, r))
      return "undecodable reply";
    return std::string{"expected OK from "} + to_string(what_) + ", got " +
           std::string{shoal::to_string(r.code)} + " from " +
           std::string{shoal::to_string(r.source)} +
           (r.error.empty() ? "" : ": " + r.error);
  }

  bool deep_check(std::string_view body) {
    shoal::reply r;
    if (auto err = shoal::decode_reply(
            reinterpret_cast<const uint8_t*>(body.data()), body.size(), {}, r))
      return fail("undecodable reply");
    auto want = what_ == expect::cache ? shoal::reply_source::cache
                                       : shoal::reply_source::executor;
    if (r.code != shoal::status::ok || r.source != want)
      return fail(explain(body));
    if (r.version != model_version || r.outputs.size() != 1 ||
        r.outputs[0].data.size() != row_floats * sizeof(float))
      return fail("unexpected outputs or version in reply");
    // y = 3x + 1 on an element the miss path does not patch.
    float y;
    std::memcpy(&y, r.outputs[0].data.data() + 5 * sizeof(float), sizeof(y));
    if (std::fabs(y - (3 * input_value(5) + 1)) > 1e-4f)
      return fail("wrong output value " + std::to_string(y));
    return true;
  }

  expect what_;
  std::string status_ok_;
  std::string source_;
  uint64_t seen_ = 0;
  uint64_t errors_ = 0;
  std::string first_error_;
};

// -- client
// ---------------------------------------------------------------------

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

  // Receives one reply; throws on timeout.
  void recv(zmq::message_t& msg) {
    if (!sock_.recv(msg))
      throw bench_error{"no reply within 30 s"};
    while (msg.more()) // never for DEALER/ROUTER echo or protocol v1
      if (!sock_.recv(msg))
        throw bench_error{"truncated multipart reply"};
  }

private:
  zmq::socket_t sock_;
};

struct percentiles {
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, mean = 0;
  size_t n = 0;
};

percentiles summarize(std::vector<double>& us) {
  percentiles p;
  p.n = us.size();
  if (us.empty())
    return p;
  std::sort(us.begin(), us.end());
  auto at = [&](double q) {
    // Nearest rank.
    auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(p.n)));
    return us[std::min(p.n - 1, rank == 0 ? 0 : rank - 1)];
  };
  p.p50 = at(0.5);
  p.p90 = at(0.9);
  p.p99 = at(0.99);
  p.p999 = at(0.999);
  double sum = 0;
  for (auto v : us)
    sum += v;
  p.mean = sum / static_cast<double>(p.n);
  return p;
}

double median(std::vector<double> xs) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto n = xs.size();
  return n % 2 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2;
}

void require_clean(const reply_checker& chk, const char* phase) {
  if (chk.errors() > 0)
    throw bench_error{std::string{phase} + ": " + std::to_string(chk.errors()) +
                      " bad replies of " + std::to_string(chk.seen()) +
                      "; first: " + chk.first_error()};
}

// 1 in flight: `n` round trips; returns the latencies in microseconds.
std::vector<double> run_latency(client& c, frame_source& src,
                                reply_checker& chk, size_t n,
                                const char* phase) {
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
  }
  require_clean(chk, phase);
  return us;
}

struct stream_result {
  double rate = 0;      // replies per second in the measured window
  uint64_t replies = 0; // all replies
  double seconds = 0;   // whole stream
};

// `inflight` requests in flight: runs for warmup + window (when `count` is 0)
// or until `count` replies (rate over the whole stream). The reply-to-send
// loop is the same for both servers.
stream_result run_stream(client& c, frame_source& src, reply_checker& chk,
                         size_t inflight, std::chrono::duration<double> warmup,
                         std::chrono::duration<double> window, uint64_t count,
                         const char* phase) {
  zmq::message_t msg;
  uint64_t sent = 0, recvd = 0, counted = 0;
  auto start = bench_clock::now();
  auto window_start =
      start + std::chrono::duration_cast<bench_clock::duration>(warmup);
  auto window_end =
      window_start + std::chrono::duration_cast<bench_clock::duration>(window);
  auto more = [&](bench_clock::time_point now) {
    return count ? sent < count : now < window_end;
  };
  for (size_t i = 0; i < inflight && more(start); ++i) {
    c.send(src.next());
    ++sent;
  }
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
    if (more(now)) {
      c.send(src.next());
      ++sent;
    }
  }
  require_clean(chk, phase);
  stream_result r;
  r.replies = recvd;
  r.seconds = std::chrono::duration<double>(bench_clock::now() - start).count();
  r.rate = count ? static_cast<double>(recvd) / r.seconds
                 : static_cast<double>(counted) / window.count();
  return r;
}

// -- node ---------------------------------------------------------------------

struct node {
  child_process proc;
  std::string endpoint;
  uint16_t http_port = 0;
};

bool ping(zmq::context_t& ctx, const std::string& endpoint,
          std::chrono::milliseconds wait) {
  // A fresh socket per attempt, so no stale ping reply is left queued.
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  s.set(zmq::sockopt::linger, 0);
  s.connect(endpoint);
  auto frame = frame_source::ping().current();
  s.send(zmq::buffer(frame), zmq::send_flags::dontwait);
  zmq::pollitem_t item{static_cast<void*>(s), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, wait) <= 0)
    return false;
  zmq::message_t msg;
  if (!s.recv(msg, zmq::recv_flags::dontwait))
    return false;
  shoal::reply r;
  if (shoal::decode_reply(static_cast<const uint8_t*>(msg.data()), msg.size(),
                          {}, r))
    return false;
  return r.code == shoal::status::ok;
}

// Starts shoald on free ports and waits until a ping answers.
void start_node(zmq::context_t& ctx, const options& opts, node& n,
                const std::vector<std::string>& sets, const std::string& tag) {
  for (int attempt = 1;; ++attempt) {
    auto port = free_tcp_port();
    auto http = free_tcp_port();
    n.endpoint = "tcp://127.0.0.1:" + std::to_string(port);
    n.http_port = http;
    std::vector<std::string> args{
        opts.shoald, "--set", "gateway.endpoint=" + n.endpoint, "--set",
        "http.listen=127.0.0.1:" + std::to_string(http)};
    for (const auto& s : sets) {
      args.push_back("--set");
      args.push_back(s);
    }
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    auto log =
        "/tmp/bench_hotpath." + std::to_string(::getpid()) + "." + tag + ".log";
    auto parent = ::getpid();
    std::fflush(nullptr);
    auto pid = ::fork();
    if (pid < 0)
      throw bench_error{"fork: " + std::string{std::strerror(errno)}};
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent)
        ::_exit(127);
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
    n.proc.adopt(pid, log);
    auto deadline = bench_clock::now() + 30s;
    bool up = false;
    while (bench_clock::now() < deadline) {
      if (n.proc.poll_exit())
        break;
      if (ping(ctx, n.endpoint, 200ms)) {
        up = true;
        break;
      }
    }
    if (up)
      return;
    auto tail = read_tail(log);
    auto exited = n.proc.poll_exit();
    if (!exited)
      n.proc.stop(2s);
    bool port_race = tail.find("bind") != std::string::npos ||
                     tail.find("in use") != std::string::npos;
    if (exited && port_race && attempt < 3)
      continue;
    throw bench_error{"node " + tag + " (" + opts.shoald + ") did not answer " +
                      "a ping" +
                      (exited ? " (" + describe_status(*exited) + ")" : "") +
                      "; log " + log + ":\n" + tail};
  }
}

void stop_node(node& n, const std::string& tag) {
  auto st = n.proc.stop();
  if (n.proc.killed() || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    throw bench_error{"node " + tag + " did not stop cleanly (" +
                      describe_status(st) + "); log " + n.proc.log() + ":\n" +
                      read_tail(n.proc.log())};
  ::unlink(n.proc.log().c_str());
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
      auto r = rss_bytes(pid_);
      peak_ = std::max<uint64_t>(peak_, r);
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

// -- report
// -----------------------------------------------------------------------

struct check_row {
  std::string metric;
  double shoal = 0;
  double baseline = 0; // NaN: none
  double ratio = 0;    // NaN: none
  std::string target;
  bool pass = false;
};

struct results {
  std::vector<std::pair<std::string, percentiles>> latency; // per phase
  std::vector<std::vector<percentiles>> latency_rounds;     // [phase][round]
  std::vector<double> tput_echo, tput_hit;
  uint64_t idle_rss = 0;
  uint64_t mem_idle_rss = 0;
  uint64_t mem_peak_rss = 0;
  uint64_t mem_final_rss = 0;
  double mem_rate = 0;
  double mem_seconds = 0;
  uint64_t mem_requests = 0;
  std::optional<double> cache_bytes_metric;
  std::optional<double> cache_entries_metric;
  std::optional<double> cache_evictions_metric;
  std::vector<check_row> rows;
  std::string load_before, load_after;
};

std::string fmt(double v, int prec = 1) {
  if (std::isnan(v))
    return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", prec, v);
  return buf;
}

void print_rows(const std::vector<check_row>& rows) {
  std::printf("\n%-34s %12s %12s %7s %9s  %s\n", "metric", "shoal", "baseline",
              "ratio", "target", "result");
  std::printf("%s\n", std::string(86, '-').c_str());
  for (const auto& r : rows)
    std::printf("%-34s %12s %12s %7s %9s  %s\n", r.metric.c_str(),
                fmt(r.shoal).c_str(), fmt(r.baseline).c_str(),
                fmt(r.ratio, 3).c_str(), r.target.c_str(),
                r.pass ? "PASS" : "FAIL");
}

void write_json(const std::string& path, const options& opts,
                const results& res) {
  std::ofstream out{path};
  if (!out)
    throw bench_error{"cannot write " + path};
  auto pct = [&](const percentiles& p) {
    return "{\"n\": " + std::to_string(p.n) +
           ", \"p50_us\": " + json_num(p.p50) +
           ", \"p90_us\": " + json_num(p.p90) +
           ", \"p99_us\": " + json_num(p.p99) +
           ", \"p999_us\": " + json_num(p.p999) +
           ", \"mean_us\": " + json_num(p.mean) + "}";
  };
  auto arr = [&](const std::vector<double>& xs) {
    std::string s = "[";
    for (size_t i = 0; i < xs.size(); ++i)
      s += (i ? ", " : "") + json_num(xs[i]);
    return s + "]";
  };
  out << "{\n  \"config\": {\"quick\": " << (opts.quick ? "true" : "false")
      << ", \"requests\": " << opts.requests << ", \"rounds\": " << opts.rounds
      << ", \"duration_s\": " << json_num(opts.duration_s)
      << ", \"inflight\": " << opts.inflight
      << ", \"mem_requests\": " << opts.mem_requests
      << ", \"cache_bytes\": " << opts.cache_bytes << ", \"shoald\": \""
      << json_escape(opts.shoald) << "\"},\n";
  out << "  \"loadavg\": {\"before\": \"" << res.load_before
      << "\", \"after\": \"" << res.load_after << "\"},\n";
  out << "  \"latency\": {";
  for (size_t i = 0; i < res.latency.size(); ++i) {
    out << (i ? ",\n" : "\n") << "    \"" << res.latency[i].first
        << "\": {\"median_of_rounds\": " << pct(res.latency[i].second)
        << ", \"rounds\": [";
    for (size_t k = 0; k < res.latency_rounds[i].size(); ++k)
      out << (k ? ", " : "") << pct(res.latency_rounds[i][k]);
    out << "]}";
  }
  out << "\n  },\n";
  out << "  \"throughput_rps\": {\"echo\": " << json_num(median(res.tput_echo))
      << ", \"hit\": " << json_num(median(res.tput_hit))
      << ", \"echo_rounds\": " << arr(res.tput_echo)
      << ", \"hit_rounds\": " << arr(res.tput_hit) << "},\n";
  auto opt = [](const std::optional<double>& v) {
    return v ? json_num(*v) : std::string{"null"};
  };
  out << "  \"memory\": {\"idle_rss_bytes\": " << res.idle_rss
      << ", \"stream_node_idle_rss_bytes\": " << res.mem_idle_rss
      << ", \"stream_requests\": " << res.mem_requests
      << ", \"stream_seconds\": " << json_num(res.mem_seconds)
      << ", \"stream_rps\": " << json_num(res.mem_rate)
      << ", \"peak_rss_bytes\": " << res.mem_peak_rss
      << ", \"final_rss_bytes\": " << res.mem_final_rss
      << ", \"cache_max_bytes\": " << opts.cache_bytes
      << ", \"shoal_cache_bytes\": " << opt(res.cache_bytes_metric)
      << ", \"shoal_cache_entries\": " << opt(res.cache_entries_metric)
      << ", \"shoal_cache_evictions_total\": "
      << opt(res.cache_evictions_metric) << "},\n";
  out << "  \"checks\": [";
  for (size_t i = 0; i < res.rows.size(); ++i) {
    const auto& r = res.rows[i];
    out << (i ? ",\n" : "\n") << "    {\"metric\": \"" << json_escape(r.metric)
        << "\", \"shoal\": " << json_num(r.shoal)
        << ", \"baseline\": " << json_num(r.baseline)
        << ", \"ratio\": " << json_num(r.ratio) << ", \"target\": \""
        << json_escape(r.target)
        << "\", \"pass\": " << (r.pass ? "true" : "false") << "}";
  }
  out << "\n  ]\n}\n";
}

// -- phases
// -----------------------------------------------------------------------

void latency_phase(const options& opts, client& echo, client& shoal_client,
                   results& res) {
  enum { p_echo, p_hit, p_miss, p_count };
  const char* names[] = {"echo", "hit", "miss"};
  auto echo_src = frame_source::fixed();
  auto hit_src = frame_source::fixed();
  auto miss_src = frame_source::distinct(1);
  reply_checker echo_chk{expect::echo}, hit_chk{expect::cache};
  reply_checker miss_chk{expect::executor};
  // The first hit request is a miss that fills the cache; the first miss
  // spawns the echo executor.
  {
    reply_checker first{expect::executor};
    zmq::message_t msg;
    shoal_client.send(hit_src.next());
    shoal_client.recv(msg);
    first.check(msg, hit_src.current());
    require_clean(first, "cache fill");
  }
  std::printf("latency: warmup %zu round trips per phase\n", opts.warmup);
  run_latency(echo, echo_src, echo_chk, opts.warmup, "echo warmup");
  run_latency(shoal_client, hit_src, hit_chk, opts.warmup, "hit warmup");
  run_latency(shoal_client, miss_src, miss_chk, opts.warmup, "miss warmup");
  res.latency_rounds.assign(p_count, {});
  for (int round = 0; round < opts.rounds; ++round) {
    // Rotate the order so no phase always follows the same one.
    for (int k = 0; k < p_count; ++k) {
      int phase = (k + round) % p_count;
      std::vector<double> us;
      switch (phase) {
      case p_echo:
        us = run_latency(echo, echo_src, echo_chk, opts.requests, "echo");
        break;
      case p_hit:
        us = run_latency(shoal_client, hit_src, hit_chk, opts.requests, "hit");
        break;
      default:
        us = run_latency(shoal_client, miss_src, miss_chk, opts.requests,
                         "miss");
      }
      auto p = summarize(us);
      res.latency_rounds[phase].push_back(p);
      std::printf("  round %d %-5s p50 %8.1f  p90 %8.1f  p99 %8.1f  p99.9 "
                  "%8.1f us\n",
                  round + 1, names[phase], p.p50, p.p90, p.p99, p.p999);
      std::fflush(stdout);
    }
  }
  for (int phase = 0; phase < p_count; ++phase) {
    const auto& rs = res.latency_rounds[phase];
    auto med = [&](double percentiles::*m) {
      std::vector<double> xs;
      for (const auto& p : rs)
        xs.push_back(p.*m);
      return median(xs);
    };
    percentiles p;
    p.n = rs.empty() ? 0 : rs[0].n;
    p.p50 = med(&percentiles::p50);
    p.p90 = med(&percentiles::p90);
    p.p99 = med(&percentiles::p99);
    p.p999 = med(&percentiles::p999);
    p.mean = med(&percentiles::mean);
    res.latency.emplace_back(names[phase], p);
  }
}

void throughput_phase(const options& opts, client& echo, client& shoal_client,
                      results& res) {
  auto echo_src = frame_source::fixed();
  auto hit_src = frame_source::fixed();
  reply_checker echo_chk{expect::echo}, hit_chk{expect::cache};
  std::chrono::duration<double> window{opts.duration_s};
  auto warm = std::chrono::duration<double>{std::min(1.0, opts.duration_s / 4)};
  std::printf("throughput: %zu in flight, %.1f s windows (%.2f s warmup)\n",
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

void memory_phase(zmq::context_t& ctx, const options& opts, results& res) {
  node n;
  start_node(ctx, opts, n,
             {"cache.max_bytes=" + std::to_string(opts.cache_bytes)}, "stream");
  std::this_thread::sleep_for(500ms);
  res.mem_idle_rss = rss_bytes(n.proc.pid());
  std::printf("memory: %" PRIu64 " distinct requests, %zu in flight, "
              "cache.max_bytes %" PRIu64 " (node idle RSS %.1f MiB)\n",
              static_cast<uint64_t>(opts.mem_requests), opts.inflight,
              opts.cache_bytes, res.mem_idle_rss / double(mib));
  std::fflush(stdout);
  {
    client c{ctx, n.endpoint};
    auto src = frame_source::distinct(uint64_t{1} << 32);
    reply_checker chk{expect::executor};
    rss_sampler sampler{n.proc.pid()};
    auto r = run_stream(c, src, chk, opts.inflight, 0s, 0s, opts.mem_requests,
                        "memory stream");
    // A last sample after the stream, once the node has settled.
    std::this_thread::sleep_for(300ms);
    sampler.stop();
    res.mem_final_rss = rss_bytes(n.proc.pid());
    res.mem_peak_rss = std::max(sampler.peak(), res.mem_final_rss);
    res.mem_rate = r.rate;
    res.mem_seconds = r.seconds;
    res.mem_requests = r.replies;
    std::printf("  %.1f s, %.0f req/s, peak RSS %.1f MiB (%zu samples), "
                "final %.1f MiB\n",
                r.seconds, r.rate, res.mem_peak_rss / double(mib),
                sampler.samples(), res.mem_final_rss / double(mib));
  }
  try {
    auto text = http_get(n.http_port, "/metrics");
    res.cache_bytes_metric = metric_value(text, "shoal_cache_bytes");
    res.cache_entries_metric = metric_value(text, "shoal_cache_entries");
    res.cache_evictions_metric =
        metric_value(text, "shoal_cache_evictions_total");
  } catch (const bench_error& e) {
    std::fprintf(stderr, "metrics: %s\n", e.what());
  }
  stop_node(n, "stream");
}

int run(const options& opts, child_process& echo_proc,
        const std::string& echo_ep) {
  results res;
  res.load_before = loadavg();
  std::printf("bench_hotpath: shoald %s\n", opts.shoald.c_str());
  std::printf("load average before: %s\n", res.load_before.c_str());
  {
    auto f = frame_source::fixed();
    std::printf("request frame %zu bytes (tensor x f32 [1,%zu] = %zu bytes); "
                "echo server %s (pid %d)\n",
                f.current().size(), row_floats, row_floats * sizeof(float),
                echo_ep.c_str(), static_cast<int>(echo_proc.pid()));
  }
  zmq::context_t ctx{1};
  {
    node n;
    start_node(ctx, opts, n, {}, "main");
    std::this_thread::sleep_for(1s);
    res.idle_rss = rss_bytes(n.proc.pid());
    std::printf("node pid %d at %s, idle RSS %.1f MiB\n",
                static_cast<int>(n.proc.pid()), n.endpoint.c_str(),
                res.idle_rss / double(mib));
    std::fflush(stdout);
    client echo{ctx, echo_ep};
    client shoal_client{ctx, n.endpoint};
    latency_phase(opts, echo, shoal_client, res);
    throughput_phase(opts, echo, shoal_client, res);
    stop_node(n, "main");
  }
  if (opts.memory)
    memory_phase(ctx, opts, res);
  res.load_after = loadavg();
  // Detailed latency table.
  std::printf("\nlatency, 1 in flight, median of %d rounds of %zu round trips "
              "(us)\n",
              opts.rounds, opts.requests);
  std::printf("%-6s %9s %9s %9s %9s %9s\n", "phase", "p50", "p90", "p99",
              "p99.9", "mean");
  for (const auto& [name, p] : res.latency)
    std::printf("%-6s %9.1f %9.1f %9.1f %9.1f %9.1f\n", name.c_str(), p.p50,
                p.p90, p.p99, p.p999, p.mean);
  // Checks against the targets.
  const auto& echo_l = res.latency[0].second;
  const auto& hit_l = res.latency[1].second;
  const auto& miss_l = res.latency[2].second;
  auto nan = std::nan("");
  auto ratio_row = [&](std::string metric, double s, double b, double limit,
                       bool at_least) {
    check_row r{std::move(metric), s, b, s / b, "", false};
    r.target = (at_least ? ">= " : "<= ") + fmt(limit, 1) + "x";
    r.pass = at_least ? r.ratio >= limit : r.ratio <= limit;
    res.rows.push_back(r);
  };
  ratio_row("cache hit p50 (us)", hit_l.p50, echo_l.p50, 1.2, false);
  ratio_row("cache hit p99 (us)", hit_l.p99, echo_l.p99, 1.5, false);
  ratio_row("cache hit throughput (req/s)", median(res.tput_hit),
            median(res.tput_echo), 0.6, true);
  ratio_row("miss p50 (us)", miss_l.p50, echo_l.p50, 1.3, false);
  res.rows.push_back({"idle node RSS (MiB)", res.idle_rss / double(mib), nan,
                      nan, "< 64", res.idle_rss < 64 * mib});
  if (opts.memory) {
    auto budget = opts.cache_bytes + 64 * mib;
    res.rows.push_back(
        {"peak RSS, " + std::to_string(res.mem_requests) + " distinct (MiB)",
         res.mem_peak_rss / double(mib), budget / double(mib),
         res.mem_peak_rss / double(budget),
         "<= " + fmt(budget / double(mib), 0), res.mem_peak_rss <= budget});
  }
  print_rows(res.rows);
  std::printf("(baseline: raw ZeroMQ DEALER/ROUTER echo of the same %zu-byte "
              "frame; for peak RSS: cache.max_bytes + 64 MiB)\n",
              frame_source::fixed().current().size());
  if (opts.memory) {
    auto opt = [](const std::optional<double>& v, double scale) {
      return v ? fmt(*v / scale, 1) : std::string{"n/a"};
    };
    std::printf("memory node: shoal_cache_bytes %s MiB (budget %.1f MiB), "
                "entries %s, evictions %s; idle RSS %.1f MiB, final RSS %.1f "
                "MiB\n",
                opt(res.cache_bytes_metric, double(mib)).c_str(),
                opts.cache_bytes / double(mib),
                opt(res.cache_entries_metric, 1).c_str(),
                opt(res.cache_evictions_metric, 1).c_str(),
                res.mem_idle_rss / double(mib),
                res.mem_final_rss / double(mib));
  }
  std::printf("load average after: %s (%u cores)\n", res.load_after.c_str(),
              std::thread::hardware_concurrency());
  if (!opts.json.empty()) {
    write_json(opts.json, opts, res);
    std::printf("wrote %s\n", opts.json.c_str());
  }
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  auto opts = parse_args(argc, argv);
  struct stat st;
  if (::stat(opts.shoald.c_str(), &st) != 0 || !(st.st_mode & S_IXUSR)) {
    std::fprintf(stderr,
                 "bench_hotpath: no executable shoald at '%s' (use "
                 "--shoald PATH)\n",
                 opts.shoald.c_str());
    return 1;
  }
  std::signal(SIGPIPE, SIG_IGN);
  child_process echo_proc;
  try {
    // Forked first, while this process has no threads.
    auto echo_ep = start_echo_server(echo_proc);
    auto rc = run(opts, echo_proc, echo_ep);
    echo_proc.stop(5s);
    return rc;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "bench_hotpath: FAILED: %s\n", e.what());
    return 1;
  }
}
