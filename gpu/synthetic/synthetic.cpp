#include "gpu/synthetic/synthetic.hpp"

#include <chrono>
#include <cstring>
#include <thread>

#include "gpu/model/manifest_reader.hpp"
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
  if (in.type == dtype::f32 && out.type == dtype::f32) {
    affine<float, float>(s, d, n, scale, offset);
  } else if (in.type == dtype::f64 && out.type == dtype::f64) {
    affine<double, double>(s, d, n, scale, offset);
  } else if (in.type == dtype::f32 && out.type == dtype::f64) {
    affine<float, double>(s, d, n, scale, offset);
  } else if (in.type == dtype::i32 && out.type == dtype::i32) {
    affine<int32_t, int32_t>(s, d, n, scale, offset);
  } else if (in.type == dtype::i64 && out.type == dtype::i64) {
    affine<int64_t, int64_t>(s, d, n, scale, offset);
  } else {
    std::memcpy(d, s, std::min(in.data.size(), out.data.size()));
  }
}

void spin_or_sleep(std::chrono::microseconds d) {
  if (d.count() <= 0) {
    return;
  }
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

caf::expected<backend_options_ptr> parse_synthetic(const manifest_reader& rd,
                                                   const model_spec&) {
  auto p = std::make_shared<synthetic_options>();
  auto s = rd.table("synthetic");
  if (!s) {
    return s.error();
  }
  if (*s == nullptr) {
    return p;
  }
  auto& t = **s;
  const std::string prefix = "synthetic.";
  caf::error err;
  (err = rd.only(t, prefix,
                 {"cost_per_batch_us", "cost_per_item_us", "scale", "offset",
                  "crash_after_batches", "load_ms", "steps",
                  "cost_per_step_us"})) ||
      (err = rd.get(t, prefix, "cost_per_batch_us", p->cost_per_batch_us)) ||
      (err = rd.get(t, prefix, "cost_per_item_us", p->cost_per_item_us)) ||
      (err = rd.get(t, prefix, "scale", p->scale)) ||
      (err = rd.get(t, prefix, "offset", p->offset)) ||
      (err =
           rd.get(t, prefix, "crash_after_batches", p->crash_after_batches)) ||
      (err = rd.get(t, prefix, "load_ms", p->load_ms)) ||
      (err = rd.get(t, prefix, "steps", p->steps)) ||
      (err = rd.get(t, prefix, "cost_per_step_us", p->cost_per_step_us));
  if (err) {
    return err;
  }
  return p;
}

caf::expected<backend_ptr> load_synthetic(const model_spec& spec, device_choice,
                                          const load_options&) {
  auto p = options_of<synthetic_options>(spec);
  if (!p) {
    return p.error();
  }
  if (auto err = check_synthetic(spec)) {
    return err;
  }
  if ((*p)->load_ms > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds{(*p)->load_ms});
  }
  return backend_ptr{std::make_unique<synthetic_backend>(spec)};
}

// The zero-cost model runs on the actor scheduler, saving two thread hops
// per request; one that sleeps gets a thread of its own.
bool synthetic_may_block(const model_spec& spec) {
  auto p = options_of<synthetic_options>(spec);
  return !p || (*p)->cost_per_batch_us > 0 || (*p)->cost_per_item_us > 0 ||
         (*p)->load_ms > 0 || (*p)->steps > 0;
}

} // namespace

backend_info synthetic_backend_info() {
  return {
      .name = "synthetic",
      .sections = {"synthetic"},
      .resource_keys = {},
      .devices = {device_kind::cpu},
      .default_device = device_kind::cpu,
      .parse = parse_synthetic,
      .load = load_synthetic,
      .may_block = synthetic_may_block,
  };
}

caf::error check_synthetic(const model_spec& spec) {
  for (size_t i = 0; i < spec.outputs.size(); ++i) {
    auto& out = spec.outputs[i];
    auto& in = spec.inputs[std::min(i, spec.inputs.size() - 1)];
    if (out.shape != in.shape) {
      return make_error(errc::unavailable,
                        spec.dir + "/model.toml: outputs[" + std::to_string(i) +
                            "].shape: a synthetic output has the shape of "
                            "input '" +
                            in.name + "'");
    }
    if (dtype_size(out.type) == 0) {
      return make_error(errc::unavailable, spec.dir + "/model.toml: outputs[" +
                                               std::to_string(i) +
                                               "].dtype: unsupported");
    }
  }
  return {};
}

synthetic_backend::synthetic_backend(const model_spec& spec) : spec_(spec) {
  if (auto p = options_of<synthetic_options>(spec)) {
    params_ = **p;
  }
}

caf::expected<std::vector<tensor>>
synthetic_backend::run(const std::vector<tensor>& inputs, uint64_t rows) {
  ++batches_;
  auto& p = params_;
  auto cost = std::chrono::microseconds{p.cost_per_batch_us +
                                        p.cost_per_item_us * rows};
  if (p.crash_after_batches > 0 && batches_ >= p.crash_after_batches) {
    // Die halfway through the batch, as a faulting kernel would.
    spin_or_sleep(cost / 2);
    throw synthetic_crash{"synthetic fault hook: crash in batch " +
                          std::to_string(batches_)};
  }
  spin_or_sleep(cost);
  if (auto err = run_steps()) {
    return err;
  }
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

caf::error synthetic_backend::run_steps() {
  auto& p = params_;
  for (uint64_t i = 1; i <= p.steps; ++i) {
    spin_or_sleep(std::chrono::microseconds{p.cost_per_step_us});
    if (!step_done(i, p.steps)) {
      return make_error(errc::cancelled, "cancelled after step " +
                                             std::to_string(i) + " of " +
                                             std::to_string(p.steps));
    }
  }
  return {};
}

uint64_t synthetic_backend::memory_bytes() const noexcept {
  return 0;
}

std::string synthetic_backend::device() const {
  return "cpu";
}

} // namespace shoal
