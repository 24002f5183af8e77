// A node with one more backend, defined and registered in this file alone:
// `polynomial` maps each element of its one f32 input to
// c0 + c1·x + c2·x² + ... with the coefficients of its own manifest section,
//
//   backend = "polynomial"
//   [polynomial]
//   coefficients = [1.0, -2.0, 0.5]
//
// tests/integration/backend_registry.sh runs it as a real node and checks
// the outputs and the section parser's errors.
#include <cstring>
#include <memory>
#include <vector>

#include "gpu/model/manifest_reader.hpp"
#include "gpu/registry.hpp"
#include "runtime/node/shoald.hpp"

namespace {

using namespace shoal;

struct polynomial_options : backend_options {
  std::vector<double> coefficients; // c0 first
};

class polynomial_backend : public backend {
public:
  polynomial_backend(const model_spec& spec, polynomial_options options)
      : output_(spec.outputs.front().name), options_(std::move(options)) {
    // nop
  }

  caf::expected<std::vector<tensor>> run(const std::vector<tensor>& inputs,
                                         uint64_t) override {
    auto& x = inputs.front();
    tensor y{output_, dtype::f32, x.shape, x.data};
    for (size_t i = 0; i < y.data.size() / sizeof(float); ++i) {
      float v = 0;
      std::memcpy(&v, x.data.data() + i * sizeof(float), sizeof(float));
      double sum = 0; // Horner, highest coefficient first
      for (auto c = options_.coefficients.rbegin();
           c != options_.coefficients.rend(); ++c) {
        sum = sum * v + *c;
      }
      auto out = static_cast<float>(sum);
      std::memcpy(y.data.data() + i * sizeof(float), &out, sizeof(float));
    }
    return std::vector<tensor>{std::move(y)};
  }

  uint64_t memory_bytes() const noexcept override { return 0; }
  std::string device() const override { return "cpu"; }

private:
  std::string output_;
  polynomial_options options_;
};

// [polynomial]: coefficients, 1 to 8 numbers; one f32 input and one f32
// output of the same shape.
caf::expected<backend_options_ptr> parse_polynomial(const manifest_reader& rd,
                                                    const model_spec& spec) {
  auto tbl = rd.table("polynomial");
  if (!tbl) {
    return tbl.error();
  }
  if (*tbl == nullptr) {
    return rd.fail("polynomial", "required: [polynomial] coefficients");
  }
  if (auto err = rd.only(**tbl, "polynomial.", {"coefficients"})) {
    return err;
  }
  auto* arr = (*tbl)->get_as<toml::array>("coefficients");
  if (arr == nullptr || arr->empty() || arr->size() > 8) {
    return rd.fail("polynomial.coefficients", "expected 1 to 8 numbers");
  }
  auto opts = std::make_shared<polynomial_options>();
  for (auto& c : *arr) {
    auto v = c.value<double>();
    if (!v) {
      return rd.fail("polynomial.coefficients", "expected 1 to 8 numbers");
    }
    opts->coefficients.push_back(*v);
  }
  auto& in = spec.inputs;
  auto& out = spec.outputs;
  if (in.size() != 1 || out.size() != 1 || in[0].type != dtype::f32 ||
      out[0].type != dtype::f32 || in[0].shape != out[0].shape) {
    return rd.fail("outputs", "the polynomial backend maps one f32 input to "
                              "one f32 output of the same shape");
  }
  return opts;
}

caf::expected<backend_ptr> load_polynomial(const model_spec& spec,
                                           device_choice, const load_options&) {
  auto opts = options_of<polynomial_options>(spec);
  if (!opts) {
    return opts.error();
  }
  return backend_ptr{std::make_unique<polynomial_backend>(spec, **opts)};
}

} // namespace

SHOAL_REGISTER_BACKEND(shoal::backend_info{
    .name = "polynomial",
    .sections = {"polynomial"},
    .parse = parse_polynomial,
    .load = load_polynomial,
    .may_block = [](const shoal::model_spec&) { return false; },
});

int main(int argc, char** argv) {
  return shoal::shoald_main(argc, argv);
}
