// Device selection and the device ledger, on any machine: which
// backend a model's resources.device gets, the reasons when it cannot run,
// and how the ledger picks an idle replica to retire for room.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "gpu/backend.hpp"
#include "gpu/cuda/driver_probe.hpp"
#include "gpu/device/device.hpp"
#include "gpu/device/device_ledger.hpp"
#include "gpu/graph/graph_options.hpp"
#include "gpu/model/manifest.hpp"
#include "net/wire/error.hpp"
#include "runtime/model/repository.hpp"

using namespace shoal;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// A graph model without weights (relu then softmax over 4 values).
fs::path write_model(const std::string& resources,
                     const std::string& backend = "cpu") {
  auto dir = fs::temp_directory_path() /
             ("shoal_device_" + std::to_string(::getpid())) / "m" / "1";
  fs::create_directories(dir);
  std::ofstream{dir / "model.toml"}
      << "backend = \"" << backend << "\"\n"
      << "[[inputs]]\nname = \"x\"\ndtype = \"f32\"\nshape = [-1, 4]\n"
      << "[[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [-1, 4]\n"
      << resources << "\n"
      << "[[layers]]\nop = \"relu\"\n[[layers]]\nop = \"softmax\"\n";
  return dir / "model.toml";
}

caf::expected<model_spec> parse(const std::string& resources,
                                const std::string& backend = "cpu") {
  return parse_manifest(write_model(resources, backend).string(), "m", 1);
}

class device_test : public ::testing::Test {
protected:
  void TearDown() override {
    fs::remove_all(fs::temp_directory_path() /
                   ("shoal_device_" + std::to_string(::getpid())));
  }
};

TEST_F(device_test, device_cpu_runs_on_the_cpu_backend) {
  auto spec = parse("[resources]\ndevice = \"cpu\"");
  ASSERT_TRUE(spec) << reason_of(spec.error());
  auto be = load_backend(*spec);
  ASSERT_TRUE(be) << reason_of(be.error());
  EXPECT_EQ((*be)->device(), "cpu");
}

TEST_F(device_test, device_gpu_without_a_gpu_is_refused_with_the_reason) {
  if (!gpu_devices().empty()) {
    GTEST_SKIP() << "this machine has a GPU";
  }
  auto spec = parse("[resources]\ndevice = \"gpu\"");
  ASSERT_TRUE(spec) << reason_of(spec.error());
  auto be = load_backend(*spec);
  ASSERT_FALSE(be);
  EXPECT_EQ(be.error().code(), static_cast<uint8_t>(errc::unavailable));
  auto why = reason_of(be.error());
  EXPECT_NE(why.find("model.toml: resources.device = \"gpu\""),
            std::string::npos)
      << why;
  EXPECT_NE(why.find(gpu_absent_reason()), std::string::npos) << why;
  EXPECT_FALSE(gpu_absent_reason().empty());
}

TEST_F(device_test, device_any_falls_back_to_the_cpu_without_a_gpu) {
  auto spec = parse("[resources]\ndevice = \"any\"");
  ASSERT_TRUE(spec) << reason_of(spec.error());
  auto be = load_backend(*spec);
  ASSERT_TRUE(be) << reason_of(be.error());
  EXPECT_EQ((*be)->device(), gpu_devices().empty() ? "cpu" : "gpu:0");
  // And it computes: softmax(relu(x)) of a row.
  tensor x;
  x.name = "x";
  x.type = dtype::f32;
  x.shape = {1, 4};
  float v[4] = {-1, 0, 0, 0};
  x.data.assign(reinterpret_cast<uint8_t*>(v),
                reinterpret_cast<uint8_t*>(v) + 16);
  auto out = (*be)->run({x}, 1);
  ASSERT_TRUE(out) << reason_of(out.error());
  float y[4];
  std::memcpy(y, out->front().data.data(), 16);
  for (float f : y) {
    EXPECT_FLOAT_EQ(f, 0.25f);
  }
}

TEST_F(device_test, backend_cuda_means_a_gpu_and_contradictions_are_refused) {
  auto spec = parse("", "cuda");
  ASSERT_TRUE(spec) << reason_of(spec.error());
  EXPECT_EQ(spec->device, "gpu");
  auto any = parse("[resources]\ndevice = \"any\"", "cuda");
  ASSERT_TRUE(any) << reason_of(any.error());
  EXPECT_EQ(any->device, "any");
  auto bad = parse("[resources]\ndevice = \"cpu\"", "cuda");
  ASSERT_FALSE(bad);
  EXPECT_NE(reason_of(bad.error()).find("resources.device"), std::string::npos)
      << reason_of(bad.error());
  auto tf32 = parse("[resources]\nallow_tf32 = true");
  ASSERT_TRUE(tf32) << reason_of(tf32.error());
  auto graph = options_of<graph_options>(*tf32);
  ASSERT_TRUE(graph) << reason_of(graph.error());
  EXPECT_TRUE((*graph)->allow_tf32);
  auto typo = parse("[resources]\nallow_tf23 = true");
  ASSERT_FALSE(typo);
  EXPECT_NE(reason_of(typo.error()).find("allow_tf23"), std::string::npos);
}

TEST_F(device_test, the_pipelined_interface_works_on_synchronous_backends) {
  auto spec = parse("");
  ASSERT_TRUE(spec);
  auto be = load_backend(*spec);
  ASSERT_TRUE(be);
  EXPECT_EQ((*be)->max_in_flight(), 1u);
  tensor x;
  x.name = "x";
  x.type = dtype::f32;
  x.shape = {1, 4};
  x.data.assign(16, 0);
  EXPECT_FALSE((*be)->finish()); // nothing started
  ASSERT_FALSE((*be)->start({x}, 1));
  auto out = (*be)->finish();
  ASSERT_TRUE(out) << reason_of(out.error());
  EXPECT_EQ(out->front().shape, (std::vector<uint64_t>{1, 4}));
}

bool nvidia_device_files() {
  return ::access("/dev/nvidiactl", F_OK) == 0 ||
         ::access("/dev/dxg", F_OK) == 0;
}

TEST(driver_probe_test, without_device_files_there_is_no_gpu_and_the_why) {
  if (nvidia_device_files()) {
    GTEST_SKIP() << "this machine has NVIDIA device files";
  }
  auto answer = probe_cuda_driver();
  EXPECT_EQ(answer.devices, 0);
  EXPECT_EQ(answer.why, "no NVIDIA device (/dev/nvidiactl absent)");
  if (cuda_built()) {
    EXPECT_EQ(gpu_absent_reason(), answer.why);
  }
}

TEST(driver_probe_test, a_node_without_a_gpu_never_maps_cuda_libraries) {
  if (nvidia_device_files()) {
    GTEST_SKIP() << "this machine has NVIDIA device files";
  }
  EXPECT_TRUE(gpu_devices().empty());
  EXPECT_FALSE(gpu_absent_reason().empty());
  std::ifstream maps{"/proc/self/maps"};
  std::string line;
  while (std::getline(maps, line)) {
    for (auto lib : {"libshoal_cuda", "libcublas", "libcudnn", "libcudart"}) {
      EXPECT_EQ(line.find(lib), std::string::npos) << line;
    }
  }
}

// Bytes the ledger lists on `device`.
uint64_t held(const device_ledger& ledger, int device) {
  uint64_t sum = 0;
  for (auto& e : ledger.replicas(device)) {
    sum += e.bytes;
  }
  return sum;
}

TEST(device_ledger_test, retires_the_least_recently_used_idle_replica) {
  device_ledger ledger; // a fresh one, not the process's
  std::vector<std::string> retired;
  std::vector<std::thread> owners;
  uint64_t a = 0, b = 0, c = 0;
  auto retire_of = [&](uint64_t* id, std::string name) {
    return [&, id, name] {
      retired.push_back(name);
      // The owner releases its memory from another thread, later.
      owners.emplace_back([&ledger, id] {
        std::this_thread::sleep_for(20ms);
        ledger.remove(*id);
      });
    };
  };
  a = ledger.add(0, "a", 1, 100, retire_of(&a, "a"));
  std::this_thread::sleep_for(2ms);
  b = ledger.add(0, "b", 1, 200, retire_of(&b, "b"));
  c = ledger.add(1, "c", 1, 300, retire_of(&c, "c"));
  EXPECT_EQ(held(ledger, 0), 300u);
  EXPECT_EQ(held(ledger, 1), 300u);
  ledger.touch(a, true); // a is computing: never retired
  EXPECT_EQ(ledger.retire_idle(0, 0, 2s), "b v1");
  EXPECT_EQ(retired, (std::vector<std::string>{"b"}));
  EXPECT_EQ(held(ledger, 0), 100u);
  // Nothing else idle on device 0; device 1 untouched.
  EXPECT_EQ(ledger.retire_idle(0, 0, 50ms), "");
  ledger.touch(a, false);
  // `except` is the loader itself.
  EXPECT_EQ(ledger.retire_idle(0, a, 50ms), "");
  EXPECT_EQ(ledger.retire_idle(0, 0, 2s), "a v1");
  EXPECT_EQ(ledger.replicas(1).size(), 1u);
  ledger.remove(c);
  for (auto& t : owners) {
    t.join();
  }
}

TEST(device_ledger_test, a_replica_that_does_not_release_in_time_is_not_room) {
  device_ledger ledger;
  std::atomic<int> asked{0};
  ledger.add(0, "stuck", 1, 100, [&] { ++asked; });
  EXPECT_EQ(ledger.retire_idle(0, 0, 30ms), "");
  EXPECT_EQ(asked.load(), 1);
  // It is not asked twice.
  EXPECT_EQ(ledger.retire_idle(0, 0, 30ms), "");
  EXPECT_EQ(asked.load(), 1);
}

} // namespace
