// backend = "torch" on the node's side, without libtorch: its manifest
// keys and their errors, and that parsing a torch manifest loads nothing.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "gpu/model/manifest.hpp"
#include "gpu/registry.hpp"
#include "gpu/torch/torch_backend.hpp"
#include "net/wire/error.hpp"

using namespace shoal;
namespace fs = std::filesystem;

namespace {

constexpr auto io = R"(backend = "torch"
[[inputs]]
name = "tokens"
dtype = "i64"
shape = [-1, 64]
[[outputs]]
name = "logits"
dtype = "f32"
shape = [-1, 4]
[[outputs]]
name = "mask"
dtype = "bool"
shape = [-1, 64]
)";

class torch_manifest_test : public ::testing::Test {
protected:
  void TearDown() override { fs::remove_all(dir_); }

  caf::expected<model_spec> parse(const std::string& rest) {
    fs::create_directories(dir_ / "m" / "1");
    auto path = dir_ / "m" / "1" / "model.toml";
    std::ofstream{path} << io << rest;
    return parse_manifest(path.string(), "m", 1);
  }

  std::string error_of(const std::string& rest) {
    auto spec = parse(rest);
    return spec ? std::string{"parsed"} : reason_of(spec.error());
  }

  fs::path dir_ = fs::temp_directory_path() /
                  ("shoal_torch_manifest_" + std::to_string(::getpid()));
};

constexpr auto files = "[files]\n\"model.pt\" = \"" // sha256 of nothing
                       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991"
                       "b7852b855\"\n";

} // namespace

TEST_F(torch_manifest_test, reads_weights_and_the_torch_table) {
  auto spec =
      parse(std::string{files} + "[weights]\nfile = \"model.pt\"\n"
                                 "[torch]\nthreads = 2\nwarmup = false\n");
  ASSERT_TRUE(spec) << reason_of(spec.error());
  auto opts = options_of<torch_options>(*spec);
  ASSERT_TRUE(opts);
  EXPECT_EQ((*opts)->weights_file, "model.pt");
  EXPECT_EQ((*opts)->threads, 2u);
  EXPECT_FALSE((*opts)->warmup);
  EXPECT_EQ((*opts)->precision, dtype::f32);
  EXPECT_EQ(spec->device, "cpu");
  EXPECT_EQ(spec->inputs.front().type, dtype::i64);
  EXPECT_EQ(spec->outputs.back().type, dtype::boolean);
  // Parsing a torch manifest never loads libtorch.
  EXPECT_FALSE(torch_plugin_loaded());
}

TEST_F(torch_manifest_test, the_weights_file_must_be_verified) {
  auto why = error_of("[weights]\nfile = \"model.pt\"\n");
  EXPECT_NE(why.find("m/1/model.toml: weights.file: 'model.pt' is not listed "
                     "in [files]"),
            std::string::npos)
      << why;
  why = error_of(std::string{files} + "[weights]\nfile = \"../x.pt\"\n");
  EXPECT_NE(why.find("weights.file: expected a file name inside"),
            std::string::npos)
      << why;
}

TEST_F(torch_manifest_test, bad_torch_keys_name_the_key) {
  auto why = error_of(std::string{files} + "[torch]\nthread = 2\n");
  EXPECT_NE(why.find("m/1/model.toml: torch.thread: unknown key"),
            std::string::npos)
      << why;
  why = error_of(std::string{files} + "[torch]\nprecision = \"f64\"\n");
  EXPECT_NE(why.find("torch.precision: expected \"f32\", \"f16\" or \"bf16\""),
            std::string::npos)
      << why;
  why = error_of(std::string{files} + "[torch]\nprecision = \"f16\"\n");
  EXPECT_NE(why.find("torch.precision: f16 and bf16 run on a GPU only"),
            std::string::npos)
      << why;
  why = error_of(std::string{files} + "[[layers]]\nop = \"relu\"\n");
  EXPECT_NE(why.find("layers: unknown key for backend = \"torch\""),
            std::string::npos)
      << why;
}

TEST_F(torch_manifest_test, half_precision_parses_for_a_gpu) {
  auto spec = parse(std::string{files} + "[resources]\ndevice = \"any\"\n"
                                         "[torch]\nprecision = \"bf16\"\n");
  ASSERT_TRUE(spec) << reason_of(spec.error());
  EXPECT_EQ((*options_of<torch_options>(*spec))->precision, dtype::bf16);
}
