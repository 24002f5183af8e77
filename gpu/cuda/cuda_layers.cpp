#include "gpu/cuda/cuda_layers.hpp"

#include <climits>

#include "gpu/cuda/cuda_check.hpp"

namespace shoal::cuda {

void tensor_desc_deleter::operator()(cudnnTensorStruct* d) const noexcept {
  cudnnDestroyTensorDescriptor(d);
}
void filter_desc_deleter::operator()(cudnnFilterStruct* d) const noexcept {
  cudnnDestroyFilterDescriptor(d);
}
void conv_desc_deleter::operator()(cudnnConvolutionStruct* d) const noexcept {
  cudnnDestroyConvolutionDescriptor(d);
}
void pool_desc_deleter::operator()(cudnnPoolingStruct* d) const noexcept {
  cudnnDestroyPoolingDescriptor(d);
}
void act_desc_deleter::operator()(cudnnActivationStruct* d) const noexcept {
  cudnnDestroyActivationDescriptor(d);
}

caf::error make(tensor_desc& d, const std::string& dev) {
  cudnnTensorDescriptor_t raw = nullptr;
  SHOAL_CUDA_TRY(cudnnCreateTensorDescriptor(&raw), dev,
                 "cudnnCreateTensorDescriptor");
  d.reset(raw);
  return {};
}

namespace {

// cuDNN takes ints: sizes past INT_MAX are refused, not wrapped.
caf::error to_int(size_t v, int& out, const std::string& dev,
                  const char* what) {
  if (v > static_cast<size_t>(INT_MAX)) {
    return make_error(errc::invalid_argument,
                      dev + ": " + what + " " + std::to_string(v) +
                          " is beyond what cuDNN takes");
  }
  out = static_cast<int>(v);
  return {};
}

caf::error set_nchw(cudnnTensorDescriptor_t d, size_t n, size_t c, size_t h,
                    size_t w, const std::string& dev) {
  int ni = 0, ci = 0, hi = 0, wi = 0;
  if (auto err = to_int(n * c * h * w, ni, dev, "tensor size")) {
    return err;
  }
  to_int(n, ni, dev, "batch");
  to_int(c, ci, dev, "channels");
  to_int(h, hi, dev, "height");
  to_int(w, wi, dev, "width");
  SHOAL_CUDA_TRY(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW,
                                            CUDNN_DATA_FLOAT, ni, ci, hi, wi),
                 dev, "cudnnSetTensor4dDescriptor", errc::internal);
  return {};
}

} // namespace

// -- conv ---------------------------------------------------------------------

caf::error conv_layer::init(cudnnHandle_t h, const conv2d_shape& s, bool tf32,
                            size_t max_rows, size_t max_workspace,
                            const std::string& dev) {
  s_ = s;
  tf32_ = tf32;
  if (auto err = make(x_, dev)) {
    return err;
  }
  if (auto err = make(y_, dev)) {
    return err;
  }
  if (auto err = make(bias_, dev)) {
    return err;
  }
  cudnnFilterDescriptor_t wd = nullptr;
  SHOAL_CUDA_TRY(cudnnCreateFilterDescriptor(&wd), dev,
                 "cudnnCreateFilterDescriptor");
  w_.reset(wd);
  cudnnConvolutionDescriptor_t cd = nullptr;
  SHOAL_CUDA_TRY(cudnnCreateConvolutionDescriptor(&cd), dev,
                 "cudnnCreateConvolutionDescriptor");
  conv_.reset(cd);
  SHOAL_CUDA_TRY(cudnnSetFilter4dDescriptor(
                     wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                     static_cast<int>(s.c_out), static_cast<int>(s.c_in),
                     static_cast<int>(s.kh), static_cast<int>(s.kw)),
                 dev, "cudnnSetFilter4dDescriptor");
  SHOAL_CUDA_TRY(cudnnSetConvolution2dDescriptor(
                     cd, static_cast<int>(s.pad_h), static_cast<int>(s.pad_w),
                     static_cast<int>(s.stride_h), static_cast<int>(s.stride_w),
                     static_cast<int>(s.dilation_h),
                     static_cast<int>(s.dilation_w), CUDNN_CROSS_CORRELATION,
                     CUDNN_DATA_FLOAT),
                 dev, "cudnnSetConvolution2dDescriptor");
  // FMA keeps f32 exact to f32 rounding; TF32 only when the model allows.
  SHOAL_CUDA_TRY(cudnnSetConvolutionMathType(cd, tf32 ? CUDNN_DEFAULT_MATH
                                                      : CUDNN_FMA_MATH),
                 dev, "cudnnSetConvolutionMathType");
  if (auto err = set_nchw(bias_.get(), 1, s.c_out, 1, 1, dev)) {
    return err;
  }
  by_rows_.assign(max_rows + 1, choice{});
  for (size_t r = 1; r <= max_rows; ++r) {
    if (auto err = choose(h, r, max_workspace, dev)) {
      return err;
    }
    workspace_ = std::max(workspace_, by_rows_[r].memory);
  }
  return {};
}

caf::error conv_layer::set_rows(size_t rows, const std::string& dev) {
  if (auto err = set_nchw(x_.get(), rows, s_.c_in, s_.h, s_.w, dev)) {
    return err;
  }
  return set_nchw(y_.get(), rows, s_.c_out, s_.out_h(), s_.out_w(), dev);
}

caf::error conv_layer::choose(cudnnHandle_t h, size_t rows,
                              size_t max_workspace, const std::string& dev) {
  if (auto err = set_rows(rows, dev)) {
    return err;
  }
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int n = 0;
  SHOAL_CUDA_TRY(cudnnGetConvolutionForwardAlgorithm_v7(
                     h, x_.get(), w_.get(), conv_.get(), y_.get(),
                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf),
                 dev, "cudnnGetConvolutionForwardAlgorithm_v7");
  // The heuristics rank best first; take the best that runs, fits the
  // workspace and keeps to the allowed math. Without TF32, FMA kernels
  // first: on Ampere and later DEFAULT_MATH may use TF32 for f32 as well.
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < n; ++i) {
      auto& p = perf[i];
      if (p.status != CUDNN_STATUS_SUCCESS || p.memory > max_workspace) {
        continue;
      }
      if (!tf32_ && (pass == 0 ? p.mathType != CUDNN_FMA_MATH
                               : p.mathType == CUDNN_TENSOR_OP_MATH)) {
        continue;
      }
      if (by_rows_.size() <= rows) {
        by_rows_.resize(rows + 1);
      }
      by_rows_[rows] = choice{p.algo, p.mathType, p.memory, true};
      return {};
    }
  }
  return make_error(errc::unavailable,
                    dev + ": cuDNN has no convolution algorithm for batch " +
                        std::to_string(rows) + " within " +
                        std::to_string(max_workspace) + " bytes of workspace");
}

caf::error conv_layer::run(cudnnHandle_t h, const float* x, size_t rows,
                           const float* w, const float* b, float* y, void* ws,
                           size_t ws_bytes, const std::string& dev) {
  if (rows >= by_rows_.size() || !by_rows_[rows].set) {
    if (auto err = choose(h, rows, ws_bytes, dev)) {
      return err;
    }
  } else if (auto err = set_rows(rows, dev)) {
    return err;
  }
  auto& c = by_rows_[rows];
  SHOAL_CUDA_TRY(cudnnSetConvolutionMathType(conv_.get(), c.math), dev,
                 "cudnnSetConvolutionMathType", errc::internal);
  const float one = 1.0f, zero = 0.0f;
  SHOAL_CUDA_TRY(cudnnConvolutionForward(h, &one, x_.get(), x, w_.get(), w,
                                         conv_.get(), c.algo, ws, c.memory,
                                         &zero, y_.get(), y),
                 dev, "cudnnConvolutionForward", errc::internal);
  if (b) {
    SHOAL_CUDA_TRY(cudnnAddTensor(h, &one, bias_.get(), b, &one, y_.get(), y),
                   dev, "cudnnAddTensor (conv bias)", errc::internal);
  }
  return {};
}

// -- pool ---------------------------------------------------------------------

caf::error pool_layer::init(const pool2d_shape& s, bool max,
                            const std::string& dev) {
  s_ = s;
  if (auto err = make(x_, dev)) {
    return err;
  }
  if (auto err = make(y_, dev)) {
    return err;
  }
  cudnnPoolingDescriptor_t pd = nullptr;
  SHOAL_CUDA_TRY(cudnnCreatePoolingDescriptor(&pd), dev,
                 "cudnnCreatePoolingDescriptor");
  pool_.reset(pd);
  // Max: padding never wins and NaN propagates, as torch; average: the
  // padded zeros count (torch's count_include_pad=True).
  SHOAL_CUDA_TRY(
      cudnnSetPooling2dDescriptor(
          pd,
          max ? CUDNN_POOLING_MAX : CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING,
          CUDNN_PROPAGATE_NAN, static_cast<int>(s.kh), static_cast<int>(s.kw),
          static_cast<int>(s.pad_h), static_cast<int>(s.pad_w),
          static_cast<int>(s.stride_h), static_cast<int>(s.stride_w)),
      dev, "cudnnSetPooling2dDescriptor");
  return {};
}

caf::error pool_layer::run(cudnnHandle_t h, const float* x, size_t rows,
                           float* y, const std::string& dev) {
  if (auto err = set_nchw(x_.get(), rows, s_.c, s_.h, s_.w, dev)) {
    return err;
  }
  if (auto err = set_nchw(y_.get(), rows, s_.c, s_.out_h(), s_.out_w(), dev)) {
    return err;
  }
  const float one = 1.0f, zero = 0.0f;
  SHOAL_CUDA_TRY(cudnnPoolingForward(h, pool_.get(), &one, x_.get(), x, &zero,
                                     y_.get(), y),
                 dev, "cudnnPoolingForward", errc::internal);
  return {};
}

// -- relu, softmax
// -------------------------------------------------------------

caf::error pointwise_layers::init(const std::string& dev) {
  if (auto err = make(desc_, dev)) {
    return err;
  }
  cudnnActivationDescriptor_t ad = nullptr;
  SHOAL_CUDA_TRY(cudnnCreateActivationDescriptor(&ad), dev,
                 "cudnnCreateActivationDescriptor");
  relu_.reset(ad);
  SHOAL_CUDA_TRY(cudnnSetActivationDescriptor(ad, CUDNN_ACTIVATION_RELU,
                                              CUDNN_PROPAGATE_NAN, 0.0),
                 dev, "cudnnSetActivationDescriptor");
  return {};
}

caf::error pointwise_layers::relu(cudnnHandle_t h, float* x, size_t n,
                                  const std::string& dev) {
  if (auto err = set_nchw(desc_.get(), 1, n, 1, 1, dev)) {
    return err;
  }
  const float one = 1.0f, zero = 0.0f;
  SHOAL_CUDA_TRY(cudnnActivationForward(h, relu_.get(), &one, desc_.get(), x,
                                        &zero, desc_.get(), x),
                 dev, "cudnnActivationForward (relu)", errc::internal);
  return {};
}

caf::error pointwise_layers::softmax(cudnnHandle_t h, float* x, size_t rows,
                                     size_t cols, const std::string& dev) {
  if (auto err = set_nchw(desc_.get(), rows, cols, 1, 1, dev)) {
    return err;
  }
  const float one = 1.0f, zero = 0.0f;
  // ACCURATE subtracts the row maximum first, as the CPU backend does.
  SHOAL_CUDA_TRY(cudnnSoftmaxForward(h, CUDNN_SOFTMAX_ACCURATE,
                                     CUDNN_SOFTMAX_MODE_INSTANCE, &one,
                                     desc_.get(), x, &zero, desc_.get(), x),
                 dev, "cudnnSoftmaxForward", errc::internal);
  return {};
}

} // namespace shoal::cuda
