#include "gpu/graph/graph.hpp"

#include <numeric>

#include "net/wire/error.hpp"

namespace shoal {

uint64_t dims_product(const std::vector<uint64_t>& dims) {
  return std::accumulate(dims.begin(), dims.end(), uint64_t{1},
                         std::multiplies<>{});
}

std::string dims_string(const std::vector<uint64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(dims[i]);
  }
  return out + "]";
}

namespace {

bool float_type(dtype t) {
  return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16 ||
         t == dtype::f64;
}

// Walks the layers in order, carrying the per-sample dims of the current
// activation from one layer to the next.
class graph_resolver {
public:
  graph_resolver(const model_spec& spec, const graph_options& graph,
                 const safetensors_file& file)
      : spec_(spec), graph_(graph), file_(file) {
    // nop
  }

  caf::expected<layer_graph> resolve(const char* backend) {
    if (auto err = take_input(backend)) {
      return err;
    }
    for (i_ = 0; i_ < graph_.layers.size(); ++i_) {
      if (auto err = add_step(graph_.layers[i_])) {
        return err;
      }
    }
    if (auto err = check_output()) {
      return err;
    }
    g_.out_dims = dims_;
    return std::move(g_);
  }

private:
  caf::error fail(const std::string& field, const std::string& what) const {
    return make_error(errc::unavailable,
                      spec_.dir + "/model.toml: layers[" + std::to_string(i_) +
                          "]" + (field.empty() ? "" : "." + field) + ": " +
                          what);
  }

  std::string missing(const std::string& name) const {
    return "tensor '" + name + "' is not in " + graph_.weights_file;
  }

  caf::error take_input(const char* backend) {
    auto& in = spec_.inputs.front();
    if (in.type != dtype::f32) {
      return make_error(errc::unavailable,
                        spec_.dir + "/model.toml: inputs[0].dtype: the " +
                            std::string{backend} + " backend takes f32");
    }
    for (size_t d = 1; d < in.shape.size(); ++d) {
      g_.in_dims.push_back(static_cast<uint64_t>(in.shape[d]));
    }
    dims_ = g_.in_dims;
    g_.widest = dims_product(dims_);
    return {};
  }

  // Looks a tensor up (none for an empty name) and checks its shape and
  // dtype.
  caf::error fetch(const char* field, const std::string& name,
                   const std::vector<uint64_t>& shape,
                   const tensor_view*& out) {
    if (name.empty()) {
      return {};
    }
    auto* t = file_.find(name);
    if (t == nullptr) {
      return fail(field, missing(name));
    }
    if (t->shape != shape) {
      return fail(field, "tensor '" + name + "' has shape " +
                             dims_string(t->shape) + ", the graph needs " +
                             dims_string(shape));
    }
    if (!float_type(t->type)) {
      return fail(field, "tensor '" + name + "' is " +
                             std::string{to_string(t->type)} +
                             ", weights must be f32, f16, bf16 or f64");
    }
    g_.weight_bytes += t->bytes;
    out = t;
    return {};
  }

  caf::error dense(const layer_spec& l, graph_step& s) {
    if (dims_.size() != 1) {
      return fail("", "dense takes one value axis, got " + dims_string(dims_) +
                          " (add a flatten layer)");
    }
    auto* t = file_.find(l.weight);
    if (t == nullptr || t->shape.size() != 2) {
      return fail("weight", t != nullptr
                                ? "tensor '" + l.weight + "' is not [out, in]"
                                : missing(l.weight));
    }
    auto out = t->shape[0];
    if (t->shape[1] != dims_[0]) {
      return fail("weight", "dense weight " + dims_string(t->shape) +
                                " takes " + std::to_string(t->shape[1]) +
                                " inputs, the previous layer gives " +
                                dims_string(dims_));
    }
    if (auto err = fetch("weight", l.weight, t->shape, s.w)) {
      return err;
    }
    if (auto err = fetch("bias", l.bias, {out}, s.b)) {
      return err;
    }
    dims_ = {out};
    return {};
  }

  caf::error layernorm(const layer_spec& l, graph_step& s) {
    if (auto err = fetch("weight", l.weight, {dims_.back()}, s.w)) {
      return err;
    }
    return fetch("bias", l.bias, {dims_.back()}, s.b);
  }

  // The convolution's shape from the input dims, the weight and the
  // layer's stride, padding and dilation.
  caf::error conv_shape(const layer_spec& l, const tensor_view& t,
                        conv2d_shape& c) {
    c.c_in = dims_[0];
    c.h = dims_[1];
    c.w = dims_[2];
    c.c_out = t.shape[0];
    c.kh = t.shape[2];
    c.kw = t.shape[3];
    if (t.shape[1] != c.c_in) {
      return fail("weight", "conv2d weight " + dims_string(t.shape) +
                                " takes " + std::to_string(t.shape[1]) +
                                " channels, the previous layer gives " +
                                dims_string(dims_));
    }
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
    if (auto err = check(c)) {
      return fail("", reason_of(err));
    }
    return {};
  }

  caf::error conv2d(const layer_spec& l, graph_step& s) {
    auto* t = file_.find(l.weight);
    if (dims_.size() != 3) {
      return fail("", "conv2d takes [c, h, w] per sample, got " +
                          dims_string(dims_));
    }
    if (t == nullptr || t->shape.size() != 4) {
      return fail("weight", "tensor '" + l.weight +
                                "' is missing or not [c_out, c_in, kh, kw]");
    }
    auto& c = s.conv;
    if (auto err = conv_shape(l, *t, c)) {
      return err;
    }
    if (auto err = fetch("weight", l.weight, t->shape, s.w)) {
      return err;
    }
    if (auto err = fetch("bias", l.bias, {c.c_out}, s.b)) {
      return err;
    }
    g_.cpu_workspace =
        std::max<uint64_t>(g_.cpu_workspace, c.workspace_floats());
    dims_ = {c.c_out, c.out_h(), c.out_w()};
    return {};
  }

  caf::error pool2d(const layer_spec& l, graph_step& s) {
    if (dims_.size() != 3) {
      return fail("", l.op + " takes [c, h, w] per sample, got " +
                          dims_string(dims_));
    }
    auto& p = s.pool;
    p.n = 1;
    p.c = dims_[0];
    p.h = dims_[1];
    p.w = dims_[2];
    p.kh = l.kernel[0];
    p.kw = l.kernel[1];
    p.stride_h = l.stride.empty() ? p.kh : l.stride[0];
    p.stride_w = l.stride.empty() ? p.kw : l.stride[1];
    if (!l.padding.empty()) {
      p.pad_h = l.padding[0];
      p.pad_w = l.padding[1];
    }
    if (auto err = check(p)) {
      return fail("", reason_of(err));
    }
    dims_ = {p.c, p.out_h(), p.out_w()};
    return {};
  }

  caf::error add(const layer_spec& l) {
    auto j = g_.saved_dims.find(l.from);
    if (j == g_.saved_dims.end()) {
      return fail("from", "no earlier layer saves '" + l.from + "'");
    }
    if (j->second != dims_) {
      return fail("from", "'" + l.from + "' is " + dims_string(j->second) +
                              " but the previous layer gives " +
                              dims_string(dims_));
    }
    return {};
  }

  caf::error shape_step(const layer_spec& l, graph_step& s) {
    if (l.op == "dense") {
      return dense(l, s);
    }
    if (l.op == "layernorm") {
      return layernorm(l, s);
    }
    if (l.op == "conv2d") {
      return conv2d(l, s);
    }
    if (l.op == "max_pool2d" || l.op == "avg_pool2d") {
      return pool2d(l, s);
    }
    if (l.op == "flatten") {
      dims_ = {dims_product(dims_)};
      return {};
    }
    if (l.op == "add") {
      return add(l);
    }
    // relu, gelu, softmax: the shape stays.
    return {};
  }

  caf::error add_step(const layer_spec& l) {
    graph_step s;
    s.op = l.op;
    s.in_dims = dims_;
    s.eps = static_cast<float>(l.eps);
    s.save = l.save;
    s.from = l.from;
    if (auto err = shape_step(l, s)) {
      return err;
    }
    s.out_dims = dims_;
    if (!l.save.empty()) {
      g_.saved_dims[l.save] = dims_;
    }
    g_.widest = std::max(g_.widest, dims_product(dims_));
    g_.steps.push_back(std::move(s));
    return {};
  }

  caf::error check_output() const {
    auto& out = spec_.outputs.front();
    std::vector<uint64_t> declared;
    for (size_t d = 1; d < out.shape.size(); ++d) {
      declared.push_back(static_cast<uint64_t>(out.shape[d]));
    }
    if (declared == dims_ && out.type == dtype::f32) {
      return {};
    }
    return make_error(errc::unavailable,
                      spec_.dir + "/model.toml: outputs[0]: the graph gives " +
                          dims_string(dims_) + " f32 per sample, declared " +
                          dims_string(declared) + " " +
                          std::string{to_string(out.type)});
  }

  const model_spec& spec_;
  const graph_options& graph_;
  const safetensors_file& file_;
  layer_graph g_;
  std::vector<uint64_t> dims_; // per sample, after the layers so far
  size_t i_ = 0;               // the layer being resolved
};

} // namespace

caf::expected<layer_graph> resolve_graph(const model_spec& spec,
                                         const graph_options& graph,
                                         const safetensors_file& file,
                                         const char* backend) {
  return graph_resolver{spec, graph, file}.resolve(backend);
}

} // namespace shoal
