#include "tests/chaos/cluster_process.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <arpa/inet.h>
#include <csignal>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/client/client.hpp"

namespace shoal::chaos {

// -- node_process
// ---------------------------------------------------------------

node_process::node_process(std::string name, std::string role, int http_port,
                           std::string log_path, std::vector<std::string> argv)
    : name_(std::move(name)), role_(std::move(role)), http_port_(http_port),
      proc_(std::move(argv), log_path) {}

std::string node_process::metrics() const {
  return http_get(http_port_, "/metrics").second;
}

// -- cluster
// --------------------------------------------------------------------

namespace {

std::string random_secret() {
  std::random_device rd;
  std::string s;
  static constexpr char hex[] = "0123456789abcdef";
  for (int i = 0; i < 64; ++i)
    s += hex[rd() % 16];
  return s;
}

} // namespace

cluster::cluster(cluster_options opts) : opts_(std::move(opts)) {
  char tmpl[] = "/tmp/shoal-chaos-XXXXXX";
  if (::mkdtemp(tmpl) != nullptr)
    dir_ = tmpl;
  endpoint_ = "tcp://127.0.0.1:" + std::to_string(free_port());
  link_ = "tcp://127.0.0.1:" + std::to_string(free_port());
  head_http_port_ = free_port();
  secret_ = random_secret();
}

cluster::~cluster() {
  // Workers first: a worker whose head vanished keeps retrying to join,
  // which is harmless, but stopping the head first makes every worker's
  // drain wait on a head that no longer answers.
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it)
    if ((*it)->role() == "worker") {
      (*it)->signal(SIGTERM);
      (*it)->signal(SIGCONT);
    }
  for (auto& n : nodes_)
    if (n->role() == "worker")
      n->stop(std::chrono::seconds{5});
  nodes_.clear();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::vector<std::string> cluster::common_args(const std::string& name,
                                              const std::string& role,
                                              int http_port) const {
  std::vector<std::string> a{"--set", "node.name=" + name, "--set",
                             "http.listen=127.0.0.1:" +
                                 std::to_string(http_port)};
  // A standalone node knows no cluster settings.
  bool clustered = role != "all";
  if (clustered)
    a.insert(a.end(), {"--set", "cluster.secret=" + secret_});
  // A model cache of its own per node, so that nodes never share verified
  // files (and a restarted node finds its own).
  auto cache = dir_ + "/cache-" + name;
  std::filesystem::create_directories(cache);
  a.insert(a.end(), {"--set", "models.cache_dir=" + cache});
  if (!opts_.models_root.empty())
    a.insert(a.end(), {"--set", "models.root=" + opts_.models_root});
  else if (const char* src = std::getenv("SOURCE_ROOT"))
    a.insert(a.end(),
             {"--set", std::string{"models.root="} + src + "/examples/models"});
  if (opts_.heartbeat_ms > 0 && clustered)
    a.insert(a.end(), {"--set", "cluster.heartbeat_ms=" +
                                    std::to_string(opts_.heartbeat_ms)});
  if (opts_.timeout_ms > 0 && clustered)
    a.insert(a.end(), {"--set", "cluster.timeout_ms=" +
                                    std::to_string(opts_.timeout_ms)});
  if (opts_.drain_grace_ms > 0)
    a.insert(a.end(), {"--set", "runtime.drain_grace_ms=" +
                                    std::to_string(opts_.drain_grace_ms)});
  a.insert(a.end(), opts_.extra_args.begin(), opts_.extra_args.end());
  return a;
}

node_process& cluster::spawn(const std::string& name, const std::string& role,
                             int http_port, std::vector<std::string> args) {
  const char* bin = std::getenv("SHOALD");
  std::vector<std::string> argv{bin ? bin : "./shoald"};
  argv.insert(argv.end(), args.begin(), args.end());
  args_[name] = args;
  auto log = dir_ + "/" + std::to_string(++processes_) + "-" + name + ".log";
  nodes_.push_back(std::make_unique<node_process>(name, role, http_port, log,
                                                  std::move(argv)));
  return *nodes_.back();
}

node_process& cluster::start_head(std::vector<std::string> extra) {
  std::vector<std::string> args{"--role", "head",
                                "--set",  "cluster.listen=" + link_,
                                "--set",  "gateway.endpoint=" + endpoint_};
  auto common = common_args("head", "head", head_http_port_);
  args.insert(args.end(), common.begin(), common.end());
  args.insert(args.end(), extra.begin(), extra.end());
  return spawn("head", "head", head_http_port_, std::move(args));
}

node_process& cluster::start_standalone() {
  std::vector<std::string> args{"--set", "gateway.endpoint=" + endpoint_};
  auto common = common_args("head", "all", head_http_port_);
  args.insert(args.end(), common.begin(), common.end());
  return spawn("head", "all", head_http_port_, std::move(args));
}

node_process& cluster::add_worker(const std::string& labels,
                                  std::vector<std::string> extra) {
  auto name = "w" + std::to_string(next_worker_++);
  int http = free_port();
  std::vector<std::string> args{"--role", "worker", "--join", link_};
  auto common = common_args(name, "worker", http);
  args.insert(args.end(), common.begin(), common.end());
  if (!labels.empty())
    args.insert(args.end(), {"--set", "node.labels=" + labels});
  args.insert(args.end(), extra.begin(), extra.end());
  return spawn(name, "worker", http, std::move(args));
}

node_process& cluster::restart(const std::string& name) {
  auto* last = node(name);
  if (last == nullptr)
    throw std::logic_error("cluster: no node " + name + " to restart");
  if (last->running())
    throw std::logic_error("cluster: " + name + " is still running");
  auto role = last->role();
  auto port = last->http_port();
  return spawn(name, role, port, args_.at(name));
}

bool cluster::wait_head_ready(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!head().running())
      return false;
    request r;
    r.op = op_kind::ping;
    auto rep = call(std::move(r), std::chrono::milliseconds{200});
    if (rep && rep->code == status::ok)
      return true;
  }
  return false;
}

bool cluster::wait_up(const std::vector<std::string>& names,
                      std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    auto rep = status(std::chrono::milliseconds{500});
    if (rep && rep->code == status::ok) {
      size_t up = 0;
      for (auto& want : names)
        for (auto& n : rep->nodes)
          if (n.name == want && n.state == "up")
            ++up;
      if (up == names.size())
        return true;
    }
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
}

bool cluster::wait_state(const std::string& name, const std::string& state,
                         std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (node_state(name) == state)
      return true;
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
}

caf::expected<reply> cluster::status(std::chrono::milliseconds timeout) {
  request r;
  r.op = op_kind::status;
  return call(std::move(r), timeout);
}

std::optional<std::string> cluster::node_state(const std::string& name) {
  auto rep = status(std::chrono::milliseconds{500});
  if (!rep || rep->code != status::ok)
    return std::nullopt;
  for (auto& n : rep->nodes)
    if (n.name == name)
      return n.state;
  return std::nullopt;
}

caf::expected<reply> cluster::call(request r,
                                   std::chrono::milliseconds timeout) {
  client_options o;
  o.endpoint = endpoint_;
  o.timeout = timeout;
  o.retries = 0;
  auto c = client::connect(o);
  if (!c)
    return c.error();
  return (*c)->call(std::move(r));
}

node_process* cluster::node(const std::string& name) {
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it)
    if ((*it)->name() == name)
      return it->get();
  return nullptr;
}

node_process& cluster::head() {
  auto* h = node("head");
  if (h == nullptr)
    throw std::logic_error("cluster: no head started");
  return *h;
}

std::vector<std::string> cluster::worker_names() const {
  std::vector<std::string> out;
  for (auto& n : nodes_)
    if (n->role() == "worker")
      out.push_back(n->name());
  return out;
}

std::string cluster::head_metrics() {
  return head().metrics();
}

std::string cluster::logs() const {
  std::string out;
  for (auto& n : nodes_) {
    out += "---- " + n->name() + " (" + n->role() + ", pid " +
           std::to_string(n->pid()) + ") ----\n";
    auto text = n->log();
    // The end is what explains a failure; a chatty node could bury it.
    constexpr size_t keep = 24 * 1024;
    if (text.size() > keep)
      out += "[... " + std::to_string(text.size() - keep) +
             " bytes cut ...]\n" + text.substr(text.size() - keep);
    else
      out += text;
  }
  return out;
}

} // namespace shoal::chaos
