// client_socket: the client-facing ZeroMQ ROUTER socket and the one thread
// that owns it. It splits each multipart message into the reply route and
// the request frame, hands the frame to a handler on that same thread, and
// sends the replies that other threads queue in the reply sink. Nothing
// here knows what a request means: the gateway (actors/serving/gateway.hpp)
// is the handler.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "net/gateway/reply_sink.hpp"
#include "net/security/zap_handler.hpp"

namespace shoal {

struct client_socket_config {
  std::string endpoint = "tcp://127.0.0.1:5555";
  int io_threads = 1;
  // How long the thread polls after a light round before it sleeps.
  std::chrono::microseconds poll_spin{0};
  // The codec's frame limit. Larger frames up to transport_frame_bound()
  // reach the handler (which answers them INVALID_ARGUMENT); ZeroMQ itself
  // drops a peer that sends more than that (ZMQ_MAXMSGSIZE).
  uint64_t max_frame_bytes = 64u << 20;
  // CURVE: when set, the endpoint takes CURVE clients only and asks
  // `authorize` (on the ZAP thread) about each client key. Its verdict's
  // user_id becomes client_peer::key_name, its "tenant" and "role"
  // metadata the peer's tenant and admin flag.
  bool curve = false;
  curve_key secret_key{};
  zap_handler::authorize_fn authorize;
  // Runs on the ZAP thread a few times a second (the clients file watch).
  std::function<void()> tick;
  // A refused handshake, by reason: unknown_key (not in the list), no_curve
  // (the client did not speak CURVE), bad_handshake (anything else, e.g. a
  // wrong server key). Runs on the socket thread.
  std::function<void(std::string_view reason)> on_auth_failure;
};

// Who sent a frame, as ZeroMQ knows it: the connection's peer address and,
// with CURVE, the client key the handshake accepted and what the clients
// file says about it.
struct client_peer {
  // The client's name in the clients file; empty without CURVE.
  std::string key_name;
  // That key's tenant; empty without CURVE (the request names its own).
  std::string tenant;
  // The key's role is "admin".
  bool admin = false;
  // The peer's address is a loopback one (127.0.0.0/8, ::1) or the
  // transport has no address (ipc, inproc): the same machine.
  bool local = false;
};

// The largest message ZeroMQ reads for a codec frame limit of
// `max_frame_bytes`: twice the limit. A peer that sends more is
// disconnected without a reply.
uint64_t transport_frame_bound(uint64_t max_frame_bytes) noexcept;

// Whether a ZeroMQ Peer-Address value is on this machine's loopback.
bool is_loopback_address(std::string_view address) noexcept;

class client_socket {
public:
  class handler {
  public:
    virtual ~handler() = default;
    // One request frame from `route`, sent by `peer`, on the socket
    // thread. The handler answers through `sock.send` now or through the
    // reply sink later.
    virtual void on_frame(client_socket& sock, reply_route& route,
                          const client_peer& peer, std::string_view frame) = 0;
    // A message that was not [identity][""]?[frame]; it has been answered
    // INVALID_ARGUMENT already.
    virtual void on_malformed() = 0;
  };

  // Binds the endpoint (failing with errc::io_error naming it) and starts
  // the socket thread. `h` must outlive the socket.
  static caf::expected<std::unique_ptr<client_socket>>
  start(client_socket_config cfg, std::shared_ptr<reply_sink> sink, handler& h);

  ~client_socket();
  client_socket(const client_socket&) = delete;
  client_socket& operator=(const client_socket&) = delete;

  // Socket thread only (from handler callbacks).
  void send(const reply_route& route, std::string_view body);

  // Stops the thread after sending the replies already queued. Idempotent.
  void stop();

  // The endpoint actually bound (resolves a wildcard port).
  const std::string& endpoint() const noexcept;

  uint64_t frames_received() const noexcept;

private:
  client_socket();
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace shoal
