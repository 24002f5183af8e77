// The CPU backend on a small generated model: outputs against a naive
// reference, and load errors that name model.toml and the layer field.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "gpu/backend.hpp"
#include "gpu/model/manifest.hpp"
#include "gpu/model/safetensors.hpp"
#include "net/wire/error.hpp"
#include "runtime/model/repository.hpp"
#include "tests/support/tensors.hpp"

using namespace shoal;
namespace fs = std::filesystem;

using shoal::test::f32_tensor;
using shoal::test::mlp_layers;
using shoal::test::random_values;

namespace {

struct mlp_fixture : ::testing::Test {
  fs::path dir;
  test::mlp_weights w;
  static constexpr size_t in = 12, hidden = 16, out = 5;

  void SetUp() override {
    char tmpl[] = "/tmp/shoal-cpu-XXXXXX";
    dir = fs::path{::mkdtemp(tmpl)} / "mlp" / "1";
    fs::create_directories(dir);
    std::mt19937 rng{7};
    w = test::random_mlp(in, hidden, out, rng, 0.4f, 0.1f);
    ASSERT_FALSE(
        write_safetensors((dir / "model.safetensors").string(), w.tensors()));
  }
  void TearDown() override { fs::remove_all(dir.parent_path().parent_path()); }

  std::string manifest(const std::string& layers) {
    return test::cpu_manifest(in, out, "max_batch = 8\n", layers);
  }

  caf::expected<backend_ptr> load(const std::string& text) {
    std::ofstream{dir / "model.toml"} << text;
    auto spec = parse_manifest((dir / "model.toml").string(), "mlp", 1);
    if (!spec) {
      return spec.error();
    }
    return load_backend(*spec);
  }

  // y = softmax(W2 relu(W1 x + b1) + b2), in double.
  std::vector<double> reference(const float* x) {
    std::vector<double> h(hidden), y(out);
    for (size_t j = 0; j < hidden; ++j) {
      double s = w.b1[j];
      for (size_t k = 0; k < in; ++k) {
        s += double{w.w1[j * in + k]} * x[k];
      }
      h[j] = std::max(0.0, s);
    }
    double mx = -1e300, sum = 0;
    for (size_t j = 0; j < out; ++j) {
      double s = w.b2[j];
      for (size_t k = 0; k < hidden; ++k) {
        s += double{w.w2[j * hidden + k]} * h[k];
      }
      y[j] = s;
      mx = std::max(mx, s);
    }
    for (auto& v : y) {
      sum += v = std::exp(v - mx);
    }
    for (auto& v : y) {
      v /= sum;
    }
    return y;
  }
};

} // namespace

TEST_F(mlp_fixture, outputs_match_the_reference_for_several_batch_sizes) {
  auto be = load(manifest(mlp_layers));
  ASSERT_TRUE(be) << (be ? std::string{}
                         : caf::to_string(be.error()) + " / " +
                               reason_of(be.error()));
  std::mt19937 rng{11};
  for (uint64_t rows : {1u, 3u, 8u, 13u}) {
    auto x = random_values(rows * in, rng, 1.0f);
    auto out_t = (*be)->run({f32_tensor({rows, in}, x)}, rows);
    ASSERT_TRUE(out_t) << reason_of(out_t.error());
    auto& y = (*out_t)[0];
    EXPECT_EQ(y.name, "probs");
    EXPECT_EQ(y.shape, (std::vector<uint64_t>{rows, out}));
    for (uint64_t r = 0; r < rows; ++r) {
      auto ref = reference(x.data() + r * in);
      for (size_t j = 0; j < out; ++j) {
        float got;
        std::memcpy(&got, y.data.data() + (r * out + j) * 4, 4);
        EXPECT_NEAR(got, ref[j], 1e-5 + 1e-4 * std::abs(ref[j]))
            << "rows " << rows << " row " << r << " output " << j;
      }
    }
  }
  EXPECT_GE((*be)->memory_bytes(), w.bytes());
}

TEST_F(mlp_fixture, a_graph_naming_a_missing_tensor_is_refused) {
  std::string layers = mlp_layers;
  layers.replace(layers.find("fc2.weight"), 10, "fc9.weight");
  auto be = load(manifest(layers));
  ASSERT_FALSE(be);
  auto why = reason_of(be.error());
  EXPECT_NE(why.find("model.toml: layers[2].weight"), std::string::npos) << why;
  EXPECT_NE(why.find("fc9.weight"), std::string::npos) << why;
}

TEST_F(mlp_fixture, a_shape_mismatch_between_layers_is_refused) {
  // Without the first dense, fc2 (16 inputs) follows the 12-wide input.
  std::string layers = "[[layers]]\nop = \"dense\"\nweight = \"fc2.weight\"\n"
                       "[[layers]]\nop = \"softmax\"\n";
  auto be = load(manifest(layers));
  ASSERT_FALSE(be);
  auto why = reason_of(be.error());
  EXPECT_NE(why.find("layers[0].weight"), std::string::npos) << why;
  EXPECT_NE(why.find("takes 16 inputs"), std::string::npos) << why;
}

TEST_F(mlp_fixture, an_output_that_differs_from_the_declaration_is_refused) {
  std::string layers = "[[layers]]\nop = \"dense\"\nweight = \"fc1.weight\"\n";
  auto be = load(manifest(layers));
  ASSERT_FALSE(be);
  EXPECT_NE(reason_of(be.error()).find("outputs[0]"), std::string::npos);
}

TEST_F(mlp_fixture, unknown_layer_keys_and_ops_name_the_field) {
  auto bad_key = parse_manifest(
      [&] {
        std::ofstream{dir / "model.toml"}
            << manifest("[[layers]]\nop = \"relu\"\nslope = 0.1\n");
        return (dir / "model.toml").string();
      }(),
      "mlp", 1);
  ASSERT_FALSE(bad_key);
  EXPECT_NE(reason_of(bad_key.error()).find("layers[0].slope: unknown key"),
            std::string::npos);
  std::ofstream{dir / "model.toml"} << manifest("[[layers]]\nop = \"swish\"\n");
  auto bad_op = parse_manifest((dir / "model.toml").string(), "mlp", 1);
  ASSERT_FALSE(bad_op);
  EXPECT_NE(reason_of(bad_op.error()).find("layers[0].op: unknown op 'swish'"),
            std::string::npos);
}

TEST_F(mlp_fixture, a_corrupt_weights_file_fails_the_load_naming_it) {
  {
    std::fstream f{dir / "model.safetensors",
                   std::ios::in | std::ios::out | std::ios::binary};
    f.seekp(0);
    f.write("\xff\xff\xff\xff\xff\xff\xff\x7f", 8); // header length lies
  }
  auto be = load(manifest(mlp_layers));
  ASSERT_FALSE(be);
  EXPECT_EQ(to_status(be.error()), status::unavailable);
  EXPECT_NE(reason_of(be.error()).find("model.safetensors"), std::string::npos)
      << reason_of(be.error());
}
