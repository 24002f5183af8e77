// The C++ client against a scripted in-process server: a ROUTER socket on
// its own thread that decodes requests with the real codec and answers (or
// not) as each test tells it.
#include "net/client/client.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

using namespace shoal;
using namespace std::chrono_literals;

namespace {

class fake_server {
public:
  // Runs on the server thread for every decoded request; `peer` is the
  // ROUTER routing id to answer to.
  using behaviour = std::function<void(fake_server&, const std::string& peer,
                                       const request&)>;

  explicit fake_server(behaviour b) : behaviour_(std::move(b)) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.bind("tcp://127.0.0.1:*");
    endpoint_ = sock_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { loop(); });
  }

  ~fake_server() {
    stop_ = true;
    thread_.join();
  }

  const std::string& endpoint() const { return endpoint_; }

  // Server thread only.
  void send(const std::string& peer, const reply& r) {
    std::string buf;
    encode_reply(r, buf);
    send_raw(peer, buf);
  }

  void send_raw(const std::string& peer, const std::string& payload) {
    sock_.send(zmq::buffer(peer), zmq::send_flags::sndmore);
    sock_.send(zmq::buffer(payload), zmq::send_flags::none);
  }

  static reply ok_reply(const request& req) {
    reply r;
    r.id = req.id;
    r.code = status::ok;
    r.source = reply_source::executor;
    r.model = req.model;
    r.node = "node-for-" + req.model;
    r.outputs = req.inputs;
    return r;
  }

  // Ids of every request the server decoded, in arrival order.
  std::vector<request_id> seen() {
    std::lock_guard<std::mutex> guard{mtx_};
    return seen_;
  }

  size_t seen_count(const request_id& id) {
    std::lock_guard<std::mutex> guard{mtx_};
    return std::count(seen_.begin(), seen_.end(), id);
  }

private:
  void loop() {
    while (!stop_) {
      zmq_pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 10ms);
      if (!(item.revents & ZMQ_POLLIN)) {
        continue;
      }
      std::vector<zmq::message_t> parts;
      auto ok = zmq::recv_multipart(sock_, std::back_inserter(parts));
      if (!ok || parts.size() < 2) {
        continue;
      }
      request req;
      auto& payload = parts.back();
      auto err = decode_request(static_cast<const uint8_t*>(payload.data()),
                                payload.size(), codec_limits{}, req);
      if (err) {
        ADD_FAILURE() << "server could not decode a request: "
                      << reason_of(err);
        continue;
      }
      {
        std::lock_guard<std::mutex> guard{mtx_};
        seen_.push_back(req.id);
      }
      behaviour_(*this, parts.front().to_string(), req);
    }
  }

  behaviour behaviour_;
  zmq::context_t ctx_{1};
  zmq::socket_t sock_{ctx_, zmq::socket_type::router};
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::mutex mtx_;
  std::vector<request_id> seen_;
  std::thread thread_;
};

std::unique_ptr<client> make_client(const std::string& endpoint,
                                    std::chrono::milliseconds timeout = 2s,
                                    int retries = 0) {
  client_options opts;
  opts.endpoint = endpoint;
  opts.timeout = timeout;
  opts.retries = retries;
  auto c = client::connect(opts);
  EXPECT_TRUE(c) << reason_of(c.error());
  return c ? std::move(*c) : nullptr;
}

request infer_request(const std::string& model) {
  request r;
  r.op = op_kind::infer;
  r.model = model;
  tensor t;
  t.name = "x";
  t.type = dtype::f32;
  t.shape = {1, 2};
  t.data.assign(8, 0);
  t.data[0] = static_cast<uint8_t>(model.size());
  r.inputs.push_back(std::move(t));
  return r;
}

// Polls until `done` or the time runs out, so a broken client fails the test
// instead of hanging it.
template <class Pred>
bool poll_until(client& c, Pred done, std::chrono::milliseconds limit = 3s) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) {
      return false;
    }
    c.poll(10ms);
  }
  return true;
}

} // namespace

TEST(client, connect_rejects_malformed_endpoint) {
  client_options opts;
  opts.endpoint = "not an endpoint";
  auto c = client::connect(opts);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code(), static_cast<uint8_t>(errc::invalid_argument));
  EXPECT_EQ(to_status(c.error()), status::invalid_argument);
}

TEST(client, echo_call_returns_ok_reply) {
  fake_server srv{[](fake_server& s, const std::string& peer,
                     const request& req) { s.send(peer, s.ok_reply(req)); }};
  auto c = make_client(srv.endpoint());
  ASSERT_TRUE(c);
  auto req = infer_request("echo");
  auto res = c->call(req);
  ASSERT_TRUE(res) << reason_of(res.error());
  EXPECT_EQ(res->code, status::ok);
  EXPECT_EQ(res->id.k, request_id::kind::num);
  EXPECT_EQ(res->model, "echo");
  EXPECT_EQ(res->source, reply_source::executor);
  ASSERT_EQ(res->outputs.size(), 1u);
  EXPECT_EQ(res->outputs[0], req.inputs[0]);
  // Fresh ids increase from the client's random base.
  auto res2 = c->call(infer_request("echo"));
  ASSERT_TRUE(res2);
  EXPECT_EQ(res2->id.num, res->id.num + 1);
  EXPECT_EQ(c->in_flight(), 0u);
}

TEST(client, string_id_is_echoed) {
  fake_server srv{[](fake_server& s, const std::string& peer,
                     const request& req) { s.send(peer, s.ok_reply(req)); }};
  auto c = make_client(srv.endpoint());
  ASSERT_TRUE(c);
  auto req = infer_request("m");
  req.id = request_id::of(std::string{"my-request-7"});
  auto res = c->call(req);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->id, request_id::of(std::string{"my-request-7"}));
}

TEST(client, status_errors_are_replies) {
  fake_server srv{
      [](fake_server& s, const std::string& peer, const request& req) {
        reply r;
        r.id = req.id;
        r.code = status::not_found;
        r.error = "unknown model '" + req.model + "'";
        s.send(peer, r);
      }};
  auto c = make_client(srv.endpoint());
  ASSERT_TRUE(c);
  auto res = c->call(infer_request("nope"));
  ASSERT_TRUE(res) << reason_of(res.error());
  EXPECT_EQ(res->code, status::not_found);
  EXPECT_EQ(res->error, "unknown model 'nope'");
}

TEST(client, out_of_order_replies_reach_their_own_handlers) {
  // Server-thread state: the requests held back until ten have arrived.
  std::vector<std::pair<std::string, request>> held;
  fake_server srv{
      [&held](fake_server& s, const std::string& peer, const request& req) {
        held.emplace_back(peer, req);
        if (held.size() < 10) {
          return;
        }
        for (auto i = held.rbegin(); i != held.rend(); ++i) {
          s.send(i->first, s.ok_reply(i->second));
        }
        held.clear();
      }};
  auto c = make_client(srv.endpoint());
  ASSERT_TRUE(c);
  std::vector<request_id> ids(10);
  std::vector<int> got(10, 0);
  std::vector<size_t> order;
  for (size_t i = 0; i < 10; ++i) {
    auto model = "model-" + std::to_string(i);
    ids[i] = c->submit(infer_request(model),
                       [&, i, model](caf::expected<reply> res) {
                         ASSERT_TRUE(res) << reason_of(res.error());
                         EXPECT_EQ(res->id, ids[i]);
                         EXPECT_EQ(res->model, model);
                         EXPECT_EQ(res->node, "node-for-" + model);
                         ++got[i];
                         order.push_back(i);
                       });
  }
  ASSERT_TRUE(poll_until(*c, [&] { return c->in_flight() == 0; }));
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(got[i], 1) << "request " << i;
  }
  ASSERT_EQ(order.size(), 10u);
  EXPECT_EQ(order.front(), 9u);
  EXPECT_EQ(order.back(), 0u);
  EXPECT_EQ(c->unmatched_replies(), 0u);
}

TEST(client, retry_resends_the_same_id) {
  std::map<uint64_t, int> attempts; // server thread only
  fake_server srv{
      [&attempts](fake_server& s, const std::string& peer, const request& req) {
        if (++attempts[req.id.num] == 1) {
          return; // drop the first attempt
        }
        s.send(peer, s.ok_reply(req));
      }};
  auto c = make_client(srv.endpoint(), 100ms, 2);
  ASSERT_TRUE(c);
  auto start = std::chrono::steady_clock::now();
  auto res = c->call(infer_request("flaky"));
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(res) << reason_of(res.error());
  EXPECT_EQ(res->code, status::ok);
  // Twice; a third attempt only if the answer to the second was slower than
  // the timeout on a loaded machine. Never another id.
  EXPECT_GE(srv.seen_count(res->id), 2u);
  EXPECT_EQ(srv.seen_count(res->id), srv.seen().size());
  EXPECT_GE(took, 100ms);
  EXPECT_LT(took, 1s);
}

TEST(client, no_reply_fails_with_deadline_exceeded) {
  fake_server srv{[](fake_server&, const std::string&, const request&) {}};
  auto c = make_client(srv.endpoint(), 100ms, 2);
  ASSERT_TRUE(c);
  auto start = std::chrono::steady_clock::now();
  auto res = c->call(infer_request("silent"));
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(res);
  EXPECT_EQ(to_status(res.error()), status::deadline_exceeded);
  EXPECT_EQ(res.error().code(), static_cast<uint8_t>(errc::deadline_exceeded));
  EXPECT_NE(reason_of(res.error()).find("after 3 attempts"), std::string::npos)
      << reason_of(res.error());
  EXPECT_NE(reason_of(res.error()).find(srv.endpoint()), std::string::npos);
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 2s);
  // All three attempts reached the server with one id.
  auto deadline = std::chrono::steady_clock::now() + 1s;
  while (srv.seen().size() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  auto seen = srv.seen();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0], seen[1]);
  EXPECT_EQ(seen[1], seen[2]);
  EXPECT_EQ(c->in_flight(), 0u);
}

TEST(client, duplicate_late_reply_is_counted_and_dropped) {
  fake_server srv{
      [](fake_server& s, const std::string& peer, const request& req) {
        s.send(peer, s.ok_reply(req));
        s.send(peer, s.ok_reply(req));
      }};
  auto c = make_client(srv.endpoint());
  ASSERT_TRUE(c);
  int calls = 0;
  c->submit(infer_request("dup"), [&](caf::expected<reply> res) {
    EXPECT_TRUE(res);
    ++calls;
  });
  ASSERT_TRUE(poll_until(*c, [&] { return c->unmatched_replies() == 1; }));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(c->in_flight(), 0u);
}

TEST(client, malformed_and_nil_id_replies_are_dropped) {
  fake_server srv{
      [](fake_server& s, const std::string& peer, const request& req) {
        s.send_raw(peer, std::string{"\xc1\xff garbage", 10});
        s.send_raw(peer, std::string{});
        reply anon; // nil id: cannot be matched
        anon.code = status::invalid_argument;
        anon.error = "could not decode";
        s.send(peer, anon);
        s.send(peer, s.ok_reply(req));
      }};
  auto c = make_client(srv.endpoint());
  ASSERT_TRUE(c);
  auto res = c->call(infer_request("noisy"));
  ASSERT_TRUE(res) << reason_of(res.error());
  EXPECT_EQ(res->code, status::ok);
  EXPECT_EQ(c->unmatched_replies(), 3u);
}

TEST(client, duplicate_id_in_flight_is_rejected) {
  fake_server srv{[](fake_server&, const std::string&, const request&) {}};
  auto c = make_client(srv.endpoint(), 200ms, 0);
  ASSERT_TRUE(c);
  auto req = infer_request("m");
  req.id = request_id::of(uint64_t{42});
  std::vector<status> ends;
  auto record = [&](caf::expected<reply> res) {
    ends.push_back(res ? res->code : to_status(res.error()));
  };
  c->submit(req, record);
  c->submit(req, record);
  EXPECT_EQ(c->in_flight(), 2u);
  ASSERT_TRUE(poll_until(*c, [&] { return c->in_flight() == 0; }));
  ASSERT_EQ(ends.size(), 2u);
  EXPECT_EQ(ends[0], status::invalid_argument);
  EXPECT_EQ(ends[1], status::deadline_exceeded);
}

TEST(client, many_requests_in_flight_all_complete) {
  fake_server srv{[](fake_server& s, const std::string& peer,
                     const request& req) { s.send(peer, s.ok_reply(req)); }};
  auto c = make_client(srv.endpoint());
  ASSERT_TRUE(c);
  constexpr size_t n = 200;
  std::vector<int> got(n, 0);
  std::vector<request_id> ids(n);
  for (size_t i = 0; i < n; ++i) {
    std::string model{"m"};
    model += std::to_string(i);
    ids[i] = c->submit(infer_request(model),
                       [&, i, model](caf::expected<reply> res) {
                         ASSERT_TRUE(res) << reason_of(res.error());
                         EXPECT_EQ(res->id, ids[i]);
                         EXPECT_EQ(res->model, model);
                         ++got[i];
                       });
  }
  EXPECT_EQ(c->in_flight(), n);
  ASSERT_TRUE(poll_until(*c, [&] { return c->in_flight() == 0; }));
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(got[i], 1) << "request " << i;
  }
  EXPECT_EQ(srv.seen().size(), n);
  EXPECT_EQ(c->unmatched_replies(), 0u);
}

TEST(client, handler_may_submit_again) {
  fake_server srv{[](fake_server& s, const std::string& peer,
                     const request& req) { s.send(peer, s.ok_reply(req)); }};
  auto c = make_client(srv.endpoint());
  ASSERT_TRUE(c);
  // A closed loop like the bench's: each reply triggers the next request.
  int left = 50;
  std::function<void(caf::expected<reply>)> next;
  next = [&](caf::expected<reply> res) {
    ASSERT_TRUE(res);
    if (--left > 0) {
      c->submit(infer_request("loop"), next);
    }
  };
  c->submit(infer_request("loop"), next);
  ASSERT_TRUE(poll_until(*c, [&] { return c->in_flight() == 0; }));
  EXPECT_EQ(left, 0);
}
