// The CUDA backend against the CPU backend: both example models,
// batch sizes 1, 7 and 32, within 1e-4 relative in f32 and 1e-2 where a
// layer computes in f16; plus pipelining, growth past max_batch, device
// memory accounting and running out of device memory.
//
// Exits 77 (meson: SKIP) where no GPU is present. The models come from
// $MODELS_DIR when set (pre-generated, for machines without numpy), else
// scripts/make_models.py is run with $PYTHON into a temporary directory.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "gpu/backend.hpp"
#include "gpu/cpu/cpu_backend.hpp"
#include "gpu/cuda/loader.hpp"
#include "gpu/device/device.hpp"
#include "gpu/device/device_ledger.hpp"
#include "gpu/graph/graph_options.hpp"
#include "gpu/model/manifest.hpp"
#include "gpu/model/safetensors.hpp"
#include "net/wire/error.hpp"
#include "runtime/model/repository.hpp"

using namespace shoal;
namespace fs = std::filesystem;

namespace {

fs::path models_dir;

model_spec load_spec(const std::string& name) {
  auto path = (models_dir / name / "1" / "model.toml").string();
  auto spec = parse_manifest(path, name, 1);
  if (!spec) {
    ADD_FAILURE() << path << ": " << reason_of(spec.error());
    return {};
  }
  return *spec;
}

// The reference input `input.b<n>` of a model as one tensor.
tensor reference(const std::string& model, const std::string& key) {
  auto f = safetensors_file::open(
      (models_dir / model / "1" / "reference.safetensors").string());
  EXPECT_TRUE(f) << reason_of(f.error());
  tensor t;
  if (!f) {
    return t;
  }
  auto* v = f->find(key);
  EXPECT_NE(v, nullptr) << key;
  if (!v) {
    return t;
  }
  t.name = key;
  t.type = v->type;
  t.shape = v->shape;
  t.data.assign(v->data, v->data + v->bytes);
  return t;
}

std::vector<float> floats(const tensor& t) {
  std::vector<float> out(t.data.size() / sizeof(float));
  std::memcpy(out.data(), t.data.data(), t.data.size());
  return out;
}

// |a - b| <= rtol * |b| + atol for every value, reporting the worst.
void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                  double rtol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double atol = rtol * 1e-3;
  size_t bad = 0, worst = 0;
  double worst_excess = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double d = std::fabs(double(got[i]) - want[i]);
    double allowed = rtol * std::fabs(want[i]) + atol;
    if (!(d <= allowed)) {
      ++bad;
      if (!(d - allowed <= worst_excess)) {
        worst_excess = d - allowed;
        worst = i;
      }
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size()
                     << " values differ beyond " << rtol
                     << " relative; worst at " << worst << ": got "
                     << got[worst] << ", want " << want[worst];
}

backend_ptr must_load_gpu(const model_spec& spec) {
  auto be = load_gpu_backend(spec, 0, {});
  EXPECT_TRUE(be) << reason_of(be.error());
  return be ? std::move(*be) : nullptr;
}

backend_ptr must_load_cpu(const model_spec& spec) {
  auto be = cpu_backend::load(spec);
  EXPECT_TRUE(be) << reason_of(be.error());
  return be ? std::move(*be) : nullptr;
}

std::vector<float> run(backend& be, const tensor& x) {
  auto out = be.run({x}, x.shape[0]);
  EXPECT_TRUE(out) << reason_of(out.error());
  if (!out) {
    return {};
  }
  EXPECT_EQ(out->size(), 1u);
  EXPECT_EQ(out->front().shape.front(), x.shape[0]);
  return floats(out->front());
}

// Rewrites a model's weights in another precision (dense weights only, as
// an f16 or bf16 export would) into dir/<name>/1, and returns its spec.
model_spec with_half_weights(const model_spec& base, dtype type,
                             const fs::path& dir) {
  auto out_dir = dir / (base.name + "_" + std::string{to_string(type)}) / "1";
  fs::create_directories(out_dir);
  auto weights_file = (*options_of<graph_options>(base))->weights_file;
  auto f = safetensors_file::open(base.dir + "/" + weights_file);
  EXPECT_TRUE(f);
  std::vector<std::pair<std::string, tensor>> tensors;
  for (auto& v : f->tensors()) {
    tensor t;
    t.shape = v.shape;
    bool dense_w = v.shape.size() == 2 && v.type == dtype::f32;
    if (!dense_w) {
      t.type = v.type;
      t.data.assign(v.data, v.data + v.bytes);
    } else {
      auto values = to_f32(v);
      t.type = type;
      t.data.resize(values->size() * 2);
      for (size_t i = 0; i < values->size(); ++i) {
        // Round to nearest even through the hardware conversion on the
        // host side of CUDA's headers would need nvcc; do it by hand.
        uint32_t bits;
        std::memcpy(&bits, &(*values)[i], 4);
        uint16_t h;
        if (type == dtype::bf16) {
          bits += 0x7fffu + ((bits >> 16) & 1u);
          h = static_cast<uint16_t>(bits >> 16);
        } else {
          // f32 -> f16 for normal values in range (weights are small).
          uint32_t sign = (bits >> 16) & 0x8000u;
          int32_t exp = static_cast<int32_t>((bits >> 23) & 0xffu) - 127 + 15;
          uint32_t mant = bits & 0x7fffffu;
          if (exp <= 0) {
            h = static_cast<uint16_t>(sign); // flush tiny values to zero
          } else {
            uint32_t m = mant >> 13, rest = mant & 0x1fffu;
            uint32_t v16 = sign | (static_cast<uint32_t>(exp) << 10) | m;
            if (rest > 0x1000u || (rest == 0x1000u && (m & 1u))) {
              ++v16;
            }
            h = static_cast<uint16_t>(v16);
          }
        }
        std::memcpy(t.data.data() + 2 * i, &h, 2);
      }
    }
    tensors.emplace_back(v.name, std::move(t));
  }
  auto err = write_safetensors((out_dir / weights_file).string(), tensors);
  EXPECT_FALSE(err) << reason_of(err);
  auto spec = base;
  spec.dir = out_dir.string();
  return spec;
}

class cuda_backend_test : public ::testing::Test {};

TEST_F(cuda_backend_test, outputs_match_the_cpu_backend_for_both_models) {
  // The MLP is f32 throughout; the CNN's fc2 has f16 weights and computes
  // in f16 on the GPU (in f32 on the CPU), hence its wider tolerance.
  for (auto [name, rtol] : {std::pair{"mlp", 1e-4}, std::pair{"cnn", 1e-2}}) {
    auto spec = load_spec(name);
    auto gpu = must_load_gpu(spec);
    auto cpu = must_load_cpu(spec);
    ASSERT_TRUE(gpu && cpu);
    EXPECT_EQ(gpu->device(), "gpu:0");
    for (int n : {1, 7, 32}) {
      auto x = reference(name, "input.b" + std::to_string(n));
      auto want = run(*cpu, x);
      auto got = run(*gpu, x);
      expect_close(got, want, rtol,
                   std::string{name} + " batch " + std::to_string(n));
      auto numpy = floats(reference(name, "output.b" + std::to_string(n)));
      expect_close(got, numpy, rtol,
                   std::string{name} + " batch " + std::to_string(n) +
                       " against numpy");
    }
  }
}

TEST_F(cuda_backend_test, half_precision_dense_layers_match_within_1e_2) {
  auto tmp =
      fs::temp_directory_path() / ("shoal_gpu_" + std::to_string(::getpid()));
  auto base = load_spec("mlp");
  for (auto [type, rtol] : {std::pair{dtype::f16, 1e-2},
                            // bfloat16 keeps 8 mantissa bits, f16 11.
                            std::pair{dtype::bf16, 5e-2}}) {
    auto spec = with_half_weights(base, type, tmp);
    auto gpu = must_load_gpu(spec);
    auto cpu = must_load_cpu(spec);
    ASSERT_TRUE(gpu && cpu);
    for (int n : {1, 7, 32}) {
      auto x = reference("mlp", "input.b" + std::to_string(n));
      expect_close(run(*gpu, x), run(*cpu, x), rtol,
                   std::string{to_string(type)} + " batch " +
                       std::to_string(n));
    }
  }
  fs::remove_all(tmp);
}

TEST_F(cuda_backend_test, tf32_stays_close_when_the_model_allows_it) {
  auto spec = load_spec("cnn");
  edit_options<graph_options>(spec, [](auto& g) { g.allow_tf32 = true; });
  auto gpu = must_load_gpu(spec);
  auto cpu = must_load_cpu(spec);
  ASSERT_TRUE(gpu && cpu);
  auto x = reference("cnn", "input.b32");
  expect_close(run(*gpu, x), run(*cpu, x), 1e-2, "tf32");
}

TEST_F(cuda_backend_test, two_batches_in_flight_come_back_in_order) {
  auto spec = load_spec("cnn");
  auto gpu = must_load_gpu(spec);
  ASSERT_TRUE(gpu);
  ASSERT_EQ(gpu->max_in_flight(), 2u);
  auto a = reference("cnn", "input.b7");
  auto b = reference("cnn", "input.b32");
  auto want_a = run(*gpu, a);
  auto want_b = run(*gpu, b);
  for (int round = 0; round < 3; ++round) {
    ASSERT_FALSE(gpu->start({a}, 7));
    ASSERT_FALSE(gpu->start({b}, 32));
    // A third would need a free slot.
    EXPECT_TRUE(gpu->start({a}, 7));
    auto got_a = gpu->finish();
    auto got_b = gpu->finish();
    ASSERT_TRUE(got_a && got_b);
    EXPECT_EQ(floats(got_a->front()), want_a);
    EXPECT_EQ(floats(got_b->front()), want_b);
  }
  auto p = gpu->profile();
  EXPECT_GE(p.batches, 8u);
  EXPECT_GT(p.kernel_s, 0.0);
  EXPECT_GT(p.copy_in_s, 0.0);
  EXPECT_GT(p.copy_out_s, 0.0);
}

TEST_F(cuda_backend_test, a_batch_above_max_batch_grows_the_buffers_once) {
  auto spec = load_spec("mlp");
  auto gpu = must_load_gpu(spec);
  auto cpu = must_load_cpu(spec);
  ASSERT_TRUE(gpu && cpu);
  auto before = gpu->memory_bytes();
  auto x32 = reference("mlp", "input.b32");
  tensor x64 = x32;
  x64.shape[0] = 64;
  x64.data.insert(x64.data.end(), x32.data.begin(), x32.data.end());
  // One batch in flight while the next one needs bigger buffers.
  ASSERT_FALSE(gpu->start({x32}, 32));
  ASSERT_FALSE(gpu->start({x64}, 64));
  auto first = gpu->finish();
  auto second = gpu->finish();
  ASSERT_TRUE(first && second);
  expect_close(floats(first->front()), run(*cpu, x32), 1e-4, "before growth");
  expect_close(floats(second->front()), run(*cpu, x64), 1e-4, "after growth");
  EXPECT_GT(gpu->memory_bytes(), before);
}

TEST_F(cuda_backend_test, device_memory_is_accounted_and_released) {
  auto spec = load_spec("mlp");
  auto& ledger = device_ledger::instance();
  auto gpu = must_load_gpu(spec);
  ASSERT_TRUE(gpu);
  // fc1 784x512 + fc2 512x10 f32 weights alone are 1.6 MB.
  EXPECT_GT(gpu->memory_bytes(), 1'600'000u);
  auto listed = ledger.replicas(0);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].model, "mlp");
  EXPECT_EQ(listed[0].bytes, gpu->memory_bytes());
  auto devices = gpu_devices();
  ASSERT_FALSE(devices.empty());
  EXPECT_GT(devices[0].total_bytes, devices[0].used_bytes);
  gpu.reset();
  EXPECT_TRUE(ledger.replicas(0).empty());
}

TEST_F(cuda_backend_test, a_wrong_input_size_is_refused) {
  auto gpu = must_load_gpu(load_spec("mlp"));
  ASSERT_TRUE(gpu);
  auto x = reference("mlp", "input.b7");
  auto out = gpu->run({x}, 6);
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code(), static_cast<uint8_t>(errc::invalid_argument));
  EXPECT_FALSE(run(*gpu, x).empty()); // and the replica still serves
}

TEST_F(cuda_backend_test, running_out_of_device_memory_is_a_clear_error) {
  auto spec = load_spec("mlp");
  // Buffers for 2^28 rows of 784 floats: about 840 GB.
  spec.max_batch = 1u << 28;
  size_t free_before = 0, total = 0;
  cudaMemGetInfo(&free_before, &total);
  auto be = load_gpu_backend(spec, 0, {});
  ASSERT_FALSE(be);
  EXPECT_EQ(be.error().code(), static_cast<uint8_t>(errc::resource_exhausted));
  EXPECT_NE(reason_of(be.error()).find("gpu:0"), std::string::npos)
      << reason_of(be.error());
  EXPECT_TRUE(device_ledger::instance().replicas(0).empty());
  size_t free_after = 0;
  cudaMemGetInfo(&free_after, &total);
  // Nothing of the failed load stays allocated (64 MiB of slack for the
  // libraries' own lazily created state).
  EXPECT_GE(free_after + (size_t{64} << 20), free_before);
}

TEST_F(cuda_backend_test, an_idle_replica_is_retired_to_make_room) {
  auto spec = load_spec("mlp");
  spec.device = "gpu";
  auto& ledger = device_ledger::instance();
  // Another "replica" holds all but 2 MiB of the device and is idle.
  size_t free_b = 0, total = 0;
  cudaMemGetInfo(&free_b, &total);
  void* hog = nullptr;
  auto hog_bytes = free_b - (size_t{2} << 20);
  ASSERT_EQ(cudaMalloc(&hog, hog_bytes), cudaSuccess);
  bool retired = false;
  uint64_t id = 0;
  id = ledger.add(0, "hog", 1, hog_bytes, [&] {
    retired = true;
    cudaFree(hog);
    ledger.remove(id);
  });
  auto be = load_backend(spec, {});
  ASSERT_TRUE(be) << reason_of(be.error());
  EXPECT_TRUE(retired);
  EXPECT_EQ((*be)->device(), "gpu:0");
  if (!retired) {
    cudaFree(hog);
    ledger.remove(id);
  }
}

TEST_F(cuda_backend_test, device_any_prefers_the_gpu) {
  auto spec = load_spec("mlp");
  spec.device = "any";
  auto be = load_backend(spec, {});
  ASSERT_TRUE(be) << reason_of(be.error());
  EXPECT_EQ((*be)->device(), "gpu:0");
  spec.device = "cpu";
  be = load_backend(spec, {});
  ASSERT_TRUE(be);
  EXPECT_EQ((*be)->device(), "cpu");
}

} // namespace

int main(int argc, char** argv) {
  if (gpu_devices().empty()) {
    std::printf("SKIP: no GPU: %s\n", gpu_absent_reason().c_str());
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  fs::path tmp;
  if (auto* dir = std::getenv("MODELS_DIR"); dir && *dir) {
    models_dir = dir;
  } else {
    auto* py = std::getenv("PYTHON");
    auto* src = std::getenv("SOURCE_ROOT");
    if (!src) {
      std::fprintf(stderr, "set SOURCE_ROOT (meson test does) or MODELS_DIR\n");
      return 1;
    }
    tmp = fs::temp_directory_path() /
          ("shoal_gpu_models_" + std::to_string(::getpid()));
    auto cmd = std::string{py && *py ? py : "python3"} + " '" + src +
               "/scripts/make_models.py' --out '" + tmp.string() +
               "' >/dev/null";
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "could not generate the models: %s\n", cmd.c_str());
      return 1;
    }
    models_dir = tmp;
  }
  auto rc = RUN_ALL_TESTS();
  if (!tmp.empty()) {
    fs::remove_all(tmp);
  }
  return rc;
}
