#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <caf/atom.hpp>
#include <caf/error.hpp>

#include "net/wire/error.hpp"
#include "runtime/metrics/http_server.hpp"
#include "runtime/metrics/registry.hpp"

using namespace shoal;
using namespace shoal::metrics;

namespace {

// -- registry -----------------------------------------------------------------

TEST(metrics, counter_and_gauge_values) {
  registry reg;
  auto& c = reg.counters("c_total", "A counter.").with({});
  c.inc();
  c.inc(2.5);
  c.inc(-1); // ignored: counters only go up
  EXPECT_DOUBLE_EQ(c.value(), 3.5);
  auto& g = reg.gauges("g", "A gauge.").with({});
  g.set(10);
  g.inc(2);
  g.dec(5);
  EXPECT_DOUBLE_EQ(g.value(), 7);
}

TEST(metrics, histogram_buckets_are_cumulative) {
  histogram h{{1, 2, 5}};
  for (double v : {0.5, 1.0, 1.5, 2.0, 3.0, 100.0}) {
    h.observe(v);
  }
  auto s = h.snap();
  ASSERT_EQ(s.bounds.size(), 4u);
  EXPECT_EQ(s.bounds.back(), std::numeric_limits<double>::infinity());
  // le is inclusive: 1.0 counts in le="1", 2.0 in le="2".
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{2, 4, 5, 6}));
  EXPECT_EQ(s.count, 6u);
  EXPECT_DOUBLE_EQ(s.sum, 108.0);
}

TEST(metrics, histogram_rejects_bad_bounds) {
  EXPECT_THROW(histogram({2, 1}), std::invalid_argument);
  EXPECT_THROW(histogram({1, 1}), std::invalid_argument);
  EXPECT_THROW(histogram({std::nan("")}), std::invalid_argument);
  // A spelled-out +Inf is the implicit one.
  histogram h{{1, std::numeric_limits<double>::infinity()}};
  EXPECT_EQ(h.snap().bounds.size(), 2u);
}

TEST(metrics, escape_label_value) {
  EXPECT_EQ(escape_label_value("plain"), "plain");
  EXPECT_EQ(escape_label_value("a\"b"), "a\\\"b");
  EXPECT_EQ(escape_label_value("a\\b"), "a\\\\b");
  EXPECT_EQ(escape_label_value("a\nb"), "a\\nb");
  EXPECT_EQ(escape_label_value("caf\xC3\xA9"), "caf\xC3\xA9");
  EXPECT_EQ(escape_label_value("x\xFFy"), "x\xEF\xBF\xBDy");
}

TEST(metrics, render_exact) {
  registry reg;
  auto& req = reg.counters("shoal_requests_total", "Requests.\nBy \\model.",
                           {"model", "status"});
  req.with({"m\"1", "ok"}).inc(3);
  req.with({"a\\b\nc", "ok"}).inc(0.25);
  reg.gauges("shoal_cache_bytes", "Cache size.");
  reg.gauges("shoal_requests_waiting", "Queued.", {"model"});
  auto& lat =
      reg.histograms("shoal_batch_size", "Batch sizes.", {"model"}, {1, 4});
  lat.with({"m"}).observe(1);
  lat.with({"m"}).observe(3);
  lat.with({"m"}).observe(8);
  const char* expected =
      "# HELP shoal_batch_size Batch sizes.\n"
      "# TYPE shoal_batch_size histogram\n"
      "shoal_batch_size_bucket{model=\"m\",le=\"1\"} 1\n"
      "shoal_batch_size_bucket{model=\"m\",le=\"4\"} 2\n"
      "shoal_batch_size_bucket{model=\"m\",le=\"+Inf\"} 3\n"
      "shoal_batch_size_sum{model=\"m\"} 12\n"
      "shoal_batch_size_count{model=\"m\"} 3\n"
      "# HELP shoal_cache_bytes Cache size.\n"
      "# TYPE shoal_cache_bytes gauge\n"
      "shoal_cache_bytes 0\n"
      "# HELP shoal_requests_total Requests.\\nBy \\\\model.\n"
      "# TYPE shoal_requests_total counter\n"
      "shoal_requests_total{model=\"a\\\\b\\nc\",status=\"ok\"} 0.25\n"
      "shoal_requests_total{model=\"m\\\"1\",status=\"ok\"} 3\n"
      "# HELP shoal_requests_waiting Queued.\n"
      "# TYPE shoal_requests_waiting gauge\n";
  EXPECT_EQ(reg.render(), expected);
}

TEST(metrics, render_special_values) {
  registry reg;
  auto& g = reg.gauges("g", "G.", {"k"});
  g.with({"inf"}).set(std::numeric_limits<double>::infinity());
  g.with({"minf"}).set(-std::numeric_limits<double>::infinity());
  g.with({"nan"}).set(std::nan(""));
  g.with({"big"}).set(1e15);
  g.with({"frac"}).set(0.1);
  g.with({"neg"}).set(-2);
  g.with({"exact"}).set(0.1 + 0.2);
  g.with({"tiny"}).set(0.00005);
  auto out = reg.render();
  EXPECT_NE(out.find("g{k=\"inf\"} +Inf\n"), std::string::npos) << out;
  EXPECT_NE(out.find("g{k=\"minf\"} -Inf\n"), std::string::npos) << out;
  EXPECT_NE(out.find("g{k=\"nan\"} NaN\n"), std::string::npos) << out;
  EXPECT_NE(out.find("g{k=\"big\"} 1000000000000000\n"), std::string::npos)
      << out;
  EXPECT_NE(out.find("g{k=\"frac\"} 0.1\n"), std::string::npos) << out;
  EXPECT_NE(out.find("g{k=\"neg\"} -2\n"), std::string::npos) << out;
  // Non-integers round-trip exactly.
  EXPECT_NE(out.find("g{k=\"exact\"} 0.30000000000000004\n"), std::string::npos)
      << out;
  EXPECT_NE(out.find("g{k=\"tiny\"} 5e-05\n"), std::string::npos) << out;
}

TEST(metrics, same_family_twice) {
  registry reg;
  auto& a = reg.counters("x_total", "X.", {"l"});
  auto& b = reg.counters("x_total", "X.", {"l"});
  EXPECT_EQ(&a, &b);
  EXPECT_THROW(reg.counters("x_total", "X.", {"other"}), std::logic_error);
  EXPECT_THROW(reg.gauges("x_total", "X.", {"l"}), std::logic_error);
}

TEST(metrics, invalid_names_throw) {
  registry reg;
  EXPECT_THROW(reg.counters("1abc", "."), std::invalid_argument);
  EXPECT_THROW(reg.counters("a-b", "."), std::invalid_argument);
  EXPECT_THROW(reg.counters("", "."), std::invalid_argument);
  EXPECT_THROW(reg.counters("ok_total", ".", {"bad-label"}),
               std::invalid_argument);
  EXPECT_THROW(reg.counters("ok_total", ".", {"__reserved"}),
               std::invalid_argument);
  EXPECT_THROW(reg.counters("ok_total", ".", {"a", "a"}),
               std::invalid_argument);
  EXPECT_THROW(reg.histograms("h", ".", {"le"}), std::invalid_argument);
  EXPECT_THROW(reg.histograms("h", ".", {}, {3, 2}), std::invalid_argument);
  reg.histograms("lat_seconds", ".");
  EXPECT_THROW(reg.counters("lat_seconds_count", "."), std::invalid_argument);
  reg.gauges("q_sum", ".");
  EXPECT_THROW(reg.histograms("q", "."), std::invalid_argument);
  // Colons are legal in metric names.
  EXPECT_NO_THROW(reg.gauges("job:rule:ratio", "."));
}

TEST(metrics, label_count_mismatch_throws) {
  registry reg;
  auto& f = reg.counters("y_total", "Y.", {"a", "b"});
  EXPECT_THROW(f.with({"only-one"}), std::invalid_argument);
  EXPECT_THROW(f.with({"1", "2", "3"}), std::invalid_argument);
  EXPECT_NO_THROW(f.with({"1", "2"}));
}

TEST(metrics, remove_keeps_handles_valid) {
  registry reg;
  auto& f = reg.counters("z_total", "Z.", {"model"});
  auto& c = f.with({"m"});
  c.inc(2);
  f.remove({"m"});
  EXPECT_EQ(reg.render().find("z_total{"), std::string::npos);
  c.inc(); // still a live object
  EXPECT_EQ(&f.with({"m"}), &c);
  EXPECT_NE(reg.render().find("z_total{model=\"m\"} 3\n"), std::string::npos);
}

TEST(metrics, concurrent_increments_sum_exactly) {
  registry reg;
  auto& fam = reg.counters("n_total", "N.", {"k"});
  auto& hist = reg.histograms("hh", "H.", {}, {0.5});
  constexpr int per_thread = 100000;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      auto& c = fam.with({"x"});
      auto& h = hist.with({});
      for (int i = 0; i < per_thread; ++i) {
        c.inc();
        h.observe(1);
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_DOUBLE_EQ(fam.with({"x"}).value(), 4.0 * per_thread);
  auto s = hist.with({}).snap();
  EXPECT_EQ(s.count, 4u * per_thread);
  EXPECT_DOUBLE_EQ(s.sum, 4.0 * per_thread);
}

TEST(metrics, on_collect_runs_at_render) {
  registry reg;
  auto& g = reg.gauges("cache_bytes", "C.").with({});
  int calls = 0;
  reg.on_collect([&] {
    ++calls;
    g.set(42);
    // May register from inside a callback: render holds no lock here.
    reg.gauges("late", "Registered during collect.");
  });
  auto out = reg.render();
  EXPECT_EQ(calls, 1);
  EXPECT_NE(out.find("cache_bytes 42\n"), std::string::npos) << out;
  EXPECT_NE(out.find("late 0\n"), std::string::npos) << out;
}

TEST(metrics, promtool_accepts_render) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool not on PATH (Debian package prometheus)";
  }
  registry reg;
  auto& c = reg.counters("shoal_requests_total", "Requests by \"model\".\n\\",
                         {"model", "status"});
  c.with({"we\"ird\\name\nx", "ok"}).inc(7);
  c.with({"plain", "error"}).inc(0.5);
  reg.counters("shoal_cache_hits_total", "Cache hits.").with({}).inc(3);
  reg.gauges("shoal_cache_bytes", "Bytes cached.").with({}).set(1.5e9);
  reg.gauges("shoal_requests_waiting", "Waiting.", {"model"})
      .with({"m"})
      .set(std::nan(""));
  auto& h =
      reg.histograms("shoal_request_duration_seconds", "Latency.", {"model"});
  h.with({"m"}).observe(0.003);
  h.with({"m"}).observe(20);
  reg.histograms("shoal_batch_size", "Batch sizes.", {}, {1, 2, 4, 8});
  auto path = std::filesystem::temp_directory_path() /
              ("shoal_promtool_" + std::to_string(getpid()) + ".prom");
  {
    std::ofstream out{path, std::ios::binary};
    out << reg.render();
  }
  auto cmd = "promtool check metrics < '" + path.string() + "'";
  auto rc = std::system(cmd.c_str());
  std::filesystem::remove(path);
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 0) << "promtool rejected:\n" << reg.render();
}

// -- http_server --------------------------------------------------------------

struct http_reply {
  int status = 0;
  std::string headers; // raw, lower-cased
  std::string body;
};

http_reply http_get(int port, const std::string& path,
                    const std::string& method = "GET") {
  http_reply rep;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    return rep;
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    close(fd);
    return rep;
  }
  auto req = method + " " + path +
             " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  for (size_t off = 0; off < req.size();) {
    auto n = send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      break;
    }
    off += static_cast<size_t>(n);
  }
  std::string raw;
  char buf[4096];
  for (;;) {
    auto n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      break;
    }
    raw.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  auto end = raw.find("\r\n\r\n");
  if (end == std::string::npos || raw.compare(0, 9, "HTTP/1.1 ") != 0) {
    return rep;
  }
  rep.status = std::atoi(raw.c_str() + 9);
  rep.headers = raw.substr(0, end + 2);
  for (auto& ch : rep.headers) {
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }
  rep.body = raw.substr(end + 4);
  return rep;
}

bool has_header(const http_reply& rep, const std::string& line) {
  return rep.headers.find("\r\n" + line + "\r\n") != std::string::npos;
}

TEST(http_server, endpoints) {
  registry reg;
  reg.counters("shoal_requests_total", "Requests.").with({}).inc(5);
  http_handlers h;
  h.ready = [] { return std::pair<bool, std::string>{false, "loading"}; };
  auto srv = http_server::start("127.0.0.1:0", reg, h);
  ASSERT_TRUE(srv) << caf::to_string(srv.error());
  auto port = (*srv)->port();
  ASSERT_GT(port, 0);

  auto m = http_get(port, "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_TRUE(
      has_header(m, "content-type: text/plain; version=0.0.4; charset=utf-8"))
      << m.headers;
  EXPECT_TRUE(has_header(m, "content-length: " + std::to_string(m.body.size())))
      << m.headers;
  EXPECT_NE(m.body.find("shoal_requests_total 5\n"), std::string::npos)
      << m.body;

  auto hz = http_get(port, "/healthz");
  EXPECT_EQ(hz.status, 200);
  EXPECT_EQ(hz.body, "ok\n");
  EXPECT_TRUE(has_header(hz, "content-length: 3")) << hz.headers;

  auto rz = http_get(port, "/readyz");
  EXPECT_EQ(rz.status, 503);
  EXPECT_NE(rz.body.find("loading"), std::string::npos) << rz.body;

  // No service discovery callback: /sd is not served.
  EXPECT_EQ(http_get(port, "/sd").status, 404);
  auto nope = http_get(port, "/nope");
  EXPECT_EQ(nope.status, 404);
  EXPECT_TRUE(
      has_header(nope, "content-length: " + std::to_string(nope.body.size())))
      << nope.headers;

  EXPECT_EQ(http_get(port, "/metrics", "POST").status, 405);
  auto head = http_get(port, "/healthz", "HEAD");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.body, "");
}

TEST(http_server, ready_and_service_discovery) {
  registry reg;
  http_handlers h;
  h.service_discovery = [] {
    return std::string{R"([{"targets":["10.0.0.1:9310"],"labels":{}}])"};
  };
  auto srv = http_server::start("127.0.0.1:0", reg, h, http_limits{1});
  ASSERT_TRUE(srv) << caf::to_string(srv.error());
  auto port = (*srv)->port();
  // No ready callback: always ready.
  auto rz = http_get(port, "/readyz");
  EXPECT_EQ(rz.status, 200);
  EXPECT_EQ(rz.body, "ready\n");
  auto sd = http_get(port, "/sd");
  EXPECT_EQ(sd.status, 200);
  EXPECT_TRUE(has_header(sd, "content-type: application/json")) << sd.headers;
  EXPECT_EQ(sd.body, R"([{"targets":["10.0.0.1:9310"],"labels":{}}])");
}

TEST(http_server, handler_exception_is_500) {
  registry reg;
  reg.on_collect([] { throw std::runtime_error("collector broke"); });
  auto srv = http_server::start("127.0.0.1:0", reg, {});
  ASSERT_TRUE(srv) << caf::to_string(srv.error());
  auto m = http_get((*srv)->port(), "/metrics");
  EXPECT_EQ(m.status, 500);
  // The server lives on.
  EXPECT_EQ(http_get((*srv)->port(), "/healthz").status, 200);
}

TEST(http_server, port_in_use_is_an_error) {
  registry reg;
  auto first = http_server::start("127.0.0.1:0", reg, {});
  ASSERT_TRUE(first) << caf::to_string(first.error());
  auto addr = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = http_server::start(addr, reg, {});
  ASSERT_FALSE(second);
  const auto& err = second.error();
  EXPECT_EQ(err.category(), caf::atom("shoal"));
  EXPECT_EQ(err.code(), static_cast<uint8_t>(errc::io_error));
  ASSERT_TRUE(err.context().match_element<std::string>(0));
  auto reason = err.context().get_as<std::string>(0);
  EXPECT_NE(reason.find("cannot listen on " + addr + " for HTTP"),
            std::string::npos)
      << reason;
  // The first server is unharmed.
  EXPECT_EQ(http_get((*first)->port(), "/healthz").status, 200);
}

// Opens a TCP connection to the port and, when `partial` is set, sends the
// start of a request that never ends; -1 on failure.
int open_idle(int port, bool partial) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa))) {
    if (fd >= 0) {
      close(fd);
    }
    return -1;
  }
  if (partial) {
    const char head[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
    [[maybe_unused]] auto n = write(fd, head, sizeof(head) - 1);
  }
  return fd;
}

// A kubelet's liveness probe must not time out because hundreds of idle
// or half-sent connections sit on the port.
TEST(http_server, slow_clients_do_not_starve_probes) {
  registry reg;
  auto srv = http_server::start("127.0.0.1:0", reg, {});
  ASSERT_TRUE(srv) << caf::to_string(srv.error());
  auto port = (*srv)->port();
  std::vector<int> fds;
  for (int i = 0; i < 300; ++i) {
    auto fd = open_idle(port, i % 2 == 1);
    ASSERT_GE(fd, 0) << "connection " << i;
    fds.push_back(fd);
  }
  for (auto path : {"/healthz", "/readyz", "/metrics"}) {
    auto start = std::chrono::steady_clock::now();
    auto rep = http_get(port, path);
    auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(rep.status, 200) << path;
    EXPECT_LT(took, std::chrono::seconds{1}) << path;
  }
  for (auto fd : fds) {
    close(fd);
  }
}

TEST(http_server, bad_listen_address) {
  registry reg;
  for (auto addr : {"no-port", "127.0.0.1:99999", "127.0.0.1:abc"}) {
    auto srv = http_server::start(addr, reg, {});
    ASSERT_FALSE(srv) << addr;
    EXPECT_EQ(srv.error().code(), static_cast<uint8_t>(errc::io_error));
  }
}

} // namespace
