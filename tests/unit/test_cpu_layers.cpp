// The CPU layer kernels against naive double-precision references written
// here, over shapes chosen to hit the edge paths: batch 1/7/32, odd sizes,
// padding, stride 2, dilation 2, non-square kernels.
#include "gpu/cpu/cpu_layers.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "net/wire/error.hpp"

using namespace shoal;
using namespace shoal::cpu;

namespace {

constexpr double rel_tol = 1e-4;
constexpr double abs_tol = 1e-5;
constexpr float nan_f = std::numeric_limits<float>::quiet_NaN();
constexpr float inf_f = std::numeric_limits<float>::infinity();

std::vector<float> random_vec(size_t n, uint32_t seed, float lo = -1.0f,
                              float hi = 1.0f) {
  std::mt19937 gen{seed};
  std::uniform_real_distribution<float> dist{lo, hi};
  std::vector<float> v(n);
  for (auto& x : v) {
    x = dist(gen);
  }
  return v;
}

// Checks every element within rel_tol relative plus `atol` absolute; reports
// only the first mismatch so a wrong kernel does not flood the log.
void expect_close(const std::vector<float>& got,
                  const std::vector<double>& want, double atol = abs_tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    double tol = atol + rel_tol * std::abs(want[i]);
    if (!(std::abs(got[i] - want[i]) <= tol)) {
      ADD_FAILURE() << "element " << i << ": got " << got[i] << ", want "
                    << want[i] << " (of " << got.size() << ")";
      return;
    }
  }
}

bool has_reason(const caf::error& err, const std::string& part) {
  return reason_of(err).find(part) != std::string::npos;
}

// -- references ---------------------------------------------------------------

std::vector<double> ref_dense(const std::vector<float>& x, size_t batch,
                              size_t in, const std::vector<float>& w,
                              const float* b, size_t out, bool w_transposed) {
  std::vector<double> y(batch * out);
  for (size_t r = 0; r < batch; ++r) {
    for (size_t o = 0; o < out; ++o) {
      double acc = b ? b[o] : 0.0;
      for (size_t i = 0; i < in; ++i) {
        double wv = w_transposed ? w[i * out + o] : w[o * in + i];
        acc += static_cast<double>(x[r * in + i]) * wv;
      }
      y[r * out + o] = acc;
    }
  }
  return y;
}

std::vector<double> ref_conv2d(const std::vector<float>& x,
                               const conv2d_shape& s,
                               const std::vector<float>& w, const float* b) {
  size_t oh = s.out_h();
  size_t ow = s.out_w();
  std::vector<double> y(s.n * s.c_out * oh * ow);
  for (size_t n = 0; n < s.n; ++n) {
    for (size_t co = 0; co < s.c_out; ++co) {
      for (size_t oy = 0; oy < oh; ++oy) {
        for (size_t ox = 0; ox < ow; ++ox) {
          double acc = b ? b[co] : 0.0;
          for (size_t ci = 0; ci < s.c_in; ++ci) {
            for (size_t i = 0; i < s.kh; ++i) {
              for (size_t j = 0; j < s.kw; ++j) {
                long iy =
                    static_cast<long>(oy * s.stride_h + i * s.dilation_h) -
                    static_cast<long>(s.pad_h);
                long ix =
                    static_cast<long>(ox * s.stride_w + j * s.dilation_w) -
                    static_cast<long>(s.pad_w);
                if (iy < 0 || ix < 0 || iy >= static_cast<long>(s.h) ||
                    ix >= static_cast<long>(s.w)) {
                  continue;
                }
                double xv = x[((n * s.c_in + ci) * s.h + iy) * s.w + ix];
                double wv = w[((co * s.c_in + ci) * s.kh + i) * s.kw + j];
                acc += xv * wv;
              }
            }
          }
          y[((n * s.c_out + co) * oh + oy) * ow + ox] = acc;
        }
      }
    }
  }
  return y;
}

enum class pool_kind { max, avg_incl, avg_excl };

std::vector<double> ref_pool(const std::vector<float>& x, const pool2d_shape& s,
                             pool_kind kind) {
  size_t oh = s.out_h();
  size_t ow = s.out_w();
  std::vector<double> y(s.n * s.c * oh * ow);
  for (size_t p = 0; p < s.n * s.c; ++p) {
    for (size_t oy = 0; oy < oh; ++oy) {
      for (size_t ox = 0; ox < ow; ++ox) {
        double mx = -INFINITY;
        double sum = 0.0;
        size_t valid = 0;
        for (size_t i = 0; i < s.kh; ++i) {
          for (size_t j = 0; j < s.kw; ++j) {
            long iy = static_cast<long>(oy * s.stride_h + i) -
                      static_cast<long>(s.pad_h);
            long ix = static_cast<long>(ox * s.stride_w + j) -
                      static_cast<long>(s.pad_w);
            if (iy < 0 || ix < 0 || iy >= static_cast<long>(s.h) ||
                ix >= static_cast<long>(s.w)) {
              continue;
            }
            double v = x[(p * s.h + iy) * s.w + ix];
            mx = std::max(mx, v);
            sum += v;
            ++valid;
          }
        }
        double out = 0.0;
        switch (kind) {
        case pool_kind::max:
          out = mx;
          break;
        case pool_kind::avg_incl:
          out = sum / static_cast<double>(s.kh * s.kw);
          break;
        case pool_kind::avg_excl:
          out = sum / static_cast<double>(valid);
          break;
        }
        y[(p * oh + oy) * ow + ox] = out;
      }
    }
  }
  return y;
}

std::vector<double> ref_softmax(const std::vector<float>& x, size_t rows,
                                size_t cols) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < rows; ++r) {
    double mx = -INFINITY;
    for (size_t i = 0; i < cols; ++i) {
      mx = std::max(mx, static_cast<double>(x[r * cols + i]));
    }
    double sum = 0.0;
    for (size_t i = 0; i < cols; ++i) {
      sum += std::exp(x[r * cols + i] - mx);
    }
    for (size_t i = 0; i < cols; ++i) {
      y[r * cols + i] = std::exp(x[r * cols + i] - mx) / sum;
    }
  }
  return y;
}

std::vector<double> ref_layernorm(const std::vector<float>& x, size_t rows,
                                  size_t cols, const float* gamma,
                                  const float* beta, double eps) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < rows; ++r) {
    double mean = 0.0;
    for (size_t i = 0; i < cols; ++i) {
      mean += x[r * cols + i];
    }
    mean /= static_cast<double>(cols);
    double var = 0.0;
    for (size_t i = 0; i < cols; ++i) {
      var += (x[r * cols + i] - mean) * (x[r * cols + i] - mean);
    }
    var /= static_cast<double>(cols);
    for (size_t i = 0; i < cols; ++i) {
      double v = (x[r * cols + i] - mean) / std::sqrt(var + eps);
      y[r * cols + i] = v * (gamma ? gamma[i] : 1.0) + (beta ? beta[i] : 0.0);
    }
  }
  return y;
}

} // namespace

// -- dense --------------------------------------------------------------------

struct dense_case {
  size_t batch, in, out;
};

TEST(cpu_dense, matches_reference) {
  const dense_case cases[] = {
      {1, 1, 1},      {1, 784, 512}, {7, 13, 5},  {7, 784, 512},
      {32, 784, 512}, {32, 512, 10}, {32, 3, 17}, {5, 1000, 1},
  };
  uint32_t seed = 1;
  for (auto [batch, in, out] : cases) {
    for (bool transposed : {false, true}) {
      for (bool with_bias : {false, true}) {
        SCOPED_TRACE("batch " + std::to_string(batch) + " in " +
                     std::to_string(in) + " out " + std::to_string(out) +
                     (transposed ? " [in,out]" : " [out,in]") +
                     (with_bias ? " bias" : " no bias"));
        auto x = random_vec(batch * in, seed++);
        auto w = random_vec(in * out, seed++);
        auto b = random_vec(out, seed++);
        const float* bp = with_bias ? b.data() : nullptr;
        // Garbage in y must not leak into the result.
        std::vector<float> y(batch * out, nan_f);
        dense(x.data(), batch, in, w.data(), bp, out, y.data(), transposed);
        // f32 accumulation over `in` terms of magnitude <= 1.
        expect_close(y, ref_dense(x, batch, in, w, bp, out, transposed),
                     1e-6 * std::sqrt(static_cast<double>(in)) + abs_tol);
      }
    }
  }
}

TEST(cpu_dense, empty_inner_dimension_gives_bias) {
  std::vector<float> b{1.0f, -2.0f, 3.0f};
  std::vector<float> y(6, nan_f);
  dense(nullptr, 2, 0, nullptr, b.data(), 3, y.data());
  EXPECT_EQ(y, (std::vector<float>{1, -2, 3, 1, -2, 3}));
  dense(nullptr, 2, 0, nullptr, nullptr, 3, y.data());
  EXPECT_EQ(y, std::vector<float>(6, 0.0f));
}

// -- elementwise --------------------------------------------------------------

TEST(cpu_relu, clamps_negatives_and_keeps_nan) {
  std::vector<float> x{-3.0f, -0.0f, 0.0f, 0.5f, 7.0f, -inf_f, inf_f, nan_f};
  relu(x.data(), x.size());
  EXPECT_EQ(x[0], 0.0f);
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_EQ(x[3], 0.5f);
  EXPECT_EQ(x[4], 7.0f);
  EXPECT_EQ(x[5], 0.0f);
  EXPECT_EQ(x[6], inf_f);
  EXPECT_TRUE(std::isnan(x[7]));
}

TEST(cpu_gelu, known_values) {
  std::vector<float> x{1.0f, -1.0f, 0.0f, 2.0f};
  gelu(x.data(), x.size());
  EXPECT_NEAR(x[0], 0.8413447460685429, 1e-6);
  EXPECT_NEAR(x[1], -0.15865525393145707, 1e-6);
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_NEAR(x[3], 1.9544997361036416, 1e-6);
}

TEST(cpu_gelu, matches_erf_reference) {
  auto x = random_vec(32 * 257, 42, -8.0f, 8.0f);
  std::vector<double> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    want[i] = 0.5 * x[i] * (1.0 + std::erf(x[i] / std::sqrt(2.0)));
  }
  gelu(x.data(), x.size());
  expect_close(x, want);
}

TEST(cpu_add, residual) {
  auto x = random_vec(7 * 33, 3);
  auto r = random_vec(7 * 33, 4);
  std::vector<double> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    want[i] = static_cast<double>(x[i]) + r[i];
  }
  add(x.data(), r.data(), x.size());
  expect_close(x, want);
  // Aliasing doubles.
  std::vector<float> y{1.5f, -2.0f};
  add(y.data(), y.data(), y.size());
  EXPECT_EQ(y, (std::vector<float>{3.0f, -4.0f}));
}

// -- softmax ------------------------------------------------------------------

TEST(cpu_softmax, matches_reference_and_rows_sum_to_one) {
  const std::pair<size_t, size_t> shapes[] = {
      {1, 1}, {1, 10}, {7, 10}, {32, 1000}, {3, 7}};
  uint32_t seed = 100;
  for (auto [rows, cols] : shapes) {
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols));
    auto x = random_vec(rows * cols, seed++, -10.0f, 10.0f);
    auto want = ref_softmax(x, rows, cols);
    softmax(x.data(), rows, cols);
    expect_close(x, want, 1e-7);
    for (size_t r = 0; r < rows; ++r) {
      double sum = 0.0;
      for (size_t i = 0; i < cols; ++i) {
        sum += x[r * cols + i];
      }
      EXPECT_NEAR(sum, 1.0, 1e-5);
    }
  }
}

TEST(cpu_softmax, stable_for_large_inputs) {
  std::vector<float> x{1000.0f,  1000.0f,  999.0f,   -1000.0f, // row 0
                       -1000.0f, -1001.0f, -1002.0f, -1003.0f, // row 1
                       3e38f,    0.0f,     -3e38f,   3e38f};   // row 2
  auto want = ref_softmax(x, 3, 4);
  softmax(x.data(), 3, 4);
  for (auto v : x) {
    ASSERT_TRUE(std::isfinite(v));
  }
  expect_close(x, want, 1e-7);
  EXPECT_NEAR(x[8], 0.5, 1e-6);
  EXPECT_EQ(x[9], 0.0f);
}

// -- layernorm ----------------------------------------------------------------

TEST(cpu_layernorm, matches_reference_with_and_without_affine) {
  const std::pair<size_t, size_t> shapes[] = {
      {1, 2}, {7, 33}, {32, 512}, {3, 1}};
  uint32_t seed = 200;
  for (auto [rows, cols] : shapes) {
    auto gamma = random_vec(cols, seed++, 0.5f, 2.0f);
    auto beta = random_vec(cols, seed++);
    for (bool affine : {false, true}) {
      SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) +
                   (affine ? " affine" : " plain"));
      auto x = random_vec(rows * cols, seed++, -3.0f, 5.0f);
      const float* g = affine ? gamma.data() : nullptr;
      const float* b = affine ? beta.data() : nullptr;
      auto want = ref_layernorm(x, rows, cols, g, b, 1e-5);
      layernorm(x.data(), rows, cols, g, b, 1e-5f);
      expect_close(x, want);
    }
  }
}

TEST(cpu_layernorm, large_mean_and_custom_eps) {
  // A large common offset: the one-pass variance formula would lose all
  // precision here.
  auto x = random_vec(4 * 64, 7, 1e4f - 1.0f, 1e4f + 1.0f);
  std::vector<float> gamma(64, 2.0f);
  std::vector<float> beta(64, -1.0f);
  auto want = ref_layernorm(x, 4, 64, gamma.data(), beta.data(), 1e-3);
  layernorm(x.data(), 4, 64, gamma.data(), beta.data(), 1e-3f);
  // Inputs near 1e4 carry only ~1e-3 absolute precision in f32 to begin with.
  expect_close(x, want, 1e-3);
}

// -- conv2d -------------------------------------------------------------------

namespace {

conv2d_shape conv(size_t n, size_t c_in, size_t h, size_t w, size_t c_out,
                  size_t kh, size_t kw, size_t sh = 1, size_t sw = 1,
                  size_t ph = 0, size_t pw = 0, size_t dh = 1, size_t dw = 1) {
  conv2d_shape s;
  s.n = n;
  s.c_in = c_in;
  s.h = h;
  s.w = w;
  s.c_out = c_out;
  s.kh = kh;
  s.kw = kw;
  s.stride_h = sh;
  s.stride_w = sw;
  s.pad_h = ph;
  s.pad_w = pw;
  s.dilation_h = dh;
  s.dilation_w = dw;
  return s;
}

// Through a stream: long operator+ chains trip GCC 12's bogus -Wrestrict.
std::string describe(const conv2d_shape& s) {
  std::ostringstream out;
  out << "n" << s.n << " c" << s.c_in << " " << s.h << "x" << s.w << " -> c"
      << s.c_out << " k" << s.kh << "x" << s.kw << " s" << s.stride_h << ","
      << s.stride_w << " p" << s.pad_h << "," << s.pad_w << " d" << s.dilation_h
      << "," << s.dilation_w;
  return out.str();
}

} // namespace

TEST(cpu_conv2d, output_extent_and_workspace) {
  auto s = conv(32, 1, 28, 28, 8, 5, 5, 1, 1, 2, 2);
  EXPECT_EQ(s.out_h(), 28u);
  EXPECT_EQ(s.out_w(), 28u);
  EXPECT_EQ(s.workspace_floats(), 25u * 28 * 28);
  EXPECT_EQ(s.y_floats(), 32u * 8 * 28 * 28);
  s = conv(1, 3, 11, 10, 4, 3, 2, 2, 2, 1, 0);
  EXPECT_EQ(s.out_h(), 6u); // (11 + 2 - 3) / 2 + 1
  EXPECT_EQ(s.out_w(), 5u); // (10 - 2) / 2 + 1
  s = conv(1, 1, 9, 9, 1, 3, 3, 1, 1, 0, 0, 2, 2);
  EXPECT_EQ(s.out_h(), 5u); // dilated kernel spans 5
  EXPECT_EQ(conv(2, 6, 5, 7, 3, 1, 1).workspace_floats(), 0u);
  EXPECT_EQ(conv(1, 1, 2, 2, 1, 5, 5).out_h(), 0u); // refused by check()
}

TEST(cpu_conv2d, matches_reference) {
  const conv2d_shape cases[] = {
      conv(1, 1, 5, 5, 1, 3, 3),
      conv(7, 3, 8, 9, 4, 3, 3, 1, 1, 1, 1),
      conv(2, 3, 11, 10, 5, 3, 2, 2, 2, 1, 0),     // non-square, stride 2
      conv(3, 2, 9, 9, 3, 3, 3, 1, 1, 2, 2, 2, 2), // dilation 2
      conv(32, 1, 28, 28, 8, 5, 5, 1, 1, 2, 2),    // MNIST-like first layer
      conv(32, 8, 14, 14, 16, 3, 3, 2, 2, 1, 1),
      conv(4, 6, 5, 7, 3, 1, 1),             // pointwise: no im2col
      conv(2, 3, 7, 6, 2, 1, 1, 2, 2),       // 1x1 stride 2
      conv(1, 2, 3, 3, 2, 5, 5, 1, 1, 1, 1), // kernel = padded input
      conv(2, 2, 2, 2, 3, 2, 2, 1, 1, 3, 3), // rows all padding
      conv(1, 3, 10, 13, 2, 2, 4, 3, 2, 1, 2, 1, 3),
      conv(7, 5, 6, 1, 4, 3, 1, 1, 1, 1, 0), // width 1
  };
  uint32_t seed = 300;
  for (const auto& s : cases) {
    ASSERT_FALSE(check(s)) << describe(s) << ": " << reason_of(check(s));
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE(describe(s) + (with_bias ? " bias" : " no bias"));
      auto x = random_vec(s.x_floats(), seed++);
      auto w = random_vec(s.w_floats(), seed++);
      auto b = random_vec(s.c_out, seed++);
      const float* bp = with_bias ? b.data() : nullptr;
      // Exactly the advertised size, so ASan catches an overrun.
      std::vector<float> ws(s.workspace_floats(), nan_f);
      std::vector<float> y(s.y_floats(), nan_f);
      conv2d(x.data(), s, w.data(), bp, y.data(),
             ws.empty() ? nullptr : ws.data());
      expect_close(y, ref_conv2d(x, s, w, bp));
    }
  }
}

TEST(cpu_conv2d, check_refuses_impossible_shapes) {
  EXPECT_FALSE(check(conv(1, 1, 5, 5, 1, 3, 3)));
  EXPECT_FALSE(check(conv(0, 1, 5, 5, 1, 3, 3))); // empty batch is fine
  auto err = check(conv(1, 1, 5, 5, 1, 3, 3, 0, 1));
  ASSERT_TRUE(err);
  EXPECT_EQ(err.code(), static_cast<uint8_t>(errc::invalid_argument));
  EXPECT_TRUE(has_reason(err, "stride_h is 0")) << reason_of(err);
  err = check(conv(1, 1, 5, 5, 1, 3, 3, 1, 0));
  EXPECT_TRUE(has_reason(err, "stride_w is 0")) << reason_of(err);
  err = check(conv(1, 1, 2, 5, 1, 5, 3, 1, 1, 1, 0));
  EXPECT_TRUE(has_reason(err, "kernel height 5 exceeds padded input height 4"))
      << reason_of(err);
  err = check(conv(1, 1, 5, 5, 1, 3, 3, 1, 1, 0, 0, 1, 3));
  EXPECT_TRUE(has_reason(err, "kernel width 3 (dilated: 7) exceeds padded"))
      << reason_of(err);
  err = check(conv(1, 0, 5, 5, 1, 3, 3));
  EXPECT_TRUE(has_reason(err, "c_in is 0")) << reason_of(err);
  err = check(conv(1, 1, 5, 5, 0, 3, 3));
  EXPECT_TRUE(has_reason(err, "c_out is 0")) << reason_of(err);
  err = check(conv(1, 1, 5, 5, 1, 0, 3));
  EXPECT_TRUE(has_reason(err, "kernel height is 0")) << reason_of(err);
  err = check(conv(1, 1, 5, 0, 1, 3, 3));
  EXPECT_TRUE(has_reason(err, "input width is 0")) << reason_of(err);
  err = check(conv(1, 1, 5, 5, 1, 3, 3, 1, 1, 0, 0, 0, 1));
  EXPECT_TRUE(has_reason(err, "dilation_h is 0")) << reason_of(err);
  size_t big = size_t{1} << 20;
  err = check(conv(big, big, big, big, 1, 1, 1));
  EXPECT_TRUE(has_reason(err, "overflow")) << reason_of(err);
}

// -- pooling ------------------------------------------------------------------

namespace {

pool2d_shape pool(size_t n, size_t c, size_t h, size_t w, size_t kh, size_t kw,
                  size_t sh, size_t sw, size_t ph = 0, size_t pw = 0) {
  pool2d_shape s;
  s.n = n;
  s.c = c;
  s.h = h;
  s.w = w;
  s.kh = kh;
  s.kw = kw;
  s.stride_h = sh;
  s.stride_w = sw;
  s.pad_h = ph;
  s.pad_w = pw;
  return s;
}

} // namespace

TEST(cpu_pool2d, matches_reference) {
  const pool2d_shape cases[] = {
      pool(1, 1, 4, 4, 2, 2, 2, 2),
      pool(7, 3, 9, 8, 3, 3, 2, 2, 1, 1),
      pool(2, 2, 7, 10, 3, 2, 1, 2, 1, 1), // non-square, pad 1 on a width-2 k
      pool(32, 4, 6, 6, 2, 2, 2, 2),
      pool(3, 2, 7, 7, 5, 5, 3, 3, 2, 2),
      pool(1, 1, 5, 1, 3, 1, 1, 1, 1, 0),
      pool(32, 16, 14, 14, 3, 3, 2, 2, 1, 1),
  };
  uint32_t seed = 400;
  for (const auto& s : cases) {
    ASSERT_FALSE(check(s)) << reason_of(check(s));
    std::ostringstream trace;
    trace << "n" << s.n << " c" << s.c << " " << s.h << "x" << s.w << " k"
          << s.kh << "x" << s.kw << " s" << s.stride_h << "," << s.stride_w
          << " p" << s.pad_h << "," << s.pad_w;
    SCOPED_TRACE(trace.str());
    // All-negative inputs: zero padding leaking into max would show.
    auto neg = random_vec(s.x_floats(), seed++, -2.0f, -1.0f);
    auto x = random_vec(s.x_floats(), seed++);
    std::vector<float> y(s.y_floats(), nan_f);
    max_pool2d(neg.data(), s, y.data());
    expect_close(y, ref_pool(neg, s, pool_kind::max));
    max_pool2d(x.data(), s, y.data());
    expect_close(y, ref_pool(x, s, pool_kind::max));
    avg_pool2d(x.data(), s, y.data());
    expect_close(y, ref_pool(x, s, pool_kind::avg_incl));
    avg_pool2d(x.data(), s, y.data(), false);
    expect_close(y, ref_pool(x, s, pool_kind::avg_excl));
  }
}

TEST(cpu_pool2d, known_values_and_nan) {
  // 1x1x3x3, kernel 2, stride 1, pad 1 -> 4x4.
  auto s = pool(1, 1, 3, 3, 2, 2, 1, 1, 1, 1);
  ASSERT_EQ(s.out_h(), 4u);
  std::vector<float> x{1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<float> y(16);
  avg_pool2d(x.data(), s, y.data());
  EXPECT_FLOAT_EQ(y[0], 0.25f); // only x[0] inside, divided by 4
  EXPECT_FLOAT_EQ(y[5], 3.0f);  // (1+2+4+5)/4
  avg_pool2d(x.data(), s, y.data(), false);
  EXPECT_FLOAT_EQ(y[0], 1.0f); // divided by 1 valid element
  EXPECT_FLOAT_EQ(y[1], 1.5f); // (1+2)/2
  max_pool2d(x.data(), s, y.data());
  EXPECT_EQ(y[15], 9.0f);
  x[4] = nan_f;
  max_pool2d(x.data(), s, y.data());
  EXPECT_TRUE(std::isnan(y[5]));
  EXPECT_EQ(y[0], 1.0f);
}

TEST(cpu_pool2d, check_refuses_impossible_shapes) {
  EXPECT_FALSE(check(pool(1, 1, 4, 4, 2, 2, 2, 2)));
  auto err = check(pool(1, 1, 4, 4, 2, 2, 0, 2));
  ASSERT_TRUE(err);
  EXPECT_EQ(err.code(), static_cast<uint8_t>(errc::invalid_argument));
  EXPECT_TRUE(has_reason(err, "pool2d: stride_h is 0")) << reason_of(err);
  err = check(pool(1, 1, 4, 4, 5, 2, 1, 1));
  EXPECT_TRUE(has_reason(err, "kernel height 5 exceeds padded input height 4"))
      << reason_of(err);
  err = check(pool(1, 1, 4, 4, 2, 3, 1, 1, 1, 2));
  EXPECT_TRUE(has_reason(err, "pad_w 2 exceeds half the kernel width 3"))
      << reason_of(err);
  err = check(pool(1, 0, 4, 4, 2, 2, 1, 1));
  EXPECT_TRUE(has_reason(err, "c is 0")) << reason_of(err);
}

// -- flatten and conversion ---------------------------------------------------

TEST(cpu_flatten, is_the_same_memory) {
  std::vector<float> x(2 * 3 * 4 * 5);
  EXPECT_EQ(flatten(x.data()), x.data());
  EXPECT_EQ(flatten_cols(3, 4, 5), 60u);
  static_assert(flatten_cols(8, 7, 7) == 392);
}

TEST(cpu_convert, f16_values) {
  const std::pair<uint16_t, float> cases[] = {
      {0x0000, 0.0f},
      {0x3c00, 1.0f},
      {0xc000, -2.0f},
      {0x3555, 0.333251953125f},
      {0x7bff, 65504.0f},
      {0x0400, 6.103515625e-05f},        // smallest normal
      {0x0001, 5.960464477539063e-08f},  // smallest subnormal
      {0x83ff, -6.097555160522461e-05f}, // largest subnormal
      {0x7c00, inf_f},
      {0xfc00, -inf_f},
  };
  std::vector<uint16_t> src;
  for (auto [h, f] : cases) {
    EXPECT_EQ(f16_to_f32(h), f) << std::hex << h;
    src.push_back(h);
  }
  EXPECT_TRUE(std::signbit(f16_to_f32(uint16_t{0x8000})));
  EXPECT_TRUE(std::isnan(f16_to_f32(uint16_t{0x7e00})));
  EXPECT_TRUE(std::isnan(f16_to_f32(uint16_t{0x7c01})));
  std::vector<float> dst(src.size());
  f16_to_f32(src.data(), dst.data(), src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(dst[i], cases[i].second);
  }
}

TEST(cpu_convert, bf16_values) {
  std::vector<uint16_t> src{0x3f80, 0xc040, 0x0000, 0x7f80, 0x4049, 0x0001};
  std::vector<float> dst(src.size());
  bf16_to_f32(src.data(), dst.data(), src.size());
  EXPECT_EQ(dst[0], 1.0f);
  EXPECT_EQ(dst[1], -3.0f);
  EXPECT_EQ(dst[2], 0.0f);
  EXPECT_EQ(dst[3], inf_f);
  EXPECT_EQ(dst[4], 3.140625f);
  EXPECT_EQ(dst[5], std::bit_cast<float>(uint32_t{0x00010000}));
}
