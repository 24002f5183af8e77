#include "actors/serving/gateway.hpp"

#include <algorithm>

#include <caf/all.hpp>

#include <chrono>
#include <optional>

#include <spdlog/spdlog.h>

#include "actors/jobs/job_ops.hpp"
#include "gpu/model/manifest.hpp"
#include "net/gateway/access.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace {

// A rate as an operator wrote it: 100, or 0.5.
std::string fmt_rate(double rate) {
  auto text = std::to_string(rate);
  text.erase(text.find_last_not_of('0') + 1);
  if (!text.empty() && text.back() == '.') {
    text.pop_back();
  }
  return text;
}

} // namespace

struct gateway::impl : client_socket::handler {
  gateway_config cfg;
  gateway_env env;
  access_policy policy;
  // Lookups into env.tenants, remembered from the frame before.
  std::optional<tenant_memo> tenant_lookup;

  // Reused per frame, so the hot path does not allocate for them.
  request req;
  std::string out;
  // The current frame's tenant: its name (the key's, else the request's),
  // and whether its reply counts in the tenant's metrics (infer only).
  std::string_view tenant_name;
  tenant_table::id tenant;
  bool tenant_counts = false;
  // Whether the current frame goes into the request log, and its size.
  bool logged = false;
  uint64_t frame_bytes = 0;
  // The catalog as of `catalog_gen`: taken again only when a re-read
  // replaced it, so the hot path does not lock per request.
  model_catalog_ptr catalog;
  uint64_t catalog_gen = 0;

  const model_catalog& current_catalog() {
    auto gen = env.catalog->generation();
    if (!catalog || gen != catalog_gen) {
      catalog = env.catalog->get();
      catalog_gen = gen;
    }
    return *catalog;
  }

  void send_reply(client_socket& sock, const reply_route& route,
                  const reply& r) {
    out.clear();
    encode_reply(r, out);
    sock.send(route, out);
    if (tenant_counts) {
      env.tenants->count_on_gateway(tenant.label, r.code);
    }
    if (logged) {
      log_reply(r);
    }
  }

  void log_reply(const reply& r) {
    request_record rec;
    rec.id = &r.id;
    rec.tenant = tenant_name;
    rec.model = r.model.empty() ? std::string_view{req.model} : r.model;
    rec.version = r.version;
    rec.op = req.op;
    rec.code = r.code;
    rec.source = r.source;
    rec.timing_us = r.timing_us.value_or(timing{});
    rec.bytes_in = frame_bytes;
    rec.bytes_out = out.size();
    env.requests->write(rec);
  }

  // Answers a request over one of its tenant's limits.
  void refuse(client_socket& sock, const reply_route& route, status code,
              tenant_reject why, std::string reason, int64_t retry_ns) {
    auto r = error_reply(code, "tenant '" + std::string{tenant_name} + "' " +
                                   std::move(reason));
    if (code == status::resource_exhausted) {
      r.retry_after_ms = std::max<uint64_t>(
          1, static_cast<uint64_t>(retry_ns + 999999) / 1000000);
    }
    env.tenants->rejected(tenant.label, why);
    send_reply(sock, route, r);
    env.metrics->op_reply(req.op, code);
  }

  // The tenant's models and rate (cache hits count too) and its priority
  // ceiling. False when refused (and answered).
  bool admit_tenant(client_socket& sock, const reply_route& route,
                    int64_t recv_ns) {
    auto& t = *env.tenants;
    auto i = tenant.index;
    tenant_counts = true;
    if (!tenant_lookup->allows_model(i, req.model)) {
      refuse(sock, route, status::permission_denied, tenant_reject::model,
             "may not use model " + req.model + " (tenants." + t.name(i) +
                 ".models)",
             0);
      return false;
    }
    if (auto wait = t.take_token(i, recv_ns)) {
      refuse(sock, route, status::resource_exhausted, tenant_reject::rate,
             "is over its rate limit of " + fmt_rate(t.rate(i)) +
                 " requests/s (tenants." + t.name(i) + ".rate, burst " +
                 std::to_string(t.burst(i)) + ")",
             wait);
      return false;
    }
    req.priority = t.cap_priority(i, req.priority);
    return true;
  }

  // An in-flight slot for a request that goes on to the router. False
  // when refused (and answered).
  bool take_slot(client_socket& sock, const reply_route& route,
                 infer_job& job) {
    auto& t = *env.tenants;
    auto i = tenant.index;
    job.tenant = i;
    job.tenant_label = tenant.label;
    if (logged) {
      job.log_tenant = tenant_name;
      job.bytes_in = frame_bytes;
    }
    if (t.max_inflight(i) == 0) {
      return true;
    }
    if (!t.acquire_slot(i)) {
      // Nothing says when a slot frees; a short pause spreads retries.
      refuse(sock, route, status::resource_exhausted, tenant_reject::inflight,
             "has " + std::to_string(t.inflight(i)) +
                 " requests in flight, its limit (tenants." + t.name(i) +
                 ".max_inflight)",
             10'000'000);
      return false;
    }
    job.tenant_slot = true;
    return true;
  }

  reply error_reply(status code, std::string reason) {
    reply r;
    r.id = req.id;
    r.code = code;
    r.error = std::move(reason);
    r.model = req.model;
    return r;
  }

  // The inputs in the model's declared order: the order backends take.
  void sort_inputs(const model_spec& spec) {
    if (spec.inputs.size() < 2) {
      return;
    }
    auto pos = [&](const std::string& n) {
      for (size_t i = 0; i < spec.inputs.size(); ++i) {
        if (spec.inputs[i].name == n) {
          return i;
        }
      }
      return spec.inputs.size();
    };
    std::sort(req.inputs.begin(), req.inputs.end(),
              [&](const tensor& a, const tensor& b) {
                return pos(a.name) < pos(b.name);
              });
  }

  // Answers a cache hit on this thread. False on a miss.
  bool answer_hit(client_socket& sock, const reply_route& route,
                  const model_spec& spec, const cache_key& key,
                  int64_t recv_ns) {
    auto hit = env.cache->get(key);
    if (!hit) {
      return false;
    }
    reply r;
    r.id = req.id;
    r.outputs_encoded = hit->outputs_encoded;
    r.source = reply_source::cache;
    r.model = hit->model;
    r.version = hit->version;
    r.node = hit->node;
    auto total = static_cast<uint64_t>((now_ns() - recv_ns) / 1000);
    r.timing_us = timing{0, 0, total};
    if (req.stream) {
      r.event = "done";
    }
    send_reply(sock, route, r);
    env.metrics->reply(spec.name, status::ok, reply_source::cache, total / 1e6);
    return true;
  }

  int64_t deadline_of(int64_t recv_ns) const {
    auto timeout = req.timeout_ms.value_or(cfg.default_timeout_ms);
    // timeout_ms = 0 asks for no deadline.
    if (timeout == 0) {
      return 0;
    }
    return recv_ns +
           static_cast<int64_t>(std::min<uint64_t>(timeout, 1ull << 40)) *
               1'000'000;
  }

  void handle_infer(client_socket& sock, reply_route& route, int64_t recv_ns) {
    if (!admit_tenant(sock, route, recv_ns)) {
      return;
    }
    auto spec = current_catalog().resolve(req.model, req.version);
    if (!spec) {
      auto what = "model " + req.model +
                  (req.version ? " v" + std::to_string(*req.version) : "") +
                  " not found";
      send_reply(sock, route, error_reply(status::not_found, what));
      return env.metrics->op_reply(op_kind::infer, status::not_found);
    }
    auto rows = validate_inputs(*spec, req.inputs);
    if (!rows) {
      send_reply(
          sock, route,
          error_reply(status::invalid_argument, reason_of(rows.error())));
      return env.metrics->reply(spec->name, status::invalid_argument,
                                reply_source::none, (now_ns() - recv_ns) / 1e9);
    }
    sort_inputs(*spec);
    bool cacheable = spec->cache_enabled && env.cache->cfg().max_bytes > 0;
    infer_job job;
    if (cacheable) {
      job.key = make_cache_key(spec->name, spec->version, req.inputs);
      if (req.cache == cache_mode::use &&
          answer_hit(sock, route, *spec, job.key, recv_ns)) {
        return;
      }
      if (req.cache == cache_mode::refresh) {
        env.cache->erase(job.key);
      }
    }
    if (!take_slot(sock, route, job)) {
      return;
    }
    job.id = std::move(req.id);
    job.model = spec->name;
    job.version = spec->version;
    job.inputs = std::move(req.inputs);
    job.rows = *rows;
    job.priority = req.priority;
    job.recv_ns = recv_ns;
    job.deadline_ns = deadline_of(recv_ns);
    job.cache = static_cast<uint8_t>(req.cache);
    job.cacheable = cacheable;
    job.stream = req.stream;
    job.route = std::move(route);
    caf::anon_send(env.router, std::move(job));
  }

  void handle_drain(client_socket& sock, const reply_route& route) {
    auto node = req.node.empty() ? cfg.node_name : req.node;
    auto why =
        env.on_drain ? env.on_drain(node) : std::string{"drain disabled"};
    if (!why.empty()) {
      send_reply(sock, route, error_reply(status::not_found, why));
      return env.metrics->op_reply(op_kind::drain, status::not_found);
    }
    reply r;
    r.id = req.id;
    r.node = node;
    send_reply(sock, route, r);
    env.metrics->op_reply(op_kind::drain, status::ok);
  }

  // `reload`: the re-read runs on the repository watcher's thread, which
  // answers through the reply sink when it is done.
  void handle_reload(reply_route& route) {
    env.catalog->reread(
        [id = std::move(req.id), route = std::move(route), sink = env.sink,
         metrics = env.metrics](const caf::expected<catalog_update>& up) {
          reply r;
          r.id = id;
          if (!up) {
            r.code = to_status(up.error());
            r.error = reason_of(up.error());
          } else {
            r.has_changes = true;
            r.added = up->added;
            r.removed = up->removed;
            r.refused = up->refused;
          }
          std::string body;
          encode_reply(r, body);
          sink->push(route, std::move(body));
          metrics->op_reply(op_kind::reload, r.code);
        });
  }

  void handle_admin(reply_route& route) {
    admin_job job;
    job.id = std::move(req.id);
    job.op = static_cast<uint8_t>(req.op);
    job.model = std::move(req.model);
    job.version = req.version.value_or(0);
    job.node = std::move(req.node);
    job.route = std::move(route);
    caf::anon_send(env.router, std::move(job));
  }

  // The key may have been removed from the clients file after its
  // connection was accepted: its session ends with the next frame.
  // Otherwise, admin ops need an admin. Returns true when refused.
  bool refuse(client_socket& sock, const reply_route& route,
              const client_peer& peer) {
    if (policy.curve && !cfg.clients->has_name(peer.key_name)) {
      send_reply(sock, route,
                 error_reply(status::unauthenticated,
                             "client key '" + peer.key_name +
                                 "' is no longer in the clients file"));
      env.metrics->op_reply(req.op, status::unauthenticated);
      return true;
    }
    auto why = access_refusal(req.op, peer, policy);
    if (why.empty()) {
      return false;
    }
    send_reply(sock, route, error_reply(status::permission_denied, why));
    env.metrics->op_reply(req.op, status::permission_denied);
    return true;
  }

  void on_frame(client_socket& sock, reply_route& route,
                const client_peer& peer, std::string_view frame) override {
    auto recv_ns = now_ns();
    req = request{};
    tenant_counts = false;
    tenant_name = peer.tenant.empty() ? std::string_view{"default"}
                                      : std::string_view{peer.tenant};
    logged = env.requests && env.requests->sampled();
    frame_bytes = frame.size();
    if (auto err =
            decode_request(reinterpret_cast<const uint8_t*>(frame.data()),
                           frame.size(), cfg.limits, req)) {
      reply r;
      r.id = req.id;
      r.code = status::invalid_argument;
      r.error = reason_of(err);
      send_reply(sock, route, r);
      return env.metrics->invalid_frame();
    }
    if (refuse(sock, route, peer)) {
      return;
    }
    tenant_name = !peer.tenant.empty()  ? std::string_view{peer.tenant}
                  : !req.tenant.empty() ? std::string_view{req.tenant}
                                        : std::string_view{"default"};
    tenant = tenant_lookup->resolve(tenant_name);
    switch (req.op) {
    case op_kind::infer:
      return handle_infer(sock, route, recv_ns);
    case op_kind::ping: {
      reply r;
      r.id = req.id;
      r.node = cfg.node_name;
      send_reply(sock, route, r);
      return env.metrics->op_reply(op_kind::ping, status::ok);
    }
    case op_kind::drain:
      return handle_drain(sock, route);
    case op_kind::reload:
      return handle_reload(route);
    case op_kind::models:
    case op_kind::status:
    case op_kind::load:
    case op_kind::unload:
      return handle_admin(route);
    case op_kind::submit:
      // A job is the tenant's request as much as an infer is: the same
      // models, rate and priority ceiling. Its reply counts for the tenant
      // when the job ends (the router answers it), not at the ack.
      if (!admit_tenant(sock, route, recv_ns)) {
        return;
      }
      tenant_counts = false;
      [[fallthrough]];
    case op_kind::job:
    case op_kind::wait:
    case op_kind::cancel:
    case op_kind::jobs:
      if (auto r = forward_job_op(env.jobs, env.router, *env.catalog->get(),
                                  *env.cache, req, peer, route, frame)) {
        send_reply(sock, route, *r);
        env.metrics->op_reply(req.op, r->code);
      }
      return;
    }
  }

  void on_malformed() override { env.metrics->invalid_frame(); }
};

namespace {

// The ZAP verdict for a client key: its name, tenant and role from the
// clients file, or a refusal (logged at most once a second: a scan must
// not flood the log).
zap_verdict authorize_client(const client_registry& clients,
                             const zap_request& req) {
  zap_verdict v;
  auto entry = req.curve ? clients.find(req.public_key) : std::nullopt;
  if (!entry) {
    static std::chrono::steady_clock::time_point last;
    auto now = std::chrono::steady_clock::now();
    if (now - last >= std::chrono::seconds{1}) {
      last = now;
      spdlog::warn("security: refused a client key not in {} (public key {}, "
                   "from {})",
                   clients.path(), req.curve ? z85_of(req.public_key) : "-",
                   req.address);
    }
    return v;
  }
  v.ok = true;
  v.user_id = entry->name;
  v.metadata = {
      {"tenant", entry->tenant},
      {"role", entry->role == client_role::admin ? "admin" : "client"}};
  return v;
}

client_socket_config socket_config_of(const gateway_config& c) {
  client_socket_config sc;
  sc.endpoint = c.endpoint;
  sc.io_threads = c.io_threads;
  sc.poll_spin = c.poll_spin;
  sc.max_frame_bytes = c.limits.max_frame_bytes;
  if (c.clients) {
    sc.curve = true;
    sc.secret_key = c.secret_key;
    auto clients = c.clients;
    sc.authorize = [clients](const zap_request& req) {
      return authorize_client(*clients, req);
    };
    sc.tick = [clients] { clients->reload_if_changed(); };
    sc.on_auth_failure = c.on_auth_failure;
  }
  return sc;
}

} // namespace

gateway::gateway() : impl_(std::make_unique<impl>()) {
  // nop
}

gateway::~gateway() {
  stop();
}

caf::expected<std::unique_ptr<gateway>> gateway::start(gateway_config cfg,
                                                       gateway_env env) {
  std::unique_ptr<gateway> gw{new gateway};
  auto& d = *gw->impl_;
  d.cfg = std::move(cfg);
  d.env = std::move(env);
  if (!d.env.tenants) {
    d.env.tenants = std::make_shared<tenant_table>();
  }
  d.tenant_lookup.emplace(*d.env.tenants);
  d.policy.curve = d.cfg.clients != nullptr;
  d.policy.admin_from_any = d.cfg.admin_from_any;
  auto sock = client_socket::start(socket_config_of(d.cfg), d.env.sink, d);
  if (!sock) {
    return sock.error();
  }
  gw->socket_ = std::move(*sock);
  return gw;
}

void gateway::stop() {
  if (socket_) {
    socket_->stop();
  }
}

const std::string& gateway::endpoint() const noexcept {
  return socket_->endpoint();
}

uint64_t gateway::frames_received() const noexcept {
  return socket_->frames_received();
}

} // namespace shoal
