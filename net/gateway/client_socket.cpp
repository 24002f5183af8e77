#include "net/gateway/client_socket.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.hpp>

#include "net/poll/spin_poll.hpp"
#include "net/wire/codec.hpp"
#include "net/wire/error.hpp"

namespace shoal {

// -- reply_sink ---------------------------------------------------------------

reply_sink::reply_sink() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (fd_ < 0) {
    throw std::runtime_error(std::string{"eventfd: "} + std::strerror(errno));
  }
}

reply_sink::~reply_sink() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

void reply_sink::push(reply_route route, std::string body) {
  bool was_empty;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    was_empty = queue_.empty();
    queue_.push_back({std::move(route), std::move(body)});
  }
  if (was_empty) {
    uint64_t one = 1;
    // EAGAIN only means the counter is already non-zero: it is awake.
    [[maybe_unused]] auto n = ::write(fd_, &one, sizeof(one));
  }
}

void reply_sink::drain(std::vector<outgoing>& out) {
  uint64_t count;
  [[maybe_unused]] auto n = ::read(fd_, &count, sizeof(count));
  std::lock_guard<std::mutex> guard{mtx_};
  out.swap(queue_);
}

// -- client_socket ------------------------------------------------------------

bool is_loopback_address(std::string_view address) noexcept {
  if (address.empty()) {
    return true;
  }
  // IPv4-mapped IPv6 addresses carry the IPv4 one after the prefix.
  constexpr std::string_view mapped = "::ffff:";
  if (address.substr(0, mapped.size()) == mapped) {
    address.remove_prefix(mapped.size());
  }
  return address.substr(0, 4) == "127." || address == "::1";
}

uint64_t transport_frame_bound(uint64_t max_frame_bytes) noexcept {
  // ZeroMQ allocates a message at the size its header announces, before
  // reading it: this bound is what keeps a peer from making the node
  // allocate what it likes, so it must stay a small multiple of the limit.
  // Twice the limit lets a client that overshoots (a batch row too many, a
  // larger image) learn why from the codec, which caps what one frame costs
  // at twice what the operator sized the node for. Saturates: ZeroMQ takes
  // an int64.
  constexpr uint64_t most = std::numeric_limits<int64_t>::max();
  return max_frame_bytes > most / 2 ? most : 2 * max_frame_bytes;
}

// The most messages in a poll round after which the thread still spins.
constexpr size_t light_round = 2;

struct client_socket::impl {
  client_socket_config cfg;
  std::shared_ptr<reply_sink> sink;
  handler* h = nullptr;
  client_socket* owner = nullptr;
  zmq::context_t ctx;
  zmq::socket_t sock;
  std::string bound;
  std::thread thread;
  int stop_fd = -1;
  std::atomic<uint64_t> frames{0};
  bool stopped = false;

  // Reused per message, so the hot path does not allocate for them.
  std::vector<zmq::message_t> parts;
  std::vector<reply_sink::outgoing> replies;
  std::string out;

  void send(const reply_route& route, std::string_view body) {
    sock.send(zmq::buffer(route.identity), zmq::send_flags::sndmore);
    if (route.delimiter) {
      sock.send(zmq::message_t{}, zmq::send_flags::sndmore);
    }
    sock.send(zmq::buffer(body.data(), body.size()), zmq::send_flags::none);
  }

  // CURVE: the handshake checker and the socket's handshake events.
  std::unique_ptr<zap_handler> zap;
  zmq::socket_t monitor;

  // Who sent `body`: ZeroMQ attaches the connection's properties (and, with
  // CURVE, what the ZAP handler said about the key) to each message.
  client_peer peer_of(zmq::message_t& body) const {
    client_peer p;
    const char* address = zmq_msg_gets(body.handle(), "Peer-Address");
    p.local = address == nullptr || is_loopback_address(address);
    if (!cfg.curve) {
      return p;
    }
    if (const char* user = zmq_msg_gets(body.handle(), "User-Id")) {
      p.key_name = user;
    }
    if (const char* tenant = zmq_msg_gets(body.handle(), "tenant")) {
      p.tenant = tenant;
    }
    const char* role = zmq_msg_gets(body.handle(), "role");
    p.admin = role != nullptr && std::string_view{role} == "admin";
    return p;
  }

  static std::string_view failure_reason(uint16_t event, int32_t value) {
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      return "unknown_key";
    }
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
        value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
      return "no_curve";
    }
    return "bad_handshake";
  }

  // One monitor event: [u16 event, i32 value][endpoint].
  void read_monitor() {
    for (;;) {
      zmq::message_t head;
      if (!monitor.recv(head, zmq::recv_flags::dontwait)) {
        return;
      }
      uint16_t event = 0;
      int32_t value = 0;
      if (head.size() >= 6) {
        std::memcpy(&event, head.data(), 2);
        std::memcpy(&value, static_cast<const char*>(head.data()) + 2, 4);
      }
      while (head.more()) {
        zmq::message_t rest;
        if (!monitor.recv(rest, zmq::recv_flags::dontwait)) {
          break;
        }
        head = std::move(rest);
      }
      if (cfg.on_auth_failure) {
        cfg.on_auth_failure(failure_reason(event, value));
      }
    }
  }

  // Starts the ZAP handler (before the bind: without one libzmq lets every
  // key in), makes the socket a CURVE server and watches its handshakes.
  caf::error enable_curve() {
    auto h = zap_handler::start(ctx, cfg.authorize, cfg.tick,
                                std::chrono::milliseconds{250});
    if (!h) {
      return h.error();
    }
    zap = std::move(*h);
    sock.set(zmq::sockopt::curve_server, 1);
    sock.set(zmq::sockopt::curve_secretkey,
             zmq::const_buffer{cfg.secret_key.data(), cfg.secret_key.size()});
    sock.set(zmq::sockopt::zap_domain, "shoal.gateway");
    if (zmq_socket_monitor(sock.handle(), "inproc://shoal.gateway.monitor",
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
      return make_error(errc::io_error,
                        std::string{"cannot monitor the gateway socket: "} +
                            zmq_strerror(zmq_errno()));
    }
    monitor = zmq::socket_t{ctx, zmq::socket_type::pair};
    monitor.connect("inproc://shoal.gateway.monitor");
    return {};
  }

  void frame(reply_route& route, zmq::message_t& body) {
    h->on_frame(*owner, route, peer_of(body),
                {static_cast<const char*>(body.data()), body.size()});
  }

  // Reads one multipart message: [identity][""]?[body]. Anything else is
  // answered with INVALID_ARGUMENT, never dropped silently. Returns false
  // when nothing was waiting.
  bool read_one() {
    parts.clear();
    do {
      zmq::message_t part;
      if (!sock.recv(part, zmq::recv_flags::dontwait)) {
        return !parts.empty();
      }
      parts.push_back(std::move(part));
    } while (parts.back().more());
    handle_parts();
    return true;
  }

  void handle_parts() {
    frames.fetch_add(1, std::memory_order_relaxed);
    reply_route route;
    route.identity.assign(static_cast<const char*>(parts[0].data()),
                          parts[0].size());
    size_t n = parts.size();
    if (n == 2) {
      return frame(route, parts[1]);
    }
    if (n == 3 && parts[1].size() == 0) {
      route.delimiter = true;
      return frame(route, parts[2]);
    }
    route.delimiter = n >= 2 && parts[1].size() == 0;
    reply r;
    r.code = status::invalid_argument;
    r.error = "expected one message frame (after an optional empty "
              "delimiter), got " +
              std::to_string(n - 1 - (route.delimiter ? 1 : 0));
    out.clear();
    encode_reply(r, out);
    send(route, out);
    h->on_malformed();
  }

  // Returns how many replies it sent.
  size_t flush_replies() {
    sink->drain(replies);
    for (auto& o : replies) {
      send(o.route, o.body);
    }
    auto n = replies.size();
    replies.clear();
    return n;
  }

  void run() {
    zmq::pollitem_t items[] = {
        {static_cast<void*>(sock), 0, ZMQ_POLLIN, 0},
        {nullptr, sink->fd(), ZMQ_POLLIN, 0},
        {nullptr, stop_fd, ZMQ_POLLIN, 0},
        {static_cast<void*>(monitor), 0, ZMQ_POLLIN, 0},
    };
    const size_t n_items = monitor ? 4 : 3;
    size_t handled = 0;
    for (;;) {
      try {
        // Only light traffic spins: under load, rounds carry many messages
        // and one wake-up serves them all, while a spin would take CPU
        // from the threads that do the work.
        auto spin = handled <= light_round ? cfg.poll_spin
                                           : std::chrono::microseconds{0};
        spin_poll(items, n_items, std::chrono::milliseconds{-1}, spin);
        handled = 0;
        if (n_items == 4 && (items[3].revents & ZMQ_POLLIN)) {
          read_monitor();
        }
        if (items[1].revents & ZMQ_POLLIN) {
          handled += flush_replies();
        }
        if (items[0].revents & ZMQ_POLLIN) {
          // Bounded, so replies are not starved by a flood of requests.
          for (int i = 0; i < 256 && read_one(); ++i) {
            ++handled;
          }
        }
        if (items[2].revents & ZMQ_POLLIN) {
          flush_replies();
          return;
        }
      } catch (const zmq::error_t& e) {
        if (e.num() == ETERM) {
          return;
        }
        spdlog::error("gateway: {}", e.what());
      } catch (const std::bad_alloc&) {
        spdlog::error("gateway: out of memory handling a frame; dropped");
      }
    }
  }

  caf::error bind() {
    try {
      ctx = zmq::context_t{cfg.io_threads};
      sock = zmq::socket_t{ctx, zmq::socket_type::router};
      sock.set(zmq::sockopt::linger, 0);
      sock.set(zmq::sockopt::sndhwm, 0);
      sock.set(zmq::sockopt::rcvhwm, 0);
      sock.set(
          zmq::sockopt::maxmsgsize,
          static_cast<int64_t>(transport_frame_bound(cfg.max_frame_bytes)));
      if (cfg.curve) {
        if (auto err = enable_curve()) {
          return err;
        }
      }
      sock.bind(cfg.endpoint);
      bound = sock.get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      return make_error(errc::io_error, "cannot bind gateway endpoint " +
                                            cfg.endpoint + ": " + e.what());
    }
    stop_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (stop_fd < 0) {
      return make_error(errc::io_error,
                        std::string{"eventfd: "} + std::strerror(errno));
    }
    return {};
  }
};

client_socket::client_socket() : impl_(std::make_unique<impl>()) {
  // nop
}

client_socket::~client_socket() {
  stop();
}

caf::expected<std::unique_ptr<client_socket>>
client_socket::start(client_socket_config cfg, std::shared_ptr<reply_sink> sink,
                     handler& h) {
  std::unique_ptr<client_socket> cs{new client_socket};
  auto& d = *cs->impl_;
  d.cfg = std::move(cfg);
  d.sink = std::move(sink);
  d.h = &h;
  d.owner = cs.get();
  if (auto err = d.bind()) {
    return err;
  }
  // The socket moves to its thread here; thread creation is the full
  // barrier ZeroMQ asks for when a socket changes threads.
  d.thread = std::thread{[&d] { d.run(); }};
  return cs;
}

void client_socket::send(const reply_route& route, std::string_view body) {
  impl_->send(route, body);
}

void client_socket::stop() {
  auto& d = *impl_;
  if (d.stopped || !d.thread.joinable()) {
    return;
  }
  d.stopped = true;
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(d.stop_fd, &one, sizeof(one));
  d.thread.join();
  if (d.monitor) {
    zmq_socket_monitor(d.sock.handle(), nullptr, 0);
    d.monitor.close();
  }
  d.sock.close();
  if (d.zap) {
    d.zap->stop();
  }
  d.ctx.close();
  ::close(d.stop_fd);
}

const std::string& client_socket::endpoint() const noexcept {
  return impl_->bound;
}

uint64_t client_socket::frames_received() const noexcept {
  return impl_->frames.load();
}

} // namespace shoal
