#include "bench/harness/echo_server.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include <unistd.h>

#include <zmq.hpp>

#include "bench/harness/run.hpp"

namespace shoal::bench {

namespace {

// Sends every multipart message straight back; returns when the socket
// fails (the process is being stopped).
void echo_loop(zmq::socket_t& sock) {
  std::vector<zmq::message_t> parts;
  for (;;) {
    parts.clear();
    do {
      zmq::message_t part;
      if (!sock.recv(part)) {
        return;
      }
      parts.push_back(std::move(part));
    } while (parts.back().more());
    for (size_t i = 0; i < parts.size(); ++i) {
      sock.send(parts[i], i + 1 < parts.size() ? zmq::send_flags::sndmore
                                               : zmq::send_flags::none);
    }
  }
}

int echo_main(int report_fd,
              const std::optional<std::array<uint8_t, 32>>& curve_secret) {
  try {
    zmq::context_t ctx{1};
    zmq::socket_t sock{ctx, zmq::socket_type::router};
    if (curve_secret) {
      sock.set(zmq::sockopt::curve_server, 1);
      sock.set(zmq::sockopt::curve_secretkey,
               zmq::const_buffer{curve_secret->data(), curve_secret->size()});
    }
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::sndhwm, 0);
    sock.set(zmq::sockopt::rcvhwm, 0);
    sock.bind("tcp://127.0.0.1:*");
    auto ep = sock.get(zmq::sockopt::last_endpoint);
    ep.push_back('\n');
    [[maybe_unused]] auto n = ::write(report_fd, ep.data(), ep.size());
    ::close(report_fd);
    echo_loop(sock);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo server: %s\n", e.what());
    return 1;
  }
}

} // namespace

echo_server
start_echo_server(std::optional<std::array<uint8_t, 32>> curve_secret) {
  int fds[2];
  if (::pipe(fds) != 0) {
    throw bench_error{"pipe: " + std::string{std::strerror(errno)}};
  }
  shoal::test::spawn_options opts;
  opts.own_process_group = true; // a terminal's Ctrl-C goes to the bench
  echo_server srv;
  srv.proc = std::make_unique<shoal::test::child_process>(
      [&] {
        ::close(fds[0]);
        return echo_main(fds[1], curve_secret);
      },
      std::string{}, opts);
  ::close(fds[1]);
  char c;
  while (::read(fds[0], &c, 1) == 1 && c != '\n') {
    srv.endpoint.push_back(c);
  }
  ::close(fds[0]);
  if (srv.endpoint.empty()) {
    throw bench_error{"echo server did not start"};
  }
  return srv;
}

} // namespace shoal::bench
