// A real standalone shoald process on free loopback ports, with a model cache
// of its own, stopped by pid (SIGTERM, then SIGKILL after a bound) when it
// goes out of scope.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include "net/client/client.hpp"
#include "tests/support/process.hpp"

namespace shoal::test {

// The shoald to run: `configured` when set, else $SHOALD, else ./shoald.
std::string shoald_path(const std::string& configured = {});

// The models.root arguments: `configured` when set, else
// $SOURCE_ROOT/examples/models when that is set, else none (shoald's
// default, the example models of its source tree).
std::vector<std::string> models_root_args(const std::string& configured = {});

// True when a node that exited early had lost a race for one of its ports
// (another process bound it between free_port() and the node's bind): worth
// starting again on other ports.
bool lost_port_race(const child_process& proc);

struct node_options {
  std::string shoald;             // see shoald_path()
  std::string models_root;        // see models_root_args()
  std::string name = "test-node"; // node.name
  // Extra arguments, after the port, name and model settings.
  std::vector<std::string> args;
  spawn_options spawn;
  // How wait_ready's ping connects (its CURVE keys, for a node with
  // security.curve_secret_key_file); the endpoint is the node's.
  client_options ping;
};

class node_process {
public:
  // Extra arguments go to shoald after the port settings.
  explicit node_process(std::vector<std::string> args = {});
  explicit node_process(node_options opts);
  ~node_process();

  node_process(const node_process&) = delete;
  node_process& operator=(const node_process&) = delete;

  // True once the node answers a ping (bounded wait); false at once when
  // it exited.
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
  child_process& process() noexcept { return *proc_; }

private:
  std::string endpoint_;
  int http_port_ = 0;
  std::string log_path_;
  client_options ping_;
  temp_dir cache_dir_{"shoald-cache"};
  std::unique_ptr<child_process> proc_;
};

} // namespace shoal::test
