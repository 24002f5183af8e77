// libshoal_torch.so: the TorchScript backend's libtorch side, behind the C
// interface of gpu/torch/torch_plugin_api.h. Every libtorch call is made
// inside a try block here; what it throws becomes an error string, so no
// exception (nor any libtorch type) ever reaches shoald.
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/script.h>
#include <torch/version.h>

#include "gpu/torch/torch_plugin_api.h"

#ifdef SHOAL_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>
#endif

namespace {

// The node's intra-op thread count (set_threads), 0 until set.
std::atomic<int> node_threads{0};

void set_error(char* err, size_t len, const std::string& what) {
  if (err != nullptr && len > 0) {
    std::snprintf(err, len, "%s", what.c_str());
  }
}

// libtorch's messages end with a C++ backtrace on later lines; the first
// line says what went wrong.
std::string first_line(const char* what) {
  std::string s{what};
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

// Exception messages whose first line says nothing ("PytorchStreamReader
// failed ...: file not found") keep their second line too.
std::string reason_of(const std::exception& e) {
  std::string s{e.what()};
  auto nl = s.find('\n');
  if (nl == std::string::npos) {
    return s;
  }
  auto line = s.substr(0, nl);
  auto rest = s.substr(nl + 1);
  auto nl2 = rest.find('\n');
  if (line.find("version") == std::string::npos &&
      rest.find("version") != std::string::npos) {
    line += ": " + rest.substr(0, nl2);
  }
  return line;
}

c10::ScalarType scalar_of(int32_t dtype) {
  switch (dtype) {
  case SHOAL_TORCH_F32:
    return c10::kFloat;
  case SHOAL_TORCH_F16:
    return c10::kHalf;
  case SHOAL_TORCH_BF16:
    return c10::kBFloat16;
  case SHOAL_TORCH_F64:
    return c10::kDouble;
  case SHOAL_TORCH_I8:
    return c10::kChar;
  case SHOAL_TORCH_I16:
    return c10::kShort;
  case SHOAL_TORCH_I32:
    return c10::kInt;
  case SHOAL_TORCH_I64:
    return c10::kLong;
  case SHOAL_TORCH_U8:
    return c10::kByte;
  default:
    return c10::kBool;
  }
}

// -1 for a scalar type the wire has no name for (complex, quantized).
int32_t dtype_of(c10::ScalarType t) {
  switch (t) {
  case c10::kFloat:
    return SHOAL_TORCH_F32;
  case c10::kHalf:
    return SHOAL_TORCH_F16;
  case c10::kBFloat16:
    return SHOAL_TORCH_BF16;
  case c10::kDouble:
    return SHOAL_TORCH_F64;
  case c10::kChar:
    return SHOAL_TORCH_I8;
  case c10::kShort:
    return SHOAL_TORCH_I16;
  case c10::kInt:
    return SHOAL_TORCH_I32;
  case c10::kLong:
    return SHOAL_TORCH_I64;
  case c10::kByte:
    return SHOAL_TORCH_U8;
  case c10::kBool:
    return SHOAL_TORCH_BOOL;
  default:
    return -1;
  }
}

} // namespace

struct shoal_torch_model {
  torch::jit::Module module;
  std::vector<std::string> output_names;
  uint32_t n_inputs = 0;
  int threads = 0;
  c10::Device device{c10::kCPU};
  c10::ScalarType precision = c10::kFloat;
  std::vector<torch::Tensor> outputs; // host, contiguous: what run returns
#ifdef SHOAL_TORCH_CUDA
  std::unique_ptr<c10::cuda::CUDAStream> stream;
#endif
};

namespace {

// forward's declared parameters besides self: how many there are and how
// many of them have no default.
std::string check_arity(const shoal_torch_model& m) {
  auto& schema = m.module.get_method("forward").function().getSchema();
  auto& args = schema.arguments();
  size_t total = args.empty() ? 0 : args.size() - 1; // self
  size_t required = 0;
  for (size_t i = 1; i < args.size(); ++i) {
    if (!args[i].default_value()) {
      ++required;
    }
  }
  if (m.n_inputs < required || m.n_inputs > total) {
    return "forward takes " + std::to_string(total) +
           (required != total ? " (" + std::to_string(required) + " required)"
                              : std::string{}) +
           " input(s), the manifest declares " + std::to_string(m.n_inputs) +
           " ([[inputs]])";
  }
  return {};
}

// Freezing folds the weights and batch norms into constants; optimising
// for inference fuses conv + batch norm and picks oneDNN layouts. A module
// that cannot be frozen (exported in training mode, say) still serves.
void optimise(shoal_torch_model& m) {
  try {
    m.module.eval();
    m.module = torch::jit::freeze(m.module);
  } catch (const std::exception&) {
    // Already frozen (an exported frozen module has no attributes left to
    // fold) or not freezable: serve it as it is.
  }
  if (m.device.is_cpu()) {
    try {
      m.module = torch::jit::optimize_for_inference(m.module);
    } catch (const std::exception&) {
      // Not every module can be: it still runs, unoptimised.
    }
  }
}

shoal_torch_model* load_model(const shoal_torch_load_args* a) {
  auto m = std::make_unique<shoal_torch_model>();
  m->n_inputs = a->n_inputs;
  m->threads = a->threads;
  for (uint32_t i = 0; i < a->n_outputs; ++i) {
    m->output_names.emplace_back(a->output_names[i]);
  }
  if (a->device >= 0) {
    m->device =
        c10::Device{c10::kCUDA, static_cast<c10::DeviceIndex>(a->device)};
    m->precision = scalar_of(a->precision);
  }
  m->module = torch::jit::load(a->path, m->device);
  if (!m->module.find_method("forward")) {
    throw std::runtime_error("the module has no forward method");
  }
  if (auto why = check_arity(*m); !why.empty()) {
    throw std::runtime_error(why);
  }
#ifdef SHOAL_TORCH_CUDA
  if (!m->device.is_cpu()) {
    if (m->precision != c10::kFloat) {
      // A frozen export holds its weights as graph constants, which no
      // cast reaches: the inputs would meet f32 weights.
      if (m->module.parameters().size() == 0) {
        throw std::runtime_error(
            "precision f16/bf16 needs the module's weights as parameters: "
            "export it without torch.jit.freeze (the node freezes it after "
            "the cast)");
      }
      m->module.to(m->precision);
    }
    m->stream = std::make_unique<c10::cuda::CUDAStream>(
        c10::cuda::getStreamFromPool(false, m->device.index()));
  }
#endif
  optimise(*m);
  return m.release();
}

shoal_torch_model* api_load(const shoal_torch_load_args* args, char* err,
                            size_t err_len) {
  try {
    return load_model(args);
  } catch (const c10::Error& e) {
    set_error(err, err_len, reason_of(e));
  } catch (const std::exception& e) {
    set_error(err, err_len, reason_of(e));
  }
  return nullptr;
}

// The batch's inputs as tensors over the caller's memory (no copy on the
// CPU); on a GPU, copied through pinned memory on the replica's stream.
std::vector<c10::IValue> make_inputs(shoal_torch_model& m,
                                     const shoal_torch_tensor* in, uint32_t n) {
  std::vector<c10::IValue> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    std::vector<int64_t> shape(in[i].shape, in[i].shape + in[i].rank);
    auto t = torch::from_blob(in[i].data, shape,
                              torch::TensorOptions{scalar_of(in[i].dtype)});
    if (!m.device.is_cpu()) {
      auto pinned = torch::empty(shape, t.options().pinned_memory(true));
      pinned.copy_(t);
      t = pinned.to(m.device, /*non_blocking=*/true);
      if (t.is_floating_point() && m.precision != c10::kFloat) {
        t = t.to(m.precision);
      }
    }
    out.emplace_back(std::move(t));
  }
  return out;
}

// forward's result as the declared outputs, in order.
std::vector<torch::Tensor> collect(const shoal_torch_model& m,
                                   const c10::IValue& result) {
  std::vector<torch::Tensor> out;
  auto n = m.output_names.size();
  if (result.isTensor()) {
    if (n != 1) {
      throw std::runtime_error("forward returned one tensor, the manifest "
                               "declares " +
                               std::to_string(n) + " outputs");
    }
    out.push_back(result.toTensor());
  } else if (result.isTuple() || result.isList()) {
    auto elems = result.isTuple() ? result.toTupleRef().elements().vec()
                                  : result.toListRef().vec();
    if (elems.size() != n) {
      throw std::runtime_error(
          "forward returned a tuple of " + std::to_string(elems.size()) +
          ", the manifest declares " + std::to_string(n) + " outputs");
    }
    for (size_t i = 0; i < n; ++i) {
      if (!elems[i].isTensor()) {
        throw std::runtime_error("forward's result " + std::to_string(i) +
                                 " (" + m.output_names[i] +
                                 ") is not a tensor");
      }
      out.push_back(elems[i].toTensor());
    }
  } else if (result.isGenericDict()) {
    auto dict = result.toGenericDict();
    std::string keys;
    for (auto& kv : dict) {
      keys += (keys.empty() ? "" : ", ") +
              (kv.key().isString() ? kv.key().toStringRef() : std::string{"?"});
    }
    for (auto& name : m.output_names) {
      auto it = dict.find(name);
      if (it == dict.end() || !it->value().isTensor()) {
        throw std::runtime_error("forward returned a dict without a tensor "
                                 "'" +
                                 name + "' (its keys: " + keys + ")");
      }
      out.push_back(it->value().toTensor());
    }
  } else {
    throw std::runtime_error("forward returned a " + result.tagKind() +
                             ", not a tensor, a tuple or a dict");
  }
  return out;
}

// Outputs to host memory the caller can read: contiguous, on the CPU, and
// f32 where a reduced precision ran on the GPU.
void to_host(shoal_torch_model& m, std::vector<torch::Tensor>& outs) {
  for (auto& t : outs) {
    if (!m.device.is_cpu()) {
      if (t.is_floating_point() && m.precision != c10::kFloat) {
        t = t.to(c10::kFloat);
      }
      auto host = torch::empty(
          t.sizes(), t.options().device(c10::kCPU).pinned_memory(true));
      host.copy_(t, /*non_blocking=*/true);
      t = host;
    }
    t = t.contiguous();
  }
#ifdef SHOAL_TORCH_CUDA
  if (m.stream) {
    m.stream->synchronize();
  }
#endif
}

void fill(const std::vector<torch::Tensor>& outs, shoal_torch_tensor* out) {
  for (size_t i = 0; i < outs.size(); ++i) {
    auto& t = outs[i];
    if (t.dim() > SHOAL_TORCH_MAX_RANK) {
      throw std::runtime_error("output " + std::to_string(i) + " has rank " +
                               std::to_string(t.dim()));
    }
    out[i].dtype = dtype_of(t.scalar_type());
    out[i].rank = static_cast<int32_t>(t.dim());
    for (int64_t d = 0; d < t.dim(); ++d) {
      out[i].shape[d] = t.size(d);
    }
    out[i].data = t.data_ptr();
    out[i].bytes = t.numel() * t.element_size();
  }
}

void run_model(shoal_torch_model& m, const shoal_torch_tensor* in,
               uint32_t n_in, shoal_torch_tensor* out, uint32_t n_out) {
  // libtorch's OpenMP thread count is per calling thread: the executor's
  // thread gets the node's (or the model's smaller) count before its first
  // batch. Through at:: rather than omp_*, because a pip torch carries its
  // own, renamed libgomp.
  int want = node_threads.load();
  if (m.threads > 0 && (want == 0 || m.threads < want)) {
    want = m.threads;
  }
  if (want > 0 && at::get_num_threads() != want) {
    at::set_num_threads(want);
  }
  c10::InferenceMode guard;
#ifdef SHOAL_TORCH_CUDA
  std::optional<c10::cuda::CUDAStreamGuard> stream_guard;
  if (m.stream) {
    stream_guard.emplace(*m.stream);
  }
#endif
  auto inputs = make_inputs(m, in, n_in);
  auto result = m.module.forward(std::move(inputs));
  auto outs = collect(m, result);
  if (outs.size() != n_out) {
    throw std::runtime_error("the caller expects " + std::to_string(n_out) +
                             " outputs");
  }
  to_host(m, outs);
  m.outputs = std::move(outs);
  fill(m.outputs, out);
}

// Whether a line reads "SomeError: why" (or "...Exception: why"): how the
// TorchScript interpreter ends its message with the exception's own words.
bool is_exception_line(const std::string& line) {
  auto colon = line.find(": ");
  if (colon == std::string::npos || colon == 0) {
    return false;
  }
  auto name = line.substr(0, colon);
  auto word_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' ||
           c == '.';
  };
  if (!std::all_of(name.begin(), name.end(), word_char)) {
    return false;
  }
  return name.ends_with("Error") || name.ends_with("Exception");
}

// A forward's failure in one bounded line. An interpreter error's first
// line is boilerplate ("The following operation failed in the TorchScript
// interpreter.") and the cause ("RuntimeError: boom") is its last
// "XxxError: ..." line, after the TorchScript traceback; other errors say
// it on their first line.
std::string forward_reason(const std::string& what) {
  constexpr size_t max_len = 400;
  std::string pick;
  size_t begin = 0;
  while (begin < what.size()) {
    auto end = what.find('\n', begin);
    if (end == std::string::npos) {
      end = what.size();
    }
    auto line = what.substr(begin, end - begin);
    auto first = line.find_first_not_of(" \t");
    if (first != std::string::npos && is_exception_line(line.substr(first))) {
      pick = line.substr(first);
    }
    begin = end + 1;
  }
  if (pick.empty()) {
    pick = first_line(what.c_str());
  }
  // A `raise` in TorchScript names Python's builtins module, noise here.
  if (pick.starts_with("builtins.")) {
    pick.erase(0, std::string_view{"builtins."}.size());
  }
  if (pick.size() > max_len) {
    pick = pick.substr(0, max_len) + "...";
  }
  return pick;
}

int32_t api_run(shoal_torch_model* m, const shoal_torch_tensor* in,
                uint32_t n_in, shoal_torch_tensor* out, uint32_t n_out,
                char* err, size_t err_len) {
  try {
    run_model(*m, in, n_in, out, n_out);
    return 0;
  } catch (const c10::Error& e) {
    // Without the C++ backtrace, whose frames would bury the cause.
    set_error(err, err_len, forward_reason(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    set_error(err, err_len, forward_reason(e.what()));
  }
  return -1;
}

const char* api_version() {
  return TORCH_VERSION;
}

int32_t api_cuda_devices() {
#ifdef SHOAL_TORCH_CUDA
  try {
    return static_cast<int32_t>(torch::cuda::device_count());
  } catch (const std::exception&) {
    return 0;
  }
#else
  return 0;
#endif
}

void api_set_threads(int32_t threads) {
  if (threads <= 0) {
    return;
  }
  try {
    // The pool is process-wide: set once, before any model runs.
    int expected = 0;
    if (node_threads.compare_exchange_strong(expected, threads)) {
      at::set_num_threads(threads);
    }
  } catch (const std::exception&) {
    // Keeps libtorch's default.
  }
}

void api_memory(shoal_torch_model* m, uint64_t* allocated, uint64_t* reserved) {
  *allocated = 0;
  *reserved = 0;
#ifdef SHOAL_TORCH_CUDA
  if (m != nullptr && !m->device.is_cpu()) {
    try {
      auto stats =
          c10::cuda::CUDACachingAllocator::getDeviceStats(m->device.index());
      using stat = c10::cuda::CUDACachingAllocator::StatType;
      auto all = static_cast<size_t>(stat::AGGREGATE);
      *allocated = stats.allocated_bytes[all].current;
      *reserved = stats.reserved_bytes[all].current;
    } catch (const std::exception&) {
      // Reports nothing rather than fail a status.
    }
  }
#else
  (void)m;
#endif
}

void api_free(shoal_torch_model* m) {
  try {
    delete m;
  } catch (...) {
    // A destructor that throws has nothing left to tell anyone.
  }
}

} // namespace

extern "C" __attribute__((visibility("default"))) const shoal_torch_api*
shoal_torch_plugin(void) {
  static const shoal_torch_api api{
      SHOAL_TORCH_ABI, &api_version, &api_cuda_devices, &api_set_threads,
      &api_load,       &api_run,     &api_memory,       &api_free,
  };
  return &api;
}
