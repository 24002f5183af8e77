// The load side of the end-to-end benchmarks: pre-encoded request frames of
// model `echo`, one DEALER client that drives the echo baseline and shoal
// alike, a cheap check of every reply with a decoded sample, and the two
// loops (1 in flight; N in flight, closed loop).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "net/wire/message.hpp"

namespace shoal::bench {

using bench_clock = std::chrono::steady_clock;

// Model echo: x f32 [N, 256] (1 KiB a row); version 2 is y = 3x + 1.
constexpr size_t row_floats = 256;
constexpr uint64_t echo_version = 2;

// Element i of every request's input (distinct frames patch elements 0-1).
float input_value(size_t i);

// A frame of `op` (ping, status) with no body.
std::string op_frame(shoal::op_kind op, uint64_t id);

// The decoded reply, or nullopt when it does not decode.
std::optional<shoal::reply> decode(const zmq::message_t& msg);

// A pre-encoded infer request of model echo. distinct() frames carry a
// counter in the first 8 bytes of the tensor data and in the id (2^56 +
// counter, encoded as a full uint64 so its bytes can be patched in place),
// so that every request misses the cache and has its own id: ids must be
// unique among a client's open requests, or the node takes them for retries.
// A send copies the frame, so patching it for the next one is safe.
class frame_source {
public:
  static frame_source fixed();
  static frame_source distinct(uint64_t first);

  // The frame to send next.
  const std::string& next();
  const std::string& current() const noexcept { return frame_; }
  // The id of the frame next() returned last (distinct frames).
  uint64_t last_id() const noexcept { return last_id_; }

private:
  explicit frame_source(uint64_t id);

  std::string frame_;
  size_t patch_ = std::string::npos;
  size_t id_patch_ = std::string::npos;
  uint64_t counter_ = 0;
  uint64_t last_id_ = 0;
};

// Checks every reply cheaply (echo: the bytes equal the frame sent; shoal:
// the encoded `status: OK`, `source: ...` and, when named, `node: ...` pairs
// are present) and decodes one in `sample_every` fully, outside the timed
// section of a round trip: output values, version, and the node-side
// `timing_us.total` (receipt to reply at the front node).
class reply_checker {
public:
  static reply_checker echo();
  // `node` empty: any node. `sample_every` is a power of two.
  static reply_checker shoal_replies(shoal::reply_source source,
                                     const std::string& node,
                                     uint64_t sample_every);

  // Returns false on a bad reply (counted; the first reason is kept).
  bool check(const zmq::message_t& msg, const std::string& sent);

  uint64_t errors() const noexcept { return errors_; }
  uint64_t seen() const noexcept { return seen_; }
  const std::string& first_error() const noexcept { return first_error_; }
  // Node-side totals of the sampled replies (us); cleared by the caller.
  std::vector<double>& node_totals() noexcept { return node_totals_; }

private:
  reply_checker() = default;
  bool fail(std::string why);
  std::string explain(const zmq::message_t& msg) const;
  bool deep_check(const zmq::message_t& msg);

  bool echo_ = true;
  shoal::reply_source source_ = shoal::reply_source::executor;
  std::string node_;
  uint64_t sample_mask_ = 0;
  std::string status_ok_, source_pair_, node_pair_;
  uint64_t seen_ = 0, errors_ = 0;
  std::string first_error_;
  std::vector<double> node_totals_;
};

// Throws bench_error when the checker saw bad replies.
void require_clean(const reply_checker& chk, const std::string& phase);

// A CURVE client's keys: the server's public key and its own pair.
struct curve_client_keys {
  std::array<uint8_t, 32> server_public{}, public_key{}, secret_key{};
};

// One DEALER connected to one server; the same code drives echo and shoal.
class client {
public:
  client(zmq::context_t& ctx, const std::string& endpoint,
         const curve_client_keys* curve = nullptr);

  void send(const std::string& frame);
  // One reply; throws bench_error after 30 s.
  void recv(zmq::message_t& msg);
  bool try_recv(zmq::message_t& msg);
  zmq::socket_t& socket() noexcept { return sock_; }

private:
  zmq::socket_t sock_;
};

// 1 in flight: `n` round trips; the latencies in microseconds.
std::vector<double> run_latency(client& c, frame_source& src,
                                reply_checker& chk, size_t n,
                                const std::string& phase);

struct stream_result {
  double rate = 0;      // replies per second in the measured window
  uint64_t replies = 0; // all replies
  double seconds = 0;   // the whole stream
};

// `inflight` requests in flight, a reply answered with the next request: for
// warmup + window when `count` is 0, else until `count` replies (the rate
// then over the whole stream).
stream_result run_stream(client& c, frame_source& src, reply_checker& chk,
                         size_t inflight, std::chrono::duration<double> warmup,
                         std::chrono::duration<double> window, uint64_t count,
                         const std::string& phase);

// One request through `c`; the reply, required OK.
shoal::reply call(client& c, frame_source& src, const std::string& what);

} // namespace shoal::bench
