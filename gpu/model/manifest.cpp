#include "gpu/model/manifest.hpp"

#include <charconv>
#include <filesystem>
#include <set>
#include <sstream>

#include <spdlog/spdlog.h>
#include <toml++/toml.h>

#include "config/toml_value.hpp"
#include "net/wire/error.hpp"

namespace fs = std::filesystem;

namespace shoal {

namespace {

// Reads one manifest table, remembering the file for error messages.
class manifest_reader {
public:
  explicit manifest_reader(std::string path) : path_(std::move(path)) {
    // nop
  }

  caf::error fail(const std::string& key, const std::string& what) const {
    return make_error(errc::config_invalid, path_ + ": " + key + ": " + what);
  }

  // Rejects keys outside `allowed`: a typo in a manifest must not be
  // silently ignored.
  caf::error only(const toml::table& tbl, const std::string& prefix,
                  const std::vector<std::string_view>& allowed) const {
    for (auto& [k, v] : tbl) {
      bool ok = false;
      for (auto a : allowed)
        ok = ok || a == k.str();
      if (!ok)
        return fail(prefix + std::string{k.str()}, "unknown key");
    }
    return {};
  }

  template <class T>
  caf::error get(const toml::table& tbl, const std::string& prefix,
                 std::string_view key, T& out) const {
    auto* n = tbl.get(key);
    if (!n)
      return {};
    if (auto what = read_toml_value(*n, out))
      return fail(prefix + std::string{key}, what);
    return {};
  }

  caf::error io_list(const toml::table& root, std::string_view key,
                     std::vector<io_spec>& out) const {
    auto* n = root.get(key);
    if (!n)
      return {};
    auto* arr = n->as_array();
    if (!arr)
      return fail(std::string{key},
                  "expected an array of tables [[" + std::string{key} + "]]");
    std::set<std::string> names;
    for (size_t i = 0; i < arr->size(); ++i) {
      auto prefix = std::string{key} + "[" + std::to_string(i) + "].";
      auto* t = arr->get(i)->as_table();
      if (!t)
        return fail(prefix, "expected a table");
      if (auto err = only(*t, prefix, {"name", "dtype", "shape"}))
        return err;
      io_spec s;
      std::string dt;
      if (auto err = get(*t, prefix, "name", s.name))
        return err;
      if (s.name.empty())
        return fail(prefix + "name", "required");
      if (!names.insert(s.name).second)
        return fail(prefix + "name", "duplicate name '" + s.name + "'");
      if (auto err = get(*t, prefix, "dtype", dt))
        return err;
      auto parsed = parse_dtype(dt);
      if (!parsed)
        return fail(prefix + "dtype", "unknown dtype '" + dt + "'");
      s.type = *parsed;
      auto* shape = t->get_as<toml::array>("shape");
      if (!shape)
        return fail(prefix + "shape", "required: an array of integers");
      for (size_t d = 0; d < shape->size(); ++d) {
        auto v = shape->get(d)->value_exact<int64_t>();
        if (!v || *v < -1 || *v == 0)
          return fail(prefix + "shape",
                      "dimensions are positive integers, or -1 for the "
                      "batch axis");
        if (*v == -1 && d != 0)
          return fail(prefix + "shape", "only the first axis may be -1");
        s.shape.push_back(*v);
      }
      if (s.shape.size() > 8)
        return fail(prefix + "shape", "rank above 8");
      out.push_back(std::move(s));
    }
    return {};
  }

private:
  std::string path_;
};

// [h, w] pairs of the spatial layers (kernel, stride, padding, dilation).
caf::error get_pair(const manifest_reader& rd, const toml::table& tbl,
                    const std::string& prefix, std::string_view key,
                    std::vector<uint64_t>& out) {
  auto* n = tbl.get(key);
  if (!n)
    return {};
  auto* arr = n->as_array();
  auto full = prefix + std::string{key};
  if (!arr || arr->size() != 2)
    return rd.fail(full, "expected [height, width]");
  out.clear();
  for (size_t i = 0; i < 2; ++i) {
    auto v = arr->get(i)->value_exact<int64_t>();
    if (!v || *v < 0 || *v > (1 << 20))
      return rd.fail(full, "expected non-negative integers");
    out.push_back(static_cast<uint64_t>(*v));
  }
  return {};
}

// [weights], [files], [resources] and the [[layers]] graph. Only the
// structure is checked here; tensors and shapes are checked at load, where
// the weights file is read.
caf::error parse_graph(const manifest_reader& rd, const toml::table& root,
                       model_spec& spec) {
  if (auto* w = root.get_as<toml::table>("weights")) {
    if (auto err = rd.only(*w, "weights.", {"file"}))
      return err;
    if (auto err = rd.get(*w, "weights.", "file", spec.weights_file))
      return err;
  } else if (root.contains("weights")) {
    return rd.fail("weights", "expected a table");
  }
  if (auto* f = root.get_as<toml::table>("files")) {
    for (auto& [k, v] : *f) {
      auto name = std::string{k.str()};
      auto hex = v.value_exact<std::string>();
      bool ok = hex && hex->size() == 64 &&
                hex->find_first_not_of("0123456789abcdef") == std::string::npos;
      if (!ok)
        return rd.fail("files." + name, "expected a sha256 as 64 lowercase "
                                        "hex digits");
      if (name.empty() || name[0] == '/' ||
          name.find("..") != std::string::npos)
        return rd.fail("files." + name, "must be a relative path inside the "
                                        "version directory");
      spec.files.emplace_back(name, *hex);
    }
  } else if (root.contains("files")) {
    return rd.fail("files", "expected a table");
  }
  if (auto* r = root.get_as<toml::table>("resources")) {
    if (auto err = rd.only(
            *r, "resources.",
            {"device", "memory_bytes", "min_replicas_on_demand", "allow_tf32"}))
      return err;
    if (auto err = rd.get(*r, "resources.", "min_replicas_on_demand",
                          spec.min_replicas_on_demand))
      return err;
    if (auto err = rd.get(*r, "resources.", "device", spec.device))
      return err;
    if (spec.device != "cpu" && spec.device != "gpu" && spec.device != "any")
      return rd.fail("resources.device",
                     "must be cpu, gpu or any, got '" + spec.device + "'");
    if (spec.backend == "cuda" && spec.device == "cpu")
      return rd.fail("resources.device",
                     "backend = \"cuda\" runs on a GPU; use backend = "
                     "\"cpu\" or device = \"any\"");
    if (spec.device != "cpu" && spec.backend == "synthetic")
      return rd.fail("resources.device",
                     "the synthetic backend runs on the cpu only");
    if (auto err = rd.get(*r, "resources.", "allow_tf32", spec.allow_tf32))
      return err;
    if (auto err = rd.get(*r, "resources.", "memory_bytes", spec.memory_bytes))
      return err;
  } else if (root.contains("resources")) {
    return rd.fail("resources", "expected a table");
  }
  if (auto* n = root.get("layers")) {
    auto* arr = n->as_array();
    if (!arr)
      return rd.fail("layers", "expected an array of tables [[layers]]");
    for (size_t i = 0; i < arr->size(); ++i) {
      auto prefix = "layers[" + std::to_string(i) + "].";
      auto* t = arr->get(i)->as_table();
      if (!t)
        return rd.fail(prefix, "expected a table");
      layer_spec l;
      if (auto err = rd.get(*t, prefix, "op", l.op))
        return err;
      std::vector<std::string_view> keys;
      if (l.op == "dense")
        keys = {"op", "weight", "bias", "save"};
      else if (l.op == "layernorm")
        keys = {"op", "weight", "bias", "save", "eps"};
      else if (l.op == "conv2d")
        keys = {"op",     "weight",  "bias",    "save",
                "stride", "padding", "dilation"};
      else if (l.op == "max_pool2d" || l.op == "avg_pool2d")
        keys = {"op", "kernel", "stride", "padding", "save"};
      else if (l.op == "relu" || l.op == "gelu" || l.op == "softmax" ||
               l.op == "flatten")
        keys = {"op", "save"};
      else if (l.op == "add")
        keys = {"op", "from", "save"};
      else
        return rd.fail(prefix + "op",
                       "unknown op '" + l.op +
                           "' (dense, relu, gelu, softmax, layernorm, "
                           "conv2d, max_pool2d, avg_pool2d, flatten, add)");
      if (auto err = rd.only(*t, prefix, keys))
        return err;
      caf::error err;
      (err = rd.get(*t, prefix, "weight", l.weight)) ||
          (err = rd.get(*t, prefix, "bias", l.bias)) ||
          (err = rd.get(*t, prefix, "save", l.save)) ||
          (err = rd.get(*t, prefix, "from", l.from)) ||
          (err = rd.get(*t, prefix, "eps", l.eps)) ||
          (err = get_pair(rd, *t, prefix, "kernel", l.kernel)) ||
          (err = get_pair(rd, *t, prefix, "stride", l.stride)) ||
          (err = get_pair(rd, *t, prefix, "padding", l.padding)) ||
          (err = get_pair(rd, *t, prefix, "dilation", l.dilation));
      if (err)
        return err;
      bool needs_weight =
          l.op == "dense" || l.op == "conv2d" || l.op == "layernorm";
      if (needs_weight && l.weight.empty())
        return rd.fail(prefix + "weight", "required for " + l.op);
      if (l.op == "add" && l.from.empty())
        return rd.fail(prefix + "from", "required for add");
      if ((l.op == "max_pool2d" || l.op == "avg_pool2d") && l.kernel.empty())
        return rd.fail(prefix + "kernel", "required for " + l.op);
      spec.layers.push_back(std::move(l));
    }
  } else if (root.contains("layers")) {
    return rd.fail("layers", "expected an array of tables [[layers]]");
  }
  if (spec.backend == "cpu" || spec.backend == "cuda") {
    if (spec.weights_file.empty() && !spec.layers.empty())
      for (auto& l : spec.layers)
        if (!l.weight.empty())
          return rd.fail("weights.file", "required: layers name weights");
    if (spec.layers.empty())
      return rd.fail("layers",
                     "the " + spec.backend + " backend needs a graph");
    if (spec.outputs.size() != 1 || spec.inputs.size() != 1)
      return rd.fail("outputs", "the " + spec.backend +
                                    " backend runs a sequential graph: "
                                    "one input and one output");
  }
  return {};
}

} // namespace

caf::expected<model_spec> parse_manifest(const std::string& path,
                                         const std::string& name,
                                         uint64_t version) {
  manifest_reader rd{path};
  auto parsed = parse_toml_file(path);
  if (!parsed)
    return parsed.error();
  auto& root = *parsed;
  if (auto err =
          rd.only(root, "",
                  {"name", "backend", "pinned", "idle_ttl_ms", "queue_capacity",
                   "inputs", "outputs", "batching", "cache", "synthetic",
                   "resources", "weights", "files", "layers"}))
    return err;
  model_spec spec;
  spec.name = name;
  spec.version = version;
  spec.dir = fs::path{path}.parent_path().string();
  std::string declared_name;
  if (auto err = rd.get(root, "", "name", declared_name))
    return err;
  if (!declared_name.empty() && declared_name != name)
    return rd.fail("name", "'" + declared_name +
                               "' does not match the directory name '" + name +
                               "'");
  if (auto err = rd.get(root, "", "backend", spec.backend))
    return err;
  if (spec.backend.empty())
    return rd.fail("backend", "required (supported: synthetic, cpu, cuda)");
  if (spec.backend != "synthetic" && spec.backend != "cpu" &&
      spec.backend != "cuda")
    return rd.fail("backend", "unknown backend '" + spec.backend +
                                  "' (supported: synthetic, cpu, cuda)");
  // "cuda" names the same graph as "cpu" with a GPU as the default device.
  if (spec.backend == "cuda")
    spec.device = "gpu";
  if (auto err = rd.get(root, "", "pinned", spec.pinned))
    return err;
  if (root.contains("idle_ttl_ms")) {
    uint64_t ms = 0;
    if (auto err = rd.get(root, "", "idle_ttl_ms", ms))
      return err;
    spec.idle_ttl = std::chrono::milliseconds{ms};
  }
  if (root.contains("queue_capacity")) {
    uint64_t cap = 0;
    if (auto err = rd.get(root, "", "queue_capacity", cap))
      return err;
    if (cap == 0)
      return rd.fail("queue_capacity", "must be at least 1");
    spec.queue_capacity = cap;
  }
  if (auto err = rd.io_list(root, "inputs", spec.inputs))
    return err;
  if (auto err = rd.io_list(root, "outputs", spec.outputs))
    return err;
  if (spec.inputs.empty())
    return rd.fail("inputs", "at least one input is required");
  if (spec.outputs.empty())
    return rd.fail("outputs", "at least one output is required");
  if (auto* b = root.get_as<toml::table>("batching")) {
    if (auto err = rd.only(*b, "batching.", {"max_batch", "max_delay_us"}))
      return err;
    if (auto err = rd.get(*b, "batching.", "max_batch", spec.max_batch))
      return err;
    uint64_t us = 0;
    if (auto err = rd.get(*b, "batching.", "max_delay_us", us))
      return err;
    spec.max_delay = std::chrono::microseconds{us};
    if (spec.max_batch == 0 || spec.max_batch > 4096)
      return rd.fail("batching.max_batch", "must be in 1..4096");
  } else if (root.contains("batching")) {
    return rd.fail("batching", "expected a table");
  }
  if (auto* c = root.get_as<toml::table>("cache")) {
    if (auto err = rd.only(*c, "cache.", {"enabled", "ttl_ms"}))
      return err;
    if (auto err = rd.get(*c, "cache.", "enabled", spec.cache_enabled))
      return err;
    uint64_t ms = 0;
    if (auto err = rd.get(*c, "cache.", "ttl_ms", ms))
      return err;
    spec.cache_ttl = std::chrono::milliseconds{ms};
  } else if (root.contains("cache")) {
    return rd.fail("cache", "expected a table");
  }
  if (auto* s = root.get_as<toml::table>("synthetic")) {
    auto& p = spec.synthetic;
    if (auto err = rd.only(*s, "synthetic.",
                           {"cost_per_batch_us", "cost_per_item_us", "scale",
                            "offset", "crash_after_batches", "load_ms"}))
      return err;
    caf::error err;
    (err =
         rd.get(*s, "synthetic.", "cost_per_batch_us", p.cost_per_batch_us)) ||
        (err = rd.get(*s, "synthetic.", "cost_per_item_us",
                      p.cost_per_item_us)) ||
        (err = rd.get(*s, "synthetic.", "scale", p.scale)) ||
        (err = rd.get(*s, "synthetic.", "offset", p.offset)) ||
        (err = rd.get(*s, "synthetic.", "crash_after_batches",
                      p.crash_after_batches)) ||
        (err = rd.get(*s, "synthetic.", "load_ms", p.load_ms));
    if (err)
      return err;
  } else if (root.contains("synthetic")) {
    return rd.fail("synthetic", "expected a table");
  }
  if (auto err = parse_graph(rd, root, spec))
    return err;
  // The batch axis must be declared consistently: batching concatenates
  // requests along it.
  bool batched = spec.inputs.front().shape.size() > 0 &&
                 spec.inputs.front().shape[0] == -1;
  for (auto* list : {&spec.inputs, &spec.outputs})
    for (auto& io : *list) {
      bool b = !io.shape.empty() && io.shape[0] == -1;
      if (b != batched)
        return rd.fail(list == &spec.inputs ? "inputs" : "outputs",
                       "'" + io.name +
                           "': either every input and output has the batch "
                           "axis -1 first, or none has");
    }
  if (!batched && spec.max_batch > 1)
    return rd.fail("batching.max_batch",
                   "is above 1 but the inputs have no batch axis (-1)");
  return spec;
}

caf::expected<uint64_t> validate_inputs(const model_spec& spec,
                                        const std::vector<tensor>& inputs) {
  auto fail = [&](const std::string& what) {
    return make_error(errc::invalid_argument, "model " + spec.name + " v" +
                                                  std::to_string(spec.version) +
                                                  ": " + what);
  };
  if (inputs.size() != spec.inputs.size())
    return fail("expects " + std::to_string(spec.inputs.size()) +
                " input(s), got " + std::to_string(inputs.size()));
  std::optional<uint64_t> batch;
  for (auto& decl : spec.inputs) {
    auto it = std::find_if(inputs.begin(), inputs.end(), [&](const tensor& t) {
      return t.name == decl.name;
    });
    if (it == inputs.end())
      return fail("missing input '" + decl.name + "'");
    if (it->type != decl.type)
      return fail("input '" + decl.name + "' has dtype " +
                  std::string{to_string(it->type)} + ", expected " +
                  std::string{to_string(decl.type)});
    if (it->shape.size() != decl.shape.size())
      return fail("input '" + decl.name + "' has rank " +
                  std::to_string(it->shape.size()) + ", expected " +
                  std::to_string(decl.shape.size()));
    for (size_t d = 0; d < decl.shape.size(); ++d) {
      if (decl.shape[d] == -1) {
        if (it->shape[d] == 0)
          return fail("input '" + decl.name + "' has an empty batch");
        if (batch && *batch != it->shape[d])
          return fail("inputs disagree on the batch size");
        batch = it->shape[d];
      } else if (it->shape[d] != static_cast<uint64_t>(decl.shape[d])) {
        return fail("input '" + decl.name + "' dimension " + std::to_string(d) +
                    " is " + std::to_string(it->shape[d]) + ", expected " +
                    std::to_string(decl.shape[d]));
      }
    }
  }
  uint64_t rows = batch.value_or(1);
  if (rows > spec.max_batch && spec.max_batch > 0 && batch)
    return fail("batch of " + std::to_string(rows) +
                " rows exceeds the model's max_batch " +
                std::to_string(spec.max_batch));
  return rows;
}

} // namespace shoal
