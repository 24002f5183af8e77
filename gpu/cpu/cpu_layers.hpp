// CPU layer kernels for the CPU backend (issue 3, item 4).
//
// Every kernel computes in f32 on row-major, batch-first memory given as raw
// pointers plus sizes, so that the backend can run a whole graph out of
// buffers it allocated once at load time: no kernel allocates, throws or
// touches global state (in particular none of them sets the OpenBLAS thread
// count; that is the embedding process's decision). Kernels are reentrant and
// may run concurrently on disjoint buffers.
//
// Semantics follow PyTorch's defaults so that models exported from torch or
// numpy match within f32 rounding. Shapes are trusted: validate conv and pool
// shapes with check() when the graph is loaded, not per call.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include <caf/error.hpp>

#include "net/wire/half.hpp"

namespace shoal::cpu {

// -- dense --------------------------------------------------------------------

// y[batch, out] = x[batch, in] · Wᵀ + b, one cblas_sgemm call.
//
// W is [out, in] row-major, the layout of torch.nn.Linear.weight and of
// safetensors files written from torch. When `w_transposed` is true W is
// [in, out] instead (numpy's `x @ W` convention), which saves a copy at load
// time for such files. `b` has `out` entries or is null. `y` must not alias
// `x` or `w`.
void dense(const float* x, size_t batch, size_t in, const float* w,
           const float* b, size_t out, float* y, bool w_transposed = false);

// -- elementwise and per-row --------------------------------------------------

// In place: x = max(x, 0); NaN stays NaN, as in torch.
void relu(float* x, size_t n);

// In place: x = x/2 · (1 + erf(x/√2)), torch's GELU(approximate='none').
void gelu(float* x, size_t n);

// In place, each of `rows` rows of `cols` values: softmax over the row. The
// row maximum is subtracted first, so inputs of any magnitude give finite
// outputs that sum to 1.
void softmax(float* x, size_t rows, size_t cols);

// In place, each row: (x - mean) / sqrt(var + eps) · gamma + beta with the
// biased variance (divided by cols), as torch.nn.LayerNorm over the last
// axis. `gamma` and `beta` have `cols` entries; either may be null (meaning
// 1 and 0: elementwise_affine=False).
void layernorm(float* x, size_t rows, size_t cols, const float* gamma,
               const float* beta, float eps = 1e-5f);

// In place residual add: x += r over n values. `r` may equal `x`.
void add(float* x, const float* r, size_t n);

// -- conv2d -------------------------------------------------------------------

// The shape of a 2-D convolution on NCHW input, as torch.nn.Conv2d with
// groups=1 and padding_mode='zeros'.
struct conv2d_shape {
  size_t n = 0;     // batch
  size_t c_in = 0;  // input channels
  size_t h = 0;     // input height
  size_t w = 0;     // input width
  size_t c_out = 0; // output channels
  size_t kh = 0;    // kernel height
  size_t kw = 0;    // kernel width
  size_t stride_h = 1;
  size_t stride_w = 1;
  size_t pad_h = 0; // zeros added on top and bottom
  size_t pad_w = 0; // zeros added left and right
  size_t dilation_h = 1;
  size_t dilation_w = 1;

  // Output extent; 0 for a shape that check() refuses.
  size_t out_h() const noexcept;
  size_t out_w() const noexcept;

  // Floats of im2col workspace that conv2d() needs: one image's column
  // matrix [c_in·kh·kw, out_h·out_w]. Zero for pointwise convolutions (1x1,
  // stride 1, no padding), whose input already is that matrix.
  size_t workspace_floats() const noexcept;

  // Element counts of the input, weight and output tensors.
  size_t x_floats() const noexcept { return n * c_in * h * w; }
  size_t w_floats() const noexcept { return c_out * c_in * kh * kw; }
  size_t y_floats() const noexcept { return n * c_out * out_h() * out_w(); }
};

// Refuses shapes that have no output or overflow: zero sizes (except n),
// zero stride or dilation, a dilated kernel larger than the padded input,
// sizes whose products overflow or exceed what one sgemm call can take.
// Returns an errc::invalid_argument error naming the offending field.
caf::error check(const conv2d_shape& s);

// y[n, c_out, out_h, out_w] = conv(x[n, c_in, h, w], w[c_out, c_in, kh, kw])
// + b[c_out]. `b` may be null. `workspace` holds s.workspace_floats() floats
// (may be null when that is 0); it is scratch, its contents are not kept.
// Runs im2col per image followed by one cblas_sgemm per image.
void conv2d(const float* x, const conv2d_shape& s, const float* w,
            const float* b, float* y, float* workspace);

// -- pooling ------------------------------------------------------------------

// The shape of a 2-D pooling window on NCHW input, as torch's max_pool2d /
// avg_pool2d with ceil_mode=False (and dilation 1 for max pooling).
struct pool2d_shape {
  size_t n = 0;
  size_t c = 0;
  size_t h = 0;
  size_t w = 0;
  size_t kh = 0;
  size_t kw = 0;
  size_t stride_h = 1;
  size_t stride_w = 1;
  size_t pad_h = 0;
  size_t pad_w = 0;

  size_t out_h() const noexcept;
  size_t out_w() const noexcept;

  size_t x_floats() const noexcept { return n * c * h * w; }
  size_t y_floats() const noexcept { return n * c * out_h() * out_w(); }
};

// Refuses zero sizes (except n), zero stride, a kernel larger than the
// padded input, padding above half the kernel (torch refuses it too: a window
// could then lie entirely in the padding) and overflowing sizes.
caf::error check(const pool2d_shape& s);

// y[n, c, out_h, out_w]: maximum over each window; padding counts as -inf,
// so it never wins. A NaN in a window gives NaN, as in torch.
void max_pool2d(const float* x, const pool2d_shape& s, float* y);

// y[n, c, out_h, out_w]: mean over each window. With count_include_pad the
// padded zeros count in the divisor (always kh·kw, torch's default);
// without it only the input elements inside the window do.
void avg_pool2d(const float* x, const pool2d_shape& s, float* y,
                bool count_include_pad = true);

// -- flatten ------------------------------------------------------------------

// Flatten(start_dim=1) of a contiguous NCHW tensor is the same memory read
// as [n, c·h·w]: the graph only changes the shape it records, no kernel runs
// and no copy is made. These helpers name that.
inline constexpr size_t flatten_cols(size_t c, size_t h, size_t w) noexcept {
  return c * h * w;
}

inline const float* flatten(const float* x) noexcept {
  return x;
}

inline float* flatten(float* x) noexcept {
  return x;
}

// -- weight conversion at load ------------------------------------------------

// IEEE 754 binary16 (safetensors "F16") to f32, exact for every input
// including subnormals, infinities and NaN.
void f16_to_f32(const uint16_t* src, float* dst, size_t n);

// bfloat16 (safetensors "BF16") to f32: exact, the upper half of an f32.
void bf16_to_f32(const uint16_t* src, float* dst, size_t n);

// Single-value forms of the conversions above.
using shoal::bf16_to_f32;
using shoal::f16_to_f32;

} // namespace shoal::cpu
