// Starts a real shoald process on free loopback ports for a test, and stops
// it by pid (SIGTERM, then SIGKILL after a bound) when the test ends.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace shoal::test {

// A loopback TCP port that was free a moment ago.
int free_port();

// GET http://127.0.0.1:PORT/PATH with a plain socket; returns {status,
// body}, status 0 when the connection failed.
std::pair<int, std::string> http_get(int port, const std::string& path);

// The value of one sample in Prometheus text ("name{labels}" exactly as
// rendered), or nullopt.
std::optional<double> sample(const std::string& metrics_text,
                             const std::string& series);

// A child started with fork/execv (argv[0] is the program), its stdout and
// stderr appended to `log_path`, signalled and stopped by pid with bounded
// waits. It dies with the test binary (PR_SET_PDEATHSIG), so a crashed or
// timed-out test never leaves processes holding ports. The destructor
// stops it.
class child_process {
public:
  child_process(std::vector<std::string> argv, const std::string& log_path);
  ~child_process();

  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  // Sends `sig` unless the process is known to have exited.
  void signal(int sig);

  // Waits for the process to exit; the exit code, or 128+signal, or
  // nullopt when it still runs after `limit`.
  std::optional<int> wait_exit(std::chrono::milliseconds limit);

  // SIGTERM and SIGCONT (a frozen process cannot act on SIGTERM), wait up
  // to `limit`, then SIGKILL. Returns the exit code when it exited by
  // itself, nullopt when it had to be killed.
  std::optional<int> stop(std::chrono::milliseconds limit);

  bool running() { return !wait_exit(std::chrono::milliseconds{0}); }

  // Everything it wrote so far.
  std::string log() const;

  pid_t pid() const noexcept { return pid_; }

private:
  std::string log_path_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

class node_process {
public:
  // Extra arguments go to shoald after the port settings.
  explicit node_process(std::vector<std::string> args = {});
  ~node_process();

  node_process(const node_process&) = delete;
  node_process& operator=(const node_process&) = delete;

  // True once the node answers a ping (bounded wait).
  bool wait_ready(std::chrono::milliseconds limit = std::chrono::seconds{15});

  // SIGTERM and wait; returns the exit code (or 128+signal), nullopt if it
  // had to be killed.
  std::optional<int>
  stop(std::chrono::milliseconds limit = std::chrono::seconds{15});

  // Waits for the process to exit on its own.
  std::optional<int> wait_exit(std::chrono::milliseconds limit) {
    return proc_->wait_exit(limit);
  }

  std::string metrics() const;
  std::string log() const { return proc_->log(); }

  const std::string& endpoint() const noexcept { return endpoint_; }
  int http_port() const noexcept { return http_port_; }
  pid_t pid() const noexcept { return proc_->pid(); }

private:
  std::string endpoint_;
  int http_port_ = 0;
  std::string log_path_;
  std::string cache_dir_;
  std::unique_ptr<child_process> proc_;
};

} // namespace shoal::test
