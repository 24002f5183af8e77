#include "gpu/cpu_backend.hpp"

#include <cstring>
#include <numeric>

#include "net/error.hpp"

namespace shoal {

namespace {

uint64_t prod(const std::vector<uint64_t>& dims) {
  return std::accumulate(dims.begin(), dims.end(), uint64_t{1},
                         std::multiplies<>{});
}

std::string dims_str(const std::vector<uint64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i)
    out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

caf::error layer_error(const model_spec& spec, size_t i,
                       const std::string& field, const std::string& what) {
  return make_error(errc::unavailable,
                    spec.dir + "/model.toml: layers[" + std::to_string(i) +
                        "]" + (field.empty() ? "" : "." + field) + ": " + what);
}

} // namespace

caf::expected<const float*>
cpu_backend::weight(const model_spec& spec, size_t layer, const char* field,
                    const std::string& name,
                    const std::vector<uint64_t>& shape) {
  auto* t = file_.find(name);
  if (!t)
    return layer_error(spec, layer, field,
                       "tensor '" + name + "' is not in " + spec.weights_file);
  if (t->shape != shape)
    return layer_error(spec, layer, field,
                       "tensor '" + name + "' has shape " + dims_str(t->shape) +
                           ", the graph needs " + dims_str(shape));
  weight_bytes_ += t->bytes;
  auto aligned = reinterpret_cast<uintptr_t>(t->data) % alignof(float) == 0;
  if (t->type == dtype::f32 && aligned)
    return reinterpret_cast<const float*>(t->data);
  auto converted = to_f32(*t);
  if (!converted)
    return layer_error(spec, layer, field, reason_of(converted.error()));
  owned_.push_back(std::make_unique<std::vector<float>>(std::move(*converted)));
  return owned_.back()->data();
}

caf::expected<backend_ptr> cpu_backend::load(const model_spec& spec) {
  std::unique_ptr<cpu_backend> be{new cpu_backend};
  be->spec_ = spec;
  if (!spec.weights_file.empty()) {
    auto f = safetensors_file::open(spec.dir + "/" + spec.weights_file);
    if (!f)
      return make_error(errc::unavailable, reason_of(f.error()));
    be->file_ = std::move(*f);
  }
  auto& in = spec.inputs.front();
  if (in.type != dtype::f32)
    return make_error(errc::unavailable, spec.dir + "/model.toml: inputs[0]."
                                                    "dtype: the cpu backend "
                                                    "takes f32");
  std::vector<uint64_t> dims;
  for (size_t d = 1; d < in.shape.size(); ++d)
    dims.push_back(static_cast<uint64_t>(in.shape[d]));
  std::map<std::string, std::vector<uint64_t>> saved_dims;
  uint64_t widest = prod(dims);
  uint64_t workspace = 0;
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    auto& l = spec.layers[i];
    step s;
    s.op = l.op;
    s.in_dims = dims;
    s.eps = static_cast<float>(l.eps);
    s.save = l.save;
    s.from = l.from;
    auto fetch = [&](const char* field, const std::string& name,
                     std::vector<uint64_t> shape,
                     const float*& out) -> caf::error {
      if (name.empty())
        return {};
      auto w = be->weight(spec, i, field, name, std::move(shape));
      if (!w)
        return w.error();
      out = *w;
      return {};
    };
    if (l.op == "dense") {
      if (dims.size() != 1)
        return layer_error(spec, i, "",
                           "dense takes one value axis, got " + dims_str(dims) +
                               " (add a flatten layer)");
      auto* t = be->file_.find(l.weight);
      if (!t || t->shape.size() != 2)
        return layer_error(spec, i, "weight",
                           t ? "tensor '" + l.weight + "' is not [out, in]"
                             : "tensor '" + l.weight + "' is not in " +
                                   spec.weights_file);
      auto out = t->shape[0];
      if (t->shape[1] != dims[0])
        return layer_error(spec, i, "weight",
                           "dense weight " + dims_str(t->shape) + " takes " +
                               std::to_string(t->shape[1]) +
                               " inputs, the previous layer gives " +
                               dims_str(dims));
      if (auto err = fetch("weight", l.weight, t->shape, s.w))
        return err;
      if (auto err = fetch("bias", l.bias, {out}, s.b))
        return err;
      dims = {out};
    } else if (l.op == "layernorm") {
      if (auto err = fetch("weight", l.weight, {dims.back()}, s.w))
        return err;
      if (auto err = fetch("bias", l.bias, {dims.back()}, s.b))
        return err;
    } else if (l.op == "conv2d") {
      auto* t = be->file_.find(l.weight);
      if (dims.size() != 3)
        return layer_error(spec, i, "",
                           "conv2d takes [c, h, w] per sample, "
                           "got " +
                               dims_str(dims));
      if (!t || t->shape.size() != 4)
        return layer_error(spec, i, "weight",
                           "tensor '" + l.weight +
                               "' is missing or not [c_out, c_in, kh, kw]");
      auto& c = s.conv;
      c.c_in = dims[0];
      c.h = dims[1];
      c.w = dims[2];
      c.c_out = t->shape[0];
      c.kh = t->shape[2];
      c.kw = t->shape[3];
      if (t->shape[1] != c.c_in)
        return layer_error(spec, i, "weight",
                           "conv2d weight " + dims_str(t->shape) + " takes " +
                               std::to_string(t->shape[1]) +
                               " channels, the previous layer gives " +
                               dims_str(dims));
      if (!l.stride.empty()) {
        c.stride_h = l.stride[0];
        c.stride_w = l.stride[1];
      }
      if (!l.padding.empty()) {
        c.pad_h = l.padding[0];
        c.pad_w = l.padding[1];
      }
      if (!l.dilation.empty()) {
        c.dilation_h = l.dilation[0];
        c.dilation_w = l.dilation[1];
      }
      c.n = 1;
      if (auto err = cpu::check(c))
        return layer_error(spec, i, "", reason_of(err));
      if (auto err = fetch("weight", l.weight, t->shape, s.w))
        return err;
      if (auto err = fetch("bias", l.bias, {c.c_out}, s.b))
        return err;
      workspace = std::max<uint64_t>(workspace, c.workspace_floats());
      dims = {c.c_out, c.out_h(), c.out_w()};
    } else if (l.op == "max_pool2d" || l.op == "avg_pool2d") {
      if (dims.size() != 3)
        return layer_error(spec, i, "",
                           l.op +
                               " takes [c, h, w] per sample, "
                               "got " +
                               dims_str(dims));
      auto& p = s.pool;
      p.n = 1;
      p.c = dims[0];
      p.h = dims[1];
      p.w = dims[2];
      p.kh = l.kernel[0];
      p.kw = l.kernel[1];
      p.stride_h = l.stride.empty() ? p.kh : l.stride[0];
      p.stride_w = l.stride.empty() ? p.kw : l.stride[1];
      if (!l.padding.empty()) {
        p.pad_h = l.padding[0];
        p.pad_w = l.padding[1];
      }
      if (auto err = cpu::check(p))
        return layer_error(spec, i, "", reason_of(err));
      dims = {p.c, p.out_h(), p.out_w()};
    } else if (l.op == "flatten") {
      dims = {prod(dims)};
    } else if (l.op == "add") {
      auto j = saved_dims.find(l.from);
      if (j == saved_dims.end())
        return layer_error(spec, i, "from",
                           "no earlier layer saves '" + l.from + "'");
      if (j->second != dims)
        return layer_error(spec, i, "from",
                           "'" + l.from + "' is " + dims_str(j->second) +
                               " but the previous layer gives " +
                               dims_str(dims));
    }
    s.out_dims = dims;
    if (!l.save.empty())
      saved_dims[l.save] = dims;
    widest = std::max(widest, prod(dims));
    be->steps_.push_back(std::move(s));
  }
  auto& out = spec.outputs.front();
  std::vector<uint64_t> declared;
  for (size_t d = 1; d < out.shape.size(); ++d)
    declared.push_back(static_cast<uint64_t>(out.shape[d]));
  if (declared != dims || out.type != dtype::f32)
    return make_error(errc::unavailable,
                      spec.dir + "/model.toml: outputs[0]: the graph gives " +
                          dims_str(dims) + " f32 per sample, declared " +
                          dims_str(declared) + " " +
                          std::string{to_string(out.type)});
  // Scratch for a full batch, so that serving never allocates.
  auto rows = std::max<uint64_t>(1, spec.max_batch);
  be->widest_ = widest;
  be->a_.resize(rows * widest);
  be->b_.resize(rows * widest);
  be->workspace_.resize(workspace);
  for (auto& [name, d] : saved_dims)
    be->saved_[name].resize(rows * prod(d));
  return backend_ptr{std::move(be)};
}

caf::expected<std::vector<tensor>>
cpu_backend::run(const std::vector<tensor>& inputs, uint64_t rows) {
  auto& x = inputs.front();
  auto in_n = rows * prod(steps_.empty() ? std::vector<uint64_t>{}
                                         : steps_.front().in_dims);
  if (x.data.size() != in_n * sizeof(float))
    return make_error(errc::invalid_argument, "input size does not match");
  if (a_.size() < rows * widest_) { // a batch above max_batch: grow once
    a_.resize(rows * widest_);
    b_.resize(rows * widest_);
  }
  std::memcpy(a_.data(), x.data.data(), x.data.size());
  float* cur = a_.data();
  float* next = b_.data();
  for (auto& s : steps_) {
    auto n_in = rows * prod(s.in_dims);
    auto n_out = rows * prod(s.out_dims);
    if (s.op == "dense") {
      cpu::dense(cur, rows, s.in_dims[0], s.w, s.b, s.out_dims[0], next);
      std::swap(cur, next);
    } else if (s.op == "relu") {
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
      std::swap(cur, next);
    } else if (s.op == "max_pool2d" || s.op == "avg_pool2d") {
      auto p = s.pool;
      p.n = rows;
      if (s.op == "max_pool2d")
        cpu::max_pool2d(cur, p, next);
      else
        cpu::avg_pool2d(cur, p, next);
      std::swap(cur, next);
    } else if (s.op == "add") {
      auto& r = saved_[s.from];
      cpu::add(cur, r.data(), n_in);
    }
    // flatten: NCHW per sample is already one contiguous row.
    if (!s.save.empty()) {
      auto& keep = saved_[s.save];
      if (keep.size() < n_out)
        keep.resize(n_out);
      std::memcpy(keep.data(), cur, n_out * sizeof(float));
    }
  }
  auto& decl = spec_.outputs.front();
  tensor out;
  out.name = decl.name;
  out.type = dtype::f32;
  out.shape = {rows};
  for (auto d : steps_.back().out_dims)
    out.shape.push_back(d);
  auto n = rows * prod(steps_.back().out_dims);
  out.data.resize(n * sizeof(float));
  std::memcpy(out.data.data(), cur, out.data.size());
  std::vector<tensor> result;
  result.push_back(std::move(out));
  return result;
}

uint64_t cpu_backend::memory_bytes() const noexcept {
  uint64_t scratch = (a_.size() + b_.size() + workspace_.size()) * 4;
  for (auto& [k, v] : saved_)
    scratch += v.size() * 4;
  return weight_bytes_ + scratch;
}

std::string cpu_backend::device() const {
  return "cpu";
}

} // namespace shoal
