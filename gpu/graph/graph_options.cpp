#include "gpu/graph/graph_options.hpp"

#include <string_view>

#include "gpu/model/manifest_reader.hpp"

namespace shoal {

namespace {

// [h, w] pairs of the spatial layers (kernel, stride, padding, dilation).
caf::error get_pair(const manifest_reader& rd, const toml::table& tbl,
                    const std::string& prefix, std::string_view key,
                    std::vector<uint64_t>& out) {
  auto* n = tbl.get(key);
  if (n == nullptr) {
    return {};
  }
  auto* arr = n->as_array();
  auto full = prefix + std::string{key};
  if (arr == nullptr || arr->size() != 2) {
    return rd.fail(full, "expected [height, width]");
  }
  out.clear();
  for (size_t i = 0; i < 2; ++i) {
    auto v = arr->get(i)->value_exact<int64_t>();
    if (!v || *v < 0 || *v > (1 << 20)) {
      return rd.fail(full, "expected non-negative integers");
    }
    out.push_back(static_cast<uint64_t>(*v));
  }
  return {};
}

// The keys a layer of this op may have; empty for an unknown op.
std::vector<std::string_view> layer_keys(const std::string& op) {
  if (op == "dense") {
    return {"op", "weight", "bias", "save"};
  }
  if (op == "layernorm") {
    return {"op", "weight", "bias", "save", "eps"};
  }
  if (op == "conv2d") {
    return {"op", "weight", "bias", "save", "stride", "padding", "dilation"};
  }
  if (op == "max_pool2d" || op == "avg_pool2d") {
    return {"op", "kernel", "stride", "padding", "save"};
  }
  if (op == "relu" || op == "gelu" || op == "softmax" || op == "flatten") {
    return {"op", "save"};
  }
  if (op == "add") {
    return {"op", "from", "save"};
  }
  return {};
}

// What each op needs besides its keys being known.
caf::error check_layer(const manifest_reader& rd, const std::string& prefix,
                       const layer_spec& l) {
  bool needs_weight =
      l.op == "dense" || l.op == "conv2d" || l.op == "layernorm";
  if (needs_weight && l.weight.empty()) {
    return rd.fail(prefix + "weight", "required for " + l.op);
  }
  if (l.op == "add" && l.from.empty()) {
    return rd.fail(prefix + "from", "required for add");
  }
  if ((l.op == "max_pool2d" || l.op == "avg_pool2d") && l.kernel.empty()) {
    return rd.fail(prefix + "kernel", "required for " + l.op);
  }
  return {};
}

caf::error read_layer(const manifest_reader& rd, const toml::table& t,
                      const std::string& prefix, layer_spec& l) {
  if (auto err = rd.get(t, prefix, "op", l.op)) {
    return err;
  }
  auto keys = layer_keys(l.op);
  if (keys.empty()) {
    return rd.fail(prefix + "op",
                   "unknown op '" + l.op +
                       "' (dense, relu, gelu, softmax, layernorm, "
                       "conv2d, max_pool2d, avg_pool2d, flatten, add)");
  }
  caf::error err;
  (err = rd.only(t, prefix, keys)) ||
      (err = rd.get(t, prefix, "weight", l.weight)) ||
      (err = rd.get(t, prefix, "bias", l.bias)) ||
      (err = rd.get(t, prefix, "save", l.save)) ||
      (err = rd.get(t, prefix, "from", l.from)) ||
      (err = rd.get(t, prefix, "eps", l.eps)) ||
      (err = get_pair(rd, t, prefix, "kernel", l.kernel)) ||
      (err = get_pair(rd, t, prefix, "stride", l.stride)) ||
      (err = get_pair(rd, t, prefix, "padding", l.padding)) ||
      (err = get_pair(rd, t, prefix, "dilation", l.dilation)) ||
      (err = check_layer(rd, prefix, l));
  return err;
}

caf::error read_layers(const manifest_reader& rd, graph_options& g) {
  auto arr = rd.tables("layers");
  if (!arr) {
    return arr.error();
  }
  if (*arr == nullptr) {
    return {};
  }
  for (size_t i = 0; i < (*arr)->size(); ++i) {
    auto prefix = "layers[" + std::to_string(i) + "].";
    auto* t = (*arr)->get(i)->as_table();
    if (t == nullptr) {
      return rd.fail(prefix, "expected a table");
    }
    layer_spec l;
    if (auto err = read_layer(rd, *t, prefix, l)) {
      return err;
    }
    g.layers.push_back(std::move(l));
  }
  return {};
}

// [weights] file and resources.allow_tf32.
caf::error read_weights(const manifest_reader& rd, graph_options& g) {
  auto w = rd.table("weights");
  if (!w) {
    return w.error();
  }
  if (*w != nullptr) {
    if (auto err = rd.only(**w, "weights.", {"file"})) {
      return err;
    }
    if (auto err = rd.get(**w, "weights.", "file", g.weights_file)) {
      return err;
    }
  }
  // [resources] itself was checked by the common parser.
  if (auto* r = rd.root().get_as<toml::table>("resources")) {
    return rd.get(*r, "resources.", "allow_tf32", g.allow_tf32);
  }
  return {};
}

// A graph the backends can run: layers, the weights they name, one input
// and one output.
caf::error check_graph(const manifest_reader& rd, const model_spec& spec,
                       const graph_options& g) {
  if (g.weights_file.empty()) {
    for (auto& l : g.layers) {
      if (!l.weight.empty()) {
        return rd.fail("weights.file", "required: layers name weights");
      }
    }
  }
  if (g.layers.empty()) {
    return rd.fail("layers", "the " + spec.backend + " backend needs a graph");
  }
  if (spec.outputs.size() != 1 || spec.inputs.size() != 1) {
    return rd.fail("outputs", "the " + spec.backend +
                                  " backend runs a sequential graph: "
                                  "one input and one output");
  }
  return {};
}

} // namespace

std::vector<std::string> graph_sections() {
  return {"weights", "layers"};
}

std::vector<std::string> graph_resource_keys() {
  return {"allow_tf32"};
}

caf::expected<backend_options_ptr>
parse_graph_options(const manifest_reader& rd, const model_spec& spec) {
  auto g = std::make_shared<graph_options>();
  caf::error err;
  (err = read_weights(rd, *g)) || (err = read_layers(rd, *g)) ||
      (err = check_graph(rd, spec, *g));
  if (err) {
    return err;
  }
  return g;
}

} // namespace shoal
