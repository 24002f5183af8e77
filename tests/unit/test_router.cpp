// The router with scripted executors: coalescing of identical misses,
// priority order, deadlines, re-dispatch after an executor dies, and
// exactly one reply per request.
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include "actors/serving/router.hpp"
#include "net/wire/codec.hpp"
#include "net/wire/error.hpp"
#include "runtime/metrics/node_metrics.hpp"

using namespace shoal;
using namespace std::chrono_literals;

namespace {

using release_atom = caf::atom_constant<caf::atom("release")>;
using seen_atom = caf::atom_constant<caf::atom("seen")>;
using born_atom = caf::atom_constant<caf::atom("born")>;

// Holds every item until released, then answers each with its inputs.
struct fake_exec_state {
  std::vector<exec_item> held;
  std::set<uint64_t> cancelled;
  replica_listener_handle listener;
};

caf::behavior fake_executor(caf::stateful_actor<fake_exec_state>* self,
                            std::string model, uint64_t version,
                            replica_listener_handle listener,
                            caf::actor observer) {
  self->state.listener = listener;
  self->send(listener, ready_atom::value, model, version,
             caf::actor_cast<replica_handle>(self), std::string{"cpu"});
  return {
      [=](exec_atom, exec_item& item) {
        self->send(observer, seen_atom::value, item.ticket,
                   caf::actor_cast<caf::actor>(self));
        self->state.held.push_back(std::move(item));
      },
      // As an executor does, a cancelled item ends CANCELLED.
      [=](cancel_atom, uint64_t ticket) {
        self->state.cancelled.insert(ticket);
      },
      [=](release_atom) {
        std::vector<exec_result> out;
        for (auto& item : self->state.held) {
          exec_result r;
          r.ticket = item.ticket;
          if (self->state.cancelled.count(item.ticket) > 0) {
            r.code = static_cast<uint8_t>(status::cancelled);
            r.error = "cancelled after step 1 of 20";
            out.push_back(std::move(r));
            continue;
          }
          r.code = static_cast<uint8_t>(status::ok);
          encode_tensors(item.inputs, r.outputs_encoded);
          r.batch_size = 1;
          out.push_back(std::move(r));
        }
        self->state.held.clear();
        self->send(self->state.listener, done_atom::value, std::move(out));
      },
  };
}

// The router's replica source: a fake executor per spawn request, and the
// observer hears of it.
replica_source_handle::behavior_type
fake_supervisor(replica_source_handle::pointer self, caf::actor observer) {
  return {
      [=](spawn_atom, const std::string& model, uint64_t version,
          const std::string&) {
        auto listener =
            caf::actor_cast<replica_listener_handle>(self->current_sender());
        auto e = self->spawn(fake_executor, model, version, listener, observer);
        caf::anon_send(observer, born_atom::value, e);
      },
      [=](idle_atom, const std::string&, uint64_t) {},
      [=](retire_atom, const replica_handle&) {},
  };
}

struct router_test : ::testing::Test {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<caf::scoped_actor> obs;
  metrics::registry reg;
  std::shared_ptr<node_metrics> metrics;
  std::shared_ptr<result_cache> cache;
  std::shared_ptr<reply_sink> sink;
  router_handle router;
  live_catalog_ptr live;
  model_spec_ptr spec;
  std::vector<reply> replies;

  void SetUp() override {
    cfg.set("scheduler.max-threads", size_t{2});
    cfg.set("logger.verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
    obs = std::make_unique<caf::scoped_actor>(*sys);
    metrics = std::make_shared<node_metrics>(reg, "n1");
    cache = std::make_shared<result_cache>(result_cache::config{});
    sink = std::make_shared<reply_sink>();
    auto s = std::make_shared<model_spec>();
    s->name = "m";
    s->version = 1;
    s->backend = "synthetic";
    s->inputs = {{"x", dtype::f32, {-1, 1}}};
    s->outputs = {{"y", dtype::f32, {-1, 1}}};
    s->max_batch = 1;
    spec = s;
  }

  void start(router_config rc) {
    auto cat = std::make_shared<model_catalog>();
    cat->models["m"][1] = spec;
    auto sup = sys->spawn(fake_supervisor, caf::actor{*obs});
    live = std::make_shared<live_catalog>(model_catalog_ptr{cat});
    router = sys->spawn(router_actor, rc, live, cache, sink, metrics, sup,
                        cluster_status_handle{});
  }

  void TearDown() override {
    if (router) {
      caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
    }
  }

  infer_job job(uint64_t id, float value, uint8_t priority = 5,
                int64_t deadline_ns = 0) {
    infer_job j;
    j.id = request_id::of(id);
    j.model = "m";
    j.version = 1;
    tensor t{"x", dtype::f32, {1, 1}, std::vector<uint8_t>(4)};
    std::memcpy(t.data.data(), &value, 4);
    j.inputs.push_back(t);
    j.priority = priority;
    j.recv_ns = now_ns();
    j.deadline_ns = deadline_ns;
    j.cacheable = true;
    j.key = make_cache_key("m", 1, j.inputs);
    return j;
  }

  caf::actor next_born() {
    caf::actor e;
    (*obs)->receive([&](born_atom, caf::actor a) { e = a; },
                    caf::after(2s) >> [] {});
    return e;
  }

  // The tickets handed to executors, in order, within `limit`.
  std::vector<uint64_t> seen(size_t n, std::chrono::milliseconds limit = 2s) {
    std::vector<uint64_t> out;
    auto deadline = clock_type::now() + limit;
    while (out.size() < n && clock_type::now() < deadline) {
      (*obs)->receive([&](seen_atom, uint64_t ticket,
                          caf::actor) { out.push_back(ticket); },
                      [&](born_atom, caf::actor) {}, caf::after(50ms) >> [] {});
    }
    return out;
  }

  double sample_redispatched() {
    auto text = reg.render();
    std::string series = "\nshoal_requests_redispatched_total ";
    auto pos = text.find(series);
    if (pos == std::string::npos) {
      return -1;
    }
    return std::strtod(text.c_str() + pos + series.size(), nullptr);
  }

  // Collects `n` replies from the sink (bounded wait).
  void collect(size_t n, std::chrono::milliseconds limit = 3s) {
    auto deadline = clock_type::now() + limit;
    std::vector<reply_sink::outgoing> out;
    while (replies.size() < n && clock_type::now() < deadline) {
      sink->drain(out);
      for (auto& o : out) {
        reply r;
        auto err = decode_reply(reinterpret_cast<const uint8_t*>(o.body.data()),
                                o.body.size(), codec_limits{}, r);
        EXPECT_FALSE(err) << reason_of(err);
        replies.push_back(std::move(r));
      }
      out.clear();
      std::this_thread::sleep_for(5ms);
    }
  }
};

} // namespace

TEST_F(router_test, identical_misses_coalesce_into_one_execution) {
  start({});
  for (uint64_t i = 0; i < 10; ++i) {
    caf::anon_send(router, job(i, 3.0f));
  }
  auto exec = next_born();
  ASSERT_TRUE(exec);
  EXPECT_EQ(seen(2, 300ms).size(), 1u) << "one execution for ten requests";
  caf::anon_send(exec, release_atom::value);
  collect(10);
  ASSERT_EQ(replies.size(), 10u);
  std::map<reply_source, int> sources;
  std::set<uint64_t> ids;
  for (auto& r : replies) {
    EXPECT_EQ(r.code, status::ok);
    ++sources[r.source];
    ids.insert(r.id.num);
    ASSERT_EQ(r.outputs.size(), 1u);
  }
  EXPECT_EQ(sources[reply_source::executor], 1);
  EXPECT_EQ(sources[reply_source::coalesced], 9);
  EXPECT_EQ(ids.size(), 10u) << "each request gets its own reply";
  // The result went into the cache for the next identical request.
  EXPECT_TRUE(cache->get(job(99, 3.0f).key));
  collect(11, 200ms);
  EXPECT_EQ(replies.size(), 10u) << "no request is answered twice";
}

// `shoalctl load m` before any request makes the model's entry; the
// requests that follow must find it ready for them (its per-tenant
// fairness tables sized), as when a request made it.
TEST_F(router_test, a_model_loaded_before_any_request_serves_requests) {
  start({});
  admin_job load;
  load.id = request_id::of(1);
  load.op = static_cast<uint8_t>(op_kind::load);
  load.model = "m";
  caf::anon_send(router, std::move(load));
  auto exec = next_born();
  ASSERT_TRUE(exec);
  collect(1);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].code, status::ok) << replies[0].error;
  // Two, the replica's share in flight: both go to it at once.
  caf::anon_send(router, job(2, 2.0f));
  caf::anon_send(router, job(3, 3.0f));
  EXPECT_EQ(seen(2).size(), 2u);
  caf::anon_send(exec, release_atom::value);
  collect(3);
  ASSERT_EQ(replies.size(), 3u);
  for (auto& r : replies) {
    EXPECT_EQ(r.code, status::ok) << r.error;
  }
}

// Workers run executions under the head's tickets and may finish one of a
// head that died after its successor started: the successor's tickets must
// never repeat the earlier ones, or it would take a stale result as its
// own.
TEST_F(router_test, a_restarted_router_numbers_its_tickets_above_the_old_ones) {
  start({});
  caf::anon_send(router, job(1, 1.0f));
  auto exec = next_born();
  ASSERT_TRUE(exec);
  auto first = seen(1);
  ASSERT_EQ(first.size(), 1u);
  caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(exec, caf::exit_reason::user_shutdown);
  start({});
  caf::anon_send(router, job(2, 2.0f));
  ASSERT_TRUE(next_born());
  auto second = seen(1);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_GT(second[0], first[0] + 1000)
      << "the second router's first ticket repeats or follows the first's";
}

// A client cancels a request while it runs, then sends the same inputs
// again: the new request runs on its own, rather than joining the
// execution being stopped and sharing its CANCELLED.
TEST_F(router_test, a_request_identical_to_a_cancelled_one_gets_its_result) {
  start({});
  auto first = job(1, 3.0f);
  first.route.identity = "client";
  caf::anon_send(router, first);
  auto exec = next_born();
  ASSERT_TRUE(exec);
  ASSERT_EQ(seen(1).size(), 1u);
  reply_route route;
  route.identity = "client";
  caf::anon_send(router, cancel_atom::value, route, request_id::of(1));
  auto again = job(2, 3.0f);
  again.route.identity = "client";
  caf::anon_send(router, again);
  EXPECT_EQ(seen(1).size(), 1u) << "the new request runs on its own";
  caf::anon_send(exec, release_atom::value);
  collect(2);
  ASSERT_EQ(replies.size(), 2u);
  std::map<uint64_t, reply> by_id;
  for (auto& r : replies) {
    by_id[r.id.num] = r;
  }
  EXPECT_EQ(by_id[1].code, status::cancelled);
  EXPECT_EQ(by_id[2].code, status::ok) << by_id[2].error;
  EXPECT_EQ(by_id[2].outputs.size(), 1u);
  collect(3, 200ms);
  EXPECT_EQ(replies.size(), 2u) << "no request is answered twice";
}

TEST_F(router_test, bypass_and_distinct_inputs_do_not_coalesce) {
  start({});
  auto a = job(1, 1.0f);
  auto b = job(2, 1.0f);
  b.cache = static_cast<uint8_t>(cache_mode::bypass);
  caf::anon_send(router, a);
  caf::anon_send(router, b);
  caf::anon_send(router, job(3, 2.0f));
  auto exec = next_born();
  ASSERT_TRUE(exec);
  EXPECT_EQ(seen(3).size(), 2u) << "max_batch 1 → window of 2 in flight";
  caf::anon_send(exec, release_atom::value);
  EXPECT_EQ(seen(1).size(), 1u);
  caf::anon_send(exec, release_atom::value);
  collect(3);
  for (auto& r : replies) {
    EXPECT_EQ(r.source, reply_source::executor);
  }
}

TEST_F(router_test, most_urgent_priority_is_dispatched_first) {
  router_config rc;
  rc.inflight_per_replica = 1;
  start(rc);
  caf::anon_send(router, job(1, 1.0f, 9));
  auto exec = next_born();
  ASSERT_TRUE(exec);
  auto first = seen(1);
  ASSERT_EQ(first.size(), 1u);
  caf::anon_send(router, job(2, 2.0f, 9));
  caf::anon_send(router, job(3, 3.0f, 9));
  caf::anon_send(router, job(4, 4.0f, 0));
  caf::anon_send(router, job(5, 5.0f, 4));
  std::this_thread::sleep_for(50ms); // all four are queued now
  std::vector<uint64_t> order;
  for (int i = 0; i < 4; ++i) {
    caf::anon_send(exec, release_atom::value);
    auto next = seen(1);
    ASSERT_EQ(next.size(), 1u);
    order.push_back(next[0] - first[0] + 1); // as request ids
  }
  caf::anon_send(exec, release_atom::value);
  collect(5);
  // Tickets follow arrival: 2,3 are priority 9, 4 is 0, 5 is 4.
  EXPECT_EQ(order, (std::vector<uint64_t>{4, 5, 2, 3}));
  ASSERT_EQ(replies.size(), 5u);
  EXPECT_EQ(replies[1].id.num, 4u);
  EXPECT_EQ(replies[2].id.num, 5u);
}

TEST_F(router_test, queued_request_past_its_deadline_is_answered) {
  router_config rc;
  rc.inflight_per_replica = 1;
  rc.tick = 2ms;
  start(rc);
  caf::anon_send(router, job(1, 1.0f));
  auto exec = next_born();
  ASSERT_TRUE(exec);
  ASSERT_EQ(seen(1).size(), 1u);
  caf::anon_send(router, job(2, 2.0f, 5, now_ns() + 20'000'000));
  collect(1, 1s);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].id.num, 2u);
  EXPECT_EQ(replies[0].code, status::deadline_exceeded);
  EXPECT_NE(replies[0].error.find("queued"), std::string::npos);
  caf::anon_send(exec, release_atom::value);
  collect(2);
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(replies[1].code, status::ok);
  // The expired request never reaches the executor.
  EXPECT_TRUE(seen(1, 200ms).empty());
}

TEST_F(router_test, requests_of_a_dead_executor_are_redispatched_once) {
  start({});
  caf::anon_send(router, job(1, 1.0f));
  caf::anon_send(router, job(2, 2.0f));
  auto first = next_born();
  ASSERT_TRUE(first);
  ASSERT_EQ(seen(2).size(), 2u);
  // A supervisor would restart it; the router asks for a replica again.
  (*obs)->send_exit(first, make_error(errc::internal, "device lost"));
  auto second = next_born();
  ASSERT_TRUE(second) << "no replacement replica requested";
  auto again = seen(2);
  EXPECT_EQ(again.size(), 2u) << "both requests re-run on the new replica";
  caf::anon_send(second, release_atom::value);
  collect(2);
  collect(3, 200ms);
  ASSERT_EQ(replies.size(), 2u);
  for (auto& r : replies) {
    EXPECT_EQ(r.code, status::ok);
  }
  EXPECT_EQ(sample_redispatched(), 2.0);
}

TEST_F(router_test, a_request_that_kills_every_executor_fails_after_limit) {
  router_config rc;
  rc.max_redispatch = 2;
  start(rc);
  caf::anon_send(router, job(1, 1.0f));
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto e = next_born();
    ASSERT_TRUE(e) << "attempt " << attempt;
    ASSERT_EQ(seen(1).size(), 1u);
    (*obs)->send_exit(e, make_error(errc::internal, "poison"));
  }
  collect(1);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].code, status::internal);
  EXPECT_NE(replies[0].error.find("failed 3 times"), std::string::npos)
      << replies[0].error;
}

TEST_F(router_test, a_retry_of_an_open_request_gets_one_reply) {
  start({});
  auto a = job(7, 1.0f);
  a.cache = static_cast<uint8_t>(cache_mode::bypass);
  a.route.identity = "client-a";
  caf::anon_send(router, a);
  auto exec = next_born();
  ASSERT_TRUE(exec);
  ASSERT_EQ(seen(1).size(), 1u);
  caf::anon_send(router, a); // the client timed out and resent, same id
  auto clash = job(7, 9.0f); // same client and id, other inputs: an error
  clash.route.identity = "client-a";
  caf::anon_send(router, clash);
  collect(1);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].code, status::invalid_argument);
  EXPECT_NE(replies[0].error.find("already in flight"), std::string::npos);
  replies.clear();
  auto other = a;
  other.route.identity = "client-b"; // same id from another client is new
  caf::anon_send(router, other);
  EXPECT_EQ(seen(2, 300ms).size(), 1u) << "only client-b's request is new";
  caf::anon_send(exec, release_atom::value);
  collect(2);
  collect(3, 200ms);
  ASSERT_EQ(replies.size(), 2u) << "one reply per client request id";
  // Once answered, the same id is a new request again.
  caf::anon_send(router, a);
  EXPECT_EQ(seen(1).size(), 1u);
}

namespace {

std::shared_ptr<tenant_table> two_tenants(uint64_t weight_a) {
  std::map<std::string, tenant_limits> cfg;
  cfg["a"].weight = weight_a;
  cfg["b"].weight = 1;
  return std::make_shared<tenant_table>(cfg);
}

} // namespace

TEST_F(router_test, tenants_take_turns_by_weight_within_a_priority) {
  router_config rc;
  rc.inflight_per_replica = 1;
  rc.tenants = two_tenants(2);
  auto a = rc.tenants->resolve("a");
  auto b = rc.tenants->resolve("b");
  start(rc);
  auto send = [&](uint64_t id, tenant_table::id who) {
    auto j = job(id, static_cast<float>(id));
    j.tenant = who.index;
    j.tenant_label = who.label;
    caf::anon_send(router, j);
  };
  send(1, a);
  auto exec = next_born();
  ASSERT_TRUE(exec);
  auto first = seen(1);
  ASSERT_EQ(first.size(), 1u);
  for (uint64_t id = 2; id <= 5; ++id) {
    send(id, a); // a flood, queued first
  }
  send(6, b);
  send(7, b);
  std::this_thread::sleep_for(50ms);
  std::vector<uint64_t> order;
  for (int i = 0; i < 6; ++i) {
    caf::anon_send(exec, release_atom::value);
    auto next = seen(1);
    ASSERT_EQ(next.size(), 1u);
    order.push_back(next[0] - first[0] + 1); // as request ids
  }
  caf::anon_send(exec, release_atom::value);
  collect(7);
  // b's first goes ahead of a's backlog; then two of a's per one of b's.
  EXPECT_EQ(order, (std::vector<uint64_t>{6, 2, 3, 7, 4, 5}));
  EXPECT_EQ(rc.tenants->requests(a.label, status::ok), 5u);
  EXPECT_EQ(rc.tenants->requests(b.label, status::ok), 2u);
}

TEST_F(router_test, a_full_queue_makes_room_for_the_tenant_holding_less) {
  router_config rc;
  rc.inflight_per_replica = 1;
  rc.queue_capacity = 3;
  rc.tenants = two_tenants(1);
  auto a = rc.tenants->resolve("a");
  auto b = rc.tenants->resolve("b");
  start(rc);
  auto send = [&](uint64_t id, tenant_table::id who) {
    auto j = job(id, static_cast<float>(id));
    j.tenant = who.index;
    j.tenant_label = who.label;
    caf::anon_send(router, j);
  };
  send(1, a);
  auto exec = next_born();
  ASSERT_TRUE(exec);
  ASSERT_EQ(seen(1).size(), 1u);
  for (uint64_t id = 2; id <= 5; ++id) {
    send(id, a); // 2..4 fill the queue, 5 is refused
  }
  send(6, b); // pushes a's newest (4) out
  collect(2);
  ASSERT_EQ(replies.size(), 2u);
  std::map<uint64_t, reply> by_id;
  for (auto& r : replies) {
    by_id[r.id.num] = r;
  }
  ASSERT_TRUE(by_id.count(5) && by_id.count(4));
  EXPECT_EQ(by_id[5].code, status::resource_exhausted);
  EXPECT_EQ(by_id[4].code, status::resource_exhausted);
  EXPECT_NE(by_id[4].error.find("made room"), std::string::npos)
      << by_id[4].error;
  for (int i = 0; i < 3; ++i) {
    caf::anon_send(exec, release_atom::value);
    EXPECT_EQ(seen(1).size(), 1u);
  }
  caf::anon_send(exec, release_atom::value);
  collect(6);
  std::set<uint64_t> ok;
  for (auto& r : replies) {
    if (r.code == status::ok) {
      ok.insert(r.id.num);
    }
  }
  EXPECT_EQ(ok, (std::set<uint64_t>{1, 2, 3, 6}));
  EXPECT_EQ(rc.tenants->rejections(a.label, tenant_reject::queue), 2u);
  EXPECT_EQ(rc.tenants->rejections(b.label, tenant_reject::queue), 0u);
}

TEST_F(router_test, a_version_removed_by_a_reload_is_refused_and_retires) {
  start({});
  caf::anon_send(router, job(1, 1.0f));
  auto exec = next_born();
  ASSERT_TRUE(exec);
  ASSERT_EQ(seen(1).size(), 1u);
  caf::anon_send(exec, release_atom::value);
  collect(1);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].code, status::ok);
  auto executors = [&] {
    auto text = reg.render();
    auto pos = text.find("\nshoal_executors{");
    if (pos == std::string::npos) {
      return -1.0;
    }
    pos = text.find("} ", pos);
    return std::strtod(text.c_str() + pos + 2, nullptr);
  };
  EXPECT_EQ(executors(), 1.0);
  // The repository no longer has m v1: the node installs the new catalog
  // and tells the router.
  live->set(std::make_shared<model_catalog>());
  caf::anon_send(router, reload_atom::value);
  caf::anon_send(router, job(2, 2.0f));
  collect(2);
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(replies[1].code, status::not_found) << replies[1].error;
  // Its replica was idle: it retires at once, whatever its idle TTL.
  auto deadline = clock_type::now() + 2s;
  while (executors() != 0.0 && clock_type::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(executors(), 0.0);
}
