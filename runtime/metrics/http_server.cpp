#include "runtime/metrics/http_server.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/make_message.hpp>

#include <microhttpd.h>

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
  std::string host; // numeric
  int port = 0;
  int family = AF_INET;
};

// Splits "HOST:PORT" ("[v6]:PORT" for IPv6) and resolves HOST to a numeric
// address.
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

} // namespace

struct http_server::impl {
  metrics::registry& reg;
  http_handlers handlers;
  MHD_Daemon* daemon = nullptr;

  struct answer {
    unsigned code = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
    const char* allow = nullptr;
  };

  answer serve(std::string_view method, std::string_view path) {
    bool known = path == "/metrics" || path == "/healthz" ||
                 path == "/readyz" || path == "/sd";
    if (!known) {
      return {404, "text/plain; charset=utf-8", "not found\n"};
    }
    // HEAD rides along with GET (HTTP requires it, load balancers use it);
    // libmicrohttpd leaves the body out by itself.
    if (method != "GET" && method != "HEAD") {
      return {405, "text/plain; charset=utf-8", "method not allowed\n",
              "GET, HEAD"};
    }
    if (path == "/metrics") {
      return {200, metrics_content_type, reg.render()};
    }
    if (path == "/healthz") {
      return {200, "text/plain; charset=utf-8", "ok\n"};
    }
    if (path == "/readyz") {
      if (!handlers.ready) {
        return {200, "text/plain; charset=utf-8", "ready\n"};
      }
      auto [ok, detail] = handlers.ready();
      if (detail.empty() || detail.back() != '\n') {
        detail += '\n';
      }
      return {ok ? 200u : 503u, "text/plain; charset=utf-8", detail};
    }
    // path == "/sd"
    if (!handlers.service_discovery) {
      return {404, "text/plain; charset=utf-8", "not found\n"};
    }
    return {200, "application/json", handlers.service_discovery()};
  }

  static MHD_Result send(MHD_Connection* conn, const answer& a) {
    auto* resp = MHD_create_response_from_buffer(
        a.body.size(), const_cast<char*>(a.body.data()), MHD_RESPMEM_MUST_COPY);
    if (resp == nullptr) {
      return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", a.content_type.c_str());
    // Scrapes and probes must never see a cached answer.
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    // Scrapers and probes open one connection per request anyway.
    MHD_add_response_header(resp, "Connection", "close");
    if (a.allow != nullptr) {
      MHD_add_response_header(resp, "Allow", a.allow);
    }
    auto rc = MHD_queue_response(conn, a.code, resp);
    MHD_destroy_response(resp);
    return rc;
  }

  // Called once the request's head is in (none of these paths takes a
  // body, so the answer goes out at once).
  static MHD_Result on_request(void* cls, MHD_Connection* conn, const char* url,
                               const char* method, const char*, const char*,
                               size_t* upload_size, void**) {
    auto* self = static_cast<impl*>(cls);
    // A body nobody asked for is discarded.
    *upload_size = 0;
    // An exception must not unwind into libmicrohttpd's C frames.
    try {
      return send(conn, self->serve(method ? method : "", url ? url : ""));
    } catch (const std::exception& e) {
      return send(conn, {500, "text/plain; charset=utf-8",
                         std::string{"internal error: "} + e.what() + "\n"});
    } catch (...) {
      return send(conn, {500, "text/plain; charset=utf-8", "internal error\n"});
    }
  }
};

caf::expected<std::unique_ptr<http_server>>
http_server::start(const std::string& listen, metrics::registry& reg,
                   http_handlers h, const http_limits& limits) {
  auto ep = parse_listen(listen);
  if (!ep) {
    return ep.error();
  }
  std::unique_ptr<http_server> srv{new http_server};
  srv->impl_.reset(new impl{reg, std::move(h)});
  sockaddr_storage ss;
  make_sockaddr(*ep, ep->port, ss);
  // One epoll loop per thread: an idle or half-open connection costs a
  // descriptor, never a thread, so hundreds of them cannot starve a probe.
  // The timeout closes connections that send nothing; the cap bounds
  // descriptors (past it, new connections are closed at once).
  unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD;
  if (ep->family == AF_INET6) {
    flags |= MHD_USE_IPv6;
  }
  auto timeout_s = static_cast<unsigned>(
      std::max<uint64_t>(1, (limits.timeout_ms + 999) / 1000));
  srv->impl_->daemon = MHD_start_daemon(
      flags, static_cast<uint16_t>(ep->port), nullptr, nullptr,
      &impl::on_request, srv->impl_.get(), MHD_OPTION_SOCK_ADDR,
      reinterpret_cast<sockaddr*>(&ss), MHD_OPTION_THREAD_POOL_SIZE,
      static_cast<unsigned>(std::max(1, limits.threads)),
      MHD_OPTION_CONNECTION_TIMEOUT, timeout_s, MHD_OPTION_CONNECTION_LIMIT,
      static_cast<unsigned>(std::max<uint64_t>(1, limits.max_connections)),
      MHD_OPTION_END);
  if (srv->impl_->daemon == nullptr) {
    return io_error("cannot listen on " + listen +
                    " for HTTP: " + std::strerror(errno));
  }
  auto* info =
      MHD_get_daemon_info(srv->impl_->daemon, MHD_DAEMON_INFO_BIND_PORT);
  srv->port_ = info != nullptr ? info->port : ep->port;
  return srv;
}

http_server::~http_server() {
  if (impl_ && impl_->daemon != nullptr) {
    // Joins the daemon's threads, so no handler runs once impl_ goes away.
    MHD_stop_daemon(impl_->daemon);
  }
}

} // namespace shoal
