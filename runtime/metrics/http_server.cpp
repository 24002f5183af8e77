#include "runtime/metrics/http_server.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/make_message.hpp>

#include <civetweb.h>

// For the errc enum only: shoal_metrics does not link shoal_proto, so
// make_error (net/error.cpp) is out of reach and io_error() below builds the
// same caf::error by hand.
#include "net/wire/error.hpp"

namespace shoal {

namespace {

caf::error io_error(std::string reason) {
  return caf::error{static_cast<uint8_t>(errc::io_error), caf::atom("shoal"),
                    caf::make_message(std::move(reason))};
}

constexpr const char* metrics_content_type =
    "text/plain; version=0.0.4; charset=utf-8";

struct endpoint {
  std::string host; // numeric, as civetweb wants it
  int port = 0;
  int family = AF_INET;
};

// Splits "HOST:PORT" ("[v6]:PORT" for IPv6) and resolves HOST to a numeric
// address, since civetweb's listening_ports takes no host names.
caf::expected<endpoint> parse_listen(const std::string& listen) {
  auto bad = [&](const std::string& why) {
    return io_error("cannot listen on " + listen + " for HTTP: " + why);
  };
  std::string host;
  std::string port_str;
  if (!listen.empty() && listen.front() == '[') {
    auto close = listen.find(']');
    if (close == std::string::npos || close + 1 >= listen.size() ||
        listen[close + 1] != ':') {
      return bad("expected [HOST]:PORT");
    }
    host = listen.substr(1, close - 1);
    port_str = listen.substr(close + 2);
  } else {
    auto colon = listen.rfind(':');
    if (colon == std::string::npos) {
      return bad("expected HOST:PORT");
    }
    host = listen.substr(0, colon);
    port_str = listen.substr(colon + 1);
  }
  endpoint ep;
  try {
    size_t used = 0;
    ep.port = std::stoi(port_str, &used);
    if (used != port_str.size() || ep.port < 0 || ep.port > 65535) {
      return bad("bad port \"" + port_str + "\"");
    }
  } catch (const std::exception&) {
    return bad("bad port \"" + port_str + "\"");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  auto rc =
      getaddrinfo(host.empty() ? nullptr : host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    return bad(std::string{"cannot resolve host: "} + gai_strerror(rc));
  }
  char buf[INET6_ADDRSTRLEN] = {};
  ep.family = res->ai_family;
  const void* addr = nullptr;
  if (res->ai_family == AF_INET6) {
    addr = &reinterpret_cast<sockaddr_in6*>(res->ai_addr)->sin6_addr;
  } else {
    addr = &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
  }
  inet_ntop(res->ai_family, addr, buf, sizeof(buf));
  freeaddrinfo(res);
  ep.host = buf;
  return ep;
}

socklen_t make_sockaddr(const endpoint& ep, int port, sockaddr_storage& ss) {
  ss = sockaddr_storage{};
  if (ep.family == AF_INET6) {
    auto* sa = reinterpret_cast<sockaddr_in6*>(&ss);
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET6, ep.host.c_str(), &sa->sin6_addr);
    return sizeof(sockaddr_in6);
  }
  auto* sa = reinterpret_cast<sockaddr_in*>(&ss);
  sa->sin_family = AF_INET;
  sa->sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, ep.host.c_str(), &sa->sin_addr);
  return sizeof(sockaddr_in);
}

// Asks the kernel for a free port on the host. civetweb does not report the
// port it got for ":0", so we choose one and hand it over; the short race
// with another process is covered by retrying in start().
caf::expected<int> pick_free_port(const endpoint& ep) {
  int fd = socket(ep.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return io_error(std::string{"socket: "} + std::strerror(errno));
  }
  sockaddr_storage ss;
  auto len = make_sockaddr(ep, 0, ss);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    auto err = errno;
    close(fd);
    return io_error(std::string{"bind: "} + std::strerror(err));
  }
  close(fd);
  if (ep.family == AF_INET6) {
    return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  }
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

// Opens and closes a TCP connection, ignoring every error.
void poke(const endpoint& ep, int port) {
  int fd = socket(ep.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return;
  }
  sockaddr_storage ss;
  auto len = make_sockaddr(ep, port, ss);
  connect(fd, reinterpret_cast<sockaddr*>(&ss), len);
  close(fd);
}

std::string format_listen(const endpoint& ep, int port) {
  if (ep.family == AF_INET6) {
    return "[" + ep.host + "]:" + std::to_string(port);
  }
  return ep.host + ":" + std::to_string(port);
}

} // namespace

struct http_server::impl {
  metrics::registry& reg;
  http_handlers handlers;
  mg_context* ctx = nullptr;
  endpoint ep;

  static void reply(mg_connection* conn, int code, const char* content_type,
                    std::string_view body, bool head,
                    const char* allow = nullptr) {
    // The head is written in one piece rather than through
    // mg_response_header_send, whose printf needs more stack than the
    // small one civetweb gives its threads once AddressSanitizer pads
    // every frame. Each response closes its connection: scrapers and
    // probes open one per request anyway.
    std::string out = "HTTP/1.1 " + std::to_string(code) + " " +
                      mg_get_response_code_text(conn, code) +
                      "\r\nContent-Type: " + content_type +
                      "\r\nContent-Length: " + std::to_string(body.size()) +
                      // Scrapes and probes must never see a cached answer.
                      "\r\nCache-Control: no-store\r\nConnection: close\r\n";
    if (allow != nullptr) {
      out += std::string{"Allow: "} + allow + "\r\n";
    }
    out += "\r\n";
    if (!head) {
      out.append(body);
    }
    mg_write(conn, out.data(), out.size());
  }

  // Returns the status code for civetweb's access log.
  int serve(mg_connection* conn, const mg_request_info* ri) {
    std::string_view method = ri->request_method ? ri->request_method : "";
    std::string_view path = ri->local_uri ? ri->local_uri : "";
    constexpr auto text = "text/plain; charset=utf-8";
    bool known = path == "/metrics" || path == "/healthz" ||
                 path == "/readyz" || path == "/sd";
    if (!known) {
      reply(conn, 404, text, "not found\n", method == "HEAD");
      return 404;
    }
    // HEAD rides along with GET: HTTP requires it and load balancers use it.
    bool head = method == "HEAD";
    if (method != "GET" && !head) {
      reply(conn, 405, text, "method not allowed\n", false, "GET, HEAD");
      return 405;
    }
    if (path == "/metrics") {
      reply(conn, 200, metrics_content_type, reg.render(), head);
      return 200;
    }
    if (path == "/healthz") {
      reply(conn, 200, text, "ok\n", head);
      return 200;
    }
    if (path == "/readyz") {
      if (!handlers.ready) {
        reply(conn, 200, text, "ready\n", head);
        return 200;
      }
      auto [ok, detail] = handlers.ready();
      if (detail.empty() || detail.back() != '\n') {
        detail += '\n';
      }
      auto code = ok ? 200 : 503;
      reply(conn, code, text, detail, head);
      return code;
    }
    // path == "/sd"
    if (!handlers.service_discovery) {
      reply(conn, 404, text, "not found\n", head);
      return 404;
    }
    reply(conn, 200, "application/json", handlers.service_discovery(), head);
    return 200;
  }

  static int begin_request(mg_connection* conn) {
    auto* ri = mg_get_request_info(conn);
    auto* self = static_cast<impl*>(ri->user_data);
    // An exception must not unwind into civetweb's C frames.
    try {
      return self->serve(conn, ri);
    } catch (const std::exception& e) {
      reply(conn, 500, "text/plain; charset=utf-8",
            std::string{"internal error: "} + e.what() + "\n", false);
    } catch (...) {
      reply(conn, 500, "text/plain; charset=utf-8", "internal error\n", false);
    }
    return 500;
  }
};

caf::expected<std::unique_ptr<http_server>>
http_server::start(const std::string& listen, metrics::registry& reg,
                   http_handlers h, int threads) {
  static std::once_flag init_once;
  std::call_once(init_once, [] { mg_init_library(0); });
  auto ep = parse_listen(listen);
  if (!ep) {
    return ep.error();
  }
  std::unique_ptr<http_server> srv{new http_server};
  srv->impl_.reset(new impl{reg, std::move(h)});
  auto num_threads = std::to_string(threads > 0 ? threads : 1);
  mg_callbacks callbacks{};
  callbacks.begin_request = &impl::begin_request;
  // With port 0 another process may grab our pick before civetweb binds it;
  // a few fresh picks make that practically impossible.
  int attempts = ep->port == 0 ? 5 : 1;
  std::string last_error;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    int port = ep->port;
    if (port == 0) {
      auto picked = pick_free_port(*ep);
      if (!picked) {
        return io_error("cannot listen on " + listen + " for HTTP: " +
                        picked.error().context().get_as<std::string>(0));
      }
      port = *picked;
    }
    auto ports = format_listen(*ep, port);
    const char* options[] = {"listening_ports",
                             ports.c_str(),
                             "num_threads",
                             num_threads.c_str(),
                             "request_timeout_ms",
                             "10000",
                             "enable_keep_alive",
                             "yes",
                             nullptr};
    char err_text[256] = {};
    unsigned err_code = 0;
    mg_error_data err{&err_code, err_text, sizeof(err_text)};
    mg_init_data init{&callbacks, srv->impl_.get(), options};
    srv->impl_->ctx = mg_start2(&init, &err);
    if (srv->impl_->ctx != nullptr) {
      srv->impl_->ep = *ep;
      srv->port_ = port;
      return srv;
    }
    last_error = err_text[0] != '\0' ? err_text : "civetweb failed to start";
  }
  return io_error("cannot listen on " + listen + " for HTTP: " + last_error);
}

http_server::~http_server() {
  if (!impl_ || impl_->ctx == nullptr) {
    return;
  }
  // civetweb's accept loop polls with a 2 s timeout and only then sees the
  // stop flag, so mg_stop alone takes up to 2 s. Connecting wakes the poll;
  // we repeat because a connection that arrives before the flag is set is
  // just served (and closed at once) instead.
  std::atomic<bool> stopped{false};
  std::thread waker{[&] {
    auto ep = impl_->ep;
    if (ep.host == "0.0.0.0") {
      ep.host = "127.0.0.1";
    } else if (ep.host == "::") {
      ep.host = "::1";
    }
    while (!stopped.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      poke(ep, port_);
    }
  }};
  // Joins civetweb's threads, so no handler runs once impl_ goes away.
  mg_stop(impl_->ctx);
  stopped = true;
  waker.join();
}

} // namespace shoal
