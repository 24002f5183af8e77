#include "gpu/cpu/cpu_layers.hpp"

#include <algorithm>
#include <cassert>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>

#include <cblas.h>

namespace shoal::cpu {

namespace {

// OpenBLAS takes int dimensions; check() keeps conv shapes below this, and
// dense callers are the graph loader, which validated sizes already.
constexpr size_t max_blas_dim = static_cast<size_t>(INT_MAX);

blasint to_blas(size_t v) noexcept {
  assert(v <= max_blas_dim);
  return static_cast<blasint>(v);
}

// Fills each of `rows` rows of y with b, so that sgemm can accumulate onto
// the bias (beta = 1) instead of a second pass over y afterwards.
void broadcast_rows(float* y, size_t rows, size_t cols, const float* b) {
  for (size_t r = 0; r < rows; ++r) {
    std::memcpy(y + r * cols, b, cols * sizeof(float));
  }
}

// Copies one image [c_in, h, w] into the column matrix
// col[c_in·kh·kw, out_h·out_w] that turns convolution into one GEMM:
// row (c, i, j) holds, for every output pixel, the input value kernel tap
// (i, j) of channel c sees there (0 in the padding).
void im2col(const float* img, const conv2d_shape& s, size_t oh, size_t ow,
            float* col) {
  using sidx = std::ptrdiff_t;
  const auto h = static_cast<sidx>(s.h);
  const auto w = static_cast<sidx>(s.w);
  const auto sw = static_cast<sidx>(s.stride_w);
  const auto n_ow = static_cast<sidx>(ow);
  for (size_t c = 0; c < s.c_in; ++c) {
    const float* plane = img + c * s.h * s.w;
    for (size_t i = 0; i < s.kh; ++i) {
      for (size_t j = 0; j < s.kw; ++j) {
        // Input column of output column ox is ox*sw + off. The range of ox
        // that lands inside the image is computed once per row of taps, so
        // the inner loop is a branch-free (for stride 1, contiguous) copy.
        const auto off =
            static_cast<sidx>(j * s.dilation_w) - static_cast<sidx>(s.pad_w);
        sidx lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
        sidx hi = (w - 1 - off) < 0 ? 0 : (w - 1 - off) / sw + 1;
        lo = std::min(lo, n_ow);
        hi = std::clamp(hi, lo, n_ow);
        for (size_t oy = 0; oy < oh; ++oy) {
          const auto iy =
              static_cast<sidx>(oy * s.stride_h + i * s.dilation_h) -
              static_cast<sidx>(s.pad_h);
          if (iy < 0 || iy >= h) {
            std::fill_n(col, ow, 0.0f);
            col += ow;
            continue;
          }
          const float* src = plane + iy * w;
          std::fill_n(col, lo, 0.0f);
          if (sw == 1) {
            // hi == lo: every tap of this row falls in the padding, and
            // src + off may then point outside the image.
            if (hi > lo) {
              std::memcpy(col + lo, src + lo + off, (hi - lo) * sizeof(float));
            }
          } else {
            for (sidx ox = lo; ox < hi; ++ox) {
              col[ox] = src[ox * sw + off];
            }
          }
          std::fill(col + hi, col + n_ow, 0.0f);
          col += ow;
        }
      }
    }
  }
}

} // namespace

// -- dense --------------------------------------------------------------------

void dense(const float* x, size_t batch, size_t in, const float* w,
           const float* b, size_t out, float* y, bool w_transposed) {
  if (batch == 0 || out == 0) {
    return;
  }
  if (in == 0) {
    // sgemm with k = 0 would be a no-op or scale y; the product is empty.
    if (b != nullptr) {
      broadcast_rows(y, batch, out, b);
    } else {
      std::fill_n(y, batch * out, 0.0f);
    }
    return;
  }
  float beta = 0.0f;
  if (b != nullptr) {
    broadcast_rows(y, batch, out, b);
    beta = 1.0f;
  }
  // Torch layout [out, in] is Wᵀ already as far as GEMM is concerned.
  auto trans_w = w_transposed ? CblasNoTrans : CblasTrans;
  auto ldw = w_transposed ? to_blas(out) : to_blas(in);
  if (batch == 1) {
    // One row is a matrix-vector product; OpenBLAS's GEMV is several times
    // faster than its GEMM at m = 1 (measured: 9.7 vs 30 ms on 8192²).
    // y = op(W) x with W stored [out, in] (or [in, out] when transposed).
    cblas_sgemv(CblasRowMajor, w_transposed ? CblasTrans : CblasNoTrans,
                w_transposed ? to_blas(in) : to_blas(out),
                w_transposed ? to_blas(out) : to_blas(in), 1.0f, w, ldw, x, 1,
                beta, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_w, to_blas(batch),
              to_blas(out), to_blas(in), 1.0f, x, to_blas(in), w, ldw, beta, y,
              to_blas(out));
}

// -- elementwise and per-row --------------------------------------------------

void relu(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    x[i] = x[i] < 0.0f ? 0.0f : x[i];
  }
}

void gelu(float* x, size_t n) {
  constexpr float inv_sqrt2 = 0.70710678118654752440f;
  for (size_t i = 0; i < n; ++i) {
    x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * inv_sqrt2));
  }
}

void softmax(float* x, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    float* row = x + r * cols;
    float mx = -std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < cols; ++i) {
      mx = std::max(mx, row[i]);
    }
    // Summing in double keeps long rows accurate at no visible cost next to
    // exp().
    double sum = 0.0;
    for (size_t i = 0; i < cols; ++i) {
      row[i] = std::exp(row[i] - mx);
      sum += row[i];
    }
    const auto inv = static_cast<float>(1.0 / sum);
    for (size_t i = 0; i < cols; ++i) {
      row[i] *= inv;
    }
  }
}

void layernorm(float* x, size_t rows, size_t cols, const float* gamma,
               const float* beta, float eps) {
  if (cols == 0) {
    return;
  }
  for (size_t r = 0; r < rows; ++r) {
    float* row = x + r * cols;
    // Two passes in double: the one-pass E[x²] - E[x]² form cancels badly for
    // rows with a large mean.
    double sum = 0.0;
    for (size_t i = 0; i < cols; ++i) {
      sum += row[i];
    }
    const double mean = sum / static_cast<double>(cols);
    double sq = 0.0;
    for (size_t i = 0; i < cols; ++i) {
      const double d = row[i] - mean;
      sq += d * d;
    }
    const double var = sq / static_cast<double>(cols);
    const auto inv_std = static_cast<float>(1.0 / std::sqrt(var + eps));
    const auto m = static_cast<float>(mean);
    for (size_t i = 0; i < cols; ++i) {
      float v = (row[i] - m) * inv_std;
      if (gamma != nullptr) {
        v *= gamma[i];
      }
      if (beta != nullptr) {
        v += beta[i];
      }
      row[i] = v;
    }
  }
}

void add(float* x, const float* r, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    x[i] += r[i];
  }
}

// -- conv2d -------------------------------------------------------------------

void conv2d(const float* x, const conv2d_shape& s, const float* w,
            const float* b, float* y, float* workspace) {
  const size_t oh = s.out_h();
  const size_t ow = s.out_w();
  const size_t n_cols = oh * ow;
  const size_t k_rows = s.c_in * s.kh * s.kw;
  if (s.n == 0 || n_cols == 0 || s.c_out == 0) {
    return;
  }
  const bool pointwise = s.is_pointwise();
  const size_t x_img = s.c_in * s.h * s.w;
  const size_t y_img = s.c_out * n_cols;
  for (size_t img = 0; img < s.n; ++img) {
    const float* src = x + img * x_img;
    float* dst = y + img * y_img;
    const float* col = src;
    if (!pointwise) {
      im2col(src, s, oh, ow, workspace);
      col = workspace;
    }
    float beta = 0.0f;
    if (b != nullptr) {
      for (size_t co = 0; co < s.c_out; ++co) {
        std::fill_n(dst + co * n_cols, n_cols, b[co]);
      }
      beta = 1.0f;
    }
    // y_img[c_out, n_cols] = W[c_out, k_rows] · col[k_rows, n_cols].
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, to_blas(s.c_out),
                to_blas(n_cols), to_blas(k_rows), 1.0f, w, to_blas(k_rows), col,
                to_blas(n_cols), beta, dst, to_blas(n_cols));
  }
}

// -- pooling ------------------------------------------------------------------

namespace {

// Calls f(plane_in, plane_out, y0, y1, x0, x1, oy, ox) for every output pixel
// with the window clipped to the input: [y0, y1) x [x0, x1).
template <class F>
void for_each_window(const float* x, const pool2d_shape& s, float* y, F&& f) {
  using sidx = std::ptrdiff_t;
  const size_t oh = s.out_h();
  const size_t ow = s.out_w();
  const auto h = static_cast<sidx>(s.h);
  const auto w = static_cast<sidx>(s.w);
  for (size_t p = 0; p < s.n * s.c; ++p) {
    const float* in = x + p * s.h * s.w;
    float* out = y + p * oh * ow;
    for (size_t oy = 0; oy < oh; ++oy) {
      const auto ys =
          static_cast<sidx>(oy * s.stride_h) - static_cast<sidx>(s.pad_h);
      const auto ye = ys + static_cast<sidx>(s.kh);
      const sidx y0 = std::max<sidx>(ys, 0);
      const sidx y1 = std::min(ye, h);
      for (size_t ox = 0; ox < ow; ++ox) {
        const auto xs =
            static_cast<sidx>(ox * s.stride_w) - static_cast<sidx>(s.pad_w);
        const auto xe = xs + static_cast<sidx>(s.kw);
        const sidx x0 = std::max<sidx>(xs, 0);
        const sidx x1 = std::min(xe, w);
        out[oy * ow + ox] = f(in, y0, y1, x0, x1);
      }
    }
  }
}

} // namespace

void max_pool2d(const float* x, const pool2d_shape& s, float* y) {
  for_each_window(
      x, s, y, [&s](const float* in, auto y0, auto y1, auto x0, auto x1) {
        float m = -std::numeric_limits<float>::infinity();
        for (auto iy = y0; iy < y1; ++iy) {
          const float* row = in + iy * static_cast<std::ptrdiff_t>(s.w);
          for (auto ix = x0; ix < x1; ++ix) {
            const float v = row[ix];
            if (v > m || std::isnan(v)) {
              m = v;
            }
            if (std::isnan(m)) {
              return m;
            }
          }
        }
        return m;
      });
}

void avg_pool2d(const float* x, const pool2d_shape& s, float* y,
                bool count_include_pad) {
  // With ceil_mode=False no window reaches past the padding, so torch's
  // divisor with count_include_pad is always the full kernel area.
  const auto full = static_cast<float>(s.kh * s.kw);
  for_each_window(
      x, s, y, [&](const float* in, auto y0, auto y1, auto x0, auto x1) {
        float sum = 0.0f;
        for (auto iy = y0; iy < y1; ++iy) {
          const float* row = in + iy * static_cast<std::ptrdiff_t>(s.w);
          for (auto ix = x0; ix < x1; ++ix) {
            sum += row[ix];
          }
        }
        const float div = count_include_pad
                              ? full
                              : static_cast<float>((y1 - y0) * (x1 - x0));
        return sum / div;
      });
}

// -- weight conversion --------------------------------------------------------

void f16_to_f32(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    dst[i] = shoal::f16_to_f32(src[i]);
  }
}

void bf16_to_f32(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    dst[i] = shoal::bf16_to_f32(src[i]);
  }
}

} // namespace shoal::cpu
