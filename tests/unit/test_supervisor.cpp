// The node supervisor: restart of a crashed child, exponential backoff,
// escalation when the restart intensity is exceeded, and no restart for
// retirement or a load that cannot succeed.
#include <atomic>

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include "actors/serving/supervisor.hpp"
#include "net/wire/error.hpp"

using namespace shoal;
using namespace std::chrono_literals;

namespace {

using crash_atom = caf::atom_constant<caf::atom("crash")>;
using fail_atom = caf::atom_constant<caf::atom("fail")>;

// A child that announces itself to the listener and dies on request.
caf::behavior dummy_child(caf::event_based_actor* self, std::string model,
                          uint64_t version, replica_listener_handle listener) {
  self->send(listener, ready_atom::value, model, version,
             caf::actor_cast<replica_handle>(self), std::string{"cpu"});
  return {
      [=](crash_atom) { self->quit(make_error(errc::internal, "boom")); },
      [=](fail_atom) {
        self->quit(make_error(errc::unavailable, "weights missing"));
      },
  };
}

struct fixture : ::testing::Test {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::atomic<int> spawned{0};
  std::atomic<int> escalations{0};
  std::string escalation_reason;

  void SetUp() override {
    cfg.set("scheduler.max-threads", size_t{2});
    cfg.set("logger.verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
  }

  supervisor_handle supervisor(restart_policy p) {
    child_factory f = [this](caf::local_actor* self, const std::string& m,
                             uint64_t v,
                             replica_listener_handle listener) -> caf::actor {
      if (m == "unknown") {
        return {};
      }
      ++spawned;
      return self->spawn(dummy_child, m, v, listener);
    };
    return sys->spawn(
        supervisor_actor, p, f,
        [this](const std::string& why) {
          escalation_reason = why;
          ++escalations;
        },
        [](std::string_view) {});
  }

  // Waits for the next (ready_atom, ...) and returns the child.
  caf::actor next_ready(caf::scoped_actor& self,
                        std::chrono::milliseconds limit = 2s) {
    caf::actor child;
    self->receive(
        [&](ready_atom, const std::string&, uint64_t, replica_handle a,
            const std::string&) { child = caf::actor_cast<caf::actor>(a); },
        caf::after(limit) >> [] {});
    return child;
  }
};

} // namespace

TEST(restart_tracker, backoff_doubles_up_to_the_cap) {
  restart_tracker t{{10, 10s, 50ms, 300ms}};
  auto t0 = clock_type::now();
  EXPECT_EQ(t.next(t0), 50ms);
  EXPECT_EQ(t.next(t0), 100ms);
  EXPECT_EQ(t.next(t0), 200ms);
  EXPECT_EQ(t.next(t0), 300ms);
  EXPECT_EQ(t.next(t0), 300ms);
  EXPECT_EQ(t.total(), 5u);
}

TEST(restart_tracker, intensity_limit_within_period_then_recovers) {
  restart_tracker t{{3, 1s, 10ms, 1s}};
  auto t0 = clock_type::now();
  EXPECT_TRUE(t.next(t0));
  EXPECT_TRUE(t.next(t0 + 100ms));
  EXPECT_TRUE(t.next(t0 + 200ms));
  EXPECT_FALSE(t.next(t0 + 300ms)) << "a 4th restart within 1 s escalates";
  // Once the early restarts leave the window, restarts are allowed again;
  // the backoff follows the restarts still inside it (one here).
  EXPECT_EQ(t.next(t0 + 1150ms), 20ms);
  EXPECT_EQ(t.next(t0 + 5s), 10ms);
}

TEST_F(fixture, crashed_child_is_restarted_after_backoff) {
  auto sup = supervisor({5, 10s, 100ms, 1s});
  caf::scoped_actor self{*sys};
  self->send(sup, spawn_atom::value, std::string{"m"}, uint64_t{1},
             std::string{"lazy"});
  auto first = next_ready(self);
  ASSERT_TRUE(first);
  auto t0 = clock_type::now();
  self->send(first, crash_atom::value);
  auto second = next_ready(self);
  auto waited = clock_type::now() - t0;
  ASSERT_TRUE(second) << "the child was not restarted";
  EXPECT_NE(first, second);
  EXPECT_GE(waited, 100ms) << "restart must wait for the backoff";
  EXPECT_EQ(spawned, 2);
  // The second restart waits twice as long.
  t0 = clock_type::now();
  self->send(second, crash_atom::value);
  ASSERT_TRUE(next_ready(self));
  EXPECT_GE(clock_type::now() - t0, 200ms);
  EXPECT_EQ(escalations, 0);
  self->send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(fixture, spawn_is_idempotent_per_model_version) {
  auto sup = supervisor({5, 10s, 10ms, 1s});
  caf::scoped_actor self{*sys};
  self->send(sup, spawn_atom::value, std::string{"m"}, uint64_t{1},
             std::string{"lazy"});
  self->send(sup, spawn_atom::value, std::string{"m"}, uint64_t{1},
             std::string{"lazy"});
  ASSERT_TRUE(next_ready(self));
  EXPECT_FALSE(next_ready(self, 200ms)) << "a second replica was started";
  EXPECT_EQ(spawned, 1);
  self->send(sup, spawn_atom::value, std::string{"m"}, uint64_t{2},
             std::string{"lazy"});
  EXPECT_TRUE(next_ready(self));
  self->send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(fixture, exceeding_intensity_escalates) {
  auto sup = supervisor({2, 10s, 10ms, 50ms});
  caf::scoped_actor self{*sys};
  self->send(sup, spawn_atom::value, std::string{"m"}, uint64_t{1},
             std::string{"lazy"});
  for (int i = 0; i < 3; ++i) {
    auto child = next_ready(self);
    ASSERT_TRUE(child) << "restart " << i;
    self->send(child, crash_atom::value);
  }
  bool failed = false;
  self->receive([&](spawn_fail_atom, const std::string& m, uint64_t,
                    const std::string&) { failed = m == "m"; },
                caf::after(2s) >> [] {});
  EXPECT_TRUE(failed) << "the requester must learn that no replica comes";
  EXPECT_EQ(escalations, 1);
  EXPECT_NE(escalation_reason.find("failed 3 times"), std::string::npos)
      << escalation_reason;
  EXPECT_EQ(spawned, 3);
  self->send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(fixture, load_failure_is_reported_not_restarted) {
  auto sup = supervisor({5, 10s, 10ms, 50ms});
  caf::scoped_actor self{*sys};
  self->send(sup, spawn_atom::value, std::string{"m"}, uint64_t{1},
             std::string{"lazy"});
  auto child = next_ready(self);
  ASSERT_TRUE(child);
  self->send(child, fail_atom::value);
  std::string reason;
  self->receive([&](spawn_fail_atom, const std::string&, uint64_t,
                    const std::string& r) { reason = r; },
                caf::after(2s) >> [] {});
  EXPECT_EQ(reason, "weights missing");
  EXPECT_FALSE(next_ready(self, 200ms));
  EXPECT_EQ(spawned, 1);
  EXPECT_EQ(escalations, 0);
  self->send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(fixture, retired_child_is_not_restarted_and_can_come_back) {
  auto sup = supervisor({5, 10s, 10ms, 50ms});
  caf::scoped_actor self{*sys};
  self->send(sup, spawn_atom::value, std::string{"m"}, uint64_t{1},
             std::string{"lazy"});
  auto child = next_ready(self);
  ASSERT_TRUE(child);
  self->monitor(child);
  self->send(sup, idle_atom::value, std::string{"m"}, uint64_t{1});
  bool down = false;
  self->receive([&](caf::down_msg& dm) { down = dm.source == child; },
                caf::after(2s) >> [] {});
  EXPECT_TRUE(down) << "retire must stop the child";
  EXPECT_FALSE(next_ready(self, 200ms)) << "a retired child came back";
  // A later request starts a fresh replica.
  self->send(sup, spawn_atom::value, std::string{"m"}, uint64_t{1},
             std::string{"lazy"});
  EXPECT_TRUE(next_ready(self));
  EXPECT_EQ(spawned, 2);
  self->send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(fixture, a_replica_handed_back_is_stopped_not_restarted) {
  auto sup = supervisor({5, 10s, 10ms, 50ms});
  caf::scoped_actor self{*sys};
  self->send(sup, spawn_atom::value, std::string{"m"}, uint64_t{1},
             std::string{"lazy"});
  auto child = next_ready(self);
  ASSERT_TRUE(child);
  self->monitor(child);
  self->send(sup, retire_atom::value, caf::actor_cast<replica_handle>(child));
  bool down = false;
  self->receive([&](caf::down_msg& dm) { down = dm.source == child; },
                caf::after(2s) >> [] {});
  EXPECT_TRUE(down) << "retire must stop the child";
  EXPECT_FALSE(next_ready(self, 200ms)) << "a retired child came back";
  uint64_t live = 99, restarts = 99;
  self->request(sup, 2s, count_atom::value)
      .receive(
          [&](uint64_t l, uint64_t r) {
            live = l;
            restarts = r;
          },
          [](caf::error&) {});
  EXPECT_EQ(live, 0u);
  EXPECT_EQ(restarts, 0u);
  self->send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_F(fixture, supervisor_shutdown_stops_its_children) {
  auto sup = supervisor({5, 10s, 10ms, 50ms});
  caf::scoped_actor self{*sys};
  self->send(sup, spawn_atom::value, std::string{"m"}, uint64_t{1},
             std::string{"lazy"});
  auto child = next_ready(self);
  ASSERT_TRUE(child);
  self->monitor(child);
  self->send_exit(sup, caf::exit_reason::user_shutdown);
  bool down = false;
  self->receive([&](caf::down_msg& dm) { down = dm.source == child; },
                caf::after(2s) >> [] {});
  EXPECT_TRUE(down);
}
