#include "gpu/synthetic/synthetic.hpp"

#include <chrono>
#include <cstring>
#include <thread>

#include "net/wire/error.hpp"

namespace shoal {

namespace {

template <class In, class Out>
void affine(const uint8_t* src, uint8_t* dst, size_t n, double scale,
            double offset) {
  for (size_t i = 0; i < n; ++i) {
    In x;
    std::memcpy(&x, src + i * sizeof(In), sizeof(In));
    auto y = static_cast<Out>(scale * static_cast<double>(x) + offset);
    std::memcpy(dst + i * sizeof(Out), &y, sizeof(Out));
  }
}

// Elementwise y = scale * x + offset for the numeric dtypes both sides
// share; other combinations copy bytes (the outputs stay deterministic).
void transform(const tensor& in, tensor& out, double scale, double offset) {
  auto n = in.element_count().value_or(0);
  out.data.resize(n * dtype_size(out.type));
  auto* s = in.data.data();
  auto* d = out.data.data();
  if (in.type == dtype::f32 && out.type == dtype::f32)
    affine<float, float>(s, d, n, scale, offset);
  else if (in.type == dtype::f64 && out.type == dtype::f64)
    affine<double, double>(s, d, n, scale, offset);
  else if (in.type == dtype::f32 && out.type == dtype::f64)
    affine<float, double>(s, d, n, scale, offset);
  else if (in.type == dtype::i32 && out.type == dtype::i32)
    affine<int32_t, int32_t>(s, d, n, scale, offset);
  else if (in.type == dtype::i64 && out.type == dtype::i64)
    affine<int64_t, int64_t>(s, d, n, scale, offset);
  else
    std::memcpy(d, s, std::min(in.data.size(), out.data.size()));
}

void spin_or_sleep(std::chrono::microseconds d) {
  if (d.count() <= 0)
    return;
  // Sleep like a thread waiting on a device would; short costs spin for
  // accuracy.
  if (d < std::chrono::microseconds{200}) {
    auto until = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < until)
      ;
  } else {
    std::this_thread::sleep_for(d);
  }
}

} // namespace

caf::error check_synthetic(const model_spec& spec) {
  for (size_t i = 0; i < spec.outputs.size(); ++i) {
    auto& out = spec.outputs[i];
    auto& in = spec.inputs[std::min(i, spec.inputs.size() - 1)];
    if (out.shape != in.shape)
      return make_error(errc::unavailable,
                        spec.dir + "/model.toml: outputs[" + std::to_string(i) +
                            "].shape: a synthetic output has the shape of "
                            "input '" +
                            in.name + "'");
    if (dtype_size(out.type) == 0)
      return make_error(errc::unavailable, spec.dir + "/model.toml: outputs[" +
                                               std::to_string(i) +
                                               "].dtype: unsupported");
  }
  return {};
}

synthetic_backend::synthetic_backend(const model_spec& spec) : spec_(spec) {
  // nop
}

caf::expected<std::vector<tensor>>
synthetic_backend::run(const std::vector<tensor>& inputs, uint64_t rows) {
  ++batches_;
  auto& p = spec_.synthetic;
  auto cost = std::chrono::microseconds{p.cost_per_batch_us +
                                        p.cost_per_item_us * rows};
  if (p.crash_after_batches > 0 && batches_ >= p.crash_after_batches) {
    // Die halfway through the batch, as a faulting kernel would.
    spin_or_sleep(cost / 2);
    throw synthetic_crash{"synthetic fault hook: crash in batch " +
                          std::to_string(batches_)};
  }
  spin_or_sleep(cost);
  std::vector<tensor> outputs;
  outputs.reserve(spec_.outputs.size());
  for (size_t i = 0; i < spec_.outputs.size(); ++i) {
    auto& decl = spec_.outputs[i];
    auto& in = inputs[std::min(i, inputs.size() - 1)];
    tensor out;
    out.name = decl.name;
    out.type = decl.type;
    out.shape = in.shape;
    transform(in, out, p.scale, p.offset);
    outputs.push_back(std::move(out));
  }
  return outputs;
}

uint64_t synthetic_backend::memory_bytes() const noexcept {
  return 0;
}

std::string synthetic_backend::device() const {
  return "cpu";
}

} // namespace shoal
