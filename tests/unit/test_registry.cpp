// The backend registry: what it refuses to register, and how the manifest
// parser, load_backend and backend_may_block follow what a backend
// declares (its sections, resource keys, devices and factory).
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "gpu/graph/graph_options.hpp"
#include "gpu/model/manifest.hpp"
#include "gpu/model/manifest_reader.hpp"
#include "gpu/registry.hpp"
#include "gpu/synthetic/synthetic.hpp"
#include "net/wire/error.hpp"

using namespace shoal;
namespace fs = std::filesystem;

namespace {

struct echo_options : backend_options {
  int64_t level = 1;
  bool loud = false;
};

// Returns its input; `level` comes from [echo], `loud` from resources.loud.
class echo_backend : public backend {
public:
  explicit echo_backend(std::string device) : device_(std::move(device)) {
    // nop
  }
  caf::expected<std::vector<tensor>> run(const std::vector<tensor>& inputs,
                                         uint64_t) override {
    return inputs;
  }
  uint64_t memory_bytes() const noexcept override { return 0; }
  std::string device() const override { return device_; }

private:
  std::string device_;
};

caf::expected<backend_options_ptr> parse_echo(const manifest_reader& rd,
                                              const model_spec&) {
  auto opts = std::make_shared<echo_options>();
  auto tbl = rd.table("echo");
  if (!tbl) {
    return tbl.error();
  }
  if (*tbl != nullptr) {
    if (auto err = rd.only(**tbl, "echo.", {"level"})) {
      return err;
    }
    if (auto err = rd.get(**tbl, "echo.", "level", opts->level)) {
      return err;
    }
  }
  if (auto* r = rd.root().get_as<toml::table>("resources")) {
    if (auto err = rd.get(*r, "resources.", "loud", opts->loud)) {
      return err;
    }
  }
  return opts;
}

backend_info echo_info() {
  return {
      .name = "echo_test",
      .sections = {"echo"},
      .resource_keys = {"loud"},
      .devices = {device_kind::cpu},
      .default_device = device_kind::cpu,
      .parse = parse_echo,
      .load = [](const model_spec& spec, device_choice where,
                 const load_options&) -> caf::expected<backend_ptr> {
        auto opts = options_of<echo_options>(spec);
        if (!opts) {
          return opts.error();
        }
        return backend_ptr{std::make_unique<echo_backend>(
            where.on_gpu ? "gpu" : "cpu:" + std::to_string((*opts)->level))};
      },
      .may_block =
          [](const model_spec& spec) {
            auto opts = options_of<echo_options>(spec);
            return !opts || (*opts)->level > 1;
          },
  };
}

class registry_test : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    if (find_backend("echo_test") == nullptr) {
      ASSERT_FALSE(register_backend(echo_info()));
    }
  }

  void TearDown() override { fs::remove_all(dir_); }

  caf::expected<model_spec> parse(const std::string& backend,
                                  const std::string& rest) {
    auto path = dir_ / "m" / "1" / "model.toml";
    fs::create_directories(path.parent_path());
    std::ofstream{path} << "backend = \"" << backend << "\"\n"
                        << "[[inputs]]\nname = \"x\"\ndtype = \"f32\"\n"
                        << "shape = [-1, 4]\n"
                        << "[[outputs]]\nname = \"y\"\ndtype = \"f32\"\n"
                        << "shape = [-1, 4]\n"
                        << rest << "\n";
    return parse_manifest(path.string(), "m", 1);
  }

  std::string error_of(const std::string& backend, const std::string& rest) {
    auto spec = parse(backend, rest);
    return spec ? std::string{"parsed"} : reason_of(spec.error());
  }

  fs::path dir_ = fs::temp_directory_path() /
                  ("shoal_registry_" + std::to_string(::getpid()));
};

} // namespace

TEST_F(registry_test, the_builtin_backends_are_registered) {
  auto names = backend_names();
  for (auto name : {"cpu", "cuda", "synthetic", "echo_test"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  }
  EXPECT_EQ(find_backend("tpu"), nullptr);
  EXPECT_EQ(find_backend("cuda")->default_device, device_kind::gpu);
  EXPECT_FALSE(find_backend("cuda")->accepts(device_kind::cpu));
}

TEST_F(registry_test, inconsistent_backends_are_refused) {
  auto refused = [](backend_info info, const std::string& what) {
    auto err = register_backend(std::move(info));
    EXPECT_TRUE(err) << what;
    if (err) {
      EXPECT_NE(reason_of(err).find(what), std::string::npos) << reason_of(err);
    }
  };
  auto info = echo_info();
  refused(info, "registered twice");
  info.name = "cpu";
  refused(info, "registered twice");
  info.name = "";
  refused(info, "without a name");
  info = echo_info();
  info.name = "no_load";
  info.load = nullptr;
  refused(info, "no load function");
  info = echo_info();
  info.name = "bad_default";
  info.default_device = device_kind::gpu;
  refused(info, "default device");
  info = echo_info();
  info.name = "no_parser";
  info.parse = nullptr;
  refused(info, "no parser");
  info = echo_info();
  info.name = "steals_inputs";
  info.sections = {"inputs"};
  refused(info, "'inputs' is a common manifest key");
  info = echo_info();
  info.name = "steals_device";
  info.resource_keys = {"device"};
  refused(info, "resources.device is a common key");
  EXPECT_EQ(find_backend("no_load"), nullptr);
}

TEST_F(registry_test, a_backend_parses_its_own_sections) {
  auto spec = parse("echo_test", "[echo]\nlevel = 3\n[resources]\nloud = true");
  ASSERT_TRUE(spec) << reason_of(spec.error());
  auto opts = options_of<echo_options>(*spec);
  ASSERT_TRUE(opts) << reason_of(opts.error());
  EXPECT_EQ((*opts)->level, 3);
  EXPECT_TRUE((*opts)->loud);
  EXPECT_EQ(spec->device, "cpu");
  // Its errors name the file and the key.
  auto why = error_of("echo_test", "[echo]\nlevels = 3");
  EXPECT_NE(why.find("m/1/model.toml: echo.levels: unknown key"),
            std::string::npos)
      << why;
  why = error_of("echo_test", "[echo]\nlevel = \"high\"");
  EXPECT_NE(why.find("echo.level: expected an integer"), std::string::npos)
      << why;
}

TEST_F(registry_test, sections_and_resource_keys_belong_to_their_backend) {
  auto why = error_of("synthetic", "[echo]\nlevel = 3");
  EXPECT_NE(why.find("model.toml: echo: unknown key for backend = "
                     "\"synthetic\" (backend = \"echo_test\" reads it)"),
            std::string::npos)
      << why;
  why = error_of("echo_test", "[[layers]]\nop = \"relu\"");
  EXPECT_NE(why.find("layers: unknown key for backend = \"echo_test\" "
                     "(backend = \"cpu\" or \"cuda\" reads it)"),
            std::string::npos)
      << why;
  why = error_of("synthetic", "[resources]\nloud = true");
  EXPECT_NE(why.find("resources.loud: unknown key"), std::string::npos) << why;
  why = error_of("echo_test", "[resources]\nallow_tf32 = true");
  EXPECT_NE(why.find("resources.allow_tf32: unknown key"), std::string::npos)
      << why;
  why = error_of("synthetic", "colour = 1");
  EXPECT_NE(why.find("colour: unknown key"), std::string::npos) << why;
}

TEST_F(registry_test, devices_follow_the_declaration) {
  auto why = error_of("echo_test", "[resources]\ndevice = \"gpu\"");
  EXPECT_NE(why.find("resources.device: backend = \"echo_test\" runs on "
                     "device = \"cpu\", not \"gpu\""),
            std::string::npos)
      << why;
  why = error_of("cuda", "[resources]\ndevice = \"cpu\"\n[[layers]]\n"
                         "op = \"relu\"");
  EXPECT_NE(why.find("resources.device: backend = \"cuda\" runs on device = "
                     "\"gpu\" or \"any\", not \"cpu\""),
            std::string::npos)
      << why;
  why = error_of("synthetic", "[resources]\ndevice = \"tpu\"");
  EXPECT_NE(why.find("resources.device: must be cpu, gpu or any, got 'tpu'"),
            std::string::npos)
      << why;
  why = error_of("nope", "");
  EXPECT_NE(why.find("backend: unknown backend 'nope' (supported: cpu, cuda, "),
            std::string::npos)
      << why;
}

TEST_F(registry_test, load_and_may_block_ask_the_backend) {
  auto spec = parse("echo_test", "[echo]\nlevel = 2");
  ASSERT_TRUE(spec) << reason_of(spec.error());
  auto be = load_backend(*spec);
  ASSERT_TRUE(be) << reason_of(be.error());
  EXPECT_EQ((*be)->device(), "cpu:2");
  EXPECT_TRUE(backend_may_block(*spec));
  auto quiet = parse("echo_test", "");
  ASSERT_TRUE(quiet) << reason_of(quiet.error());
  EXPECT_FALSE(backend_may_block(*quiet));
  // A device the backend does not run on, in a spec built in code.
  auto gpu = *spec;
  gpu.device = "gpu";
  auto refused = load_backend(gpu);
  ASSERT_FALSE(refused);
  EXPECT_NE(reason_of(refused.error()).find("resources.device"),
            std::string::npos);
  // Another backend's options are an error, not a bad cast.
  auto mixed = *spec;
  mixed.options = std::make_shared<graph_options>();
  auto wrong = load_backend(mixed);
  ASSERT_FALSE(wrong);
  EXPECT_NE(reason_of(wrong.error()).find("options of another backend"),
            std::string::npos)
      << reason_of(wrong.error());
}

TEST_F(registry_test, specs_built_in_code_get_the_defaults) {
  model_spec spec;
  spec.backend = "synthetic";
  auto opts = options_of<synthetic_options>(spec);
  ASSERT_TRUE(opts);
  EXPECT_EQ((*opts)->scale, 2.0);
  EXPECT_FALSE(backend_may_block(spec));
  edit_options<synthetic_options>(spec, [](auto& p) { p.load_ms = 5; });
  EXPECT_TRUE(backend_may_block(spec));
  EXPECT_EQ((*options_of<synthetic_options>(spec))->scale, 2.0);
}
