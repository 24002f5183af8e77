// The torch backend on a GPU: the example resnet18 and text models on
// cuda:0 against the same models on the CPU, within 1e-4 of the largest
// value in f32 and 1e-2 with [torch] precision = "f16", and the replica's
// device memory in the device ledger. Exits 77 (meson: SKIP) without a GPU
// or without a plugin built against a CUDA libtorch (the torch_dir option).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <gtest/gtest.h>

#include "gpu/device/device.hpp"
#include "gpu/device/device_ledger.hpp"
#include "gpu/model/manifest.hpp"
#include "gpu/registry.hpp"
#include "gpu/torch/torch_backend.hpp"
#include "net/wire/error.hpp"

using namespace shoal;
namespace fs = std::filesystem;

namespace {

model_spec spec_of(const std::string& model, dtype precision) {
  auto path = fs::path{SHOAL_EXAMPLE_MODELS} / model / "1" / "model.toml";
  auto spec = parse_manifest(path.string(), model, 1);
  EXPECT_TRUE(spec) << reason_of(spec.error());
  edit_options<torch_options>(
      *spec, [&](torch_options& o) { o.precision = precision; });
  return *spec;
}

// Deterministic inputs: small token ids, or a ramp of pixel values.
tensor input_of(const model_spec& spec, uint64_t rows) {
  auto& in = spec.inputs.front();
  tensor t;
  t.name = in.name;
  t.type = in.type;
  uint64_t n = 1;
  for (auto d : in.shape) {
    t.shape.push_back(d < 0 ? rows : static_cast<uint64_t>(d));
    n *= t.shape.back();
  }
  t.data.resize(n * dtype_size(in.type));
  for (uint64_t i = 0; i < n; ++i) {
    if (in.type == dtype::i64) {
      int64_t v = static_cast<int64_t>((i * 7919) % 1000);
      std::memcpy(t.data.data() + i * 8, &v, 8);
    } else {
      float v = static_cast<float>((i * 31) % 255) / 255.0f;
      std::memcpy(t.data.data() + i * 4, &v, 4);
    }
  }
  return t;
}

// Largest difference relative to the largest value of `want`.
double relative_error(const tensor& got, const tensor& want) {
  auto n = want.data.size() / 4;
  const float* g = reinterpret_cast<const float*>(got.data.data());
  const float* w = reinterpret_cast<const float*>(want.data.data());
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < n; ++i) {
    worst = std::max(worst, std::abs(double{g[i]} - w[i]));
    scale = std::max(scale, std::abs(double{w[i]}));
  }
  return worst / scale;
}

void compare(const std::string& model, dtype precision, double tolerance) {
  auto cpu_spec = spec_of(model, dtype::f32);
  cpu_spec.device = "cpu";
  auto gpu_spec = spec_of(model, precision);
  gpu_spec.device = "gpu";
  auto cpu = load_backend(cpu_spec);
  ASSERT_TRUE(cpu) << reason_of(cpu.error());
  auto gpu = load_backend(gpu_spec);
  ASSERT_TRUE(gpu) << reason_of(gpu.error());
  EXPECT_EQ((*gpu)->device(), "gpu:0");
  EXPECT_GT((*gpu)->memory_bytes(), 0u);
  EXPECT_FALSE(device_ledger::instance().replicas(0).empty());
  for (uint64_t rows : {1u, 3u, 8u}) {
    auto x = input_of(cpu_spec, rows);
    auto want = (*cpu)->run({x}, rows);
    auto got = (*gpu)->run({x}, rows);
    ASSERT_TRUE(want && got);
    ASSERT_EQ(want->size(), got->size());
    for (size_t i = 0; i < want->size(); ++i) {
      EXPECT_EQ((*got)[i].shape, (*want)[i].shape);
      EXPECT_LE(relative_error((*got)[i], (*want)[i]), tolerance)
          << model << " b" << rows << " output " << (*want)[i].name;
    }
  }
}

} // namespace

TEST(torch_cuda, resnet18_f32_matches_the_cpu) {
  compare("resnet18", dtype::f32, 1e-4);
}

TEST(torch_cuda, resnet18_f16_is_close_to_the_cpu) {
  compare("resnet18", dtype::f16, 1e-2);
}

TEST(torch_cuda, text_f32_matches_the_cpu) {
  compare("text", dtype::f32, 1e-4);
}

TEST(torch_cuda, text_f16_is_close_to_the_cpu) {
  compare("text", dtype::f16, 1e-2);
}

int main(int argc, char** argv) {
  if (gpu_devices().empty()) {
    std::printf("SKIP: no GPU: %s\n", gpu_absent_reason().c_str());
    return 77;
  }
  if (!fs::exists(fs::path{SHOAL_EXAMPLE_MODELS} / "resnet18/1/model.pt")) {
    std::printf("SKIP: no torch example models under %s\n",
                SHOAL_EXAMPLE_MODELS);
    return 77;
  }
  if (torch_cuda_devices() == 0) {
    auto v = torch_runtime_version();
    std::printf("SKIP: the torch plugin has no CUDA (%s; build with "
                "-Dtorch_dir=<a CUDA pip torch>)\n",
                v ? ("libtorch " + *v).c_str() : reason_of(v.error()).c_str());
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
