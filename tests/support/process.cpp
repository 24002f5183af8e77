#include "tests/support/process.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace shoal::test {

namespace {

// Whether `sig` is pending for the whole process (/proc/PID/status ShdPnd).
bool signal_pending(pid_t pid, int sig) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("ShdPnd:", 0) == 0) {
      auto mask = std::strtoull(line.c_str() + 7, nullptr, 16);
      return (mask >> (sig - 1)) & 1;
    }
  }
  return false;
}

sockaddr_in loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  return addr;
}

bool send_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    auto n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) {
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

std::string read_all(int fd) {
  std::string out;
  char buf[16384];
  for (;;) {
    auto n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

void (*g_wait_check)() = nullptr;

} // namespace

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    throw std::runtime_error{std::string{"socket: "} + std::strerror(errno)};
  }
  auto addr = loopback(0);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    auto err = errno;
    ::close(fd);
    throw std::runtime_error{std::string{"bind: "} + std::strerror(err)};
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::pair<int, std::string> http_get(int port, const std::string& path,
                                     std::chrono::milliseconds timeout) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    return {0, {}};
  }
  auto ms = timeout.count();
  timeval tv{static_cast<time_t>(ms / 1000),
             static_cast<suseconds_t>(ms % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  auto addr = loopback(port);
  auto req = "GET " + path +
             " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      !send_all(fd, req)) {
    ::close(fd);
    return {0, {}};
  }
  auto resp = read_all(fd);
  ::close(fd);
  auto body = resp.find("\r\n\r\n");
  if (resp.compare(0, 5, "HTTP/") != 0 || resp.size() <= 12 ||
      body == std::string::npos) {
    return {0, {}};
  }
  return {std::atoi(resp.c_str() + 9), resp.substr(body + 4)};
}

std::optional<double> sample(const std::string& text,
                             const std::string& series) {
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() &&
        line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
    }
  }
  return std::nullopt;
}

std::string read_tail(const std::string& path, size_t max_bytes) {
  std::ifstream in{path, std::ios::binary};
  std::string s{std::istreambuf_iterator<char>{in}, {}};
  return s.size() > max_bytes ? s.substr(s.size() - max_bytes) : s;
}

std::string loadavg() {
  std::ifstream in{"/proc/loadavg"};
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

temp_dir::temp_dir(const std::string& prefix, bool keep,
                   const std::string& parent)
    : keep_(keep) {
  const char* env = std::getenv("TMPDIR");
  auto base = !parent.empty()                  ? parent
              : env != nullptr && *env != '\0' ? std::string{env}
                                               : std::string{"/tmp"};
  auto tmpl = base + "/" + prefix + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    throw std::runtime_error{"mkdtemp " + tmpl + ": " + std::strerror(errno)};
  }
  path_ = tmpl;
}

temp_dir::~temp_dir() {
  if (!keep_) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
}

void set_wait_check(void (*check)()) {
  g_wait_check = check;
}

void wait_check() {
  if (g_wait_check != nullptr) {
    g_wait_check();
  }
}

// -- child_process ------------------------------------------------------------

child_process::child_process(std::vector<std::string> argv,
                             const std::string& log_path, spawn_options opts)
    : log_path_(log_path) {
  std::vector<char*> cargs;
  for (auto& a : argv) {
    cargs.push_back(a.data());
  }
  cargs.push_back(nullptr);
  start(
      [&] {
        ::execv(cargs[0], cargs.data());
        std::perror("execv");
        return 127;
      },
      opts);
}

child_process::child_process(const std::function<int()>& body,
                             const std::string& log_path, spawn_options opts)
    : log_path_(log_path) {
  start(body, opts);
}

void child_process::start(const std::function<int()>& in_child,
                          spawn_options opts) {
  int log_fd = -1;
  if (!log_path_.empty()) {
    log_fd = ::open(log_path_.c_str(),
                    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  }
  pid_t parent = ::getpid();
  // Buffered output would otherwise be written twice, once by each process.
  std::fflush(nullptr);
  pid_ = ::fork();
  if (pid_ != 0) {
    if (log_fd >= 0) {
      ::close(log_fd);
    }
    if (pid_ < 0) {
      throw std::runtime_error{std::string{"fork: "} + std::strerror(errno)};
    }
    return;
  }
  ::prctl(PR_SET_PDEATHSIG, opts.death_signal);
  if (::getppid() != parent) { // the parent died before prctl
    std::_Exit(127);
  }
  if (opts.own_process_group) {
    ::setpgid(0, 0);
  }
  // The parent's handlers (a benchmark's interrupt flag) mean nothing here.
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    ::signal(sig, SIG_DFL);
  }
  int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd >= 0) {
    ::dup2(null_fd, STDIN_FILENO);
  }
  if (log_fd >= 0) {
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
  }
  int code = in_child();
  // No destructors or atexit handlers of the parent's copy run here.
  std::fflush(nullptr);
  std::_Exit(code);
}

child_process::~child_process() {
  stop(std::chrono::seconds{10});
}

void child_process::signal(int sig) {
  if (pid_ > 0 && !wait_status_) {
    ::kill(pid_, sig);
  }
}

std::optional<int> child_process::wait_exit(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!wait_status_ && pid_ > 0) {
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      wait_status_ = st;
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
  if (!wait_status_) {
    return std::nullopt;
  }
  auto st = *wait_status_;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void child_process::request_stop() {
  signal(SIGTERM);
  signal(SIGCONT);
}

std::optional<int> child_process::await_stop(std::chrono::milliseconds limit) {
  if (wait_status_ || pid_ <= 0) {
    return wait_exit(std::chrono::milliseconds{0});
  }
  if (auto code = wait_exit(limit)) {
    return code;
  }
  std::fprintf(stderr, "pid %d ignored SIGTERM for %lld ms; killing it\n",
               static_cast<int>(pid_), static_cast<long long>(limit.count()));
  kill();
  return std::nullopt;
}

std::optional<int> child_process::stop(std::chrono::milliseconds limit) {
  if (wait_status_ || pid_ <= 0) {
    return wait_exit(std::chrono::milliseconds{0});
  }
  // Signals do not queue: a SIGTERM sent while an earlier one is still
  // pending merges with it, and shoald never sees the second SIGTERM that
  // means "stop now" (it would drain for its whole grace period instead).
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds{1};
  while (signal_pending(pid_, SIGTERM) &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
  request_stop();
  return await_stop(limit);
}

void child_process::kill() {
  if (pid_ <= 0 || wait_status_) {
    return;
  }
  ::kill(pid_, SIGKILL);
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    // A benchmark's interrupt handler may cut the wait short; the process
    // is gone a moment later either way.
  }
  wait_status_ = st;
}

std::string child_process::describe_exit() const {
  if (!wait_status_) {
    return "running";
  }
  auto st = *wait_status_;
  if (WIFEXITED(st)) {
    return "exit " + std::to_string(WEXITSTATUS(st));
  }
  if (WIFSIGNALED(st)) {
    return std::string{"signal "} + strsignal(WTERMSIG(st));
  }
  return "status " + std::to_string(st);
}

std::string child_process::log() const {
  std::ifstream in{log_path_};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace shoal::test
