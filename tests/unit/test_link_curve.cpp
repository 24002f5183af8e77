// Node links with CURVE: what crosses the network is unreadable (a tapping
// TCP proxy between member and hub sees neither the message types nor the
// bodies, while without CURVE it sees both), a member whose key the hub
// does not accept never gets a session, and a member with another cluster
// secret (or none) never joins, with both sides saying why.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include "net/link/node_link.hpp"
#include "net/security/curve_keys.hpp"
#include "net/wire/error.hpp"

using namespace shoal;
using namespace std::chrono_literals;

namespace {

// A TCP proxy on 127.0.0.1 that forwards to `port` and keeps a copy of
// every byte either way.
class tap {
public:
  explicit tap(int target) : target_(target) {
    lfd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa = loopback(0);
    socklen_t len = sizeof(sa);
    bind(lfd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    listen(lfd_, 8);
    getsockname(lfd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread{[this] { run(); }};
  }

  ~tap() {
    stop_ = true;
    thread_.join();
    close(lfd_);
  }

  std::string endpoint() const {
    return "tcp://127.0.0.1:" + std::to_string(port_);
  }

  std::string seen() {
    std::lock_guard<std::mutex> g{m_};
    return bytes_;
  }

private:
  static sockaddr_in loopback(int port) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sa;
  }

  bool relay(int from, int to) {
    char buf[65536];
    auto n = read(from, buf, sizeof(buf));
    if (n <= 0) {
      return false;
    }
    {
      std::lock_guard<std::mutex> g{m_};
      bytes_.append(buf, static_cast<size_t>(n));
    }
    return write(to, buf, static_cast<size_t>(n)) == n;
  }

  void run() {
    std::vector<std::pair<int, int>> pairs;
    while (!stop_) {
      std::vector<pollfd> fds{{lfd_, POLLIN, 0}};
      for (auto [a, b] : pairs) {
        fds.push_back({a, POLLIN, 0});
        fds.push_back({b, POLLIN, 0});
      }
      if (poll(fds.data(), fds.size(), 20) <= 0) {
        continue;
      }
      if (fds[0].revents & POLLIN) {
        int a = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
        int b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in sa = loopback(target_);
        connect(b, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
        pairs.emplace_back(a, b);
      }
      // Pairs accepted just now have no poll entry yet.
      for (size_t i = 0; i < (fds.size() - 1) / 2; ++i) {
        auto [a, b] = pairs[i];
        if ((fds[1 + 2 * i].revents & (POLLIN | POLLHUP)) && !relay(a, b)) {
          shutdown(b, SHUT_WR);
        }
        if ((fds[2 + 2 * i].revents & (POLLIN | POLLHUP)) && !relay(b, a)) {
          shutdown(a, SHUT_WR);
        }
      }
    }
    for (auto [a, b] : pairs) {
      close(a);
      close(b);
    }
  }

  int target_;
  int lfd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex m_;
  std::string bytes_;
};

struct inbox {
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::string> bodies;
  std::atomic<int> ups{0};

  link_handlers handlers() {
    link_handlers h;
    h.on_message = [this](const std::string&, uint64_t, std::string_view,
                          std::string_view body) {
      std::lock_guard<std::mutex> g{m};
      bodies.emplace_back(body);
      cv.notify_all();
    };
    h.on_peer_state = [this](const std::string&, uint64_t, peer_state s,
                             const std::string&) {
      if (s == peer_state::up) {
        ++ups;
      }
    };
    return h;
  }

  bool got(const std::string& body) {
    std::unique_lock<std::mutex> l{m};
    return cv.wait_for(l, 5s, [&] {
      return std::find(bodies.begin(), bodies.end(), body) != bodies.end();
    });
  }
};

node_link_config link_config(link_role role, std::string name,
                             std::string endpoint) {
  node_link_config c;
  c.role = role;
  c.name = std::move(name);
  c.endpoint = std::move(endpoint);
  c.secret = "cluster-secret";
  c.heartbeat_interval = 20ms;
  c.suspect_after = 100ms;
  c.heartbeat_timeout = 300ms;
  return c;
}

int port_of(const std::string& endpoint) {
  return std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
}

// What a tap between a member and its hub sees of one exchange that names a
// model and carries tensor bytes.
std::string capture(bool curve) {
  const std::string secret = "cluster-secret";
  auto hub_keys = derive_key_pair(secret, "hub");
  auto member_keys = derive_key_pair(secret, "member");
  auto hc = link_config(link_role::hub, "head", "tcp://127.0.0.1:0");
  hc.curve = {curve, hub_keys, {}, {member_keys.public_key}};
  inbox hub_in, member_in;
  auto hub = node_link::start(hc, hub_in.handlers());
  EXPECT_TRUE(hub);
  tap t{port_of((*hub)->endpoint())};
  auto mc = link_config(link_role::member, "worker-1", t.endpoint());
  mc.curve = {curve, member_keys, hub_keys.public_key, {}};
  auto member = node_link::start(mc, member_in.handlers());
  EXPECT_TRUE(member);
  std::string tensor(256, '\0');
  for (size_t i = 0; i < tensor.size(); ++i) {
    tensor[i] = static_cast<char>(0xA5 ^ i);
  }
  auto body = "model=confidential-model;data=" + tensor;
  for (int i = 0; i < 250 && (hub_in.ups == 0 || member_in.ups == 0); ++i) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_FALSE((*member)->send("", "app.infer", body));
  EXPECT_TRUE(hub_in.got(body));
  EXPECT_FALSE((*hub)->send("worker-1", "app.result", "result:" + tensor));
  EXPECT_TRUE(member_in.got("result:" + tensor));
  (*member)->stop();
  (*hub)->stop();
  return t.seen();
}

// The keys a node derives from its cluster secret (as the node does);
// CURVE off without one.
link_curve_keys keys_of(const std::string& secret, link_role role) {
  if (secret.empty()) {
    return {};
  }
  auto hub = derive_key_pair(secret, "hub");
  auto member = derive_key_pair(secret, "member");
  return {true,
          role == link_role::hub ? hub : member,
          hub.public_key,
          {member.public_key}};
}

// Keeps the warn lines about failed handshakes, to check what they name and
// how often they come.
class handshake_lines : public spdlog::sinks::base_sink<std::mutex> {
public:
  std::vector<std::string> taken() {
    std::lock_guard<std::mutex> g{mutex_};
    return lines_;
  }

protected:
  void sink_it_(const spdlog::details::log_msg& m) override {
    std::string s{m.payload.data(), m.payload.size()};
    if (s.find("handshake with") != std::string::npos) {
      lines_.push_back(std::move(s));
    }
  }
  void flush_() override {}

private:
  std::vector<std::string> lines_;
};

struct mismatch_outcome {
  int hub_ups = 0;
  int member_ups = 0;
  link_stats hub_stats;
  link_stats member_stats;
  std::vector<std::string> lines;
  std::string hub_endpoint;
};

// A hub with `hub_secret` and a member with `member_secret`, given 1.5 s
// (time for several of the member's retries) to join.
mismatch_outcome join_with(const std::string& hub_secret,
                           const std::string& member_secret) {
  auto sink = std::make_shared<handshake_lines>();
  // Restores the logger after the links below are gone (declared first).
  struct logger_swap {
    std::shared_ptr<spdlog::logger> saved = spdlog::default_logger();
    ~logger_swap() { spdlog::set_default_logger(saved); }
  } swap;
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("t", sink));
  auto hc = link_config(link_role::hub, "head", "tcp://127.0.0.1:0");
  hc.secret = hub_secret;
  hc.curve = keys_of(hub_secret, link_role::hub);
  inbox hub_in, member_in;
  auto hub = node_link::start(hc, hub_in.handlers());
  EXPECT_TRUE(hub);
  auto mc = link_config(link_role::member, "worker-1", (*hub)->endpoint());
  mc.secret = member_secret;
  mc.curve = keys_of(member_secret, link_role::member);
  auto member = node_link::start(mc, member_in.handlers());
  EXPECT_TRUE(member);
  for (int i = 0; i < 75 && member_in.ups == 0; ++i) {
    std::this_thread::sleep_for(20ms);
  }
  mismatch_outcome out{
      hub_in.ups, member_in.ups, (*hub)->stats(), (*member)->stats(), {}};
  (*member)->stop();
  (*hub)->stop();
  out.lines = sink->taken();
  out.hub_endpoint = (*hub)->endpoint();
  return out;
}

void expect_refused_with_reports(const mismatch_outcome& o) {
  EXPECT_EQ(o.member_ups, 0);
  EXPECT_EQ(o.hub_ups, 0);
  EXPECT_GE(o.member_stats.handshake_failures, 1u);
  EXPECT_GE(o.hub_stats.handshake_failures, 1u);
  // One line on the worker, naming the head's endpoint, and on the head
  // one per address it could read (a connection may be closed before the
  // hub reads its address, so there may be an "unknown address" one).
  int head_lines = 0, worker_lines = 0;
  for (auto& l : o.lines) {
    EXPECT_NE(l.find("cluster.secret differs, or one side has none"),
              std::string::npos)
        << l;
    if (l.starts_with("link head: handshake with a node at ")) {
      ++head_lines;
    } else if (l.starts_with("link worker-1: handshake with the head at " +
                             o.hub_endpoint + " failed")) {
      ++worker_lines;
    } else {
      ADD_FAILURE() << "unexpected line: " << l;
    }
  }
  EXPECT_GE(head_lines, 1);
  EXPECT_LE(head_lines, 2);
  EXPECT_EQ(worker_lines, 1);
}

} // namespace

TEST(link_curve, a_member_with_another_secret_never_joins_and_both_say_so) {
  auto o = join_with("cluster-secret", "another-secret");
  expect_refused_with_reports(o);
  // The member retried (every 100 ms, backing off to 1 s), yet each side
  // logged once: the rest wait for the 10 s rate limit.
  EXPECT_GE(o.member_stats.handshake_failures, 2u);
  EXPECT_GE(o.hub_stats.handshake_failures, 2u);
}

TEST(link_curve, a_member_without_the_secret_never_joins_and_both_say_so) {
  // The head has a secret (so CURVE) and the worker none (plain ZMTP), and
  // the other way round.
  expect_refused_with_reports(join_with("cluster-secret", ""));
  expect_refused_with_reports(join_with("", "cluster-secret"));
}

TEST(link_curve, a_member_with_the_same_secret_joins_without_reports) {
  auto o = join_with("cluster-secret", "cluster-secret");
  EXPECT_GE(o.member_ups, 1);
  EXPECT_EQ(o.member_stats.handshake_failures, 0u);
  EXPECT_EQ(o.hub_stats.handshake_failures, 0u);
  EXPECT_TRUE(o.lines.empty());
}

TEST(link_curve, nothing_readable_crosses_the_network) {
  auto plain = capture(false);
  // The tap works: without CURVE the model name and tensor are in clear.
  ASSERT_NE(plain.find("confidential-model"), std::string::npos);
  ASSERT_NE(plain.find(std::string(1, static_cast<char>(0xA5)) +
                       static_cast<char>(0xA4) + static_cast<char>(0xA7)),
            std::string::npos);
  auto sealed = capture(true);
  ASSERT_GT(sealed.size(), 512u);
  EXPECT_EQ(sealed.find("confidential-model"), std::string::npos);
  EXPECT_EQ(sealed.find("app.infer"), std::string::npos);
  EXPECT_EQ(sealed.find("worker-1"), std::string::npos);
  std::string tensor_run;
  for (int i = 0; i < 16; ++i) {
    tensor_run += static_cast<char>(0xA5 ^ i);
  }
  EXPECT_EQ(sealed.find(tensor_run), std::string::npos);
}

TEST(link_curve, a_member_with_an_unknown_key_is_refused) {
  auto hub_keys = derive_key_pair("cluster-secret", "hub");
  auto member_keys = derive_key_pair("cluster-secret", "member");
  auto outsider = generate_key_pair();
  ASSERT_TRUE(outsider);
  auto hc = link_config(link_role::hub, "head", "tcp://127.0.0.1:0");
  hc.curve = {true, hub_keys, {}, {member_keys.public_key}};
  inbox hub_in, bad_in, good_in;
  auto hub = node_link::start(hc, hub_in.handlers());
  ASSERT_TRUE(hub);
  // The outsider knows the cluster secret (HMAC) but not an accepted key.
  auto bc = link_config(link_role::member, "intruder", (*hub)->endpoint());
  bc.curve = {true, *outsider, hub_keys.public_key, {}};
  auto bad = node_link::start(bc, bad_in.handlers());
  ASSERT_TRUE(bad);
  auto gc = link_config(link_role::member, "worker-1", (*hub)->endpoint());
  gc.curve = {true, member_keys, hub_keys.public_key, {}};
  auto good = node_link::start(gc, good_in.handlers());
  ASSERT_TRUE(good);
  for (int i = 0; i < 100 && good_in.ups == 0; ++i) {
    std::this_thread::sleep_for(20ms);
  }
  std::this_thread::sleep_for(300ms);
  EXPECT_GE(good_in.ups.load(), 1);
  EXPECT_EQ(bad_in.ups.load(), 0);
  EXPECT_GE((*hub)->stats().refused_keys, 1u);
  for (auto& p : (*hub)->peers()) {
    EXPECT_NE(p.name, "intruder");
  }
}
