// A shoal cluster made of real processes for chaos tests: one head and any
// number of workers, each a shoald started by fork/exec on free loopback
// ports with its own log file and model cache. Nodes are addressed by the
// name the status op reports (head, w1, w2, ...) and signalled by pid, so a
// test can SIGKILL, SIGSTOP or SIGTERM exactly one of them. Every wait is
// bounded; the destructor stops whatever is left.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <caf/expected.hpp>
#include <sys/types.h>

#include "net/wire/message.hpp"
#include "tests/integration/node_process.hpp"

namespace shoal::chaos {

// Shared with the integration tests (tests/integration/node_process.hpp).
using shoal::test::free_port;
using shoal::test::http_get;
using shoal::test::sample;

// One shoald process. Not copyable; the destructor stops it.
class node_process {
public:
  node_process(std::string name, std::string role, int http_port,
               std::string log_path, std::vector<std::string> argv);

  // As test::child_process: by pid, bounded; the destructor stops it.
  void signal(int sig) { proc_.signal(sig); }
  std::optional<int> wait_exit(std::chrono::milliseconds limit) {
    return proc_.wait_exit(limit);
  }
  // SIGCONT (a frozen process cannot act on SIGTERM), SIGTERM, wait up to
  // `limit`, then SIGKILL. Returns the exit code when it exited by itself.
  std::optional<int> stop(std::chrono::milliseconds limit) {
    return proc_.stop(limit);
  }
  bool running() { return proc_.running(); }
  std::string log() const { return proc_.log(); }
  std::string metrics() const;

  const std::string& name() const noexcept { return name_; }
  const std::string& role() const noexcept { return role_; }
  int http_port() const noexcept { return http_port_; }
  pid_t pid() const noexcept { return proc_.pid(); }

private:
  std::string name_;
  std::string role_;
  int http_port_;
  shoal::test::child_process proc_;
};

struct cluster_options {
  // Failure detector settings given to every node (cluster.heartbeat_ms,
  // cluster.timeout_ms); 0 keeps shoald's default.
  uint64_t heartbeat_ms = 0;
  uint64_t timeout_ms = 0;
  // runtime.drain_grace_ms for every node; 0 keeps the default.
  uint64_t drain_grace_ms = 0;
  // Extra shoald arguments for every node.
  std::vector<std::string> extra_args;
  // models.root; empty: SOURCE_ROOT/examples/models.
  std::string models_root;
};

// A head and its workers. The head's ports are fixed at construction, so a
// head started again after a crash comes back where the workers look.
class cluster {
public:
  explicit cluster(cluster_options opts = {});
  ~cluster();

  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;

  // Starts a head process (the first, or a new one after the last exited).
  node_process& start_head(std::vector<std::string> extra = {});
  // Starts a standalone node (role all) named "head" on the head's ports:
  // the single-process baseline the cluster numbers compare against.
  node_process& start_standalone();
  // Starts the next worker, w1, w2, ... `labels` is node.labels'
  // value (e.g. "capacity=spot"); empty for none.
  node_process& add_worker(const std::string& labels = {},
                           std::vector<std::string> extra = {});

  // Starts `name` again (a worker or the head) with the arguments and ports
  // of its last process, which must have exited: a crashed node that its
  // supervisor restarts, with a new incarnation.
  node_process& restart(const std::string& name);

  // True once the head answers a ping (bounded); false early if it exited.
  bool wait_head_ready(std::chrono::milliseconds limit);
  // True once the head's status op reports every named node `up`.
  bool wait_up(const std::vector<std::string>& names,
               std::chrono::milliseconds limit);
  // True once the head reports `name` in `state`.
  bool wait_state(const std::string& name, const std::string& state,
                  std::chrono::milliseconds limit);

  // The head's status op (one client per call; `timeout` per attempt).
  caf::expected<reply>
  status(std::chrono::milliseconds timeout = std::chrono::milliseconds{1000});
  // The state the head reports for `name`, or nullopt (not listed, or no
  // reply).
  std::optional<std::string> node_state(const std::string& name);
  // Sends one request to the head and waits for its reply.
  caf::expected<reply>
  call(request r, std::chrono::milliseconds timeout = std::chrono::seconds{10});

  // The newest process with that name (head: the current head), or null.
  node_process* node(const std::string& name);
  node_process& head();
  std::vector<std::string> worker_names() const;

  std::string head_metrics();

  // Every process's log, newest process last, each under a header: what a
  // failed test prints.
  std::string logs() const;

  const std::string& endpoint() const noexcept { return endpoint_; }
  const std::string& link_endpoint() const noexcept { return link_; }
  const std::string& secret() const noexcept { return secret_; }
  int head_http_port() const noexcept { return head_http_port_; }

private:
  std::vector<std::string> common_args(const std::string& name,
                                       const std::string& role,
                                       int http_port) const;
  node_process& spawn(const std::string& name, const std::string& role,
                      int http_port, std::vector<std::string> args);

  cluster_options opts_;
  std::string dir_;
  std::string endpoint_;
  std::string link_;
  std::string secret_;
  int head_http_port_ = 0;
  int next_worker_ = 1;
  int processes_ = 0;
  std::vector<std::unique_ptr<node_process>> nodes_;
  // The arguments each name was last started with, for restart().
  std::map<std::string, std::vector<std::string>> args_;
};

} // namespace shoal::chaos
