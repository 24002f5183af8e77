// The coordinator's placement rules (actors/placement.hpp).
#include <gtest/gtest.h>

#include "actors/cluster/placement.hpp"

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

// -- devices: gpu, any, cpu ---------------------------------------------------

namespace {

constexpr uint64_t gib = uint64_t{1} << 30;

placement_candidate gpu_worker(std::string name, std::vector<uint64_t> free,
                               size_t replicas = 0) {
  auto c = up(std::move(name), replicas);
  c.gpu_free = std::move(free);
  return c;
}

placement_request needs(std::string device, uint64_t bytes) {
  placement_request req;
  req.device = std::move(device);
  req.memory_bytes = bytes;
  return req;
}

std::string place(const std::vector<placement_candidate>& ws,
                  const placement_request& req) {
  auto p = choose_placement(ws, req);
  if (!p.worker) {
    return p.no_gpu_room ? "no-gpu-room" : "wait";
  }
  return ws[*p.worker].name + (p.on_gpu ? "/gpu" : "/cpu");
}

} // namespace

TEST(placement, gpu_room_lays_claims_out_like_the_worker) {
  auto w = gpu_worker("a", {10 * gib, 6 * gib});
  EXPECT_EQ(gpu_room(w), 10 * gib);
  w.gpu_claims = {3 * gib}; // goes on the 10: 7 and 6 left
  EXPECT_EQ(gpu_room(w), 7 * gib);
  w.gpu_claims = {3 * gib, 5 * gib}; // 5 on the 10, 3 on the 6: 5 and 3
  EXPECT_EQ(gpu_room(w), 5 * gib);
  w.gpu_claims = {20 * gib}; // more than any has: that one is full
  EXPECT_EQ(gpu_room(w), 6 * gib);
  EXPECT_EQ(gpu_room(up("cpu-only")), 0u);
}

TEST(placement, gpu_model_only_on_a_gpu_with_room) {
  auto cpu = up("a-cpu"); // first by name, no GPU
  auto small = gpu_worker("b-small", {2 * gib});
  auto big = gpu_worker("c-big", {8 * gib}, 3);
  EXPECT_EQ(place({cpu, small, big}, needs("gpu", 4 * gib)), "c-big/gpu");
  EXPECT_EQ(place({cpu, small, big}, needs("gpu", 8 * gib)), "c-big/gpu");
  // Fewest replicas first among those with room (as on the CPU).
  EXPECT_EQ(place({cpu, small, big}, needs("gpu", 1 * gib)), "b-small/gpu");
  // No estimate: any worker with a GPU.
  EXPECT_EQ(place({cpu, big}, needs("gpu", 0)), "c-big/gpu");
  // Estimates placed there and not ready yet take their room.
  big.gpu_claims = {5 * gib};
  EXPECT_EQ(place({cpu, small, big}, needs("gpu", 4 * gib)), "no-gpu-room");
  EXPECT_EQ(place({cpu, small, big}, needs("gpu", 3 * gib)), "c-big/gpu");
}

TEST(placement, gpu_model_fails_when_no_gpu_has_room_and_waits_for_workers) {
  auto cpu = up("a"), full = gpu_worker("b", {1 * gib});
  EXPECT_EQ(place({cpu, full}, needs("gpu", 2 * gib)), "no-gpu-room");
  EXPECT_EQ(place({cpu}, needs("gpu", 0)), "no-gpu-room");
  // The GPU worker runs the model already (spread), or is not up.
  auto host = gpu_worker("c", {80 * gib});
  host.hosts_model = true;
  EXPECT_EQ(place({cpu, host}, needs("gpu", gib)), "no-gpu-room");
  auto gone = gpu_worker("d", {80 * gib});
  gone.state = "suspect";
  EXPECT_EQ(place({cpu, gone}, needs("gpu", gib)), "no-gpu-room");
  // No worker up at all: the spawn waits for one to join, as on the CPU.
  cpu.state = "down";
  EXPECT_EQ(place({cpu, gone}, needs("gpu", gib)), "wait");
  EXPECT_EQ(place({}, needs("gpu", gib)), "wait");
}

TEST(placement, gpu_estimate_is_not_charged_to_the_host_budget) {
  auto w = gpu_worker("a", {16 * gib});
  w.memory_budget = 1 * gib;
  w.memory_used = 1 * gib; // no host memory left
  EXPECT_EQ(place({w}, needs("gpu", 8 * gib)), "a/gpu");
  EXPECT_EQ(place({w}, needs("cpu", 8 * gib)), "wait");
}

TEST(placement, gpu_order_on_demand_files_replicas_room_name) {
  auto a = gpu_worker("a", {4 * gib}, 1), b = gpu_worker("b", {8 * gib}, 1);
  EXPECT_EQ(place({a, b}, needs("gpu", gib)), "b/gpu"); // more room
  b.gpu_free = {4 * gib};
  EXPECT_EQ(place({b, a}, needs("gpu", gib)), "a/gpu"); // then the name
  a.replicas = 2;
  EXPECT_EQ(place({a, b}, needs("gpu", gib)), "b/gpu"); // fewer replicas
  a.has_files = true;
  EXPECT_EQ(place({a, b}, needs("gpu", gib)), "a/gpu"); // files first
  b.on_demand = true;
  auto req = needs("gpu", gib);
  req.min_replicas_on_demand = 1;
  EXPECT_EQ(place({a, b}, req), "b/gpu"); // on-demand minimum first
}

TEST(placement, any_prefers_a_gpu_with_room_else_cpu_rules) {
  auto cpu = up("a"), gpu = gpu_worker("b", {4 * gib}, 5);
  EXPECT_EQ(place({cpu, gpu}, needs("any", 2 * gib)), "b/gpu");
  // No GPU with room: the CPU rules, which may pick the GPU worker too.
  EXPECT_EQ(place({cpu, gpu}, needs("any", 6 * gib)), "a/cpu");
  cpu.state = "draining";
  EXPECT_EQ(place({cpu, gpu}, needs("any", 6 * gib)), "b/cpu");
  // And like a cpu model it waits when nothing qualifies.
  gpu.memory_budget = gib;
  EXPECT_EQ(place({cpu, gpu}, needs("any", 6 * gib)), "wait");
}

TEST(placement, cpu_model_ignores_gpus) {
  auto cpu = up("b", 1), gpu = gpu_worker("a", {80 * gib}, 1);
  // The same choice as choose_worker: the name decides, not the GPU.
  EXPECT_EQ(place({cpu, gpu}, needs("cpu", gib)), "a/cpu");
  gpu.replicas = 2;
  EXPECT_EQ(place({cpu, gpu}, needs("cpu", gib)), "b/cpu");
  std::vector<placement_candidate> none;
  EXPECT_EQ(place(none, needs("cpu", gib)), "wait");
}
