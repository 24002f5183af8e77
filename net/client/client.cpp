#include "net/client/client.hpp"

#include <algorithm>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include <zmq.hpp>

namespace shoal {

namespace {

struct id_hash {
  size_t operator()(const request_id& id) const noexcept {
    if (id.k == request_id::kind::str) {
      return std::hash<std::string>{}(id.str) ^ 0x9e3779b97f4a7c15ull;
    }
    return std::hash<uint64_t>{}(id.num);
  }
};

// One request between submit and its end.
struct pending {
  // Encoded once; every attempt resends these exact bytes (same id).
  std::string frame;
  std::chrono::milliseconds timeout;
  int attempts_left = 0; // resends still allowed
  int attempts = 0;      // sends so far
  // Names the one live timer of this request; older timers in the heap are
  // stale and skipped, so a reply never has to search the heap.
  uint64_t timer_seq = 0;
  reply_handler handler;
};

struct timer {
  time_point deadline;
  uint64_t seq;
  request_id id;
};

// Min-heap on the deadline.
struct timer_later {
  bool operator()(const timer& a, const timer& b) const noexcept {
    return a.deadline > b.deadline;
  }
};

uint64_t random_id_base() {
  std::random_device rd;
  uint64_t x = (uint64_t{rd()} << 32) ^ rd();
  // Below 2^48 so the ids never wrap and stay exact in JSON doubles.
  return (x & ((uint64_t{1} << 48) - 1)) + 1;
}

// Spare frame buffers kept so a steady stream of requests reuses capacity.
constexpr size_t max_spare_frames = 256;

} // namespace

struct client::impl {
  client_options opts;
  zmq::context_t ctx{1};
  zmq::socket_t sock;
  uint64_t next_id = random_id_base();
  uint64_t next_timer_seq = 1;
  uint64_t unmatched = 0;
  std::unordered_map<request_id, pending, id_hash> in_flight;
  std::function<void(const reply&)> on_progress;
  std::vector<timer> timers;
  // Requests that ended inside submit() (duplicate id, send failure): their
  // handlers run in the next poll(), as the header promises.
  std::vector<std::pair<reply_handler, caf::error>> early_ends;
  std::vector<std::string> spare_frames;
  zmq::message_t msg;

  std::string take_frame() {
    if (spare_frames.empty()) {
      return {};
    }
    auto s = std::move(spare_frames.back());
    spare_frames.pop_back();
    s.clear();
    return s;
  }

  void recycle(std::string&& s) {
    if (spare_frames.size() < max_spare_frames) {
      spare_frames.push_back(std::move(s));
    }
  }

  void push_timer(const request_id& id, pending& p) {
    p.timer_seq = next_timer_seq++;
    timers.push_back(timer{clock_type::now() + p.timeout, p.timer_seq, id});
    std::push_heap(timers.begin(), timers.end(), timer_later{});
  }

  bool timer_live(const timer& t) const {
    auto i = in_flight.find(t.id);
    return i != in_flight.end() && i->second.timer_seq == t.seq;
  }

  // Stale timers of answered requests would otherwise wake poll() early and,
  // at high rates, pile up for a whole timeout.
  void prune_timers() {
    while (!timers.empty() && !timer_live(timers.front())) {
      std::pop_heap(timers.begin(), timers.end(), timer_later{});
      timers.pop_back();
    }
    if (timers.size() > 2 * in_flight.size() + 1024) {
      std::erase_if(timers, [this](const timer& t) { return !timer_live(t); });
      std::make_heap(timers.begin(), timers.end(), timer_later{});
    }
  }

  bool send(const std::string& frame) {
    try {
      auto res = sock.send(zmq::buffer(frame), zmq::send_flags::dontwait);
      return res.has_value();
    } catch (const zmq::error_t&) {
      return false;
    }
  }

  // Ends one request: removes it before its handler runs, so the handler may
  // submit again (the closed-loop bench does).
  template <class Iter>
  void finish(Iter i, caf::expected<reply> result) {
    auto handler = std::move(i->second.handler);
    recycle(std::move(i->second.frame));
    in_flight.erase(i);
    if (handler) {
      handler(std::move(result));
    }
  }

  size_t run_early_ends() {
    if (early_ends.empty()) {
      return 0;
    }
    auto batch = std::move(early_ends);
    early_ends.clear();
    for (auto& [handler, err] : batch) {
      if (handler) {
        handler(std::move(err));
      }
    }
    return batch.size();
  }

  // Returns false when nothing more is waiting on the socket.
  bool recv_one(size_t& ended) {
    // A reply is one frame; a REQ-style peer may put an empty delimiter in
    // front of it, so the payload is the last frame of the message.
    bool got = false;
    try {
      if (!sock.recv(msg, zmq::recv_flags::dontwait)) {
        return false;
      }
      got = true;
      while (msg.more()) {
        if (!sock.recv(msg, zmq::recv_flags::none)) {
          break;
        }
      }
    } catch (const zmq::error_t&) {
      return got;
    }
    reply rep;
    caf::error err;
    try {
      err = decode_reply(static_cast<const uint8_t*>(msg.data()), msg.size(),
                         opts.limits, rep);
    } catch (const std::exception&) {
      // A reply we cannot afford to decode (bad_alloc) is dropped like any
      // other malformed one.
      err = make_error(errc::internal, "reply decoding failed");
    }
    if (err || rep.id.k == request_id::kind::nil) {
      ++unmatched;
      return true;
    }
    auto i = in_flight.find(rep.id);
    if (i == in_flight.end()) {
      ++unmatched;
      return true;
    }
    // A progress frame: the request is alive and stays open.
    if (rep.event == "progress") {
      if (on_progress) {
        on_progress(rep);
      }
      push_timer(i->first, i->second);
      return true;
    }
    finish(i, std::move(rep));
    ++ended;
    return true;
  }

  size_t expire(time_point now) {
    size_t ended = 0;
    while (!timers.empty() && timers.front().deadline <= now) {
      std::pop_heap(timers.begin(), timers.end(), timer_later{});
      auto t = std::move(timers.back());
      timers.pop_back();
      auto i = in_flight.find(t.id);
      if (i == in_flight.end() || i->second.timer_seq != t.seq) {
        continue;
      }
      auto& p = i->second;
      if (p.attempts_left > 0) {
        --p.attempts_left;
        ++p.attempts;
        // A failed send is not retried at once: the attempt just times out.
        send(p.frame);
        push_timer(i->first, p);
        continue;
      }
      auto reason = "no reply from " + opts.endpoint + " after " +
                    std::to_string(p.attempts) + " attempt" +
                    (p.attempts == 1 ? "" : "s");
      finish(i, make_error(errc::deadline_exceeded, std::move(reason)));
      ++ended;
    }
    return ended;
  }
};

client::client() : impl_(std::make_unique<impl>()) {
  // Nothing else: connect() configures the socket.
}

client::~client() = default;

caf::expected<std::unique_ptr<client>> client::connect(client_options opts) {
  std::unique_ptr<client> c{new client};
  auto& d = *c->impl_;
  try {
    d.sock = zmq::socket_t{d.ctx, zmq::socket_type::dealer};
    // Closing must never block on unsent requests.
    d.sock.set(zmq::sockopt::linger, 0);
    // Unbounded queues: a send never fails because many requests are in
    // flight; each has its own timeout instead.
    d.sock.set(zmq::sockopt::sndhwm, 0);
    d.sock.set(zmq::sockopt::rcvhwm, 0);
    // Queue requests while the gateway is not up yet (ZeroMQ reconnects).
    d.sock.set(zmq::sockopt::immediate, false);
    if (opts.curve) {
      auto key = [](const std::array<uint8_t, 32>& k) {
        return zmq::const_buffer{k.data(), k.size()};
      };
      d.sock.set(zmq::sockopt::curve_serverkey, key(opts.server_public_key));
      d.sock.set(zmq::sockopt::curve_publickey, key(opts.public_key));
      d.sock.set(zmq::sockopt::curve_secretkey, key(opts.secret_key));
    }
    d.sock.connect(opts.endpoint);
  } catch (const zmq::error_t& e) {
    return make_error(errc::invalid_argument,
                      "cannot connect to '" + opts.endpoint + "': " + e.what());
  }
  if (opts.timeout.count() <= 0) {
    opts.timeout = std::chrono::milliseconds{1};
  }
  if (opts.retries < 0) {
    opts.retries = 0;
  }
  d.opts = std::move(opts);
  return c;
}

caf::expected<reply> client::call(request r) {
  std::optional<caf::expected<reply>> result;
  submit(std::move(r),
         [&result](caf::expected<reply> x) { result.emplace(std::move(x)); });
  // Each poll returns when a reply arrives or an attempt times out, so this
  // loop ends within (retries + 1) * timeout.
  while (!result) {
    poll(impl_->opts.timeout);
  }
  return std::move(*result);
}

request_id client::submit(request r, reply_handler on_reply) {
  return submit(std::move(r), std::move(on_reply), impl_->opts.timeout,
                impl_->opts.retries);
}

request_id client::submit(request r, reply_handler on_reply,
                          std::chrono::milliseconds timeout, int retries) {
  auto& d = *impl_;
  if (r.id.k == request_id::kind::nil) {
    r.id = request_id::of(d.next_id++);
  }
  auto [i, added] = d.in_flight.try_emplace(r.id);
  if (!added) {
    d.early_ends.emplace_back(
        std::move(on_reply),
        make_error(errc::invalid_argument,
                   "request id " + r.id.to_string() + " is already in flight"));
    return r.id;
  }
  auto& p = i->second;
  p.frame = d.take_frame();
  encode_request(r, p.frame);
  p.timeout = timeout.count() > 0 ? timeout : std::chrono::milliseconds{1};
  p.attempts_left = std::max(retries, 0);
  p.attempts = 1;
  p.handler = std::move(on_reply);
  d.send(p.frame);
  d.push_timer(i->first, p);
  return r.id;
}

void client::on_progress(std::function<void(const reply&)> fn) {
  impl_->on_progress = std::move(fn);
}

size_t client::poll(std::chrono::milliseconds wait) {
  auto& d = *impl_;
  size_t ended = d.run_early_ends();
  // Drain what is already queued before blocking: at high rates the socket is
  // usually readable and this avoids a zmq_poll per reply.
  while (d.recv_one(ended)) {
    // keep draining
  }
  auto now = clock_type::now();
  ended += d.expire(now);
  if (ended > 0) {
    return ended;
  }
  d.prune_timers();
  auto until = now + std::max(wait, std::chrono::milliseconds{0});
  if (!d.timers.empty() && d.timers.front().deadline < until) {
    until = d.timers.front().deadline;
  }
  // zmq_poll counts whole milliseconds: round up so a deadline 300us away
  // does not turn into a busy loop of zero-timeout polls.
  auto left = until - now;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left);
  if (ms.count() < 0) {
    ms = std::chrono::milliseconds{0};
  }
  zmq_pollitem_t item{d.sock.handle(), 0, ZMQ_POLLIN, 0};
  try {
    zmq::poll(&item, 1, ms);
  } catch (const zmq::error_t&) {
    // EINTR (a signal): return to the caller, who polls again.
    return ended;
  }
  while (d.recv_one(ended)) {
    // keep draining
  }
  ended += d.expire(clock_type::now());
  return ended;
}

size_t client::in_flight() const noexcept {
  return impl_->in_flight.size() + impl_->early_ends.size();
}

uint64_t client::unmatched_replies() const noexcept {
  return impl_->unmatched;
}

const client_options& client::options() const noexcept {
  return impl_->opts;
}

} // namespace shoal
