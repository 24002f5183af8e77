// A ZAP handler (ZeroMQ's authentication protocol, RFC 27): the thread that
// answers the CURVE handshakes of one ZeroMQ context's sockets on
// inproc://zeromq.zap.01. It asks an authorize function whether a client
// key may connect, and hands ZeroMQ the client's name (User-Id) and
// metadata, which every message from that connection then carries
// (zmq_msg_gets). Start it before the CURVE socket binds: without a
// handler, libzmq lets every key in.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/expected.hpp>

#include "net/security/curve_keys.hpp"

namespace zmq {
class context_t;
} // namespace zmq

namespace shoal {

struct zap_request {
  std::string domain;
  // The peer's IP address, as ZeroMQ reports it.
  std::string address;
  // Empty unless the mechanism is CURVE.
  curve_key public_key{};
  bool curve = false;
};

struct zap_verdict {
  bool ok = false;
  // Accepted: the connection's User-Id and metadata properties.
  std::string user_id;
  std::vector<std::pair<std::string, std::string>> metadata;
};

class zap_handler {
public:
  using authorize_fn = std::function<zap_verdict(const zap_request&)>;

  // Binds the ZAP endpoint on `ctx` and starts the thread. `tick` (when
  // set) runs on that thread every `tick_every`. `ctx` must outlive the
  // handler; stop() before closing it.
  static caf::expected<std::unique_ptr<zap_handler>>
  start(zmq::context_t& ctx, authorize_fn authorize, std::function<void()> tick,
        std::chrono::milliseconds tick_every);

  ~zap_handler();
  zap_handler(const zap_handler&) = delete;
  zap_handler& operator=(const zap_handler&) = delete;

  // Joins the thread and closes the socket. Idempotent.
  void stop();

private:
  zap_handler();
  struct impl;
  std::unique_ptr<impl> impl_;
};

// ZAP metadata bytes for `props` (name length byte, name, 4-byte big-endian
// value length, value); names over 255 bytes are skipped.
std::string encode_zap_metadata(
    const std::vector<std::pair<std::string, std::string>>& props);

} // namespace shoal
