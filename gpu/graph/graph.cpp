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
  for (size_t i = 0; i < dims.size(); ++i)
    out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

namespace {

caf::error layer_error(const model_spec& spec, size_t i,
                       const std::string& field, const std::string& what) {
  return make_error(errc::unavailable,
                    spec.dir + "/model.toml: layers[" + std::to_string(i) +
                        "]" + (field.empty() ? "" : "." + field) + ": " + what);
}

bool float_type(dtype t) {
  return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16 ||
         t == dtype::f64;
}

} // namespace

caf::expected<layer_graph> resolve_graph(const model_spec& spec,
                                         const graph_options& graph,
                                         const safetensors_file& file,
                                         const char* backend) {
  layer_graph g;
  auto& in = spec.inputs.front();
  if (in.type != dtype::f32)
    return make_error(errc::unavailable,
                      spec.dir + "/model.toml: inputs[0].dtype: the " +
                          std::string{backend} + " backend takes f32");
  for (size_t d = 1; d < in.shape.size(); ++d)
    g.in_dims.push_back(static_cast<uint64_t>(in.shape[d]));
  auto dims = g.in_dims;
  g.widest = dims_product(dims);
  for (size_t i = 0; i < graph.layers.size(); ++i) {
    auto& l = graph.layers[i];
    graph_step s;
    s.op = l.op;
    s.in_dims = dims;
    s.eps = static_cast<float>(l.eps);
    s.save = l.save;
    s.from = l.from;
    // Looks a tensor up and checks its shape and dtype.
    auto fetch = [&](const char* field, const std::string& name,
                     const std::vector<uint64_t>& shape,
                     const tensor_view*& out) -> caf::error {
      if (name.empty())
        return {};
      auto* t = file.find(name);
      if (!t)
        return layer_error(spec, i, field,
                           "tensor '" + name + "' is not in " +
                               graph.weights_file);
      if (t->shape != shape)
        return layer_error(spec, i, field,
                           "tensor '" + name + "' has shape " +
                               dims_string(t->shape) + ", the graph needs " +
                               dims_string(shape));
      if (!float_type(t->type))
        return layer_error(spec, i, field,
                           "tensor '" + name + "' is " +
                               std::string{to_string(t->type)} +
                               ", weights must be f32, f16, bf16 or f64");
      g.weight_bytes += t->bytes;
      out = t;
      return {};
    };
    if (l.op == "dense") {
      if (dims.size() != 1)
        return layer_error(spec, i, "",
                           "dense takes one value axis, got " +
                               dims_string(dims) + " (add a flatten layer)");
      auto* t = file.find(l.weight);
      if (!t || t->shape.size() != 2)
        return layer_error(spec, i, "weight",
                           t ? "tensor '" + l.weight + "' is not [out, in]"
                             : "tensor '" + l.weight + "' is not in " +
                                   graph.weights_file);
      auto out = t->shape[0];
      if (t->shape[1] != dims[0])
        return layer_error(spec, i, "weight",
                           "dense weight " + dims_string(t->shape) + " takes " +
                               std::to_string(t->shape[1]) +
                               " inputs, the previous layer gives " +
                               dims_string(dims));
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
      auto* t = file.find(l.weight);
      if (dims.size() != 3)
        return layer_error(spec, i, "",
                           "conv2d takes [c, h, w] per sample, got " +
                               dims_string(dims));
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
                           "conv2d weight " + dims_string(t->shape) +
                               " takes " + std::to_string(t->shape[1]) +
                               " channels, the previous layer gives " +
                               dims_string(dims));
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
      if (auto err = check(c))
        return layer_error(spec, i, "", reason_of(err));
      if (auto err = fetch("weight", l.weight, t->shape, s.w))
        return err;
      if (auto err = fetch("bias", l.bias, {c.c_out}, s.b))
        return err;
      g.cpu_workspace =
          std::max<uint64_t>(g.cpu_workspace, c.workspace_floats());
      dims = {c.c_out, c.out_h(), c.out_w()};
    } else if (l.op == "max_pool2d" || l.op == "avg_pool2d") {
      if (dims.size() != 3)
        return layer_error(spec, i, "",
                           l.op + " takes [c, h, w] per sample, got " +
                               dims_string(dims));
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
      if (auto err = check(p))
        return layer_error(spec, i, "", reason_of(err));
      dims = {p.c, p.out_h(), p.out_w()};
    } else if (l.op == "flatten") {
      dims = {dims_product(dims)};
    } else if (l.op == "add") {
      auto j = g.saved_dims.find(l.from);
      if (j == g.saved_dims.end())
        return layer_error(spec, i, "from",
                           "no earlier layer saves '" + l.from + "'");
      if (j->second != dims)
        return layer_error(spec, i, "from",
                           "'" + l.from + "' is " + dims_string(j->second) +
                               " but the previous layer gives " +
                               dims_string(dims));
    }
    s.out_dims = dims;
    if (!l.save.empty())
      g.saved_dims[l.save] = dims;
    g.widest = std::max(g.widest, dims_product(dims));
    g.steps.push_back(std::move(s));
  }
  auto& out = spec.outputs.front();
  std::vector<uint64_t> declared;
  for (size_t d = 1; d < out.shape.size(); ++d)
    declared.push_back(static_cast<uint64_t>(out.shape[d]));
  if (declared != dims || out.type != dtype::f32)
    return make_error(errc::unavailable,
                      spec.dir + "/model.toml: outputs[0]: the graph gives " +
                          dims_string(dims) + " f32 per sample, declared " +
                          dims_string(declared) + " " +
                          std::string{to_string(out.type)});
  g.out_dims = dims;
  return g;
}

} // namespace shoal
