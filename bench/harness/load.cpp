#include "bench/harness/load.hpp"

#include <cmath>
#include <cstring>
#include <string_view>

#include "bench/harness/run.hpp"
#include "net/wire/codec.hpp"

namespace shoal::bench {

namespace {

constexpr uint64_t id_base = uint64_t{1} << 56;
constexpr auto reply_timeout = std::chrono::seconds{30};

// A msgpack fixstr pair "key": "value", as the encoder writes short ones.
std::string fixstr_pair(const std::string& key, const std::string& value) {
  std::string s;
  s.push_back(static_cast<char>(0xa0 + key.size()));
  s.append(key);
  s.push_back(static_cast<char>(0xa0 + value.size()));
  s.append(value);
  return s;
}

} // namespace

float input_value(size_t i) {
  return static_cast<float>(i) * 0.25f;
}

std::string op_frame(shoal::op_kind op, uint64_t id) {
  shoal::request r;
  r.id = shoal::request_id::of(id);
  r.op = op;
  std::string out;
  shoal::encode_request(r, out);
  return out;
}

std::optional<shoal::reply> decode(const zmq::message_t& msg) {
  shoal::reply r;
  if (shoal::decode_reply(static_cast<const uint8_t*>(msg.data()), msg.size(),
                          {}, r)) {
    return std::nullopt;
  }
  return r;
}

// -- frame_source -------------------------------------------------------------

frame_source::frame_source(uint64_t id) {
  shoal::request r;
  r.id = shoal::request_id::of(id);
  r.op = shoal::op_kind::infer;
  r.model = "echo";
  shoal::tensor t;
  t.name = "x";
  t.type = shoal::dtype::f32;
  t.shape = {1, row_floats};
  t.data.resize(row_floats * sizeof(float));
  for (size_t i = 0; i < row_floats; ++i) {
    float v = input_value(i);
    std::memcpy(t.data.data() + i * sizeof(float), &v, sizeof(float));
  }
  r.inputs.push_back(std::move(t));
  shoal::encode_request(r, frame_);
}

frame_source frame_source::fixed() {
  return frame_source{1};
}

frame_source frame_source::distinct(uint64_t first) {
  frame_source f{id_base};
  const char id_bytes[] = {'\xcf', 1, 0, 0, 0, 0, 0, 0, 0};
  auto id_pos = std::string_view{f.frame_}.find(
      std::string_view{id_bytes, sizeof(id_bytes)});
  if (id_pos == std::string_view::npos) {
    throw bench_error{"request id not found in the encoded request"};
  }
  f.id_patch_ = id_pos + 1;
  std::string data(row_floats * sizeof(float), '\0');
  for (size_t i = 0; i < row_floats; ++i) {
    float v = input_value(i);
    std::memcpy(data.data() + i * sizeof(float), &v, sizeof(float));
  }
  auto pos = std::string_view{f.frame_}.find(data);
  if (pos == std::string_view::npos) {
    throw bench_error{"tensor data not found in the encoded request"};
  }
  f.patch_ = pos;
  f.counter_ = first;
  return f;
}

const std::string& frame_source::next() {
  if (patch_ != std::string::npos) {
    std::memcpy(frame_.data() + patch_, &counter_, sizeof(counter_));
    last_id_ = id_base | (counter_ & (id_base - 1));
    for (int i = 0; i < 8; ++i) { // msgpack integers are big-endian
      frame_[id_patch_ + i] = static_cast<char>(last_id_ >> (56 - 8 * i));
    }
    ++counter_;
  }
  return frame_;
}

// -- reply_checker ------------------------------------------------------------

reply_checker reply_checker::echo() {
  return reply_checker{};
}

reply_checker reply_checker::shoal_replies(shoal::reply_source source,
                                           const std::string& node,
                                           uint64_t sample_every) {
  reply_checker c;
  c.echo_ = false;
  c.source_ = source;
  c.node_ = node;
  c.sample_mask_ = sample_every - 1;
  c.status_ok_ = fixstr_pair("status", "OK");
  c.source_pair_ = fixstr_pair("source", std::string{to_string(source)});
  if (!node.empty()) {
    c.node_pair_ = fixstr_pair("node", node);
  }
  return c;
}

bool reply_checker::check(const zmq::message_t& msg, const std::string& sent) {
  ++seen_;
  std::string_view body{static_cast<const char*>(msg.data()), msg.size()};
  if (echo_) {
    return body == sent || fail("echo reply differs from the request frame");
  }
  if (body.find(status_ok_) == std::string_view::npos ||
      body.find(source_pair_) == std::string_view::npos ||
      body.find(node_pair_) == std::string_view::npos) {
    return fail(explain(msg));
  }
  return ((seen_ - 1) & sample_mask_) != 0 || deep_check(msg);
}

bool reply_checker::fail(std::string why) {
  if (errors_++ == 0) {
    first_error_ = std::move(why);
  }
  return false;
}

std::string reply_checker::explain(const zmq::message_t& msg) const {
  auto r = decode(msg);
  if (!r) {
    return "undecodable reply";
  }
  return "expected OK from " + std::string{to_string(source_)} +
         (node_.empty() ? "" : " on " + node_) + ", got " +
         std::string{shoal::to_string(r->code)} + " from " +
         std::string{shoal::to_string(r->source)} + " on '" + r->node + "'" +
         (r->error.empty() ? "" : ": " + r->error);
}

bool reply_checker::deep_check(const zmq::message_t& msg) {
  auto r = decode(msg);
  if (!r) {
    return fail("undecodable reply");
  }
  if (r->code != shoal::status::ok || r->source != source_ ||
      (!node_.empty() && r->node != node_)) {
    return fail(explain(msg));
  }
  if (r->version != echo_version || r->outputs.size() != 1 ||
      r->outputs[0].data.size() != row_floats * sizeof(float)) {
    return fail("unexpected outputs or version in reply");
  }
  // y = 3x + 1 on an element the distinct frames do not patch.
  float y;
  std::memcpy(&y, r->outputs[0].data.data() + 5 * sizeof(float), sizeof(y));
  if (std::fabs(y - (3 * input_value(5) + 1)) > 1e-4f) {
    return fail("wrong output value " + std::to_string(y));
  }
  if (r->timing_us) {
    node_totals_.push_back(static_cast<double>(r->timing_us->total_us));
  }
  return true;
}

void require_clean(const reply_checker& chk, const std::string& phase) {
  if (chk.errors() > 0) {
    throw bench_error{phase + ": " + std::to_string(chk.errors()) +
                      " bad replies of " + std::to_string(chk.seen()) +
                      "; first: " + chk.first_error()};
  }
}

// -- client -------------------------------------------------------------------

client::client(zmq::context_t& ctx, const std::string& endpoint,
               const curve_client_keys* curve)
    : sock_(ctx, zmq::socket_type::dealer) {
  sock_.set(zmq::sockopt::linger, 0);
  sock_.set(zmq::sockopt::rcvtimeo,
            static_cast<int>(std::chrono::milliseconds{reply_timeout}.count()));
  if (curve != nullptr) {
    auto key = [](const std::array<uint8_t, 32>& k) {
      return zmq::const_buffer{k.data(), k.size()};
    };
    sock_.set(zmq::sockopt::curve_serverkey, key(curve->server_public));
    sock_.set(zmq::sockopt::curve_publickey, key(curve->public_key));
    sock_.set(zmq::sockopt::curve_secretkey, key(curve->secret_key));
  }
  sock_.connect(endpoint);
}

void client::send(const std::string& frame) {
  sock_.send(zmq::buffer(frame), zmq::send_flags::none);
}

void client::recv(zmq::message_t& msg) {
  if (!sock_.recv(msg)) {
    throw bench_error{"no reply within 30 s"};
  }
  while (msg.more()) { // never for DEALER/ROUTER echo or protocol v1
    if (!sock_.recv(msg)) {
      throw bench_error{"truncated multipart reply"};
    }
  }
}

bool client::try_recv(zmq::message_t& msg) {
  return sock_.recv(msg, zmq::recv_flags::dontwait).has_value();
}

// -- loops --------------------------------------------------------------------

std::vector<double> run_latency(client& c, frame_source& src,
                                reply_checker& chk, size_t n,
                                const std::string& phase) {
  std::vector<double> us;
  us.reserve(n);
  zmq::message_t msg;
  for (size_t i = 0; i < n; ++i) {
    const auto& frame = src.next();
    auto t0 = bench_clock::now();
    c.send(frame);
    c.recv(msg);
    auto t1 = bench_clock::now();
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    chk.check(msg, frame);
    if ((i & 255) == 0) {
      check_interrupted();
    }
  }
  require_clean(chk, phase);
  return us;
}

stream_result run_stream(client& c, frame_source& src, reply_checker& chk,
                         size_t inflight, std::chrono::duration<double> warmup,
                         std::chrono::duration<double> window, uint64_t count,
                         const std::string& phase) {
  using duration = bench_clock::duration;
  zmq::message_t msg;
  uint64_t sent = 0, recvd = 0, counted = 0;
  auto start = bench_clock::now();
  auto window_start = start + std::chrono::duration_cast<duration>(warmup);
  auto window_end = window_start + std::chrono::duration_cast<duration>(window);
  auto more = [&](bench_clock::time_point now) {
    return count ? sent < count : now < window_end;
  };
  for (size_t i = 0; i < inflight && more(start); ++i, ++sent) {
    c.send(src.next());
  }
  // Replies carry no sequence the echo could check against, so the echo
  // check compares with the (fixed) frame; distinct frames go to shoal only.
  const auto& expected = src.current();
  while (recvd < sent) {
    c.recv(msg);
    ++recvd;
    auto now = bench_clock::now();
    counted += now >= window_start && now < window_end ? 1 : 0;
    chk.check(msg, expected);
    if (more(now)) {
      c.send(src.next());
      ++sent;
    }
    if ((recvd & 255) == 0) {
      check_interrupted();
    }
  }
  require_clean(chk, phase);
  stream_result r;
  r.replies = recvd;
  r.seconds = std::chrono::duration<double>(bench_clock::now() - start).count();
  r.rate = count ? static_cast<double>(recvd) / r.seconds
                 : static_cast<double>(counted) / window.count();
  return r;
}

shoal::reply call(client& c, frame_source& src, const std::string& what) {
  zmq::message_t msg;
  c.send(src.next());
  c.recv(msg);
  auto r = decode(msg);
  if (!r || r->code != shoal::status::ok) {
    throw bench_error{
        what + ": " +
        (r ? std::string{shoal::to_string(r->code)} + ": " + r->error
           : std::string{"undecodable reply"})};
  }
  return *r;
}

} // namespace shoal::bench
