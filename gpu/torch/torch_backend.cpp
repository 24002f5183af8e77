#include "gpu/torch/torch_backend.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <mutex>

#include <spdlog/spdlog.h>

#include "gpu/device/device_ledger.hpp"
#include "gpu/plugin/plugin_file.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace {

static_assert(static_cast<int>(dtype::boolean) == SHOAL_TORCH_BOOL &&
                  static_cast<int>(dtype::i64) == SHOAL_TORCH_I64 &&
                  static_cast<int>(dtype::f32) == SHOAL_TORCH_F32,
              "the plugin numbers dtypes as the wire does");

constexpr size_t err_len = 1024;

// torch.threads from the node's configuration (0: every core it may use).
std::atomic<uint64_t> configured_threads{0};

[[maybe_unused]] uint32_t usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) {
    return std::max(1, CPU_COUNT(&set));
  }
  return 1;
}

struct plugin_state {
  const shoal_torch_api* api = nullptr;
  std::string why; // when api is null
};

std::atomic<bool> plugin_mapped{false};

plugin_state open_torch_plugin() {
#ifndef SHOAL_TORCH_PLUGIN
  return {nullptr, "this node was built without the torch feature "
                   "(libtorch-dev was not found)"};
#else
  plugin_state st;
  auto lib =
      open_plugin({"libshoal_torch.so", "gpu/torch", SHOAL_TORCH_PLUGIN},
                  [&st](const shared_library& lib, const std::string& path) {
                    using entry_fn = const shoal_torch_api* (*)();
                    auto entry = lib.function<entry_fn>("shoal_torch_plugin");
                    st.api = entry != nullptr ? entry() : nullptr;
                    if (st.api == nullptr || st.api->abi != SHOAL_TORCH_ABI) {
                      st.api = nullptr;
                      return make_error(
                          errc::unavailable,
                          path + ": not a shoal torch plugin of this version");
                    }
                    return caf::error{};
                  });
  if (!lib) {
    st.why = "the torch plugin could not be loaded: " + reason_of(lib.error());
    return st;
  }
  // Never closed: libtorch keeps threads and static state of its own.
  lib->keep();
  plugin_mapped = true;
  auto threads = configured_threads.load();
  st.api->set_threads(
      static_cast<int32_t>(threads > 0 ? threads : usable_cores()));
  spdlog::info("torch plugin loaded: libtorch {}, {} intra-op thread(s){}",
               st.api->version(), threads > 0 ? threads : usable_cores(),
               st.api->cuda_devices() > 0 ? ", CUDA" : "");
  return st;
#endif
}

// Loaded the first time a torch model loads, never before.
const plugin_state& torch_plugin() {
  static const plugin_state st = open_torch_plugin();
  return st;
}

std::string where_of(const model_spec& spec) {
  return "model " + spec.name + " v" + std::to_string(spec.version);
}

// The batch sizes a warm-up runs: every size the batcher may form, or for
// a large max_batch the powers of two and max_batch. The largest first,
// twice, because libtorch's graph executor profiles the first run and
// optimises on the second.
std::vector<uint64_t> warmup_sizes(uint64_t max_batch) {
  std::vector<uint64_t> out{max_batch, max_batch};
  for (uint64_t n = 1; n < max_batch; ++n) {
    if (max_batch <= 32 || (n & (n - 1)) == 0) {
      out.push_back(n);
    }
  }
  return out;
}

shoal_torch_tensor view_of(const tensor& t) {
  shoal_torch_tensor v{};
  v.dtype = static_cast<int32_t>(t.type);
  v.rank = static_cast<int32_t>(t.shape.size());
  for (size_t d = 0; d < t.shape.size() && d < SHOAL_TORCH_MAX_RANK; ++d) {
    v.shape[d] = static_cast<int64_t>(t.shape[d]);
  }
  // The plugin reads inputs in place and never writes them.
  v.data = const_cast<uint8_t*>(t.data.data());
  v.bytes = t.data.size();
  return v;
}

std::string shape_text(const int64_t* shape, int rank) {
  std::string out = "[";
  for (int d = 0; d < rank; ++d) {
    out += (d > 0 ? ", " : "") + std::to_string(shape[d]);
  }
  return out + "]";
}

} // namespace

torch_backend::~torch_backend() {
  if (model_ != nullptr) {
    api_->free(model_);
  }
  if (ledger_id_ != 0) {
    device_ledger::instance().remove(ledger_id_);
  }
}

caf::expected<backend_ptr> torch_backend::load(const model_spec& spec,
                                               device_choice where,
                                               const load_options& opts) {
  auto topts = options_of<torch_options>(spec);
  if (!topts) {
    return topts.error();
  }
  std::unique_ptr<torch_backend> be{new torch_backend};
  be->spec_ = spec;
  be->file_ = spec.dir + "/" + (*topts)->weights_file;
  auto fail = [&](const std::string& why) {
    return make_error(errc::unavailable,
                      where_of(spec) + ": " + be->file_ + ": " + why);
  };
  auto& plugin = torch_plugin();
  if (plugin.api == nullptr) {
    return fail(plugin.why);
  }
  be->api_ = plugin.api;
  if (where.on_gpu && plugin.api->cuda_devices() <= where.gpu) {
    return fail("this node's libtorch " + std::string{plugin.api->version()} +
                " has no CUDA device " + std::to_string(where.gpu) +
                " (built without CUDA, or a CPU-only torch)");
  }
  std::error_code ec;
  be->file_bytes_ = std::filesystem::file_size(be->file_, ec);
  std::vector<const char*> names;
  for (auto& o : spec.outputs) {
    names.push_back(o.name.c_str());
  }
  shoal_torch_load_args args{};
  args.path = be->file_.c_str();
  args.n_inputs = static_cast<uint32_t>(spec.inputs.size());
  args.output_names = names.data();
  args.n_outputs = static_cast<uint32_t>(names.size());
  args.device = where.on_gpu ? where.gpu : -1;
  args.precision = static_cast<int32_t>((*topts)->precision);
  args.threads = static_cast<int32_t>((*topts)->threads);
  char err[err_len] = {0};
  be->model_ = plugin.api->load(&args, err, sizeof(err));
  if (be->model_ == nullptr) {
    std::string why = err;
    if (why.find("PytorchStreamReader") != std::string::npos) {
      why += " (not a TorchScript archive as torch.jit.save writes one, or "
             "cut short)";
    }
    if (why.find("maximum supported version") != std::string::npos) {
      why += " (saved by a newer torch: export it with a torch no newer than "
             "this node's libtorch)";
    }
    return fail(why + " (libtorch " + plugin.api->version() + ")");
  }
  be->gpu_ = args.device;
  if ((*topts)->warmup) {
    for (auto rows : warmup_sizes(std::max<uint64_t>(1, spec.max_batch))) {
      if (auto werr = be->run_zeros(rows)) {
        return fail(reason_of(werr));
      }
    }
  } else if (auto werr = be->run_zeros(1)) {
    return fail(reason_of(werr));
  }
  if (be->gpu_ >= 0) {
    be->ledger_id_ = device_ledger::instance().add(
        be->gpu_, spec.name, spec.version, be->memory_bytes(), opts.retire);
  }
  return backend_ptr{std::move(be)};
}

caf::error torch_backend::run_zeros(uint64_t rows) {
  std::vector<tensor> inputs;
  for (auto& in : spec_.inputs) {
    tensor t;
    t.name = in.name;
    t.type = in.type;
    uint64_t n = 1;
    for (auto d : in.shape) {
      auto dim = d < 0 ? rows : static_cast<uint64_t>(d);
      t.shape.push_back(dim);
      n *= dim;
    }
    t.data.assign(n * dtype_size(in.type), 0);
    inputs.push_back(std::move(t));
  }
  auto out = run_raw(inputs, rows);
  return out ? caf::error{} : out.error();
}

caf::expected<std::vector<tensor>>
torch_backend::take_outputs(const std::vector<shoal_torch_tensor>& outs,
                            uint64_t rows) {
  std::vector<tensor> result;
  for (size_t i = 0; i < outs.size(); ++i) {
    auto& decl = spec_.outputs[i];
    auto& o = outs[i];
    bool same = o.rank == static_cast<int32_t>(decl.shape.size());
    for (int d = 0; same && d < o.rank; ++d) {
      auto want =
          decl.shape[d] < 0 ? static_cast<int64_t>(rows) : decl.shape[d];
      same = o.shape[d] == want;
    }
    if (o.dtype != static_cast<int32_t>(decl.type) || !same) {
      auto got = o.dtype >= 0
                     ? std::string{to_string(static_cast<dtype>(o.dtype))}
                     : std::string{"a dtype shoal has no name for"};
      return make_error(errc::internal,
                        "output '" + decl.name + "': forward returned " + got +
                            " " + shape_text(o.shape, o.rank) +
                            " for a batch of " + std::to_string(rows) +
                            ", the manifest declares " +
                            std::string{to_string(decl.type)} + " " +
                            shape_text(decl.shape.data(),
                                       static_cast<int>(decl.shape.size())));
    }
    tensor t;
    t.name = decl.name;
    t.type = decl.type;
    t.shape.assign(o.shape, o.shape + o.rank);
    auto* p = static_cast<const uint8_t*>(o.data);
    t.data.assign(p, p + o.bytes);
    result.push_back(std::move(t));
  }
  return result;
}

caf::expected<std::vector<tensor>>
torch_backend::run_raw(const std::vector<tensor>& inputs, uint64_t rows) {
  std::vector<shoal_torch_tensor> in;
  in.reserve(inputs.size());
  for (auto& t : inputs) {
    in.push_back(view_of(t));
  }
  std::vector<shoal_torch_tensor> out(spec_.outputs.size());
  char err[err_len] = {0};
  if (ledger_id_ != 0) {
    device_ledger::instance().touch(ledger_id_, true);
  }
  auto rc =
      api_->run(model_, in.data(), static_cast<uint32_t>(in.size()), out.data(),
                static_cast<uint32_t>(out.size()), err, sizeof(err));
  if (ledger_id_ != 0) {
    device_ledger::instance().touch(ledger_id_, false);
  }
  if (rc != 0) {
    return make_error(errc::internal, "forward failed: " + std::string{err});
  }
  return take_outputs(out, rows);
}

caf::expected<std::vector<tensor>>
torch_backend::run(const std::vector<tensor>& inputs, uint64_t rows) {
  auto out = run_raw(inputs, rows);
  if (!out) {
    return make_error(errc::internal, where_of(spec_) + ": " + file_ + ": " +
                                          reason_of(out.error()));
  }
  return out;
}

uint64_t torch_backend::memory_bytes() const noexcept {
  if (gpu_ < 0) {
    return file_bytes_;
  }
  uint64_t allocated = 0;
  uint64_t reserved = 0;
  api_->memory(model_, &allocated, &reserved);
  return std::max(allocated, reserved);
}

std::string torch_backend::device() const {
  return gpu_ < 0 ? "cpu" : "gpu:" + std::to_string(gpu_);
}

caf::expected<std::string> torch_runtime_version() {
  auto& plugin = torch_plugin();
  if (plugin.api == nullptr) {
    return make_error(errc::unavailable, plugin.why);
  }
  return std::string{plugin.api->version()};
}

int torch_cuda_devices() {
  auto& plugin = torch_plugin();
  return plugin.api != nullptr ? plugin.api->cuda_devices() : 0;
}

bool torch_plugin_loaded() noexcept {
  return plugin_mapped.load();
}

backend_info torch_backend_info() {
  return {
      .name = "torch",
      .sections = torch_sections(),
      .resource_keys = {},
      .devices = {device_kind::cpu, device_kind::gpu, device_kind::any},
      .default_device = device_kind::cpu,
      .parse = parse_torch_options,
      .load = torch_backend::load,
      .may_block = {},
      .configure =
          [](const node_config& cfg) {
            configured_threads = cfg.torch.threads;
          },
  };
}

} // namespace shoal
