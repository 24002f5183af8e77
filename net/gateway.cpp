#include "net/gateway.hpp"

#include <cerrno>
#include <cstring>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.hpp>

#include "actors/messages.hpp"
#include "net/error.hpp"
#include "runtime/model_repository.hpp"

namespace shoal {

// -- reply_sink
// ----------------------------------------------------------------

reply_sink::reply_sink() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (fd_ < 0)
    throw std::runtime_error(std::string{"eventfd: "} + std::strerror(errno));
}

reply_sink::~reply_sink() {
  if (fd_ >= 0)
    ::close(fd_);
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

// -- gateway ------------------------------------------------------------------

struct gateway::impl {
  gateway_config cfg;
  caf::actor router;
  model_catalog_ptr catalog;
  std::shared_ptr<result_cache> cache;
  std::shared_ptr<reply_sink> sink;
  std::shared_ptr<node_metrics> metrics;
  std::function<std::string(const std::string&)> on_drain;
  zmq::context_t ctx;
  zmq::socket_t sock;
  std::string bound;
  std::thread thread;
  int stop_fd = -1;
  std::atomic<uint64_t> frames{0};
  bool stopped = false;

  // Reused per frame, so the hot path does not allocate for them.
  request req;
  std::string out;
  std::vector<zmq::message_t> parts;
  std::vector<reply_sink::outgoing> replies;

  void send(const reply_route& route, const char* data, size_t size) {
    sock.send(zmq::buffer(route.identity), zmq::send_flags::sndmore);
    send_rest(route, data, size);
  }

  void send_rest(const reply_route& route, const char* data, size_t size) {
    if (route.delimiter)
      sock.send(zmq::message_t{}, zmq::send_flags::sndmore);
    sock.send(zmq::buffer(data, size), zmq::send_flags::none);
  }

  void send_reply(const reply_route& route, const reply& r) {
    out.clear();
    encode_reply(r, out);
    send(route, out.data(), out.size());
  }

  void send_error(const reply_route& route, const request_id& id,
                  std::string_view model, status code, std::string reason,
                  int64_t recv_ns) {
    reply r;
    r.id = id;
    r.code = code;
    r.error = std::move(reason);
    r.model = std::string{model};
    send_reply(route, r);
    metrics->reply(model, code, reply_source::none, (now_ns() - recv_ns) / 1e9);
  }

  void handle_infer(reply_route& route, int64_t recv_ns) {
    auto spec = catalog->resolve(req.model, req.version);
    if (!spec) {
      auto what = req.version ? "model " + req.model + " v" +
                                    std::to_string(*req.version) + " not found"
                              : "model " + req.model + " not found";
      return send_error(route, req.id, req.model, status::not_found, what,
                        recv_ns);
    }
    auto rows = validate_inputs(*spec, req.inputs);
    if (!rows)
      return send_error(route, req.id, req.model, status::invalid_argument,
                        reason_of(rows.error()), recv_ns);
    // The backend sees inputs in the declared order.
    if (spec->inputs.size() > 1)
      std::sort(req.inputs.begin(), req.inputs.end(),
                [&](const tensor& a, const tensor& b) {
                  auto pos = [&](const std::string& n) {
                    for (size_t i = 0; i < spec->inputs.size(); ++i)
                      if (spec->inputs[i].name == n)
                        return i;
                    return spec->inputs.size();
                  };
                  return pos(a.name) < pos(b.name);
                });
    bool cacheable = spec->cache_enabled && cache->cfg().max_bytes > 0;
    infer_job job;
    if (cacheable) {
      job.key = make_cache_key(spec->name, spec->version, req.inputs);
      if (req.cache == cache_mode::use) {
        if (auto hit = cache->get(job.key)) {
          reply r;
          r.id = req.id;
          r.outputs_encoded = hit->outputs_encoded;
          r.source = reply_source::cache;
          r.model = hit->model;
          r.version = hit->version;
          r.node = hit->node;
          auto total = static_cast<uint64_t>((now_ns() - recv_ns) / 1000);
          r.timing_us = timing{0, 0, total};
          send_reply(route, r);
          metrics->reply(spec->name, status::ok, reply_source::cache,
                         total / 1e6);
          return;
        }
      } else if (req.cache == cache_mode::refresh) {
        cache->erase(job.key);
      }
    }
    job.id = std::move(req.id);
    job.model = spec->name;
    job.version = spec->version;
    job.inputs = std::move(req.inputs);
    job.rows = *rows;
    job.priority = req.priority;
    job.recv_ns = recv_ns;
    auto timeout = req.timeout_ms.value_or(cfg.default_timeout_ms);
    // timeout_ms = 0 asks for no deadline.
    job.deadline_ns =
        timeout == 0 ? 0
                     : recv_ns + static_cast<int64_t>(
                                     std::min<uint64_t>(timeout, 1ull << 40)) *
                                     1'000'000;
    job.cache = static_cast<uint8_t>(req.cache);
    job.cacheable = cacheable;
    job.route = std::move(route);
    caf::anon_send(router, std::move(job));
  }

  void handle_frame(reply_route& route, const zmq::message_t& body) {
    auto recv_ns = now_ns();
    req = request{};
    if (auto err = decode_request(static_cast<const uint8_t*>(body.data()),
                                  body.size(), cfg.limits, req)) {
      reply r;
      r.id = req.id;
      r.code = status::invalid_argument;
      r.error = reason_of(err);
      send_reply(route, r);
      metrics->invalid_frame();
      return;
    }
    switch (req.op) {
    case op_kind::infer:
      return handle_infer(route, recv_ns);
    case op_kind::ping: {
      reply r;
      r.id = req.id;
      r.node = cfg.node_name;
      return send_reply(route, r);
    }
    case op_kind::drain: {
      auto node = req.node.empty() ? cfg.node_name : req.node;
      auto why = on_drain ? on_drain(node) : std::string{"drain disabled"};
      if (!why.empty())
        return send_error(route, req.id, "", status::not_found, why, recv_ns);
      reply r;
      r.id = req.id;
      r.node = node;
      return send_reply(route, r);
    }
    default: {
      admin_job job;
      job.id = std::move(req.id);
      job.op = static_cast<uint8_t>(req.op);
      job.model = std::move(req.model);
      job.version = req.version.value_or(0);
      job.node = std::move(req.node);
      job.route = std::move(route);
      caf::anon_send(router, std::move(job));
    }
    }
  }

  // Reads one multipart message: [identity][""]?[body]. Anything else is
  // answered with INVALID_ARGUMENT, never dropped silently. Returns false
  // when nothing was waiting.
  bool read_one() {
    parts.clear();
    do {
      zmq::message_t part;
      if (!sock.recv(part, zmq::recv_flags::dontwait))
        return !parts.empty();
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
    if (n == 2)
      return handle_frame(route, parts[1]);
    if (n == 3 && parts[1].size() == 0) {
      route.delimiter = true;
      return handle_frame(route, parts[2]);
    }
    route.delimiter = n >= 2 && parts[1].size() == 0;
    reply r;
    r.code = status::invalid_argument;
    r.error = "expected one message frame (after an optional empty "
              "delimiter), got " +
              std::to_string(n - 1 - (route.delimiter ? 1 : 0));
    send_reply(route, r);
    metrics->invalid_frame();
  }

  void flush_replies() {
    sink->drain(replies);
    for (auto& o : replies)
      send(o.route, o.body.data(), o.body.size());
    replies.clear();
  }

  void run() {
    zmq::pollitem_t items[] = {
        {static_cast<void*>(sock), 0, ZMQ_POLLIN, 0},
        {nullptr, sink->fd(), ZMQ_POLLIN, 0},
        {nullptr, stop_fd, ZMQ_POLLIN, 0},
    };
    for (;;) {
      try {
        zmq::poll(items, 3, std::chrono::milliseconds{-1});
        if (items[1].revents & ZMQ_POLLIN)
          flush_replies();
        if (items[0].revents & ZMQ_POLLIN) {
          // Bounded, so replies are not starved by a flood of requests.
          for (int i = 0; i < 256 && read_one(); ++i)
            ;
        }
        if (items[2].revents & ZMQ_POLLIN) {
          flush_replies();
          return;
        }
      } catch (const zmq::error_t& e) {
        if (e.num() == ETERM)
          return;
        spdlog::error("gateway: {}", e.what());
      } catch (const std::bad_alloc&) {
        spdlog::error("gateway: out of memory handling a frame; dropped");
      }
    }
  }
};

gateway::gateway() : impl_(std::make_unique<impl>()) {
  // nop
}

gateway::~gateway() {
  stop();
}

caf::expected<std::unique_ptr<gateway>>
gateway::start(gateway_config cfg, caf::actor router, model_catalog_ptr catalog,
               std::shared_ptr<result_cache> cache,
               std::shared_ptr<reply_sink> sink,
               std::shared_ptr<node_metrics> metrics,
               std::function<std::string(const std::string&)> on_drain) {
  std::unique_ptr<gateway> gw{new gateway};
  auto& d = *gw->impl_;
  d.cfg = std::move(cfg);
  d.router = std::move(router);
  d.catalog = std::move(catalog);
  d.cache = std::move(cache);
  d.sink = std::move(sink);
  d.metrics = std::move(metrics);
  d.on_drain = std::move(on_drain);
  try {
    d.ctx = zmq::context_t{d.cfg.io_threads};
    d.sock = zmq::socket_t{d.ctx, zmq::socket_type::router};
    d.sock.set(zmq::sockopt::linger, 0);
    d.sock.set(zmq::sockopt::sndhwm, 0);
    d.sock.set(zmq::sockopt::rcvhwm, 0);
    d.sock.set(zmq::sockopt::maxmsgsize,
               static_cast<int64_t>(d.cfg.limits.max_frame_bytes));
    d.sock.bind(d.cfg.endpoint);
    d.bound = d.sock.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return make_error(errc::io_error, "cannot bind gateway endpoint " +
                                          d.cfg.endpoint + ": " + e.what());
  }
  d.stop_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (d.stop_fd < 0)
    return make_error(errc::io_error,
                      std::string{"eventfd: "} + std::strerror(errno));
  // The socket moves to the gateway thread here; thread creation is the
  // full barrier ZeroMQ asks for when a socket changes threads.
  d.thread = std::thread{[&d] { d.run(); }};
  return gw;
}

void gateway::stop() {
  auto& d = *impl_;
  if (d.stopped || !d.thread.joinable())
    return;
  d.stopped = true;
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(d.stop_fd, &one, sizeof(one));
  d.thread.join();
  d.sock.close();
  d.ctx.close();
  ::close(d.stop_fd);
}

const std::string& gateway::endpoint() const noexcept {
  return impl_->bound;
}

uint64_t gateway::frames_received() const noexcept {
  return impl_->frames.load();
}

} // namespace shoal
