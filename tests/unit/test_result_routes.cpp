// The head's shortcut for a worker's results: a `done` or `progress` of a
// replica in the table reaches the router as that replica's proxy; anything
// else (another op, another incarnation, an unknown or removed replica, a
// body that does not decode) is left to the coordinator.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/cluster/result_routes.hpp"
#include "net/link/cluster_codec.hpp"

using namespace shoal;
using namespace std::chrono_literals;

namespace {

// What the stand-in router saw: the op, the sender and how many tickets.
struct seen {
  std::string op;
  caf::actor_addr sender;
  size_t n = 0;
};

struct result_routes_test : ::testing::Test {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  caf::actor proxy_actor;
  caf::actor router_actor;
  remote_replica_handle proxy;
  router_handle router;
  result_routes routes;

  result_routes_test() {
    proxy_actor = sys.spawn([]() -> caf::behavior { return {[](int) {}}; });
    auto probe = caf::actor_cast<caf::actor>(self);
    // A dynamically typed stand-in, cast to the router's interface: it
    // reports each result message and who it came from.
    router_actor = sys.spawn([probe](caf::event_based_actor* a) {
      return caf::behavior{
          [=](done_atom, std::vector<exec_result>& r) {
            a->send(probe, std::string{"done"},
                    caf::actor_cast<caf::actor_addr>(a->current_sender()),
                    r.size());
          },
          [=](progress_atom, std::vector<uint64_t>& t, uint64_t, uint64_t) {
            a->send(probe, std::string{"progress"},
                    caf::actor_cast<caf::actor_addr>(a->current_sender()),
                    t.size());
          },
      };
    });
    proxy = caf::actor_cast<remote_replica_handle>(proxy_actor);
    router = caf::actor_cast<router_handle>(router_actor);
  }

  ~result_routes_test() override {
    self->send_exit(proxy_actor, caf::exit_reason::user_shutdown);
    self->send_exit(router_actor, caf::exit_reason::user_shutdown);
  }

  static std::string done_body(uint64_t replica, size_t results) {
    done_msg m;
    m.replica = replica;
    m.results.resize(results);
    std::string out;
    encode(m, out);
    return out;
  }

  // The next message the stand-in router reported, if one comes soon.
  bool next(seen& out) {
    bool got = false;
    self->receive(
        [&](std::string& op, caf::actor_addr& sender, size_t n) {
          out = {op, sender, n};
          got = true;
        },
        caf::after(2s) >> [] {});
    return got;
  }

  bool nothing_more() {
    bool got = false;
    self->receive([&](std::string&, caf::actor_addr&, size_t) { got = true; },
                  caf::after(50ms) >> [] {});
    return !got;
  }
};

TEST_F(result_routes_test, done_goes_to_the_router_as_the_proxy) {
  routes.add("w1", 7, 3, proxy, router);
  ASSERT_TRUE(routes.deliver("w1", 7, "done", done_body(3, 2)));
  seen s;
  ASSERT_TRUE(next(s));
  EXPECT_EQ(s.op, "done");
  EXPECT_EQ(s.sender, proxy_actor.address());
  EXPECT_EQ(s.n, 2u);
}

TEST_F(result_routes_test, progress_goes_to_the_router_as_the_proxy) {
  routes.add("w1", 7, 3, proxy, router);
  progress_msg m{3, {11, 12, 13}, 1, 4};
  std::string body;
  encode(m, body);
  ASSERT_TRUE(routes.deliver("w1", 7, "progress", body));
  seen s;
  ASSERT_TRUE(next(s));
  EXPECT_EQ(s.op, "progress");
  EXPECT_EQ(s.sender, proxy_actor.address());
  EXPECT_EQ(s.n, 3u);
}

TEST_F(result_routes_test, everything_else_is_left_to_the_coordinator) {
  routes.add("w1", 7, 3, proxy, router);
  // Another incarnation of the worker, another worker, another replica.
  EXPECT_FALSE(routes.deliver("w1", 8, "done", done_body(3, 1)));
  EXPECT_FALSE(routes.deliver("w2", 7, "done", done_body(3, 1)));
  EXPECT_FALSE(routes.deliver("w1", 7, "done", done_body(4, 1)));
  // Not a result, a malformed body, an unknown op.
  replica_desc d{3, "echo", 2, "cpu", 0};
  std::string ready;
  encode(d, ready);
  EXPECT_FALSE(routes.deliver("w1", 7, "ready", ready));
  EXPECT_FALSE(routes.deliver("w1", 7, "done", "\xc1"));
  EXPECT_FALSE(routes.deliver("w1", 7, "newer_op", done_body(3, 1)));
  EXPECT_TRUE(nothing_more());
}

TEST_F(result_routes_test, removed_replicas_and_workers_are_not_routed) {
  routes.add("w1", 7, 3, proxy, router);
  routes.add("w1", 7, 4, proxy, router);
  routes.add("w10", 1, 3, proxy, router);
  routes.remove("w1", 3);
  EXPECT_FALSE(routes.deliver("w1", 7, "done", done_body(3, 1)));
  ASSERT_TRUE(routes.deliver("w1", 7, "done", done_body(4, 1)));
  seen s;
  ASSERT_TRUE(next(s));
  routes.remove_worker("w1");
  EXPECT_FALSE(routes.deliver("w1", 7, "done", done_body(4, 1)));
  // A worker whose name starts with the removed one's keeps its routes.
  EXPECT_TRUE(routes.deliver("w10", 1, "done", done_body(3, 1)));
  ASSERT_TRUE(next(s));
  EXPECT_TRUE(nothing_more());
}

} // namespace
