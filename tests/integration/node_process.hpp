// Starts a real shoald process on free loopback ports for a test, and stops
// it by pid (SIGTERM, then SIGKILL after a bound) when the test ends.
#pragma once

#include <chrono>
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
  std::optional<int> wait_exit(std::chrono::milliseconds limit);

  std::string metrics() const;
  std::string log() const;

  const std::string& endpoint() const noexcept { return endpoint_; }
  int http_port() const noexcept { return http_port_; }
  pid_t pid() const noexcept { return pid_; }

private:
  std::string endpoint_;
  int http_port_ = 0;
  pid_t pid_ = -1;
  std::string log_path_;
  std::string cache_dir_;
  std::optional<int> exit_code_;
};

} // namespace shoal::test
