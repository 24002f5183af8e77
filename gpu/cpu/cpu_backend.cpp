#include "gpu/cpu/cpu_backend.hpp"

#include <cstring>

#include "net/wire/error.hpp"

namespace shoal {

namespace {

caf::expected<backend_ptr> load_cpu_graph(const model_spec& spec,
                                          device_choice where,
                                          const load_options& opts) {
  if (where.on_gpu) {
    return load_with_backend("cuda", spec, where, opts);
  }
  return cpu_backend::load(spec);
}

} // namespace

backend_info cpu_backend_info() {
  return {
      .name = "cpu",
      .sections = graph_sections(),
      .resource_keys = graph_resource_keys(),
      .devices = {device_kind::cpu, device_kind::gpu, device_kind::any},
      .default_device = device_kind::cpu,
      .parse = parse_graph_options,
      .load = load_cpu_graph,
      .may_block = {},
  };
}

caf::expected<const float*> cpu_backend::weight(const tensor_view* t) {
  if (!t) {
    return static_cast<const float*>(nullptr);
  }
  auto aligned = reinterpret_cast<uintptr_t>(t->data) % alignof(float) == 0;
  if (t->type == dtype::f32 && aligned) {
    return reinterpret_cast<const float*>(t->data);
  }
  auto converted = to_f32(*t);
  if (!converted) {
    return make_error(errc::unavailable, weights_path_ + ": " + t->name + ": " +
                                             reason_of(converted.error()));
  }
  owned_.push_back(std::make_unique<std::vector<float>>(std::move(*converted)));
  return owned_.back()->data();
}

caf::expected<backend_ptr> cpu_backend::load(const model_spec& spec) {
  auto graph = options_of<graph_options>(spec);
  if (!graph) {
    return graph.error();
  }
  std::unique_ptr<cpu_backend> be{new cpu_backend};
  be->spec_ = spec;
  be->weights_path_ = spec.dir + "/" + (*graph)->weights_file;
  if (!(*graph)->weights_file.empty()) {
    auto f = safetensors_file::open(be->weights_path_);
    if (!f) {
      return make_error(errc::unavailable, reason_of(f.error()));
    }
    be->file_ = std::move(*f);
  }
  auto g = resolve_graph(spec, **graph, be->file_, "cpu");
  if (!g) {
    return g.error();
  }
  for (auto& gs : g->steps) {
    step s;
    s.op = gs.op;
    s.in_dims = gs.in_dims;
    s.out_dims = gs.out_dims;
    s.conv = gs.conv;
    s.pool = gs.pool;
    s.eps = gs.eps;
    s.save = gs.save;
    s.from = gs.from;
    auto w = be->weight(gs.w);
    if (!w) {
      return w.error();
    }
    auto b = be->weight(gs.b);
    if (!b) {
      return b.error();
    }
    s.w = *w;
    s.b = *b;
    be->steps_.push_back(std::move(s));
  }
  be->weight_bytes_ = g->weight_bytes;
  // Scratch for a full batch, so that serving never allocates.
  auto rows = std::max<uint64_t>(1, spec.max_batch);
  be->widest_ = g->widest;
  be->a_.resize(rows * g->widest);
  be->b_.resize(rows * g->widest);
  be->workspace_.resize(g->cpu_workspace);
  for (auto& [name, d] : g->saved_dims) {
    be->saved_[name].resize(rows * dims_product(d));
  }
  return backend_ptr{std::move(be)};
}

float* cpu_backend::run_step(const step& s, uint64_t rows, float* cur,
                             float* next) {
  auto n_in = rows * dims_product(s.in_dims);
  if (s.op == "dense") {
    cpu::dense(cur, rows, s.in_dims[0], s.w, s.b, s.out_dims[0], next);
    return next;
  }
  if (s.op == "relu") {
    cpu::relu(cur, n_in);
  } else if (s.op == "gelu") {
    cpu::gelu(cur, n_in);
  } else if (s.op == "softmax") {
    auto cols = s.in_dims.back();
    cpu::softmax(cur, n_in / cols, cols);
  } else if (s.op == "layernorm") {
    auto cols = s.in_dims.back();
    cpu::layernorm(cur, n_in / cols, cols, s.w, s.b, s.eps);
  } else if (s.op == "conv2d") {
    auto c = s.conv;
    c.n = rows;
    cpu::conv2d(cur, c, s.w, s.b, next, workspace_.data());
    return next;
  } else if (s.op == "max_pool2d" || s.op == "avg_pool2d") {
    auto p = s.pool;
    p.n = rows;
    if (s.op == "max_pool2d") {
      cpu::max_pool2d(cur, p, next);
    } else {
      cpu::avg_pool2d(cur, p, next);
    }
    return next;
  } else if (s.op == "add") {
    cpu::add(cur, saved_[s.from].data(), n_in);
  }
  // flatten: NCHW per sample is already one contiguous row.
  return cur;
}

void cpu_backend::save(const step& s, uint64_t rows, const float* cur) {
  auto n_out = rows * dims_product(s.out_dims);
  auto& keep = saved_[s.save];
  if (keep.size() < n_out) {
    keep.resize(n_out);
  }
  std::memcpy(keep.data(), cur, n_out * sizeof(float));
}

caf::expected<std::vector<tensor>>
cpu_backend::run(const std::vector<tensor>& inputs, uint64_t rows) {
  auto& x = inputs.front();
  auto in_n = rows * dims_product(steps_.empty() ? std::vector<uint64_t>{}
                                                 : steps_.front().in_dims);
  if (x.data.size() != in_n * sizeof(float)) {
    return make_error(errc::invalid_argument, "input size does not match");
  }
  if (a_.size() < rows * widest_) { // a batch above max_batch: grow once
    a_.resize(rows * widest_);
    b_.resize(rows * widest_);
  }
  std::memcpy(a_.data(), x.data.data(), x.data.size());
  float* cur = a_.data();
  float* next = b_.data();
  for (size_t i = 0; i < steps_.size(); ++i) {
    auto& s = steps_[i];
    auto* out = run_step(s, rows, cur, next);
    if (out == next) {
      std::swap(cur, next);
    }
    if (!s.save.empty()) {
      save(s, rows, cur);
    }
    // Progress by layers; a cancelled batch stops before the next one.
    if (i + 1 < steps_.size() && !step_done(i + 1, steps_.size())) {
      return make_error(errc::cancelled, "cancelled after layer " +
                                             std::to_string(i + 1) + " of " +
                                             std::to_string(steps_.size()));
    }
  }
  tensor out;
  out.name = spec_.outputs.front().name;
  out.type = dtype::f32;
  out.shape = {rows};
  for (auto d : steps_.back().out_dims) {
    out.shape.push_back(d);
  }
  auto n = rows * dims_product(steps_.back().out_dims);
  out.data.resize(n * sizeof(float));
  std::memcpy(out.data.data(), cur, out.data.size());
  std::vector<tensor> result;
  result.push_back(std::move(out));
  return result;
}

uint64_t cpu_backend::memory_bytes() const noexcept {
  uint64_t scratch = (a_.size() + b_.size() + workspace_.size()) * 4;
  for (auto& [k, v] : saved_) {
    scratch += v.size() * 4;
  }
  return weight_bytes_ + scratch;
}

std::string cpu_backend::device() const {
  return "cpu";
}

} // namespace shoal
