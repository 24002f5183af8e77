#include "gpu/model/manifest.hpp"

#include <algorithm>
#include <filesystem>

#include "gpu/model/manifest_reader.hpp"
#include "gpu/registry.hpp"
#include "net/wire/error.hpp"

namespace fs = std::filesystem;

namespace shoal {

namespace {

template <class List>
bool contains(const List& list, std::string_view key) {
  return std::find(list.begin(), list.end(), key) != list.end();
}

// "\"a\"", "\"a\" or \"b\"", "\"a\", \"b\" or \"c\"".
std::string quoted_or_list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) {
      out += i + 1 == items.size() ? " or " : ", ";
    }
    out += "\"" + items[i] + "\"";
  }
  return out;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (auto& item : items) {
    out += (out.empty() ? "" : ", ") + item;
  }
  return out;
}

// Refuses top-level keys that are neither common nor the backend's own
// sections; a section of another backend says whose it is.
caf::error check_root_keys(const manifest_reader& rd,
                           const backend_info& info) {
  for (auto& [k, v] : rd.root()) {
    auto key = k.str();
    if (contains(manifest_common_keys(), key) || contains(info.sections, key)) {
      continue;
    }
    std::vector<std::string> owners;
    for (auto& name : backend_names()) {
      if (contains(find_backend(name)->sections, key)) {
        owners.push_back(name);
      }
    }
    if (owners.empty()) {
      return rd.fail(std::string{key}, "unknown key");
    }
    return rd.fail(std::string{key}, "unknown key for backend = \"" +
                                         info.name + "\" (backend = " +
                                         quoted_or_list(owners) + " reads it)");
  }
  return {};
}

// `name` (if given) must be the directory's; `backend` must be registered.
// Sets the backend's default device.
caf::expected<const backend_info*> read_backend(const manifest_reader& rd,
                                                model_spec& spec) {
  std::string declared;
  if (auto err = rd.get(rd.root(), "", "name", declared)) {
    return err;
  }
  if (!declared.empty() && declared != spec.name) {
    return rd.fail("name", "'" + declared +
                               "' does not match the directory name '" +
                               spec.name + "'");
  }
  if (auto err = rd.get(rd.root(), "", "backend", spec.backend)) {
    return err;
  }
  auto supported = "(supported: " + join(backend_names()) + ")";
  if (spec.backend.empty()) {
    return rd.fail("backend", "required " + supported);
  }
  auto* info = find_backend(spec.backend);
  if (info == nullptr) {
    return rd.fail("backend",
                   "unknown backend '" + spec.backend + "' " + supported);
  }
  spec.device = std::string{to_string(info->default_device)};
  return info;
}

// pinned, idle_ttl_ms, queue_capacity.
caf::error read_lifetime(const manifest_reader& rd, model_spec& spec) {
  auto& root = rd.root();
  if (auto err = rd.get(root, "", "pinned", spec.pinned)) {
    return err;
  }
  if (root.contains("idle_ttl_ms")) {
    uint64_t ms = 0;
    if (auto err = rd.get(root, "", "idle_ttl_ms", ms)) {
      return err;
    }
    spec.idle_ttl = std::chrono::milliseconds{ms};
  }
  if (root.contains("queue_capacity")) {
    uint64_t cap = 0;
    if (auto err = rd.get(root, "", "queue_capacity", cap)) {
      return err;
    }
    if (cap == 0) {
      return rd.fail("queue_capacity", "must be at least 1");
    }
    spec.queue_capacity = cap;
  }
  return {};
}

caf::error read_io(const manifest_reader& rd, model_spec& spec) {
  if (auto err = rd.io_list("inputs", spec.inputs)) {
    return err;
  }
  if (auto err = rd.io_list("outputs", spec.outputs)) {
    return err;
  }
  if (spec.inputs.empty()) {
    return rd.fail("inputs", "at least one input is required");
  }
  if (spec.outputs.empty()) {
    return rd.fail("outputs", "at least one output is required");
  }
  return {};
}

caf::error read_batching(const manifest_reader& rd, model_spec& spec) {
  auto b = rd.table("batching");
  if (!b) {
    return b.error();
  }
  if (*b == nullptr) {
    return {};
  }
  if (auto err = rd.only(**b, "batching.", {"max_batch", "max_delay_us"})) {
    return err;
  }
  if (auto err = rd.get(**b, "batching.", "max_batch", spec.max_batch)) {
    return err;
  }
  uint64_t us = 0;
  if (auto err = rd.get(**b, "batching.", "max_delay_us", us)) {
    return err;
  }
  spec.max_delay = std::chrono::microseconds{us};
  if (spec.max_batch == 0 || spec.max_batch > 4096) {
    return rd.fail("batching.max_batch", "must be in 1..4096");
  }
  return {};
}

caf::error read_cache(const manifest_reader& rd, model_spec& spec) {
  auto c = rd.table("cache");
  if (!c) {
    return c.error();
  }
  if (*c == nullptr) {
    return {};
  }
  if (auto err = rd.only(**c, "cache.", {"enabled", "ttl_ms"})) {
    return err;
  }
  if (auto err = rd.get(**c, "cache.", "enabled", spec.cache_enabled)) {
    return err;
  }
  uint64_t ms = 0;
  if (auto err = rd.get(**c, "cache.", "ttl_ms", ms)) {
    return err;
  }
  spec.cache_ttl = std::chrono::milliseconds{ms};
  return {};
}

// [files]: the sha256 of every file the model needs, by relative path.
caf::error read_files(const manifest_reader& rd, model_spec& spec) {
  auto f = rd.table("files");
  if (!f) {
    return f.error();
  }
  if (*f == nullptr) {
    return {};
  }
  for (auto& [k, v] : **f) {
    auto name = std::string{k.str()};
    auto hex = v.value_exact<std::string>();
    bool ok = hex && hex->size() == 64 &&
              hex->find_first_not_of("0123456789abcdef") == std::string::npos;
    if (!ok) {
      return rd.fail("files." + name, "expected a sha256 as 64 lowercase "
                                      "hex digits");
    }
    if (name.empty() || name[0] == '/' ||
        name.find("..") != std::string::npos) {
      return rd.fail("files." + name, "must be a relative path inside the "
                                      "version directory");
    }
    spec.files.emplace_back(name, *hex);
  }
  return {};
}

// resources.device: one of the devices the backend runs on.
caf::error read_device(const manifest_reader& rd, const toml::table& r,
                       const backend_info& info, model_spec& spec) {
  if (auto err = rd.get(r, "resources.", "device", spec.device)) {
    return err;
  }
  auto kind = parse_device_kind(spec.device);
  if (!kind) {
    return rd.fail("resources.device",
                   "must be cpu, gpu or any, got '" + spec.device + "'");
  }
  if (!info.accepts(*kind)) {
    std::vector<std::string> ok;
    for (auto d : info.devices) {
      ok.emplace_back(to_string(d));
    }
    return rd.fail("resources.device",
                   "backend = \"" + info.name + "\" runs on device = " +
                       quoted_or_list(ok) + ", not \"" + spec.device + "\"");
  }
  return {};
}

// [resources]: the common keys; the backend reads its own ones itself.
caf::error read_resources(const manifest_reader& rd, const backend_info& info,
                          model_spec& spec) {
  auto r = rd.table("resources");
  if (!r) {
    return r.error();
  }
  if (*r == nullptr) {
    return {};
  }
  auto allowed = manifest_common_resource_keys();
  for (auto& key : info.resource_keys) {
    allowed.push_back(key);
  }
  caf::error err;
  (err = rd.only(**r, "resources.", allowed)) ||
      (err = rd.get(**r, "resources.", "min_replicas_on_demand",
                    spec.min_replicas_on_demand)) ||
      (err = read_device(rd, **r, info, spec)) ||
      (err = rd.get(**r, "resources.", "memory_bytes", spec.memory_bytes));
  return err;
}

// The backend's own sections, by its parser.
caf::error read_options(const manifest_reader& rd, const backend_info& info,
                        model_spec& spec) {
  if (!info.parse) {
    return {};
  }
  auto options = info.parse(rd, spec);
  if (!options) {
    return std::move(options.error());
  }
  spec.options = std::move(*options);
  return {};
}

// The batch axis must be declared consistently: batching concatenates
// requests along it.
caf::error check_batch_axis(const manifest_reader& rd, const model_spec& spec) {
  bool batched =
      !spec.inputs.front().shape.empty() && spec.inputs.front().shape[0] == -1;
  for (auto* list : {&spec.inputs, &spec.outputs}) {
    for (auto& io : *list) {
      bool b = !io.shape.empty() && io.shape[0] == -1;
      if (b != batched) {
        return rd.fail(list == &spec.inputs ? "inputs" : "outputs",
                       "'" + io.name +
                           "': either every input and output has the batch "
                           "axis -1 first, or none has");
      }
    }
  }
  if (!batched && spec.max_batch > 1) {
    return rd.fail("batching.max_batch",
                   "is above 1 but the inputs have no batch axis (-1)");
  }
  return {};
}

} // namespace

const std::vector<std::string_view>& manifest_common_keys() {
  static const std::vector<std::string_view> keys{
      "name",           "backend",   "pinned",  "idle_ttl_ms",
      "queue_capacity", "inputs",    "outputs", "batching",
      "cache",          "resources", "files"};
  return keys;
}

const std::vector<std::string_view>& manifest_common_resource_keys() {
  static const std::vector<std::string_view> keys{"device", "memory_bytes",
                                                  "min_replicas_on_demand"};
  return keys;
}

caf::expected<model_spec> parse_manifest(const std::string& path,
                                         const std::string& name,
                                         uint64_t version) {
  auto parsed = parse_toml_file(path);
  if (!parsed) {
    return parsed.error();
  }
  manifest_reader rd{path, *parsed};
  model_spec spec;
  spec.name = name;
  spec.version = version;
  spec.dir = fs::path{path}.parent_path().string();
  auto info = read_backend(rd, spec);
  if (!info) {
    return info.error();
  }
  caf::error err;
  (err = check_root_keys(rd, **info)) || (err = read_lifetime(rd, spec)) ||
      (err = read_io(rd, spec)) || (err = read_batching(rd, spec)) ||
      (err = read_cache(rd, spec)) || (err = read_files(rd, spec)) ||
      (err = read_resources(rd, **info, spec)) ||
      (err = read_options(rd, **info, spec)) ||
      (err = check_batch_axis(rd, spec));
  if (err) {
    return err;
  }
  return spec;
}

caf::expected<uint64_t> validate_inputs(const model_spec& spec,
                                        const std::vector<tensor>& inputs) {
  auto fail = [&](const std::string& what) {
    return make_error(errc::invalid_argument, "model " + spec.name + " v" +
                                                  std::to_string(spec.version) +
                                                  ": " + what);
  };
  if (inputs.size() != spec.inputs.size()) {
    return fail("expects " + std::to_string(spec.inputs.size()) +
                " input(s), got " + std::to_string(inputs.size()));
  }
  std::optional<uint64_t> batch;
  for (auto& decl : spec.inputs) {
    auto it = std::find_if(inputs.begin(), inputs.end(), [&](const tensor& t) {
      return t.name == decl.name;
    });
    if (it == inputs.end()) {
      return fail("missing input '" + decl.name + "'");
    }
    if (it->type != decl.type) {
      return fail("input '" + decl.name + "' has dtype " +
                  std::string{to_string(it->type)} + ", expected " +
                  std::string{to_string(decl.type)});
    }
    if (it->shape.size() != decl.shape.size()) {
      return fail("input '" + decl.name + "' has rank " +
                  std::to_string(it->shape.size()) + ", expected " +
                  std::to_string(decl.shape.size()));
    }
    for (size_t d = 0; d < decl.shape.size(); ++d) {
      if (decl.shape[d] == -1) {
        if (it->shape[d] == 0) {
          return fail("input '" + decl.name + "' has an empty batch");
        }
        if (batch && *batch != it->shape[d]) {
          return fail("inputs disagree on the batch size");
        }
        batch = it->shape[d];
      } else if (it->shape[d] != static_cast<uint64_t>(decl.shape[d])) {
        return fail("input '" + decl.name + "' dimension " + std::to_string(d) +
                    " is " + std::to_string(it->shape[d]) + ", expected " +
                    std::to_string(decl.shape[d]));
      }
    }
  }
  uint64_t rows = batch.value_or(1);
  if (rows > spec.max_batch && spec.max_batch > 0 && batch) {
    return fail("batch of " + std::to_string(rows) +
                " rows exceeds the model's max_batch " +
                std::to_string(spec.max_batch));
  }
  return rows;
}

} // namespace shoal
