// A shoal cluster made of real processes: one head (or a standalone node in
// its place) and any number of workers, each a shoald started by fork/exec on
// free loopback ports with its own log file and model cache in a temporary
// directory. Nodes are addressed by the name the status op reports (head, w1,
// w2, ...) and signalled by pid, so a caller can SIGKILL, SIGSTOP or SIGTERM
// exactly one of them. Every wait is bounded; the destructor stops whatever
// is left.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <caf/expected.hpp>
#include <sys/types.h>

#include "net/wire/message.hpp"
#include "tests/support/process.hpp"

namespace shoal::test {

// One shoald process of a cluster. Not copyable; the destructor stops it.
class cluster_node {
public:
  cluster_node(std::string name, std::string role, int http_port,
               std::string log_path, std::vector<std::string> argv,
               spawn_options spawn);

  // As child_process: by pid, bounded; the destructor stops it.
  void signal(int sig) { proc_.signal(sig); }
  std::optional<int> wait_exit(std::chrono::milliseconds limit) {
    return proc_.wait_exit(limit);
  }
  // SIGCONT (a frozen process cannot act on SIGTERM), SIGTERM, wait up to
  // `limit`, then SIGKILL. Returns the exit code when it exited by itself.
  std::optional<int> stop(std::chrono::milliseconds limit) {
    return proc_.stop(limit);
  }
  void kill() { proc_.kill(); }
  bool running() { return proc_.running(); }
  std::string log() const { return proc_.log(); }
  std::string metrics() const;
  child_process& process() noexcept { return proc_; }

  const std::string& name() const noexcept { return name_; }
  const std::string& role() const noexcept { return role_; }
  int http_port() const noexcept { return http_port_; }
  pid_t pid() const noexcept { return proc_.pid(); }

private:
  std::string name_;
  std::string role_;
  int http_port_;
  child_process proc_;
};

struct cluster_options {
  // Failure detector settings given to every clustered node
  // (cluster.heartbeat_ms, cluster.timeout_ms, cluster.suspect_ms); 0 keeps
  // shoald's default.
  uint64_t heartbeat_ms = 0;
  uint64_t timeout_ms = 0;
  uint64_t suspect_ms = 0;
  // runtime.drain_grace_ms for every node; 0 keeps the default.
  uint64_t drain_grace_ms = 0;
  // Extra shoald arguments for every node.
  std::vector<std::string> extra_args;
  // See models_root_args() (tests/support/node_process.hpp).
  std::string models_root;
  // See shoald_path().
  std::string shoald;
  // The temporary directory (logs, caches): $TMPDIR (or /tmp) /
  // PREFIX-XXXXXX, removed by the destructor unless `keep_dir` or the
  // environment sets SHOALTEST_KEEP_DIR (not SHOAL_*: shoald reads
  // those as settings), to read the nodes' logs after a run.
  std::string dir_prefix = "shoal-chaos";
  bool keep_dir = false;
  spawn_options spawn;
};

// How one process ended when the cluster was shut down.
struct node_exit {
  std::string name;
  pid_t pid = -1;
  // The exit code; nullopt when it had to be killed.
  std::optional<int> code;
  std::string how; // child_process::describe_exit()
  std::string log_path;
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
  cluster_node& start_head(std::vector<std::string> extra = {});
  // Starts a standalone node (role all) named `name` on the head's ports:
  // the single-process baseline the cluster numbers compare against.
  cluster_node& start_standalone(const std::string& name = "head");
  // Starts the next worker, w1, w2, ... `labels` is node.labels'
  // value (e.g. "capacity=spot"); empty for none.
  cluster_node& add_worker(const std::string& labels = {},
                           std::vector<std::string> extra = {});

  // Starts `name` again (a worker or the head) with the arguments and ports
  // of its last process, which must have exited: a crashed node that its
  // supervisor restarts, with a new incarnation.
  cluster_node& restart(const std::string& name);

  // True once the head answers a ping (bounded); false early if it exited.
  bool wait_head_ready(std::chrono::milliseconds limit);
  // True once the head's status op reports every named node `up`.
  bool wait_up(const std::vector<std::string>& names,
               std::chrono::milliseconds limit);
  // True once the head reports `name` in `state`, asking every `every`.
  bool wait_state(const std::string& name, const std::string& state,
                  std::chrono::milliseconds limit,
                  std::chrono::milliseconds every = std::chrono::milliseconds{
                      20});

  // The head's status op (one client per call; `timeout` per attempt).
  caf::expected<reply>
  status(std::chrono::milliseconds timeout = std::chrono::milliseconds{1000});
  // The state the head reports for `name`, or nullopt (not listed, or no
  // reply).
  std::optional<std::string> node_state(const std::string& name);
  // Sends one request to the head and waits for its reply.
  caf::expected<reply>
  call(request r, std::chrono::milliseconds timeout = std::chrono::seconds{10});

  // Stops every process that still runs, workers first (a worker whose head
  // is gone would wait on it while draining), each with one SIGTERM, and
  // returns how every process of the cluster ended, in start order.
  std::vector<node_exit> shutdown(std::chrono::milliseconds limit);

  // The newest process with that name (head: the current head), or null.
  cluster_node* node(const std::string& name);
  cluster_node& head();
  std::vector<std::string> worker_names() const;

  std::string head_metrics();

  // Every process's log, newest process last, each under a header and cut
  // to its last `keep` bytes: what a failure prints.
  std::string logs(size_t keep = 24 * 1024) const;

  const std::string& endpoint() const noexcept { return endpoint_; }
  const std::string& link_endpoint() const noexcept { return link_; }
  const std::string& secret() const noexcept { return secret_; }
  int head_http_port() const noexcept { return head_http_port_; }
  const std::string& dir() const noexcept { return dir_.path(); }

private:
  std::vector<std::string> common_args(const std::string& name,
                                       const std::string& role,
                                       int http_port) const;
  std::vector<std::string> detector_args() const;
  cluster_node& spawn(const std::string& name, const std::string& role,
                      int http_port, std::vector<std::string> args);

  cluster_options opts_;
  temp_dir dir_;
  std::string endpoint_;
  std::string link_;
  std::string secret_;
  std::string head_name_ = "head";
  int head_http_port_ = 0;
  int next_worker_ = 1;
  int processes_ = 0;
  std::vector<std::unique_ptr<cluster_node>> nodes_;
  // The arguments each name was last started with, for restart().
  std::map<std::string, std::vector<std::string>> args_;
};

} // namespace shoal::test
