#include "tests/support/tensors.hpp"

#include <cstring>

namespace shoal::test {

tensor f32_tensor(std::vector<uint64_t> shape,
                  const std::vector<float>& values) {
  tensor t;
  t.type = dtype::f32;
  t.shape = std::move(shape);
  t.data.resize(values.size() * sizeof(float));
  std::memcpy(t.data.data(), values.data(), t.data.size());
  return t;
}

std::vector<float> random_values(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> d{0.0f, scale};
  std::vector<float> v(n);
  for (auto& x : v) {
    x = d(rng);
  }
  return v;
}

std::vector<std::pair<std::string, tensor>> mlp_weights::tensors() const {
  return {{"fc1.weight", f32_tensor({hidden, in}, w1)},
          {"fc1.bias", f32_tensor({hidden}, b1)},
          {"fc2.weight", f32_tensor({out, hidden}, w2)},
          {"fc2.bias", f32_tensor({out}, b2)}};
}

size_t mlp_weights::bytes() const {
  return (w1.size() + b1.size() + w2.size() + b2.size()) * sizeof(float);
}

mlp_weights random_mlp(size_t in, size_t hidden, size_t out, std::mt19937& rng,
                       float weight_scale, float bias_scale) {
  mlp_weights w;
  w.in = in;
  w.hidden = hidden;
  w.out = out;
  w.w1 = random_values(hidden * in, rng, weight_scale);
  w.b1 = random_values(hidden, rng, bias_scale);
  w.w2 = random_values(out * hidden, rng, weight_scale);
  w.b2 = random_values(out, rng, bias_scale);
  return w;
}

const char* const mlp_layers =
    "[[layers]]\nop = \"dense\"\nweight = \"fc1.weight\"\n"
    "bias = \"fc1.bias\"\n"
    "[[layers]]\nop = \"relu\"\n"
    "[[layers]]\nop = \"dense\"\nweight = \"fc2.weight\"\n"
    "bias = \"fc2.bias\"\n"
    "[[layers]]\nop = \"softmax\"\n";

std::string cpu_manifest(size_t in, size_t out, const std::string& batching,
                         const std::string& layers) {
  return "backend = \"cpu\"\n"
         "[[inputs]]\nname = \"x\"\ndtype = \"f32\"\nshape = [-1, " +
         std::to_string(in) +
         "]\n"
         "[[outputs]]\nname = \"probs\"\ndtype = \"f32\"\nshape = [-1, " +
         std::to_string(out) + "]\n[batching]\n" + batching +
         "[weights]\nfile = \"model.safetensors\"\n" + layers;
}

} // namespace shoal::test
