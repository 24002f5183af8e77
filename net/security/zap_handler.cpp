#include "net/security/zap_handler.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "net/wire/error.hpp"

namespace shoal {

std::string encode_zap_metadata(
    const std::vector<std::pair<std::string, std::string>>& props) {
  std::string out;
  for (auto& [name, value] : props) {
    if (name.empty() || name.size() > 255) {
      continue;
    }
    out += static_cast<char>(name.size());
    out += name;
    auto n = static_cast<uint32_t>(value.size());
    for (int shift = 24; shift >= 0; shift -= 8) {
      out += static_cast<char>((n >> shift) & 0xff);
    }
    out += value;
  }
  return out;
}

struct zap_handler::impl {
  zmq::socket_t sock;
  authorize_fn authorize;
  std::function<void()> tick;
  std::chrono::milliseconds tick_every{250};
  int stop_fd = -1;
  std::thread thread;
  bool stopped = false;

  static std::string text(const zmq::message_t& m) {
    return {static_cast<const char*>(m.data()), m.size()};
  }

  // Frames: version, request id, domain, address, identity, mechanism,
  // credentials...; the REP socket has removed the envelope.
  void answer(std::vector<zmq::message_t>& parts) {
    zap_request req;
    std::string request_id = parts.size() > 1 ? text(parts[1]) : "";
    zap_verdict v;
    bool well_formed = parts.size() >= 6 && text(parts[0]) == "1.0";
    if (well_formed) {
      req.domain = text(parts[2]);
      req.address = text(parts[3]);
      req.curve = text(parts[5]) == "CURVE";
      if (req.curve && parts.size() >= 7 && parts[6].size() == 32) {
        std::memcpy(req.public_key.data(), parts[6].data(), 32);
      }
      v = authorize(req);
    }
    std::string code = v.ok ? "200" : (well_formed ? "400" : "500");
    std::string status_text = v.ok ? "OK" : "not an allowed key";
    auto more = zmq::send_flags::sndmore;
    sock.send(zmq::buffer(std::string_view{"1.0"}), more);
    sock.send(zmq::buffer(request_id), more);
    sock.send(zmq::buffer(code), more);
    sock.send(zmq::buffer(status_text), more);
    sock.send(zmq::buffer(v.user_id), more);
    auto meta = encode_zap_metadata(v.metadata);
    sock.send(zmq::buffer(meta), zmq::send_flags::none);
  }

  bool read_request(std::vector<zmq::message_t>& parts) {
    parts.clear();
    do {
      zmq::message_t part;
      if (!sock.recv(part, zmq::recv_flags::dontwait)) {
        return !parts.empty();
      }
      parts.push_back(std::move(part));
    } while (parts.back().more());
    return true;
  }

  void run() {
    zmq::pollitem_t items[] = {
        {static_cast<void*>(sock), 0, ZMQ_POLLIN, 0},
        {nullptr, stop_fd, ZMQ_POLLIN, 0},
    };
    std::vector<zmq::message_t> parts;
    auto next_tick = std::chrono::steady_clock::now();
    for (;;) {
      try {
        zmq::poll(items, 2, tick_every);
        if (items[1].revents & ZMQ_POLLIN) {
          return;
        }
        while (read_request(parts)) {
          answer(parts);
        }
        auto now = std::chrono::steady_clock::now();
        if (tick && now >= next_tick) {
          next_tick = now + tick_every;
          tick();
        }
      } catch (const zmq::error_t& e) {
        if (e.num() == ETERM) {
          return;
        }
        spdlog::error("security: ZAP handler: {}", e.what());
      } catch (const std::exception& e) {
        spdlog::error("security: ZAP handler: {}", e.what());
      }
    }
  }
};

zap_handler::zap_handler() : impl_(std::make_unique<impl>()) {
  // nop
}

zap_handler::~zap_handler() {
  stop();
}

caf::expected<std::unique_ptr<zap_handler>>
zap_handler::start(zmq::context_t& ctx, authorize_fn authorize,
                   std::function<void()> tick,
                   std::chrono::milliseconds tick_every) {
  std::unique_ptr<zap_handler> h{new zap_handler};
  auto& d = *h->impl_;
  d.authorize = std::move(authorize);
  d.tick = std::move(tick);
  d.tick_every = tick_every;
  try {
    d.sock = zmq::socket_t{ctx, zmq::socket_type::rep};
    d.sock.set(zmq::sockopt::linger, 0);
    d.sock.bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    return make_error(errc::io_error,
                      std::string{"cannot start the ZAP handler: "} + e.what());
  }
  d.stop_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (d.stop_fd < 0) {
    return make_error(errc::io_error,
                      std::string{"eventfd: "} + std::strerror(errno));
  }
  d.thread = std::thread{[&d] { d.run(); }};
  return h;
}

void zap_handler::stop() {
  auto& d = *impl_;
  if (d.stopped) {
    return;
  }
  d.stopped = true;
  if (d.thread.joinable()) {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(d.stop_fd, &one, sizeof(one));
    d.thread.join();
  }
  d.sock.close();
  if (d.stop_fd >= 0) {
    ::close(d.stop_fd);
  }
}

} // namespace shoal
