// CPU layer kernels for the CPU backend.
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

#include "gpu/graph/layer_shapes.hpp"
#include "net/wire/half.hpp"

namespace shoal::cpu {

// The shapes and their checks live with the graph (gpu/graph/layer_shapes.hpp),
// which every backend shares; these names keep the kernels' signatures.
using shoal::check;
using shoal::conv2d_shape;
using shoal::pool2d_shape;

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

// y[n, c_out, out_h, out_w] = conv(x[n, c_in, h, w], w[c_out, c_in, kh, kw])
// + b[c_out]. `b` may be null. `workspace` holds s.workspace_floats() floats
// (may be null when that is 0); it is scratch, its contents are not kept.
// Runs im2col per image followed by one cblas_sgemm per image.
void conv2d(const float* x, const conv2d_shape& s, const float* w,
            const float* b, float* y, float* workspace);

// -- pooling ------------------------------------------------------------------

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
