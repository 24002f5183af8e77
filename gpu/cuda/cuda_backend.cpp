#include "gpu/cuda/cuda_backend.hpp"

#include <cstring>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "gpu/cuda/cuda_check.hpp"
#include "gpu/cuda/kernels.hpp"
#include "gpu/device/device_ledger.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace cuda {

namespace {

// cuBLAS on Hopper wants up to 32 MiB of workspace for its best kernels;
// our layers are small, and a fixed, accounted buffer beats one cuBLAS
// allocates behind our back.
constexpr size_t blas_workspace = size_t{8} << 20;

// The most workspace a convolution algorithm may ask for.
constexpr size_t conv_workspace_limit = size_t{256} << 20;

// Convolution algorithms are chosen at load for batch sizes up to this.
constexpr size_t max_precomputed_rows = 256;

// Weights are placed at this alignment inside the one allocation, which
// cuBLAS's tensor-core kernels want (16 bytes at least).
constexpr size_t weight_align = 256;

size_t align_up(size_t v, size_t a) {
  return (v + a - 1) / a * a;
}

// A CUDA failure while serving: the context may be gone, so the replica
// dies and the router re-dispatches its work (see executor.hpp).
[[noreturn]] void fault(const caf::error& err) {
  throw std::runtime_error(reason_of(err));
}

// Dense weights keep their precision (f16 and bf16 compute as such);
// everything else is f32 on the device.
bool native(const graph_step& g, const tensor_view* t) {
  return g.op == "dense" && t == g.w &&
         (t->type == dtype::f16 || t->type == dtype::bf16);
}

size_t device_bytes(const graph_step& g, const tensor_view* t) {
  auto n = t->bytes / dtype_size(t->type);
  return native(g, t) ? t->bytes : n * sizeof(float);
}

bool writes_new_buffer(const std::string& op) {
  return op == "dense" || op == "conv2d" || op == "max_pool2d" ||
         op == "avg_pool2d";
}

} // namespace

// -- buffers
// -------------------------------------------------------------------

template <bool Pinned>
void cuda_buffer<Pinned>::release::operator()(void* p) const noexcept {
  if constexpr (Pinned) {
    cudaFreeHost(p);
  } else {
    cudaFree(p);
  }
}

template <bool Pinned>
caf::error cuda_buffer<Pinned>::alloc(size_t bytes, const std::string& dev,
                                      const char* what) {
  p_.reset();
  bytes_ = 0;
  if (bytes == 0) {
    return {};
  }
  void* p = nullptr;
  auto rc = Pinned ? cudaHostAlloc(&p, bytes, cudaHostAllocDefault)
                   : cudaMalloc(&p, bytes);
  if (auto err = check(rc, dev, what)) {
    if constexpr (Pinned) {
      return err;
    }
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    (void)cudaGetLastError();
    return make_error(static_cast<errc>(err.code()),
                      reason_of(err) + ": " + std::to_string(bytes) +
                          " bytes wanted, " + std::to_string(free_b) + " of " +
                          std::to_string(total_b) + " free");
  }
  p_.reset(p);
  bytes_ = bytes;
  return {};
}

template class cuda_buffer<false>;
template class cuda_buffer<true>;

ledger_token::~ledger_token() {
  if (ledger && id != 0) {
    ledger->remove(id);
  }
}

// -- load
// ----------------------------------------------------------------------

caf::expected<backend_ptr> cuda_backend::load(const model_spec& spec,
                                              int device,
                                              const load_options& opts,
                                              device_ledger& ledger) {
  std::unique_ptr<cuda_backend> be{new cuda_backend};
  if (auto err = be->init(spec, device)) {
    return err; // the destructor frees whatever was allocated
  }
  be->ledger_.id = ledger.add(device, spec.name, spec.version,
                              be->memory_bytes(), opts.retire);
  be->ledger_.ledger = &ledger;
  spdlog::info("{} v{} on {}: {:.1f} MB of device memory", spec.name,
               spec.version, be->dev_, be->memory_bytes() / 1e6);
  return backend_ptr{std::move(be)};
}

caf::error cuda_backend::init(const model_spec& spec, int device) {
  spec_ = spec;
  device_ = device;
  dev_ = "gpu:" + std::to_string(device);
  SHOAL_CUDA_TRY(cudaSetDevice(device), dev_, "cudaSetDevice");
  auto rows = std::max<size_t>(1, spec.max_batch);
  caf::error err;
  (err = open_graph(spec)) || (err = create_handles()) ||
      (err = init_layers(rows)) || (err = upload_weights());
  if (err) {
    return err;
  }
  for (auto& sl : slot_) {
    for (auto* e : {&sl.copy_in_start, &sl.copy_in_done, &sl.compute_start,
                    &sl.compute_done, &sl.copy_out_start, &sl.copy_out_done}) {
      SHOAL_CUDA_TRY(cudaEventCreate(e), dev_, "cudaEventCreate");
    }
  }
  return allocate(rows);
}

caf::error cuda_backend::open_graph(const model_spec& spec) {
  auto graph = options_of<graph_options>(spec);
  if (!graph) {
    return graph.error();
  }
  weights_path_ = spec.dir + "/" + (*graph)->weights_file;
  tf32_ = (*graph)->allow_tf32;
  if (!(*graph)->weights_file.empty()) {
    auto f = safetensors_file::open(weights_path_);
    if (!f) {
      return make_error(errc::unavailable, reason_of(f.error()));
    }
    file_ = std::move(*f);
  }
  auto g = resolve_graph(spec, **graph, file_, "cuda");
  if (!g) {
    return g.error();
  }
  graph_ = std::move(*g);
  return {};
}

caf::error cuda_backend::create_handles() {
  for (auto* s : {&in_, &compute_, &out_}) {
    SHOAL_CUDA_TRY(cudaStreamCreateWithFlags(s, cudaStreamNonBlocking), dev_,
                   "cudaStreamCreate");
  }
  SHOAL_CUDA_TRY(cublasCreate(&blas_), dev_, "cublasCreate");
  SHOAL_CUDA_TRY(cublasSetStream(blas_, compute_), dev_, "cublasSetStream");
  if (auto err = blas_ws_.alloc(blas_workspace, dev_, "cuBLAS workspace")) {
    return err;
  }
  SHOAL_CUDA_TRY(cublasSetWorkspace(blas_, blas_ws_.get(), blas_ws_.bytes()),
                 dev_, "cublasSetWorkspace");
  SHOAL_CUDA_TRY(cudnnCreate(&dnn_), dev_, "cudnnCreate");
  SHOAL_CUDA_TRY(cudnnSetStream(dnn_, compute_), dev_, "cudnnSetStream");
  return pointwise_.init(dev_);
}

caf::error cuda_backend::init_layers(size_t rows) {
  size_t conv_ws = 0;
  steps_.resize(graph_.steps.size());
  for (size_t i = 0; i < graph_.steps.size(); ++i) {
    auto& s = steps_[i];
    s.g = graph_.steps[i];
    if (s.g.op == "conv2d") {
      // Algorithms for larger batches are picked on first use.
      auto algo_rows = std::min<size_t>(rows, max_precomputed_rows);
      if (auto err = s.conv.init(dnn_, s.g.conv, tf32_, algo_rows,
                                 conv_workspace_limit, dev_)) {
        return err;
      }
      conv_ws = std::max(conv_ws, s.conv.workspace_bytes());
    } else if (s.g.op == "max_pool2d" || s.g.op == "avg_pool2d") {
      if (auto err = s.pool.init(s.g.pool, s.g.op == "max_pool2d", dev_)) {
        return err;
      }
    }
    if (writes_new_buffer(s.g.op)) {
      final_writer_ = i;
    }
  }
  return conv_ws_.alloc(conv_ws, dev_, "cuDNN workspace");
}

caf::error cuda_backend::upload_tensor(const step& s, const tensor_view* t,
                                       void* dst) {
  if (native(s.g, t) || t->type == dtype::f32) {
    // Straight from the mapping: pageable, once per replica.
    SHOAL_CUDA_TRY(cudaMemcpy(dst, t->data, t->bytes, cudaMemcpyHostToDevice),
                   dev_, "cudaMemcpy of the weights");
    return {};
  }
  auto f = to_f32(*t);
  if (!f) {
    return make_error(errc::unavailable, weights_path_ + ": " + t->name + ": " +
                                             reason_of(f.error()));
  }
  SHOAL_CUDA_TRY(cudaMemcpy(dst, f->data(), f->size() * sizeof(float),
                            cudaMemcpyHostToDevice),
                 dev_, "cudaMemcpy of the weights");
  return {};
}

caf::error cuda_backend::upload_weights() {
  size_t total = 0;
  for (auto& s : steps_) {
    for (auto* t : {s.g.w, s.g.b}) {
      if (t != nullptr) {
        total = align_up(total, weight_align) + device_bytes(s.g, t);
      }
    }
  }
  if (auto err = weights_.alloc(total, dev_, "weights")) {
    return err;
  }
  size_t at = 0;
  auto* base = static_cast<uint8_t*>(weights_.get());
  for (auto& s : steps_) {
    for (auto* t : {s.g.w, s.g.b}) {
      if (t == nullptr) {
        continue;
      }
      at = align_up(at, weight_align);
      auto* dst = base + at;
      if (auto err = upload_tensor(s, t, dst)) {
        return err;
      }
      if (t == s.g.w) {
        s.w = dst;
        s.w_type = !native(s.g, t)         ? CUDA_R_32F
                   : t->type == dtype::f16 ? CUDA_R_16F
                                           : CUDA_R_16BF;
      } else {
        s.b = reinterpret_cast<const float*>(dst);
      }
      at += device_bytes(s.g, t);
    }
  }
  // The weights file is no longer needed: the device has its copy.
  file_ = safetensors_file{};
  for (auto& s : steps_) {
    s.g.w = s.g.b = nullptr;
  }
  for (auto& g : graph_.steps) {
    g.w = g.b = nullptr;
  }
  return {};
}

caf::error cuda_backend::allocate(size_t rows) {
  capacity_ = 0; // until every buffer below is there
  auto in_floats = dims_product(graph_.in_dims);
  auto out_floats = dims_product(graph_.out_dims);
  if (auto err = act_a_.alloc(rows * graph_.widest * sizeof(float), dev_,
                              "activations")) {
    return err;
  }
  if (auto err = act_b_.alloc(rows * graph_.widest * sizeof(float), dev_,
                              "activations")) {
    return err;
  }
  size_t half_in = 0;
  for (auto& s : steps_) {
    if (s.g.op == "dense" && s.w_type != CUDA_R_32F) {
      half_in = std::max<size_t>(half_in, s.g.in_dims[0]);
    }
  }
  if (auto err = half_.alloc(rows * half_in * 2, dev_, "half activations")) {
    return err;
  }
  for (auto& [name, dims] : graph_.saved_dims) {
    if (auto err = saved_[name].alloc(rows * dims_product(dims) * sizeof(float),
                                      dev_, "saved activations")) {
      return err;
    }
  }
  for (auto& sl : slot_) {
    auto in_b = rows * in_floats * sizeof(float);
    auto out_b = rows * out_floats * sizeof(float);
    if (auto err = sl.host_in.alloc(in_b, dev_, "pinned input staging")) {
      return err;
    }
    if (auto err = sl.host_out.alloc(out_b, dev_, "pinned output staging")) {
      return err;
    }
    if (auto err = sl.dev_in.alloc(in_b, dev_, "inputs")) {
      return err;
    }
    if (auto err = sl.dev_out.alloc(out_b, dev_, "outputs")) {
      return err;
    }
  }
  capacity_ = rows;
  if (ledger_.ledger) {
    ledger_.ledger->set_bytes(ledger_.id, memory_bytes());
  }
  return {};
}

void cuda_backend::release_events() {
  for (auto& sl : slot_) {
    for (auto* e : {&sl.copy_in_start, &sl.copy_in_done, &sl.compute_start,
                    &sl.compute_done, &sl.copy_out_start, &sl.copy_out_done}) {
      if (*e) {
        cudaEventDestroy(*e);
        *e = nullptr;
      }
    }
  }
}

cuda_backend::~cuda_backend() {
  cudaSetDevice(device_);
  for (auto s : {in_, compute_, out_}) {
    if (s) {
      cudaStreamSynchronize(s);
    }
  }
  release_events();
  if (dnn_) {
    cudnnDestroy(dnn_);
  }
  if (blas_) {
    cublasDestroy(blas_);
  }
  for (auto s : {in_, compute_, out_}) {
    if (s) {
      cudaStreamDestroy(s);
    }
  }
  // The buffers free themselves next (on this device), then ledger_ leaves
  // the ledger, so a load waiting for room sees the memory already free.
}

uint64_t cuda_backend::memory_bytes() const noexcept {
  uint64_t sum = weights_.bytes() + act_a_.bytes() + act_b_.bytes() +
                 half_.bytes() + conv_ws_.bytes() + blas_ws_.bytes();
  for (auto& [name, b] : saved_) {
    sum += b.bytes();
  }
  for (auto& sl : slot_) {
    sum += sl.dev_in.bytes() + sl.dev_out.bytes();
  }
  return sum;
}

// -- serving
// -------------------------------------------------------------------

caf::error cuda_backend::enqueue_dense(const step& s, size_t rows,
                                       const float* x_f32, float* y) {
  auto in = s.g.in_dims[0];
  auto out = s.g.out_dims[0];
  const float one = 1.0f;
  const float zero = 0.0f;
  const void* x = x_f32;
  auto x_type = CUDA_R_32F;
  auto compute = tf32_ ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  if (s.w_type != CUDA_R_32F) {
    SHOAL_CUDA_TRY(to_half(x_f32, half_.get(), rows * in,
                           s.w_type == CUDA_R_16BF, compute_),
                   dev_, "to_half", errc::internal);
    x = half_.get();
    x_type = s.w_type;
    compute = CUBLAS_COMPUTE_32F;
  }
  // Row-major y[rows, out] = x[rows, in] W^T is column-major
  // y^T = W x^T: W [out, in] row-major is W^T column-major, so op T.
  SHOAL_CUDA_TRY(
      cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out),
                   static_cast<int>(rows), static_cast<int>(in), &one, s.w,
                   s.w_type, static_cast<int>(in), x, x_type,
                   static_cast<int>(in), &zero, y, CUDA_R_32F,
                   static_cast<int>(out), compute, CUBLAS_GEMM_DEFAULT),
      dev_, "cublasGemmEx", errc::internal);
  if (s.b != nullptr) {
    SHOAL_CUDA_TRY(bias_add(y, s.b, rows, out, compute_), dev_, "bias_add",
                   errc::internal);
  }
  return {};
}

caf::error cuda_backend::enqueue_step(step& s, size_t rows, float*& cur,
                                      float* fresh) {
  auto n_in = rows * dims_product(s.g.in_dims);
  auto* wf = static_cast<const float*>(s.w);
  auto& op = s.g.op;
  if (writes_new_buffer(op)) {
    caf::error err;
    if (op == "dense") {
      err = enqueue_dense(s, rows, cur, fresh);
    } else if (op == "conv2d") {
      err = s.conv.run(dnn_, cur, rows, wf, s.b, fresh, conv_ws_.get(),
                       conv_ws_.bytes(), dev_);
    } else {
      err = s.pool.run(dnn_, cur, rows, fresh, dev_);
    }
    if (!err) {
      cur = fresh;
    }
    return err;
  }
  if (op == "relu") {
    return pointwise_.relu(dnn_, cur, n_in, dev_);
  }
  if (op == "softmax") {
    auto cols = s.g.in_dims.back();
    return pointwise_.softmax(dnn_, cur, n_in / cols, cols, dev_);
  }
  if (op == "gelu") {
    SHOAL_CUDA_TRY(gelu(cur, n_in, compute_), dev_, "gelu", errc::internal);
  } else if (op == "layernorm") {
    auto cols = s.g.in_dims.back();
    SHOAL_CUDA_TRY(
        layernorm(cur, n_in / cols, cols, wf, s.b, s.g.eps, compute_), dev_,
        "layernorm", errc::internal);
  } else if (op == "add") {
    SHOAL_CUDA_TRY(add(cur, saved_[s.g.from].f32(), n_in, compute_), dev_,
                   "add", errc::internal);
  }
  // flatten: NCHW per sample already is one contiguous row.
  return {};
}

caf::error cuda_backend::enqueue_layers(slot& sl, size_t rows) {
  SHOAL_CUDA_TRY(cudaEventRecord(sl.compute_start, compute_), dev_,
                 "cudaEventRecord", errc::internal);
  float* cur = sl.dev_in.f32();
  float* bufs[2] = {act_a_.f32(), act_b_.f32()};
  size_t nb = 0; // bufs[nb] is free
  for (size_t i = 0; i < steps_.size(); ++i) {
    auto& s = steps_[i];
    // The last layer that writes a new buffer writes the output slot, so
    // the result needs no extra copy.
    float* fresh = i == final_writer_ ? sl.dev_out.f32() : bufs[nb];
    if (auto err = enqueue_step(s, rows, cur, fresh)) {
      return err;
    }
    if (cur == bufs[nb]) {
      nb ^= 1;
    }
    if (!s.g.save.empty()) {
      auto n_out = rows * dims_product(s.g.out_dims);
      SHOAL_CUDA_TRY(cudaMemcpyAsync(saved_[s.g.save].get(), cur,
                                     n_out * sizeof(float),
                                     cudaMemcpyDeviceToDevice, compute_),
                     dev_, "cudaMemcpyAsync (save)", errc::internal);
    }
  }
  if (final_writer_ == SIZE_MAX) { // only in-place layers: copy the result
    SHOAL_CUDA_TRY(
        cudaMemcpyAsync(sl.dev_out.get(), cur,
                        rows * dims_product(graph_.out_dims) * sizeof(float),
                        cudaMemcpyDeviceToDevice, compute_),
        dev_, "cudaMemcpyAsync (output)", errc::internal);
  }
  SHOAL_CUDA_TRY(cudaEventRecord(sl.compute_done, compute_), dev_,
                 "cudaEventRecord", errc::internal);
  return {};
}

caf::error cuda_backend::enqueue_batch(slot& sl, size_t rows, size_t in_bytes,
                                       size_t out_bytes) {
  SHOAL_CUDA_TRY(cudaEventRecord(sl.copy_in_start, in_), dev_,
                 "cudaEventRecord", errc::internal);
  SHOAL_CUDA_TRY(cudaMemcpyAsync(sl.dev_in.get(), sl.host_in.get(), in_bytes,
                                 cudaMemcpyHostToDevice, in_),
                 dev_, "cudaMemcpyAsync (inputs)", errc::internal);
  SHOAL_CUDA_TRY(cudaEventRecord(sl.copy_in_done, in_), dev_, "cudaEventRecord",
                 errc::internal);
  SHOAL_CUDA_TRY(cudaStreamWaitEvent(compute_, sl.copy_in_done, 0), dev_,
                 "cudaStreamWaitEvent", errc::internal);
  if (auto e = enqueue_layers(sl, rows)) {
    return e;
  }
  SHOAL_CUDA_TRY(cudaStreamWaitEvent(out_, sl.compute_done, 0), dev_,
                 "cudaStreamWaitEvent", errc::internal);
  SHOAL_CUDA_TRY(cudaEventRecord(sl.copy_out_start, out_), dev_,
                 "cudaEventRecord", errc::internal);
  SHOAL_CUDA_TRY(cudaMemcpyAsync(sl.host_out.get(), sl.dev_out.get(), out_bytes,
                                 cudaMemcpyDeviceToHost, out_),
                 dev_, "cudaMemcpyAsync (outputs)", errc::internal);
  SHOAL_CUDA_TRY(cudaEventRecord(sl.copy_out_done, out_), dev_,
                 "cudaEventRecord", errc::internal);
  return {};
}

caf::error cuda_backend::start(const std::vector<tensor>& inputs,
                               uint64_t rows) {
  if (inputs.size() != 1 || rows == 0) {
    return make_error(errc::invalid_argument,
                      "the cuda backend takes one input and at least a row");
  }
  auto& x = inputs.front();
  auto in_bytes = rows * dims_product(graph_.in_dims) * sizeof(float);
  auto out_bytes = rows * dims_product(graph_.out_dims) * sizeof(float);
  if (x.data.size() != in_bytes) {
    return make_error(errc::invalid_argument, "input size does not match");
  }
  if (in_flight_.size() >= slots) {
    return make_error(errc::internal, "start() with every slot in flight");
  }
  if (auto err = check(cudaSetDevice(device_), dev_, "cudaSetDevice",
                       errc::internal)) {
    fault(err);
  }
  if (rows > capacity_) {
    // Rare (a request above max_batch rows): finish what is in flight into
    // completed_, then grow every buffer once.
    while (!in_flight_.empty()) {
      completed_.push_back(complete_oldest());
    }
    if (auto err = allocate(rows)) {
      if (err.code() != static_cast<uint8_t>(errc::resource_exhausted)) {
        fault(err);
      }
      return err; // capacity_ is 0 now: the next batch tries again
    }
  }
  auto idx = next_slot_;
  next_slot_ = (next_slot_ + 1) % slots;
  auto& sl = slot_[idx];
  std::memcpy(sl.host_in.get(), x.data.data(), in_bytes);
  if (auto err = enqueue_batch(sl, rows, in_bytes, out_bytes)) {
    fault(err);
  }
  sl.rows = rows;
  in_flight_.push_back(idx);
  if (ledger_.ledger) {
    ledger_.ledger->touch(ledger_.id, true);
  }
  return {};
}

std::vector<tensor> cuda_backend::complete_oldest() {
  auto idx = in_flight_.front();
  in_flight_.pop_front();
  auto& sl = slot_[idx];
  if (auto err = check(cudaEventSynchronize(sl.copy_out_done), dev_,
                       "cudaEventSynchronize", errc::internal)) {
    fault(err);
  }
  float in_ms = 0, kernel_ms = 0, out_ms = 0;
  if (cudaEventElapsedTime(&in_ms, sl.copy_in_start, sl.copy_in_done) ==
          cudaSuccess &&
      cudaEventElapsedTime(&kernel_ms, sl.compute_start, sl.compute_done) ==
          cudaSuccess &&
      cudaEventElapsedTime(&out_ms, sl.copy_out_start, sl.copy_out_done) ==
          cudaSuccess) {
    profile_.copy_in_s += in_ms / 1e3;
    profile_.kernel_s += kernel_ms / 1e3;
    profile_.copy_out_s += out_ms / 1e3;
  } else {
    (void)cudaGetLastError();
  }
  ++profile_.batches;
  tensor out;
  out.name = spec_.outputs.front().name;
  out.type = dtype::f32;
  out.shape = {sl.rows};
  for (auto d : graph_.out_dims) {
    out.shape.push_back(d);
  }
  out.data.resize(sl.rows * dims_product(graph_.out_dims) * sizeof(float));
  std::memcpy(out.data.data(), sl.host_out.get(), out.data.size());
  std::vector<tensor> result;
  result.push_back(std::move(out));
  return result;
}

caf::expected<std::vector<tensor>> cuda_backend::finish() {
  if (!completed_.empty()) {
    auto out = std::move(completed_.front());
    completed_.pop_front();
    return out;
  }
  if (in_flight_.empty()) {
    return make_error(errc::internal, "finish() without start()");
  }
  if (auto err = check(cudaSetDevice(device_), dev_, "cudaSetDevice",
                       errc::internal)) {
    fault(err);
  }
  auto out = complete_oldest();
  if (in_flight_.empty() && ledger_.ledger) {
    ledger_.ledger->touch(ledger_.id, false);
  }
  return out;
}

caf::expected<std::vector<tensor>>
cuda_backend::run(const std::vector<tensor>& inputs, uint64_t rows) {
  if (!in_flight_.empty() || !completed_.empty()) {
    return make_error(errc::internal, "run() while batches are in flight");
  }
  if (auto err = start(inputs, rows)) {
    return err;
  }
  return finish();
}

} // namespace cuda
} // namespace shoal
