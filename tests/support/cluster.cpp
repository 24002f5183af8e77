#include "tests/support/cluster.hpp"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <thread>

#include "net/client/client.hpp"
#include "tests/support/node_process.hpp"

namespace shoal::test {

// -- cluster_node -------------------------------------------------------------

cluster_node::cluster_node(std::string name, std::string role, int http_port,
                           std::string log_path, std::vector<std::string> argv,
                           spawn_options spawn)
    : name_(std::move(name)), role_(std::move(role)), http_port_(http_port),
      proc_(std::move(argv), log_path, spawn) {}

std::string cluster_node::metrics() const {
  return http_get(http_port_, "/metrics").second;
}

// -- cluster ------------------------------------------------------------------

namespace {

std::string random_secret() {
  std::random_device rd;
  std::string s;
  static constexpr char hex[] = "0123456789abcdef";
  for (int i = 0; i < 64; ++i) {
    s += hex[rd() % 16];
  }
  return s;
}

bool all_up(const std::vector<node_info>& nodes,
            const std::vector<std::string>& names) {
  size_t up = 0;
  for (auto& want : names) {
    for (auto& n : nodes) {
      if (n.name == want && n.state == "up") {
        ++up;
      }
    }
  }
  return up == names.size();
}

std::string loopback_endpoint() {
  return "tcp://127.0.0.1:" + std::to_string(free_port());
}

} // namespace

cluster::cluster(cluster_options opts)
    : opts_(std::move(opts)),
      dir_(opts_.dir_prefix,
           opts_.keep_dir || std::getenv("SHOALTEST_KEEP_DIR") != nullptr),
      endpoint_(loopback_endpoint()), link_(loopback_endpoint()),
      secret_(random_secret()), head_http_port_(free_port()) {}

cluster::~cluster() {
  // Workers first: a worker whose head vanished keeps retrying to join,
  // which is harmless, but stopping the head first makes every worker's
  // drain wait on a head that no longer answers. stop() sends a second
  // SIGTERM, which shoald takes as "stop now": teardown need not drain.
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
    if ((*it)->role() == "worker") {
      (*it)->process().request_stop();
    }
  }
  for (auto& n : nodes_) {
    if (n->role() == "worker") {
      n->stop(std::chrono::seconds{5});
    }
  }
  // Stopped before their logs and caches go with the directory.
  nodes_.clear();
}

std::vector<std::string> cluster::detector_args() const {
  std::vector<std::string> a;
  auto add = [&](const char* key, uint64_t v) {
    if (v > 0) {
      a.insert(a.end(), {"--set", std::string{key} + "=" + std::to_string(v)});
    }
  };
  add("cluster.heartbeat_ms", opts_.heartbeat_ms);
  add("cluster.timeout_ms", opts_.timeout_ms);
  add("cluster.suspect_ms", opts_.suspect_ms);
  return a;
}

std::vector<std::string> cluster::common_args(const std::string& name,
                                              const std::string& role,
                                              int http_port) const {
  std::vector<std::string> a{"--set", "node.name=" + name, "--set",
                             "http.listen=127.0.0.1:" +
                                 std::to_string(http_port)};
  // A standalone node knows no cluster settings.
  if (role != "all") {
    a.insert(a.end(), {"--set", "cluster.secret=" + secret_});
    auto det = detector_args();
    a.insert(a.end(), det.begin(), det.end());
  }
  // A model cache of its own per node, so that nodes never share verified
  // files (and a restarted node finds its own).
  auto cache = dir() + "/cache-" + name;
  std::filesystem::create_directories(cache);
  a.insert(a.end(), {"--set", "models.cache_dir=" + cache});
  auto root = models_root_args(opts_.models_root);
  a.insert(a.end(), root.begin(), root.end());
  if (opts_.drain_grace_ms > 0) {
    a.insert(a.end(), {"--set", "runtime.drain_grace_ms=" +
                                    std::to_string(opts_.drain_grace_ms)});
  }
  a.insert(a.end(), opts_.extra_args.begin(), opts_.extra_args.end());
  return a;
}

cluster_node& cluster::spawn(const std::string& name, const std::string& role,
                             int http_port, std::vector<std::string> args) {
  std::vector<std::string> argv{shoald_path(opts_.shoald)};
  argv.insert(argv.end(), args.begin(), args.end());
  args_[name] = std::move(args);
  auto log = dir() + "/" + std::to_string(++processes_) + "-" + name + ".log";
  nodes_.push_back(std::make_unique<cluster_node>(
      name, role, http_port, log, std::move(argv), opts_.spawn));
  return *nodes_.back();
}

cluster_node& cluster::start_head(std::vector<std::string> extra) {
  std::vector<std::string> args{"--role", "head",
                                "--set",  "cluster.listen=" + link_,
                                "--set",  "gateway.endpoint=" + endpoint_};
  auto common = common_args("head", "head", head_http_port_);
  args.insert(args.end(), common.begin(), common.end());
  args.insert(args.end(), extra.begin(), extra.end());
  head_name_ = "head";
  return spawn("head", "head", head_http_port_, std::move(args));
}

cluster_node& cluster::start_standalone(const std::string& name) {
  std::vector<std::string> args{"--set", "gateway.endpoint=" + endpoint_};
  auto common = common_args(name, "all", head_http_port_);
  args.insert(args.end(), common.begin(), common.end());
  head_name_ = name;
  return spawn(name, "all", head_http_port_, std::move(args));
}

cluster_node& cluster::add_worker(const std::string& labels,
                                  std::vector<std::string> extra) {
  auto name = "w" + std::to_string(next_worker_++);
  int http = free_port();
  std::vector<std::string> args{"--role", "worker", "--join", link_};
  auto common = common_args(name, "worker", http);
  args.insert(args.end(), common.begin(), common.end());
  if (!labels.empty()) {
    args.insert(args.end(), {"--set", "node.labels=" + labels});
  }
  args.insert(args.end(), extra.begin(), extra.end());
  return spawn(name, "worker", http, std::move(args));
}

cluster_node& cluster::restart(const std::string& name) {
  auto* last = node(name);
  if (last == nullptr) {
    throw std::logic_error("cluster: no node " + name + " to restart");
  }
  if (last->running()) {
    throw std::logic_error("cluster: " + name + " is still running");
  }
  auto role = last->role();
  auto port = last->http_port();
  return spawn(name, role, port, args_.at(name));
}

bool cluster::wait_head_ready(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    wait_check();
    if (!head().running()) {
      return false;
    }
    request r;
    r.op = op_kind::ping;
    auto rep = call(std::move(r), std::chrono::milliseconds{200});
    if (rep && rep->code == status::ok) {
      return true;
    }
  }
  return false;
}

bool cluster::wait_up(const std::vector<std::string>& names,
                      std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    wait_check();
    auto rep = status(std::chrono::milliseconds{500});
    if (rep && rep->code == status::ok && all_up(rep->nodes, names)) {
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
}

bool cluster::wait_state(const std::string& name, const std::string& state,
                         std::chrono::milliseconds limit,
                         std::chrono::milliseconds every) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    wait_check();
    if (node_state(name) == state) {
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(every);
  }
}

caf::expected<reply> cluster::status(std::chrono::milliseconds timeout) {
  request r;
  r.op = op_kind::status;
  return call(std::move(r), timeout);
}

std::optional<std::string> cluster::node_state(const std::string& name) {
  auto rep = status(std::chrono::milliseconds{500});
  if (!rep || rep->code != status::ok) {
    return std::nullopt;
  }
  for (auto& n : rep->nodes) {
    if (n.name == name) {
      return n.state;
    }
  }
  return std::nullopt;
}

caf::expected<reply> cluster::call(request r,
                                   std::chrono::milliseconds timeout) {
  client_options o;
  o.endpoint = endpoint_;
  o.timeout = timeout;
  o.retries = 0;
  auto c = client::connect(o);
  if (!c) {
    return c.error();
  }
  return (*c)->call(std::move(r));
}

std::vector<node_exit> cluster::shutdown(std::chrono::milliseconds limit) {
  auto stop_role = [&](bool workers) {
    for (auto& n : nodes_) {
      if ((n->role() == "worker") == workers) {
        n->process().request_stop();
      }
    }
    for (auto& n : nodes_) {
      if ((n->role() == "worker") == workers) {
        n->process().await_stop(limit);
      }
    }
  };
  stop_role(true);
  stop_role(false);
  std::vector<node_exit> out;
  for (auto& n : nodes_) {
    auto& p = n->process();
    out.push_back({n->name(), p.pid(),
                   p.wait_exit(std::chrono::milliseconds{0}), p.describe_exit(),
                   p.log_path()});
  }
  return out;
}

cluster_node* cluster::node(const std::string& name) {
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
    if ((*it)->name() == name) {
      return it->get();
    }
  }
  return nullptr;
}

cluster_node& cluster::head() {
  auto* h = node(head_name_);
  if (h == nullptr) {
    throw std::logic_error("cluster: no head started");
  }
  return *h;
}

std::vector<std::string> cluster::worker_names() const {
  std::vector<std::string> out;
  for (auto& n : nodes_) {
    if (n->role() == "worker") {
      out.push_back(n->name());
    }
  }
  return out;
}

std::string cluster::head_metrics() {
  return head().metrics();
}

std::string cluster::logs(size_t keep) const {
  std::string out;
  for (auto& n : nodes_) {
    out += "---- " + n->name() + " (" + n->role() + ", pid " +
           std::to_string(n->pid()) + ") ----\n";
    auto text = n->log();
    // The end is what explains a failure; a chatty node could bury it.
    if (text.size() > keep) {
      out += "[... " + std::to_string(text.size() - keep) +
             " bytes cut ...]\n" + text.substr(text.size() - keep);
    } else {
      out += text;
    }
  }
  return out;
}

} // namespace shoal::test
