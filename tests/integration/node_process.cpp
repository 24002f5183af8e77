#include "tests/integration/node_process.hpp"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <arpa/inet.h>
#include <csignal>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/client/client.hpp"

namespace shoal::test {

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::pair<int, std::string> http_get(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  // Short: the chaos tests poll metrics every few tens of ms while a node
  // may be frozen, and a stuck read must not stall the poll loop.
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return {0, {}};
  }
  auto req = "GET " + path +
             " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  [[maybe_unused]] auto w = ::write(fd, req.data(), req.size());
  std::string resp;
  char buf[65536];
  for (;;) {
    auto n = ::read(fd, buf, sizeof(buf));
    if (n <= 0)
      break;
    resp.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  int code = 0;
  if (resp.size() > 12)
    code = std::atoi(resp.c_str() + 9);
  auto body = resp.find("\r\n\r\n");
  return {code, body == std::string::npos ? "" : resp.substr(body + 4)};
}

std::optional<double> sample(const std::string& text,
                             const std::string& series) {
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() &&
        line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ')
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
  }
  return std::nullopt;
}

node_process::node_process(std::vector<std::string> args) {
  const char* bin = std::getenv("SHOALD");
  std::string shoald = bin ? bin : "./shoald";
  int port = free_port();
  http_port_ = free_port();
  endpoint_ = "tcp://127.0.0.1:" + std::to_string(port);
  char tmpl[] = "/tmp/shoald-test-XXXXXX";
  int log_fd = ::mkstemp(tmpl);
  log_path_ = tmpl;
  std::vector<std::string> argv{shoald,
                                "--set",
                                "gateway.endpoint=" + endpoint_,
                                "--set",
                                "http.listen=127.0.0.1:" +
                                    std::to_string(http_port_),
                                "--set",
                                "node.name=test-node"};
  // A model cache of its own, so that tests never share verified files.
  char cache_tmpl[] = "/tmp/shoald-cache-XXXXXX";
  if (::mkdtemp(cache_tmpl) != nullptr) {
    cache_dir_ = cache_tmpl;
    argv.push_back("--set");
    argv.push_back("models.cache_dir=" + cache_dir_);
  }
  if (const char* src = std::getenv("SOURCE_ROOT")) {
    argv.push_back("--set");
    argv.push_back(std::string{"models.root="} + src + "/examples/models");
  }
  argv.insert(argv.end(), args.begin(), args.end());
  ::close(log_fd);
  proc_ = std::make_unique<child_process>(std::move(argv), log_path_);
}

node_process::~node_process() {
  // Stopped before its log and cache go.
  proc_->stop(std::chrono::seconds{10});
  ::unlink(log_path_.c_str());
  if (!cache_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(cache_dir_, ec);
  }
}

bool node_process::wait_ready(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  client_options opts;
  opts.endpoint = endpoint_;
  opts.timeout = std::chrono::milliseconds{200};
  opts.retries = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (wait_exit(std::chrono::milliseconds{0}))
      return false;
    auto c = client::connect(opts);
    if (!c)
      return false;
    request r;
    r.op = op_kind::ping;
    auto rep = (*c)->call(r);
    if (rep && rep->code == status::ok)
      return true;
  }
  return false;
}

std::optional<int> node_process::stop(std::chrono::milliseconds limit) {
  return proc_->stop(limit);
}

std::string node_process::metrics() const {
  return http_get(http_port_, "/metrics").second;
}

// -- child_process
// --------------------------------------------------------------

child_process::child_process(std::vector<std::string> argv,
                             const std::string& log_path)
    : log_path_(log_path) {
  int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) // the parent died before prctl
      std::_Exit(127);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    std::vector<char*> cargs;
    for (auto& a : argv)
      cargs.push_back(a.data());
    cargs.push_back(nullptr);
    ::execv(cargs[0], cargs.data());
    std::perror("execv");
    std::_Exit(127);
  }
  ::close(log_fd);
}

child_process::~child_process() {
  stop(std::chrono::seconds{10});
}

void child_process::signal(int sig) {
  if (pid_ > 0 && !exit_code_)
    ::kill(pid_, sig);
}

std::optional<int> child_process::wait_exit(std::chrono::milliseconds limit) {
  if (exit_code_)
    return exit_code_;
  if (pid_ <= 0)
    return std::nullopt;
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int st = 0;
    auto r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      return exit_code_;
    }
    if (std::chrono::steady_clock::now() >= deadline)
      return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
}

std::optional<int> child_process::stop(std::chrono::milliseconds limit) {
  if (exit_code_ || pid_ <= 0)
    return exit_code_;
  ::kill(pid_, SIGTERM);
  ::kill(pid_, SIGCONT);
  if (auto code = wait_exit(limit))
    return code;
  ::kill(pid_, SIGKILL);
  wait_exit(std::chrono::seconds{5});
  return std::nullopt;
}

std::string child_process::log() const {
  std::ifstream in{log_path_};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace shoal::test
