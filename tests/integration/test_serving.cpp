// The serving path end to end: a real shoald process driven over ZeroMQ.
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "net/client/client.hpp"
#include "net/wire/codec.hpp"
#include "tests/support/node_process.hpp"

using namespace shoal;
using namespace std::chrono_literals;
using shoal::test::node_process;
using shoal::test::sample;

namespace {

tensor f32_input(const std::string& name, size_t width, float seed) {
  tensor t;
  t.name = name;
  t.type = dtype::f32;
  t.shape = {1, width};
  t.data.resize(width * 4);
  for (size_t i = 0; i < width; ++i) {
    float v = seed + static_cast<float>(i);
    std::memcpy(t.data.data() + i * 4, &v, 4);
  }
  return t;
}

float f32_at(const tensor& t, size_t i) {
  float v;
  std::memcpy(&v, t.data.data() + i * 4, 4);
  return v;
}

request infer(const std::string& model, tensor input, uint8_t priority = 5) {
  request r;
  r.op = op_kind::infer;
  r.model = model;
  r.inputs.push_back(std::move(input));
  r.priority = priority;
  return r;
}

std::unique_ptr<client> connect(const node_process& n,
                                std::chrono::milliseconds timeout = 10s) {
  client_options o;
  o.endpoint = n.endpoint();
  o.timeout = timeout;
  o.retries = 0;
  auto c = client::connect(o);
  EXPECT_TRUE(c) << reason_of(c.error());
  return std::move(*c);
}

// Submits every request, then polls until all have ended (bounded).
std::vector<caf::expected<reply>> run_all(client& c, std::vector<request> reqs,
                                          std::vector<size_t>* order = nullptr,
                                          std::chrono::seconds limit = 30s) {
  std::vector<caf::expected<reply>> out(reqs.size(),
                                        caf::expected<reply>{reply{}});
  std::vector<bool> done(reqs.size(), false);
  size_t remaining = reqs.size();
  for (size_t i = 0; i < reqs.size(); ++i) {
    c.submit(std::move(reqs[i]), [&, i](caf::expected<reply> r) {
      EXPECT_FALSE(done[i]) << "request " << i << " ended twice";
      done[i] = true;
      out[i] = std::move(r);
      if (order) {
        order->push_back(i);
      }
      --remaining;
    });
  }
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (remaining > 0 && std::chrono::steady_clock::now() < deadline) {
    c.poll(50ms);
  }
  EXPECT_EQ(remaining, 0u) << "requests left without a reply";
  return out;
}

// Reads the replies to frames sent on a raw socket until `n` came or
// `limit` passed; every one must decode.
void read_replies(zmq::socket_t& s, size_t n, std::chrono::seconds limit,
                  std::vector<reply>& out) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
    zmq::pollitem_t items[] = {{static_cast<void*>(s), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, 200ms);
    zmq::message_t msg;
    while (s.recv(msg, zmq::recv_flags::dontwait)) {
      reply r;
      ASSERT_FALSE(decode_reply(static_cast<const uint8_t*>(msg.data()),
                                msg.size(), codec_limits{}, r));
      out.push_back(std::move(r));
    }
  }
}

class serving : public ::testing::Test {
protected:
  void start(std::vector<std::string> args = {}) {
    node_ = std::make_unique<node_process>(std::move(args));
    ASSERT_TRUE(node_->wait_ready()) << node_->log();
  }
  void TearDown() override {
    if (node_ && HasFailure()) {
      std::cerr << "---- node log ----\n" << node_->log();
    }
  }
  std::unique_ptr<node_process> node_;
};

} // namespace

TEST_F(serving, repeated_request_is_served_from_cache) {
  start();
  auto c = connect(*node_);
  auto first = c->call(infer("echo", f32_input("x", 256, 1.0f)));
  ASSERT_TRUE(first) << reason_of(first.error());
  ASSERT_EQ(first->code, status::ok) << first->error;
  EXPECT_EQ(first->source, reply_source::executor);
  EXPECT_EQ(first->model, "echo");
  EXPECT_EQ(first->version, 2u); // the newest version serves by default
  ASSERT_EQ(first->outputs.size(), 1u);
  EXPECT_EQ(first->outputs[0].name, "y");
  EXPECT_FLOAT_EQ(f32_at(first->outputs[0], 10), 3.0f * 11.0f + 1.0f);
  auto second = c->call(infer("echo", f32_input("x", 256, 1.0f)));
  ASSERT_TRUE(second);
  ASSERT_EQ(second->code, status::ok);
  EXPECT_EQ(second->source, reply_source::cache);
  EXPECT_EQ(second->outputs, first->outputs);
  EXPECT_EQ(second->node, "test-node");
  // A different input is new work.
  auto other = c->call(infer("echo", f32_input("x", 256, 2.0f)));
  ASSERT_TRUE(other);
  EXPECT_EQ(other->source, reply_source::executor);
  // Version 1 computes something else, and never hits version 2's entry.
  auto v1 = infer("echo", f32_input("x", 256, 1.0f));
  v1.version = 1;
  auto r1 = c->call(v1);
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->source, reply_source::executor);
  EXPECT_EQ(r1->version, 1u);
  EXPECT_FLOAT_EQ(f32_at(r1->outputs[0], 10), 2.0f * 11.0f + 1.0f);
  // bypass neither reads nor writes the cache.
  auto bypass = infer("echo", f32_input("x", 256, 1.0f));
  bypass.cache = cache_mode::bypass;
  auto rb = c->call(bypass);
  ASSERT_TRUE(rb);
  EXPECT_EQ(rb->source, reply_source::executor);
  auto m = node_->metrics();
  EXPECT_GE(sample(m, "shoal_cache_hits_total").value_or(0), 1);
  EXPECT_EQ(sample(m, "shoal_requests_total{model=\"echo\",status=\"OK\","
                      "source=\"cache\"}"),
            1.0);
}

TEST_F(serving, identical_concurrent_cold_requests_execute_once) {
  start();
  auto c = connect(*node_);
  std::vector<request> reqs;
  for (int i = 0; i < 50; ++i) {
    reqs.push_back(infer("slow", f32_input("x", 16, 7.0f)));
  }
  auto replies = run_all(*c, std::move(reqs));
  std::map<reply_source, int> by_source;
  for (auto& r : replies) {
    ASSERT_TRUE(r) << reason_of(r.error());
    ASSERT_EQ(r->code, status::ok) << r->error;
    ++by_source[r->source];
    EXPECT_EQ(r->outputs, replies[0]->outputs);
  }
  EXPECT_EQ(by_source[reply_source::executor], 1);
  EXPECT_EQ(by_source[reply_source::coalesced], 49);
  // One batch of one request ran on the executor.
  auto m = node_->metrics();
  EXPECT_EQ(sample(m, "shoal_batch_size_count{model=\"slow\"}"), 1.0);
  EXPECT_EQ(sample(m, "shoal_batch_size_sum{model=\"slow\"}"), 1.0);
}

TEST_F(serving, unknown_model_and_bad_inputs_get_clear_errors) {
  start();
  auto c = connect(*node_);
  auto r = c->call(infer("no-such-model", f32_input("x", 4, 0)));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, status::not_found);
  EXPECT_NE(r->error.find("no-such-model"), std::string::npos);
  auto missing_version = infer("echo", f32_input("x", 256, 0));
  missing_version.version = 9;
  r = c->call(missing_version);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, status::not_found);
  r = c->call(infer("echo", f32_input("x", 17, 0)));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, status::invalid_argument);
  EXPECT_NE(r->error.find("dimension 1 is 17, expected 256"), std::string::npos)
      << r->error;
  r = c->call(infer("echo", f32_input("wrong_name", 256, 0)));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, status::invalid_argument);
  EXPECT_NE(r->error.find("missing input 'x'"), std::string::npos);
}

TEST_F(serving, garbage_frames_each_get_invalid_argument) {
  start();
  zmq::context_t ctx;
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  s.set(zmq::sockopt::linger, 0);
  s.connect(node_->endpoint());
  std::mt19937 rng{42};
  std::string valid;
  encode_request(infer("echo", f32_input("x", 256, 3.0f)), valid);
  const int n = 1000;
  for (int i = 0; i < n; ++i) {
    std::string frame;
    switch (i % 5) {
    case 0: // random bytes
      frame.resize(1 + rng() % 200);
      for (auto& ch : frame) {
        ch = static_cast<char>(rng());
      }
      break;
    case 1: // a truncated valid request
      frame = valid.substr(0, 1 + rng() % (valid.size() - 1));
      break;
    case 2: // a 5-byte array32 header claiming 4 billion items
      frame = std::string{"\xdd\xff\xff\xff\xff", 5};
      break;
    case 3: // a nesting bomb
      frame = std::string(5000, '\x91');
      break;
    case 4: // a valid request with one flipped byte in its keys
      frame = valid;
      frame[1 + rng() % 20] ^= 0x40;
      break;
    }
    s.send(zmq::buffer(frame), zmq::send_flags::none);
  }
  std::vector<reply> got;
  ASSERT_NO_FATAL_FAILURE(read_replies(s, n, 30s, got));
  int invalid = 0, other = 0;
  for (auto& r : got) {
    if (r.code == status::invalid_argument) {
      ++invalid;
      EXPECT_FALSE(r.error.empty());
    } else {
      ++other; // a flipped byte may still leave a valid request
    }
  }
  EXPECT_EQ(invalid + other, n) << "every frame must get a reply";
  EXPECT_GE(invalid, n * 4 / 5);
  // And the node keeps serving.
  auto c = connect(*node_);
  auto r = c->call(infer("echo", f32_input("x", 256, 5.0f)));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, status::ok);
  EXPECT_EQ(node_->wait_exit(0ms), std::nullopt);
}

TEST_F(serving, oversize_frame_is_answered_and_the_connection_kept) {
  start({"--set", "gateway.max_frame_bytes=4096"});
  zmq::context_t ctx;
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  s.set(zmq::sockopt::linger, 0);
  s.connect(node_->endpoint());
  // A request still in flight when the oversize frame arrives: if the
  // connection were dropped, its reply would be lost with it.
  auto slow = infer("slow", f32_input("x", 16, 1.0f));
  slow.id = request_id::of(std::string{"slow-1"});
  auto big = infer("echo", f32_input("x", 1500, 2.0f));
  big.id = request_id::of(std::string{"big-1"});
  std::string slow_frame, big_frame;
  encode_request(slow, slow_frame);
  encode_request(big, big_frame);
  ASSERT_GT(big_frame.size(), 4096u);
  s.send(zmq::buffer(slow_frame), zmq::send_flags::none);
  s.send(zmq::buffer(big_frame), zmq::send_flags::none);
  std::vector<reply> got;
  ASSERT_NO_FATAL_FAILURE(read_replies(s, 2, 15s, got));
  std::map<std::string, reply> replies;
  for (auto& r : got) {
    replies[r.id.str] = std::move(r);
  }
  ASSERT_EQ(replies.size(), 2u) << "both frames must get a reply";
  EXPECT_EQ(replies["slow-1"].code, status::ok) << replies["slow-1"].error;
  EXPECT_EQ(replies["big-1"].code, status::invalid_argument);
  EXPECT_NE(replies["big-1"].error.find("exceeds limit 4096"),
            std::string::npos)
      << replies["big-1"].error;
  auto m = node_->metrics();
  EXPECT_EQ(sample(m, "shoal_op_requests_total{op=\"invalid\","
                      "status=\"INVALID_ARGUMENT\"}"),
            1.0);
}

TEST_F(serving, req_socket_delimiter_is_mirrored) {
  start();
  zmq::context_t ctx;
  zmq::socket_t s{ctx, zmq::socket_type::req};
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 5000);
  s.connect(node_->endpoint());
  request ping;
  ping.op = op_kind::ping;
  ping.id = request_id::of(std::string{"req-1"});
  std::string frame;
  encode_request(ping, frame);
  s.send(zmq::buffer(frame), zmq::send_flags::none);
  zmq::message_t msg;
  ASSERT_TRUE(s.recv(msg));
  reply r;
  ASSERT_FALSE(decode_reply(static_cast<const uint8_t*>(msg.data()), msg.size(),
                            codec_limits{}, r));
  EXPECT_EQ(r.code, status::ok);
  EXPECT_EQ(r.id, request_id::of(std::string{"req-1"}));
}

TEST_F(serving, priority_zero_overtakes_queued_priority_nine) {
  // One request at a time on the replica, so the rest wait in the router's
  // priority queue.
  start({"--set", "router.inflight_per_replica=1"});
  auto c = connect(*node_);
  std::vector<request> reqs;
  for (int i = 0; i < 12; ++i) {
    reqs.push_back(infer("slow", f32_input("x", 16, 100.0f + i), 9));
  }
  reqs.push_back(infer("slow", f32_input("x", 16, 1.0f), 0));
  std::vector<size_t> order;
  auto replies = run_all(*c, std::move(reqs), &order);
  for (auto& r : replies) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->code, status::ok) << r->error;
  }
  auto pos = std::find(order.begin(), order.end(), 12u) - order.begin();
  // At most the one running and the one handed over before it arrived.
  EXPECT_LE(pos, 2) << "priority 0 finished at position " << pos;
}

TEST_F(serving, expired_deadline_gets_deadline_exceeded) {
  start({"--set", "router.inflight_per_replica=1"});
  auto c = connect(*node_);
  std::vector<request> reqs;
  for (int i = 0; i < 6; ++i) {
    auto r = infer("slow", f32_input("x", 16, 200.0f + i));
    r.timeout_ms = 30;
    reqs.push_back(std::move(r));
  }
  auto t0 = std::chrono::steady_clock::now();
  auto replies = run_all(*c, std::move(reqs));
  auto elapsed = std::chrono::steady_clock::now() - t0;
  int expired = 0;
  for (auto& r : replies) {
    ASSERT_TRUE(r);
    if (r->code == status::deadline_exceeded) {
      ++expired;
      EXPECT_NE(r->error.find("deadline"), std::string::npos);
    } else {
      EXPECT_EQ(r->code, status::ok);
    }
  }
  // Each batch costs 21 ms: at most the first can finish within 30 ms.
  EXPECT_GE(expired, 5);
  // Expired requests are answered at their deadline, not after the queue.
  EXPECT_LT(elapsed, 2s);
  auto ok = c->call(infer("slow", f32_input("x", 16, 999.0f)));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->code, status::ok);
}

TEST_F(serving, full_queue_answers_resource_exhausted) {
  start({"--set", "router.inflight_per_replica=1", "--set",
         "router.queue_capacity=4"});
  auto c = connect(*node_);
  std::vector<request> reqs;
  for (int i = 0; i < 20; ++i) {
    reqs.push_back(infer("slow", f32_input("x", 16, 300.0f + i)));
  }
  auto replies = run_all(*c, std::move(reqs));
  int ok = 0, exhausted = 0;
  for (auto& r : replies) {
    ASSERT_TRUE(r);
    if (r->code == status::ok) {
      ++ok;
    } else if (r->code == status::resource_exhausted) {
      ++exhausted;
    }
  }
  EXPECT_EQ(ok + exhausted, 20);
  // The first request waits for the lazy spawn too, so the queue's four
  // places (plus at most the one running) are what gets served.
  EXPECT_GE(ok, 4);
  EXPECT_LE(ok, 5);
  EXPECT_EQ(exhausted, 20 - ok);
  auto m = node_->metrics();
  EXPECT_EQ(sample(m, "shoal_requests_total{model=\"slow\",status="
                      "\"RESOURCE_EXHAUSTED\",source=\"none\"}"),
            static_cast<double>(exhausted));
}

TEST_F(serving, executor_crash_mid_batch_is_respawned_and_nothing_is_lost) {
  start({"--set", "supervisor.max_restarts=20", "--set",
         "supervisor.backoff_initial_ms=10"});
  auto c = connect(*node_);
  std::vector<request> reqs;
  for (int i = 0; i < 24; ++i) {
    reqs.push_back(infer("flaky", [&] {
      auto t = f32_input("x", 4, 10.0f * i);
      return t;
    }()));
  }
  auto replies = run_all(*c, std::move(reqs));
  for (int i = 0; i < 24; ++i) {
    auto& r = replies[i];
    ASSERT_TRUE(r) << reason_of(r.error());
    ASSERT_EQ(r->code, status::ok) << "request " << i << ": " << r->error;
    EXPECT_FLOAT_EQ(f32_at(r->outputs[0], 0), 2.0f * (10.0f * i) + 1.0f);
  }
  auto m = node_->metrics();
  EXPECT_GE(
      sample(m, "shoal_executor_spawns_total{reason=\"restart\"}").value_or(0),
      1);
  EXPECT_GE(sample(m, "shoal_requests_redispatched_total").value_or(0), 1);
  EXPECT_EQ(c->unmatched_replies(), 0u);
}

TEST_F(serving, restart_limit_escalates_by_exiting_nonzero) {
  start({"--set", "supervisor.max_restarts=1", "--set",
         "supervisor.period_ms=60000", "--set",
         "supervisor.backoff_initial_ms=10"});
  auto c = connect(*node_, 2s);
  for (int i = 0; i < 40; ++i) {
    c->submit(infer("flaky", f32_input("x", 4, 1000.0f + i)),
              [](caf::expected<reply>) {});
  }
  auto deadline = std::chrono::steady_clock::now() + 20s;
  std::optional<int> code;
  while (!code && std::chrono::steady_clock::now() < deadline) {
    c->poll(50ms);
    code = node_->wait_exit(0ms);
  }
  ASSERT_TRUE(code) << "node did not escalate";
  EXPECT_EQ(*code, 70);
  EXPECT_NE(node_->log().find("restart limit"), std::string::npos);
}

TEST_F(serving, idle_replica_retires_and_comes_back_lazily) {
  start({"--set", "executor.idle_ttl_ms=200"});
  auto c = connect(*node_);
  auto r = c->call(infer("echo", f32_input("x", 256, 42.0f)));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->code, status::ok);
  auto series = "shoal_executors{model=\"echo\",node=\"test-node\"}";
  EXPECT_EQ(sample(node_->metrics(), series), 1.0);
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (sample(node_->metrics(), series) != 0.0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(sample(node_->metrics(), series), 0.0);
  // A new cold request spawns it again.
  r = c->call(infer("echo", f32_input("x", 256, 43.0f)));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, status::ok);
  EXPECT_EQ(r->source, reply_source::executor);
  EXPECT_GE(
      sample(node_->metrics(), "shoal_executor_spawns_total{reason=\"lazy\"}")
          .value_or(0),
      2);
}

TEST_F(serving, models_and_status_ops_describe_the_node) {
  start();
  auto c = connect(*node_);
  request m;
  m.op = op_kind::models;
  auto r = c->call(m);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->code, status::ok);
  std::set<std::string> names;
  for (auto& mi : r->models) {
    names.insert(mi.name);
    if (mi.name == "echo") {
      EXPECT_EQ(mi.versions, (std::vector<uint64_t>{1, 2}));
      EXPECT_EQ(mi.state, "available");
      ASSERT_EQ(mi.inputs.size(), 1u);
      EXPECT_EQ(mi.inputs[0].shape, (std::vector<int64_t>{-1, 256}));
    }
  }
  EXPECT_TRUE(names.count("echo") && names.count("slow"));
  request load;
  load.op = op_kind::load;
  load.model = "slow";
  r = c->call(load);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, status::ok) << r->error;
  request st;
  st.op = op_kind::status;
  r = c->call(st);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->nodes.size(), 1u);
  EXPECT_EQ(r->nodes[0].name, "test-node");
  EXPECT_EQ(r->nodes[0].role, "all");
  EXPECT_EQ(r->nodes[0].state, "up");
  ASSERT_EQ(r->nodes[0].replicas.size(), 1u);
  EXPECT_EQ(r->nodes[0].replicas[0],
            (std::pair<std::string, uint64_t>{"slow", 1}));
}

TEST_F(serving, sigterm_under_load_answers_everything_and_exits_zero) {
  start();
  auto c = connect(*node_);
  size_t ok = 0, unavailable = 0, ended = 0;
  const size_t n = 40;
  for (size_t i = 0; i < n; ++i) {
    c->submit(infer("slow", f32_input("x", 16, 500.0f + i)),
              [&](caf::expected<reply> r) {
                ++ended;
                if (r && r->code == status::ok) {
                  ++ok;
                } else if (r && r->code == status::unavailable) {
                  ++unavailable;
                }
              });
  }
  c->poll(30ms);
  ::kill(node_->pid(), SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (ended < n && std::chrono::steady_clock::now() < deadline) {
    c->poll(50ms);
  }
  EXPECT_EQ(ended, n);
  // Everything accepted before the signal is served.
  EXPECT_EQ(ok + unavailable, n);
  EXPECT_GE(ok, n / 2);
  EXPECT_EQ(node_->wait_exit(10s), 0);
}

// The grace period ends (here: short, with a queue of slow requests)
// before everything is served: what is still open is answered CANCELLED
// and a `wait` on a job UNAVAILABLE, rather than left without a reply.
TEST_F(serving, requests_open_when_the_grace_ends_are_answered) {
  start({"--set", "runtime.drain_grace_ms=100"});
  auto c = connect(*node_);
  std::map<status, size_t> codes;
  size_t ended = 0;
  const size_t n = 120; // about 15 batches of 28 ms: well past the grace
  for (size_t i = 0; i < n; ++i) {
    c->submit(infer("slow", f32_input("x", 16, 900.0f + i)),
              [&](caf::expected<reply> r) {
                ++ended;
                ++codes[r ? r->code : status::internal];
              });
  }
  request submit = infer("slow", f32_input("x", 16, 7.0f));
  submit.op = op_kind::submit;
  submit.job = "held";
  auto sub = c->call(submit);
  ASSERT_TRUE(sub);
  ASSERT_EQ(sub->code, status::ok) << sub->error;
  request wait;
  wait.op = op_kind::wait;
  wait.job = "held";
  wait.timeout_ms = 60000;
  std::optional<reply> waited;
  c->submit(wait, [&](caf::expected<reply> r) { waited = r ? *r : reply{}; });
  c->poll(30ms);
  ::kill(node_->pid(), SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((ended < n || !waited) &&
         std::chrono::steady_clock::now() < deadline) {
    c->poll(50ms);
  }
  EXPECT_EQ(ended, n) << "every request gets its one reply";
  EXPECT_GT(codes[status::cancelled], 0u) << "the grace was too long";
  EXPECT_EQ(codes[status::ok] + codes[status::cancelled], n);
  ASSERT_TRUE(waited) << "the wait on a job got no reply";
  EXPECT_EQ(waited->code, status::unavailable) << waited->error;
  EXPECT_EQ(node_->wait_exit(10s), 0);
}

TEST_F(serving, drain_op_stops_only_the_named_node_and_exits_zero) {
  start();
  auto c = connect(*node_);
  request wrong;
  wrong.op = op_kind::drain;
  wrong.node = "some-other-node";
  auto r = c->call(wrong);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, status::not_found);
  EXPECT_NE(r->error.find("some-other-node"), std::string::npos);
  EXPECT_EQ(node_->wait_exit(200ms), std::nullopt) << "wrong name drained";
  request drain;
  drain.op = op_kind::drain;
  drain.node = "test-node";
  r = c->call(drain);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, status::ok);
  EXPECT_EQ(node_->wait_exit(10s), 0);
}

TEST_F(serving, pinned_model_is_loaded_at_start) {
  char tmpl[] = "/tmp/shoal-pinned-XXXXXX";
  std::string root = ::mkdtemp(tmpl);
  std::string dir = root + "/warm/1";
  ASSERT_EQ(std::system(("mkdir -p " + dir).c_str()), 0);
  {
    std::ofstream m{dir + "/model.toml"};
    m << "backend = \"synthetic\"\npinned = true\n"
         "[[inputs]]\nname = \"x\"\ndtype = \"f32\"\nshape = [-1, 4]\n"
         "[[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [-1, 4]\n";
  }
  start({"--set", "models.root=" + root, "--set", "executor.idle_ttl_ms=50"});
  auto c = connect(*node_);
  request models;
  models.op = op_kind::models;
  std::string state;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (state != "loaded" && std::chrono::steady_clock::now() < deadline) {
    auto r = c->call(models);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->models.size(), 1u);
    state = r->models[0].state;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(state, "loaded") << "no request was sent, yet it must be loaded";
  // Pinned: never retired, however short the idle TTL.
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(sample(node_->metrics(),
                   "shoal_executors{model=\"warm\",node=\"test-node\"}"),
            1.0);
  EXPECT_EQ(
      sample(node_->metrics(), "shoal_executor_spawns_total{reason=\"load\"}"),
      1.0);
  node_->stop();
  std::system(("rm -rf " + root).c_str());
}
