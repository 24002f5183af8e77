// Child processes, loopback ports, HTTP and Prometheus samples for the tests
// and the benchmarks that run shoald (and other programs) as real processes.
// Every wait is bounded and every child is addressed by its pid, so a test or
// a benchmark that fails never leaves a process holding a port behind.
#pragma once

#include <chrono>
#include <csignal>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sys/types.h>

namespace shoal::test {

// A loopback TCP port that was free a moment ago. Throws std::runtime_error
// when no socket can be bound at all.
int free_port();

// GET http://127.0.0.1:PORT/PATH with a plain socket; returns {status,
// body}, status 0 when the connection or the exchange failed. The timeout is
// short by default: callers poll metrics of nodes that may be frozen, and a
// stuck read must not stall their loop.
std::pair<int, std::string>
http_get(int port, const std::string& path,
         std::chrono::milliseconds timeout = std::chrono::seconds{2});

// The value of one sample in Prometheus text ("name" or "name{labels}"
// exactly as rendered), or nullopt.
std::optional<double> sample(const std::string& metrics_text,
                             const std::string& series);

// The last `max_bytes` of a file (all of it when shorter; empty when it
// cannot be read): the part of a log that explains a failure.
std::string read_tail(const std::string& path, size_t max_bytes = 2000);

// /proc/loadavg's 1, 5 and 15 minute averages, as "a b c".
std::string loadavg();

// A fresh directory, $TMPDIR (or /tmp, or `parent` when set) /
// PREFIX-XXXXXX, removed with everything in it by the destructor unless
// `keep`. Throws std::runtime_error when it cannot be made.
class temp_dir {
public:
  explicit temp_dir(const std::string& prefix, bool keep = false,
                    const std::string& parent = {});
  ~temp_dir();

  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::string& path() const noexcept { return path_; }

private:
  std::string path_;
  bool keep_;
};

// Called on every round of the polling waits here and in the node helpers,
// so that a caller can abandon a wait by throwing (a benchmark that was
// interrupted). Null (the default) does nothing.
void set_wait_check(void (*check)());
void wait_check();

// How a child is started.
struct spawn_options {
  // A process group of its own: a terminal's Ctrl-C then reaches only the
  // parent, which stops its children in order instead of all dying at once.
  bool own_process_group = false;
  // Sent to the child when the parent dies (PR_SET_PDEATHSIG).
  int death_signal = SIGKILL;
};

// A child started with fork (and execv, unless it runs a function), its
// stdout and stderr appended to a log file, stdin from /dev/null, signalled
// and stopped by pid with bounded waits. It dies with its parent, so a
// crashed or timed-out test never leaves processes behind. The destructor
// stops it.
class child_process {
public:
  // execv(argv[0], argv).
  child_process(std::vector<std::string> argv, const std::string& log_path,
                spawn_options opts = {});
  // Runs `body` in the forked child and exits with what it returns. The
  // parent must have no threads yet. An empty log path keeps the parent's
  // stdout and stderr.
  child_process(const std::function<int()>& body, const std::string& log_path,
                spawn_options opts = {});
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

  // stop() in two halves, so that several processes drain in parallel
  // (shoald takes a second SIGTERM as "stop now": await_stop sends none).
  void request_stop();
  std::optional<int> await_stop(std::chrono::milliseconds limit);

  // SIGKILL, and reaped.
  void kill();

  bool running() { return !wait_exit(std::chrono::milliseconds{0}); }

  // How it ended ("exit 0", "signal Killed"), or "running".
  std::string describe_exit() const;

  // Everything it wrote so far.
  std::string log() const;
  const std::string& log_path() const noexcept { return log_path_; }

  pid_t pid() const noexcept { return pid_; }

private:
  void start(const std::function<int()>& in_child, spawn_options opts);

  std::string log_path_;
  pid_t pid_ = -1;
  std::optional<int> wait_status_;
};

} // namespace shoal::test
