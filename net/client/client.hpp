// The C++ client library: one DEALER socket, many requests in flight,
// replies matched by id, a timeout per request and retries that resend the
// same id (the server's retry key). Not thread-safe: one client per thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include <caf/expected.hpp>

#include "net/wire/codec.hpp"
#include "net/wire/error.hpp"
#include "net/wire/message.hpp"

namespace shoal {

struct client_options {
  // The gateway's ROUTER endpoint.
  std::string endpoint = "tcp://127.0.0.1:5555";
  // How long one attempt waits for its reply before it is resent.
  std::chrono::milliseconds timeout{5000};
  // Resends after the first attempt (same id each time).
  int retries = 2;
  codec_limits limits;
  // CURVE (a gateway with security.curve_secret_key_file): the gateway's
  // public key and this client's key pair, 32 bytes each. Off: plain TCP.
  bool curve = false;
  std::array<uint8_t, 32> server_public_key{};
  std::array<uint8_t, 32> public_key{};
  std::array<uint8_t, 32> secret_key{};
};

using reply_handler = std::function<void(caf::expected<reply>)>;

class client {
public:
  // Connects (ZeroMQ connects lazily, so this fails only on a malformed
  // endpoint, with errc::invalid_argument).
  static caf::expected<std::unique_ptr<client>> connect(client_options opts);

  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // Sends `r` and blocks until its reply, resending on timeout; fails with
  // errc::deadline_exceeded after the last attempt. A nil id is replaced by
  // a fresh numeric one.
  caf::expected<reply> call(request r);

  // Sends `r` without waiting; `on_reply` runs inside a later poll() with the
  // reply or with the error that ended the request. Returns the id used.
  request_id submit(request r, reply_handler on_reply);

  // Same, with a per-request timeout and retry count.
  request_id submit(request r, reply_handler on_reply,
                    std::chrono::milliseconds timeout, int retries);

  // Waits up to `wait` for replies, runs their handlers, resends or fails
  // the requests whose attempt timed out. Returns how many requests ended.
  size_t poll(std::chrono::milliseconds wait);

  size_t in_flight() const noexcept;

  // Progress frames (`event: "progress"`, sent before the final reply of a
  // request that asked for them) go to `fn`, inside poll(); each one also
  // restarts its request's timeout. Without a handler they are dropped.
  void on_progress(std::function<void(const reply&)> fn);

  // Replies whose id matched no request in flight (late duplicates of a
  // retried request): counted and dropped.
  uint64_t unmatched_replies() const noexcept;

  const client_options& options() const noexcept;

private:
  client();
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace shoal
