// cuDNN for the CUDA backend's convolution, pooling, ReLU and softmax, with
// descriptors made once per layer at load; only the batch size changes per
// run. Shapes were checked by resolve_graph (gpu/graph.hpp).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <cudnn.h>

#include "gpu/graph/layer_shapes.hpp"

namespace shoal::cuda {

struct tensor_desc_deleter {
  void operator()(cudnnTensorStruct* d) const noexcept;
};
struct filter_desc_deleter {
  void operator()(cudnnFilterStruct* d) const noexcept;
};
struct conv_desc_deleter {
  void operator()(cudnnConvolutionStruct* d) const noexcept;
};
struct pool_desc_deleter {
  void operator()(cudnnPoolingStruct* d) const noexcept;
};
struct act_desc_deleter {
  void operator()(cudnnActivationStruct* d) const noexcept;
};
using tensor_desc = std::unique_ptr<cudnnTensorStruct, tensor_desc_deleter>;
using filter_desc = std::unique_ptr<cudnnFilterStruct, filter_desc_deleter>;
using conv_desc = std::unique_ptr<cudnnConvolutionStruct, conv_desc_deleter>;
using pool_desc = std::unique_ptr<cudnnPoolingStruct, pool_desc_deleter>;
using act_desc = std::unique_ptr<cudnnActivationStruct, act_desc_deleter>;

caf::error make(tensor_desc& d, const std::string& dev);

// conv2d (NCHW, f32, cross-correlation as torch) with bias.
class conv_layer {
public:
  // Picks an algorithm for every batch size up to max_rows, within
  // max_workspace bytes; FMA kernels only unless TF32 is allowed.
  caf::error init(cudnnHandle_t h, const conv2d_shape& s, bool tf32,
                  size_t max_rows, size_t max_workspace,
                  const std::string& dev);

  // Workspace the chosen algorithms need, for up to max_rows.
  size_t workspace_bytes() const noexcept { return workspace_; }

  // y = conv(x) + b for `rows` images; picks (and remembers) an algorithm
  // for a batch size beyond max_rows within the given workspace.
  caf::error run(cudnnHandle_t h, const float* x, size_t rows, const float* w,
                 const float* b, float* y, void* ws, size_t ws_bytes,
                 const std::string& dev);

private:
  caf::error choose(cudnnHandle_t h, size_t rows, size_t max_workspace,
                    const std::string& dev);
  caf::error set_rows(size_t rows, const std::string& dev);

  conv2d_shape s_;
  bool tf32_ = false;
  tensor_desc x_, y_, bias_;
  filter_desc w_;
  conv_desc conv_;
  struct choice {
    cudnnConvolutionFwdAlgo_t algo{};
    cudnnMathType_t math{};
    size_t memory = 0;
    bool set = false;
  };
  std::vector<choice> by_rows_; // index: batch size
  size_t workspace_ = 0;
};

// max_pool2d / avg_pool2d (count_include_pad), floor mode as torch.
class pool_layer {
public:
  caf::error init(const pool2d_shape& s, bool max, const std::string& dev);
  caf::error run(cudnnHandle_t h, const float* x, size_t rows, float* y,
                 const std::string& dev);

private:
  pool2d_shape s_;
  tensor_desc x_, y_;
  pool_desc pool_;
};

// In-place ReLU and row softmax over n values / rows x cols; they share
// one scratch tensor descriptor per backend.
class pointwise_layers {
public:
  caf::error init(const std::string& dev);
  caf::error relu(cudnnHandle_t h, float* x, size_t n, const std::string& dev);
  caf::error softmax(cudnnHandle_t h, float* x, size_t rows, size_t cols,
                     const std::string& dev);

private:
  tensor_desc desc_;
  act_desc relu_;
};

} // namespace shoal::cuda
