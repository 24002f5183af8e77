#include "gpu/cuda/kernels.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace shoal::cuda {

namespace {

constexpr unsigned threads = 256;

// Enough blocks to fill the device; the kernels stride over the rest.
unsigned blocks_for(size_t n) {
  auto b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 ? (b == 0 ? 1 : b) : 65535);
}

__global__ void bias_add_kernel(float* y, const float* b, size_t rows,
                                size_t cols) {
  size_t n = rows * cols;
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    y[i] += b[i % cols];
  }
}

__global__ void gelu_kernel(float* x, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    float v = x[i];
    x[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
  }
}

__global__ void add_kernel(float* x, const float* r, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    x[i] += r[i];
  }
}

// Sum over the block; every thread gets the result. `shm` holds 33 floats.
__device__ float block_sum(float v, float* shm) {
  for (int o = 16; o > 0; o >>= 1) {
    v += __shfl_down_sync(0xffffffffu, v, o);
  }
  unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  if (lane == 0) {
    shm[warp] = v;
  }
  __syncthreads();
  unsigned warps = (blockDim.x + 31u) >> 5;
  if (warp == 0) {
    v = lane < warps ? shm[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) {
      v += __shfl_down_sync(0xffffffffu, v, o);
    }
    if (lane == 0) {
      shm[32] = v;
    }
  }
  __syncthreads();
  float total = shm[32];
  // The caller may reuse shm right away.
  __syncthreads();
  return total;
}

__global__ void layernorm_kernel(float* x, size_t cols, const float* gamma,
                                 const float* beta, float eps) {
  __shared__ float shm[33];
  float* row = x + blockIdx.x * cols;
  float s = 0.0f;
  for (size_t c = threadIdx.x; c < cols; c += blockDim.x) {
    s += row[c];
  }
  float mean = block_sum(s, shm) / static_cast<float>(cols);
  float q = 0.0f;
  for (size_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float d = row[c] - mean;
    q += d * d;
  }
  float var = block_sum(q, shm) / static_cast<float>(cols);
  float inv = rsqrtf(var + eps);
  for (size_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = (row[c] - mean) * inv;
    if (gamma) {
      v *= gamma[c];
    }
    if (beta) {
      v += beta[c];
    }
    row[c] = v;
  }
}

__global__ void to_f16_kernel(const float* x, __half* y, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    y[i] = __float2half_rn(x[i]);
  }
}

__global__ void to_bf16_kernel(const float* x, __nv_bfloat16* y, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    y[i] = __float2bfloat16_rn(x[i]);
  }
}

} // namespace

cudaError_t bias_add(float* y, const float* b, size_t rows, size_t cols,
                     cudaStream_t stream) {
  bias_add_kernel<<<blocks_for(rows * cols), threads, 0, stream>>>(y, b, rows,
                                                                   cols);
  return cudaGetLastError();
}

cudaError_t gelu(float* x, size_t n, cudaStream_t stream) {
  gelu_kernel<<<blocks_for(n), threads, 0, stream>>>(x, n);
  return cudaGetLastError();
}

cudaError_t add(float* x, const float* r, size_t n, cudaStream_t stream) {
  add_kernel<<<blocks_for(n), threads, 0, stream>>>(x, r, n);
  return cudaGetLastError();
}

cudaError_t layernorm(float* x, size_t rows, size_t cols, const float* gamma,
                      const float* beta, float eps, cudaStream_t stream) {
  if (rows == 0 || cols == 0) {
    return cudaSuccess;
  }
  // A warp per 32 columns up to a full block: narrow rows (64 values) do
  // not leave 7 of 8 warps idle.
  unsigned t =
      cols >= threads ? threads : static_cast<unsigned>((cols + 31) / 32 * 32);
  layernorm_kernel<<<static_cast<unsigned>(rows), t, 0, stream>>>(
      x, cols, gamma, beta, eps);
  return cudaGetLastError();
}

cudaError_t to_half(const float* x, void* y, size_t n, bool bf16,
                    cudaStream_t stream) {
  if (bf16) {
    to_bf16_kernel<<<blocks_for(n), threads, 0, stream>>>(
        x, static_cast<__nv_bfloat16*>(y), n);
  } else {
    to_f16_kernel<<<blocks_for(n), threads, 0, stream>>>(
        x, static_cast<__half*>(y), n);
  }
  return cudaGetLastError();
}

} // namespace shoal::cuda
