#include "tests/support/node_process.hpp"

#include <cstdlib>

#include <unistd.h>

#include "net/client/client.hpp"

namespace shoal::test {

std::string shoald_path(const std::string& configured) {
  if (!configured.empty()) {
    return configured;
  }
  const char* env = std::getenv("SHOALD");
  return env != nullptr && *env != '\0' ? env : "./shoald";
}

std::vector<std::string> models_root_args(const std::string& configured) {
  if (!configured.empty()) {
    return {"--set", "models.root=" + configured};
  }
  if (const char* src = std::getenv("SOURCE_ROOT")) {
    return {"--set", std::string{"models.root="} + src + "/examples/models"};
  }
  return {};
}

bool lost_port_race(const child_process& proc) {
  auto tail = read_tail(proc.log_path());
  return tail.find("bind") != std::string::npos ||
         tail.find("in use") != std::string::npos;
}

node_process::node_process(std::vector<std::string> args)
    : node_process(node_options{{}, {}, "test-node", std::move(args), {}}) {}

node_process::node_process(node_options opts) : ping_(opts.ping) {
  int port = free_port();
  http_port_ = free_port();
  endpoint_ = "tcp://127.0.0.1:" + std::to_string(port);
  char tmpl[] = "/tmp/shoald-test-XXXXXX";
  int log_fd = ::mkstemp(tmpl);
  if (log_fd >= 0) {
    ::close(log_fd);
  }
  log_path_ = tmpl;
  std::vector<std::string> argv{shoald_path(opts.shoald),
                                "--set",
                                "gateway.endpoint=" + endpoint_,
                                "--set",
                                "http.listen=127.0.0.1:" +
                                    std::to_string(http_port_),
                                "--set",
                                "node.name=" + opts.name};
  // A model cache of its own, so that nodes never share verified files.
  argv.insert(argv.end(), {"--set", "models.cache_dir=" + cache_dir_.path()});
  auto root = models_root_args(opts.models_root);
  argv.insert(argv.end(), root.begin(), root.end());
  argv.insert(argv.end(), opts.args.begin(), opts.args.end());
  proc_ =
      std::make_unique<child_process>(std::move(argv), log_path_, opts.spawn);
}

node_process::~node_process() {
  // Stopped before its log and cache go.
  proc_->stop(std::chrono::seconds{10});
  ::unlink(log_path_.c_str());
}

bool node_process::wait_ready(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  client_options opts = ping_;
  opts.endpoint = endpoint_;
  opts.timeout = std::chrono::milliseconds{200};
  opts.retries = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    wait_check();
    if (wait_exit(std::chrono::milliseconds{0})) {
      return false;
    }
    auto c = client::connect(opts);
    if (!c) {
      return false;
    }
    request r;
    r.op = op_kind::ping;
    auto rep = (*c)->call(r);
    if (rep && rep->code == status::ok) {
      return true;
    }
  }
  return false;
}

std::optional<int> node_process::stop(std::chrono::milliseconds limit) {
  return proc_->stop(limit);
}

std::string node_process::metrics() const {
  return http_get(http_port_, "/metrics").second;
}

} // namespace shoal::test
