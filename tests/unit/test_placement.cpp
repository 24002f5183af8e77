// The coordinator's placement rules (actors/placement.hpp).
#include <gtest/gtest.h>

#include "actors/placement.hpp"

using namespace shoal;

namespace {

placement_candidate up(std::string name, size_t replicas = 0) {
  placement_candidate c;
  c.name = std::move(name);
  c.state = "up";
  c.replicas = replicas;
  return c;
}

std::string pick(const std::vector<placement_candidate>& ws,
                 placement_request req = {}) {
  auto i = choose_worker(ws, req);
  return i ? ws[*i].name : "none";
}

} // namespace

TEST(placement, only_live_workers_that_do_not_run_the_model) {
  auto a = up("a"), b = up("b"), c = up("c"), d = up("d");
  a.state = "suspect";
  b.state = "draining";
  c.state = "down";
  d.hosts_model = true; // spread: a second replica goes elsewhere
  EXPECT_EQ(pick({a, b, c, d}), "none");
  EXPECT_EQ(pick({a, b, c, d, up("e")}), "e");
}

TEST(placement, fewest_replicas_then_name) {
  EXPECT_EQ(pick({up("a", 3), up("b", 1), up("c", 2)}), "b");
  EXPECT_EQ(pick({up("b", 1), up("a", 1)}), "a");
}

TEST(placement, memory_budget_is_respected) {
  auto a = up("a"), b = up("b", 5);
  a.memory_budget = 1000;
  a.memory_used = 600;
  placement_request req;
  req.memory_bytes = 500;
  EXPECT_EQ(pick({a, b}, req), "b"); // a has only 400 left
  req.memory_bytes = 400;
  EXPECT_EQ(pick({a, b}, req), "a"); // exactly fits
  b.memory_budget = 100;
  req.memory_bytes = 500;
  EXPECT_EQ(pick({a, b}, req), "none");
  b.memory_budget = 0; // unlimited
  EXPECT_EQ(pick({a, b}, req), "b");
}

TEST(placement, prefers_a_worker_with_the_files) {
  auto a = up("a", 0), b = up("b", 4);
  b.has_files = true;
  EXPECT_EQ(pick({a, b}), "b"); // locality beats spread of load
}

TEST(placement, on_demand_minimum_before_anything_else) {
  auto spot = up("spot", 0), od = up("od", 7);
  spot.has_files = true;
  od.on_demand = true;
  placement_request req;
  req.min_replicas_on_demand = 1;
  EXPECT_EQ(pick({spot, od}, req), "od");
  req.on_demand_replicas = 1; // minimum met: the usual order again
  EXPECT_EQ(pick({spot, od}, req), "spot");
  // With no on-demand worker available, a spot one still serves.
  od.state = "down";
  req.on_demand_replicas = 0;
  EXPECT_EQ(pick({spot, od}, req), "spot");
}
