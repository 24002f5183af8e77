// The CUDA backend: the layer graph of the CPU backend (gpu/graph.hpp) on one
// GPU. Dense layers run on cuBLAS (f32, TF32 when the model allows it; f16
// and bf16 weights in their own precision with f32 accumulation),
// convolution, pooling, ReLU and softmax on cuDNN, and layernorm, GELU, bias
// and residual adds on the small kernels of kernels.cu.
//
// Weights are uploaded once; every buffer a batch needs is allocated at
// load for max_batch rows, so serving never allocates (a batch above
// max_batch grows them once). Two streams per replica: `compute` runs the
// layers, `copy` moves inputs in and outputs out through pinned staging
// buffers, two of each, so that batch k+1's inputs travel while batch k
// computes and batch k's outputs travel while k+1 computes.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "gpu/backend.hpp"
#include "gpu/cuda/cuda_layers.hpp"
#include "gpu/device/device_ledger.hpp"
#include "gpu/graph/graph.hpp"
#include "gpu/model/safetensors.hpp"

namespace shoal::cuda {

// Memory from CUDA, freed with its owner: on the device, or page-locked on
// the host (Pinned), so that copies from and to it are truly asynchronous.
template <bool Pinned>
class cuda_buffer {
public:
  // Frees what it held, then allocates `bytes` (none for 0). An
  // out-of-memory error says how much was wanted and how much is free.
  caf::error alloc(size_t bytes, const std::string& dev, const char* what);
  void* get() const noexcept { return p_.get(); }
  float* f32() const noexcept { return static_cast<float*>(p_.get()); }
  size_t bytes() const noexcept { return bytes_; }

private:
  struct release {
    void operator()(void* p) const noexcept;
  };
  std::unique_ptr<void, release> p_;
  size_t bytes_ = 0;
};

using device_buffer = cuda_buffer<false>;
using pinned_buffer = cuda_buffer<true>;

// Keeps a replica listed in the device ledger until its memory is freed:
// declared first in cuda_backend, it is destroyed after every buffer.
struct ledger_token {
  device_ledger* ledger = nullptr; // the node's, passed into the plugin
  uint64_t id = 0;
  ~ledger_token();
};

class cuda_backend : public shoal::backend {
public:
  // Errors: errc::resource_exhausted when the device has no room (nothing
  // stays allocated), errc::unavailable otherwise, naming the file, field
  // or CUDA call. The replica is recorded in `ledger` while it lives.
  static caf::expected<backend_ptr> load(const model_spec& spec, int device,
                                         const load_options& opts,
                                         device_ledger& ledger);
  ~cuda_backend() override;

  caf::expected<std::vector<tensor>> run(const std::vector<tensor>& inputs,
                                         uint64_t rows) override;
  caf::error start(const std::vector<tensor>& inputs, uint64_t rows) override;
  caf::expected<std::vector<tensor>> finish() override;
  size_t max_in_flight() const noexcept override { return slots; }
  uint64_t memory_bytes() const noexcept override;
  std::string device() const override { return dev_; }
  backend_profile profile() const override { return profile_; }

private:
  static constexpr size_t slots = 2;

  struct step {
    graph_step g;
    const void* w = nullptr; // device
    cudaDataType_t w_type = CUDA_R_32F;
    const float* b = nullptr; // device, f32
    conv_layer conv;
    pool_layer pool;
  };

  // Everything one batch in flight owns; the rest is shared and serialized
  // on the compute stream.
  struct slot {
    pinned_buffer host_in, host_out;
    device_buffer dev_in, dev_out;
    cudaEvent_t copy_in_start = nullptr, copy_in_done = nullptr;
    cudaEvent_t compute_start = nullptr, compute_done = nullptr;
    cudaEvent_t copy_out_start = nullptr;
    cudaEvent_t copy_out_done = nullptr;
    uint64_t rows = 0;
  };

  cuda_backend() = default;

  ledger_token ledger_; // first: released last
  caf::error init(const model_spec& spec, int device);
  // The steps of init: the weights file and the graph resolved against it;
  // streams and library handles; each layer's descriptors and workspace.
  caf::error open_graph(const model_spec& spec);
  caf::error create_handles();
  caf::error init_layers(size_t rows);
  caf::error upload_weights();
  caf::error upload_tensor(const step& s, const tensor_view* t, void* dst);
  caf::error allocate(size_t rows); // activation and staging buffers
  // Inputs in, layers, outputs out, on the three streams.
  caf::error enqueue_batch(slot& s, size_t rows, size_t in_bytes,
                           size_t out_bytes);
  caf::error enqueue_layers(slot& s, size_t rows);
  // Queues one layer reading `cur`; a layer that writes a new buffer
  // writes `fresh` and moves `cur` there.
  caf::error enqueue_step(step& s, size_t rows, float*& cur, float* fresh);
  caf::error enqueue_dense(const step& s, size_t rows, const float* x,
                           float* y);
  // Waits for the oldest batch in flight and takes its outputs.
  std::vector<tensor> complete_oldest();
  void release_events();

  model_spec spec_;
  std::string weights_path_; // for errors about its tensors
  bool tf32_ = false;        // resources.allow_tf32
  int device_ = 0;
  std::string dev_; // "gpu:0"
  safetensors_file file_;
  layer_graph graph_;
  std::vector<step> steps_;
  size_t final_writer_ = SIZE_MAX; // the last step writing a new buffer

  // Inputs in, layers, outputs out: three streams, so that neither copy
  // waits behind the other batch's work.
  cudaStream_t in_ = nullptr, compute_ = nullptr, out_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  cudnnHandle_t dnn_ = nullptr;
  pointwise_layers pointwise_;

  device_buffer weights_; // every weight and bias, one allocation
  device_buffer act_a_, act_b_;
  device_buffer half_; // f16/bf16 copy of a half-precision layer's input
  device_buffer conv_ws_;
  device_buffer blas_ws_;
  std::map<std::string, device_buffer> saved_;
  slot slot_[slots];
  size_t capacity_ = 0; // rows the buffers hold
  size_t next_slot_ = 0;
  std::deque<size_t> in_flight_; // slot indices, oldest first
  // Batches completed early because the buffers had to grow; they come
  // out of finish() before the ones in flight.
  std::deque<std::vector<tensor>> completed_;

  backend_profile profile_;
};

} // namespace shoal::cuda
