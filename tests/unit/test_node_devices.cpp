// A node's GPUs as status, /readyz, the metrics and the worker's reports
// show them (runtime/node_devices.hpp, node_metrics::watch_devices). No GPU
// is needed: the driver's view and the ledger are built by hand.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "config/human_bytes.hpp"
#include "gpu/device/node_devices.hpp"
#include "runtime/metrics/node_metrics.hpp"

using namespace shoal;

namespace {

constexpr uint64_t gib = uint64_t{1} << 30;
constexpr uint64_t mib = uint64_t{1} << 20;

gpu_device_info gpu(int index, uint64_t total, uint64_t used) {
  gpu_device_info g;
  g.index = index;
  g.name = "gpu:" + std::to_string(index);
  g.product = "NVIDIA H100 80GB HBM3";
  g.total_bytes = total;
  g.used_bytes = used;
  return g;
}

device_ledger::entry held(int device, std::string model, uint64_t version,
                          uint64_t bytes) {
  device_ledger::entry e;
  e.device = device;
  e.model = std::move(model);
  e.version = version;
  e.bytes = bytes;
  return e;
}

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

} // namespace

TEST(node_devices, describe_counts_replicas_per_model_and_device) {
  std::vector<gpu_device_info> gpus{gpu(0, 80 * gib, 10 * gib),
                                    gpu(1, 80 * gib, 0)};
  std::vector<device_ledger::entry> reps{
      held(0, "mlp", 1, gib), held(0, "mlp", 2, gib), held(0, "cnn", 1, gib),
      held(1, "cnn", 1, gib),
      held(7, "ghost", 1, gib)}; // no such device: left out
  auto ds = describe_devices(gpus, reps);
  ASSERT_EQ(ds.size(), 2u);
  EXPECT_EQ(ds[0].name, "gpu:0");
  EXPECT_EQ(ds[0].product, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(ds[0].total_bytes, 80 * gib);
  EXPECT_EQ(ds[0].used_bytes, 10 * gib);
  using counts = std::vector<std::pair<std::string, uint64_t>>;
  EXPECT_EQ(ds[0].replicas, (counts{{"cnn", 1}, {"mlp", 2}}));
  EXPECT_EQ(ds[1].replicas, (counts{{"cnn", 1}}));
  EXPECT_TRUE(describe_devices({}, reps).empty());
}

TEST(node_devices, samples_sum_this_nodes_share) {
  auto s = sample_devices({gpu(0, 80 * gib, 30 * gib), gpu(1, 40 * gib, 0)},
                          {held(0, "mlp", 1, 3 * gib), held(0, "cnn", 1, gib)});
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].held_bytes, 4 * gib);
  EXPECT_EQ(s[0].replicas, 2u);
  EXPECT_EQ(s[0].used_bytes, 30 * gib);
  EXPECT_EQ(s[1].held_bytes, 0u);
  EXPECT_EQ(s[1].replicas, 0u);
  EXPECT_EQ(s[1].total_bytes, 40 * gib);
}

TEST(node_devices, readyz_text) {
  EXPECT_EQ(devices_text({}, {},
                         "this node was built without the cuda "
                         "feature"),
            "no GPU (this node was built without the cuda feature)\n");
  auto text = devices_text(
      {gpu(0, 80 * gib, 12 * gib + 300 * mib), gpu(1, 80 * gib, 0)},
      {held(0, "mlp", 1, 1536 * mib), held(0, "cnn", 2, 512)}, "");
  EXPECT_EQ(text, "gpu:0 NVIDIA H100 80GB HBM3: 12.3 GiB used of 80.0 GiB; "
                  "mlp v1 1.5 GiB, cnn v2 512 B\n"
                  "gpu:1 NVIDIA H100 80GB HBM3: 0 B used of 80.0 GiB; "
                  "no replicas\n");
}

TEST(node_devices, human_bytes) {
  EXPECT_EQ(human_bytes(0), "0 B");
  EXPECT_EQ(human_bytes(1023), "1023 B");
  EXPECT_EQ(human_bytes(1024), "1.0 KiB");
  EXPECT_EQ(human_bytes(3 * mib), "3.0 MiB");
  EXPECT_EQ(human_bytes(uint64_t{5} << 40), "5.0 TiB");
  EXPECT_EQ(human_bytes(uint64_t{5} << 50), "5120.0 TiB");
}

TEST(node_devices, changed_ignores_small_drift_of_used_memory) {
  auto a = describe_devices({gpu(0, 80 * gib, 10 * gib)}, {});
  auto b = a;
  EXPECT_FALSE(devices_changed(a, b, 32 * mib));
  b[0].used_bytes += 32 * mib; // at the slack: still the same
  EXPECT_FALSE(devices_changed(a, b, 32 * mib));
  b[0].used_bytes += 1;
  EXPECT_TRUE(devices_changed(a, b, 32 * mib));
  b = a;
  b[0].used_bytes -= 33 * mib; // freed counts too
  EXPECT_TRUE(devices_changed(a, b, 32 * mib));
  b = a;
  b[0].replicas = {{"mlp", 1}}; // a replica came, even with no memory moved
  EXPECT_TRUE(devices_changed(a, b, 32 * mib));
  EXPECT_TRUE(devices_changed(a, {}, 32 * mib));
  EXPECT_TRUE(devices_changed({}, a, 32 * mib));
  EXPECT_FALSE(devices_changed({}, {}, 0));
}

TEST(node_devices, without_a_gpu_this_build_reports_none) {
  // This test binary is built like the node: here, without CUDA or a GPU.
  if (!gpu_devices().empty()) {
    GTEST_SKIP() << "a GPU is present";
  }
  EXPECT_TRUE(local_devices().empty());
  EXPECT_TRUE(local_device_samples().empty());
  EXPECT_EQ(local_devices_text(), "no GPU (" + gpu_absent_reason() + ")\n");
}

// -- metrics ------------------------------------------------------------------

TEST(node_devices, metrics_follow_the_devices_at_each_scrape) {
  metrics::registry reg;
  node_metrics m{reg, "n1"};
  std::vector<device_sample> now;
  m.watch_devices([&] { return now; });
  auto out = reg.render();
  // No GPU: the families are there, without samples.
  for (auto name :
       {"shoal_gpu_memory_used_bytes", "shoal_gpu_memory_total_bytes",
        "shoal_gpu_memory_held_bytes", "shoal_gpu_replicas"}) {
    EXPECT_NE(out.find(std::string{"# TYPE "} + name + " gauge\n"),
              std::string::npos)
        << out;
    EXPECT_EQ(out.find(std::string{"\n"} + name + "{"), std::string::npos)
        << out;
  }
  now = {{"gpu:0", 80 * gib, 10 * gib, 4 * gib, 2},
         {"gpu:1", 80 * gib, 1 * gib, 0, 0}};
  out = reg.render();
  EXPECT_TRUE(has_line(out, "shoal_gpu_memory_used_bytes{device=\"gpu:0\"} " +
                                std::to_string(10 * gib)))
      << out;
  EXPECT_TRUE(has_line(out, "shoal_gpu_memory_total_bytes{device=\"gpu:0\"} " +
                                std::to_string(80 * gib)))
      << out;
  EXPECT_TRUE(has_line(out, "shoal_gpu_memory_held_bytes{device=\"gpu:0\"} " +
                                std::to_string(4 * gib)))
      << out;
  EXPECT_TRUE(has_line(out, "shoal_gpu_replicas{device=\"gpu:0\"} 2")) << out;
  EXPECT_TRUE(has_line(out, "shoal_gpu_replicas{device=\"gpu:1\"} 0")) << out;
  // gpu:1 goes away: its series too.
  now.pop_back();
  now[0].replicas = 3;
  out = reg.render();
  EXPECT_TRUE(has_line(out, "shoal_gpu_replicas{device=\"gpu:0\"} 3")) << out;
  EXPECT_EQ(out.find("gpu:1"), std::string::npos) << out;
}

TEST(node_devices, promtool_accepts_gpu_metrics) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool not on PATH (Debian package prometheus)";
  }
  for (bool with_gpus : {false, true}) {
    metrics::registry reg;
    node_metrics m{reg, "n1"};
    m.watch_devices([with_gpus] {
      return with_gpus ? std::vector<device_sample>{{"gpu:0", 80 * gib,
                                                     10 * gib, 4 * gib, 2}}
                       : std::vector<device_sample>{};
    });
    auto path = std::filesystem::temp_directory_path() /
                ("shoal_gpu_promtool_" + std::to_string(getpid()) + ".prom");
    auto text = reg.render();
    {
      std::ofstream out{path, std::ios::binary};
      out << text;
    }
    auto cmd = "promtool check metrics < '" + path.string() + "'";
    auto rc = std::system(cmd.c_str());
    std::filesystem::remove(path);
    ASSERT_TRUE(WIFEXITED(rc));
    EXPECT_EQ(WEXITSTATUS(rc), 0) << "promtool rejected:\n" << text;
  }
}
