// The few kernels no library call fits: bias add, GELU, residual
// add, layernorm and the f32 -> f16/bf16 cast in front of a half-precision
// dense layer. Each launcher queues its kernel on `stream` and returns the
// launch's status; all compute in f32, matching gpu/cpu_layers.hpp.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

namespace shoal::cuda {

// y[r, c] += b[c] over rows x cols, row-major.
cudaError_t bias_add(float* y, const float* b, size_t rows, size_t cols,
                     cudaStream_t stream);

// In place: x/2 (1 + erf(x/sqrt 2)), torch's GELU(approximate='none').
cudaError_t gelu(float* x, size_t n, cudaStream_t stream);

// In place: x += r.
cudaError_t add(float* x, const float* r, size_t n, cudaStream_t stream);

// In place over each row: (x - mean) / sqrt(var + eps) * gamma + beta, the
// biased variance, two passes in f32 (one block per row). gamma and beta
// may be null (1 and 0).
cudaError_t layernorm(float* x, size_t rows, size_t cols, const float* gamma,
                      const float* beta, float eps, cudaStream_t stream);

// y = x rounded to nearest even as IEEE binary16 (bf16 = false) or bfloat16.
cudaError_t to_half(const float* x, void* y, size_t n, bool bf16,
                    cudaStream_t stream);

} // namespace shoal::cuda
