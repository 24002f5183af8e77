#include "gpu/graph/layer_shapes.hpp"

#include <climits>
#include <initializer_list>
#include <string>

#include "net/wire/error.hpp"

namespace shoal {

namespace {

// OpenBLAS and cuDNN take int dimensions; check() keeps shapes below this.
constexpr size_t max_dim = static_cast<size_t>(INT_MAX);

// Output extent of a window sliding over `in` padded by `pad` on both sides;
// 0 where the window does not fit even once (or the step is zero).
size_t window_out(size_t in, size_t pad, size_t k, size_t dilation,
                  size_t stride) noexcept {
  if (k == 0 || stride == 0 || dilation == 0) {
    return 0;
  }
  size_t span = dilation * (k - 1) + 1;
  size_t padded = in + 2 * pad;
  if (span > padded) {
    return 0;
  }
  return (padded - span) / stride + 1;
}

// Multiplies the factors, false on overflow.
bool checked_product(std::initializer_list<size_t> factors, size_t& out) {
  size_t acc = 1;
  for (auto f : factors) {
    if (__builtin_mul_overflow(acc, f, &acc)) {
      return false;
    }
  }
  out = acc;
  return true;
}

caf::error invalid(std::string reason) {
  return make_error(errc::invalid_argument, std::move(reason));
}

// The checks shared by conv and pool along one spatial axis.
caf::error check_axis(const char* op, const char* axis, size_t in, size_t k,
                      size_t stride, size_t pad, size_t dilation) {
  auto ax = std::string{axis};
  if (in == 0) {
    return invalid(std::string{op} + ": input " + ax + " is 0");
  }
  if (k == 0) {
    return invalid(std::string{op} + ": kernel " + ax + " is 0");
  }
  if (stride == 0) {
    return invalid(std::string{op} + ": stride_" + ax.substr(0, 1) + " is 0");
  }
  if (dilation == 0) {
    return invalid(std::string{op} + ": dilation_" + ax.substr(0, 1) + " is 0");
  }
  // Guards the arithmetic below against absurd manifest values.
  if (in > max_dim || k > max_dim || pad > max_dim || dilation > max_dim) {
    return invalid(std::string{op} + ": " + ax + " sizes exceed " +
                   std::to_string(max_dim));
  }
  size_t span = dilation * (k - 1) + 1;
  size_t padded = in + 2 * pad;
  if (span > padded) {
    auto reason = std::string{op} + ": kernel " + ax + " " + std::to_string(k);
    if (dilation != 1) {
      reason += " (dilated: " + std::to_string(span) + ")";
    }
    reason += " exceeds padded input " + ax + " " + std::to_string(padded) +
              " (" + std::to_string(in) + " + 2*pad " + std::to_string(pad) +
              ")";
    return invalid(std::move(reason));
  }
  return {};
}

// One conv2d GEMM per image: M = c_out, N = out_h·out_w, K = c_in·kh·kw;
// every dimension fits an int and no tensor's element count overflows.
bool conv_sizes_fit(const conv2d_shape& s) {
  size_t n_cols = 0;
  size_t k_rows = 0;
  size_t total = 0;
  return s.c_out <= max_dim &&
         checked_product({s.out_h(), s.out_w()}, n_cols) && n_cols <= max_dim &&
         checked_product({s.c_in, s.kh, s.kw}, k_rows) && k_rows <= max_dim &&
         checked_product({k_rows, n_cols}, total) &&
         checked_product({s.n, s.c_in, s.h, s.w}, total) &&
         checked_product({s.n, s.c_out, n_cols}, total) &&
         checked_product({s.c_out, k_rows}, total);
}

} // namespace

size_t conv2d_shape::out_h() const noexcept {
  return window_out(h, pad_h, kh, dilation_h, stride_h);
}

size_t conv2d_shape::out_w() const noexcept {
  return window_out(w, pad_w, kw, dilation_w, stride_w);
}

bool conv2d_shape::is_pointwise() const noexcept {
  return kh == 1 && kw == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 &&
         pad_w == 0;
}

size_t conv2d_shape::workspace_floats() const noexcept {
  if (is_pointwise()) {
    return 0;
  }
  return c_in * kh * kw * out_h() * out_w();
}

caf::error check(const conv2d_shape& s) {
  if (s.c_in == 0) {
    return invalid("conv2d: c_in is 0");
  }
  if (s.c_out == 0) {
    return invalid("conv2d: c_out is 0");
  }
  if (auto err = check_axis("conv2d", "height", s.h, s.kh, s.stride_h, s.pad_h,
                            s.dilation_h)) {
    return err;
  }
  if (auto err = check_axis("conv2d", "width", s.w, s.kw, s.stride_w, s.pad_w,
                            s.dilation_w)) {
    return err;
  }
  if (!conv_sizes_fit(s)) {
    return invalid("conv2d: tensor sizes overflow (c_in " +
                   std::to_string(s.c_in) + ", c_out " +
                   std::to_string(s.c_out) + ", " + std::to_string(s.h) + "x" +
                   std::to_string(s.w) + ", kernel " + std::to_string(s.kh) +
                   "x" + std::to_string(s.kw) + ")");
  }
  return {};
}

size_t pool2d_shape::out_h() const noexcept {
  return window_out(h, pad_h, kh, 1, stride_h);
}

size_t pool2d_shape::out_w() const noexcept {
  return window_out(w, pad_w, kw, 1, stride_w);
}

caf::error check(const pool2d_shape& s) {
  if (s.c == 0) {
    return invalid("pool2d: c is 0");
  }
  if (auto err =
          check_axis("pool2d", "height", s.h, s.kh, s.stride_h, s.pad_h, 1)) {
    return err;
  }
  if (auto err =
          check_axis("pool2d", "width", s.w, s.kw, s.stride_w, s.pad_w, 1)) {
    return err;
  }
  if (s.pad_h > s.kh / 2) {
    return invalid("pool2d: pad_h " + std::to_string(s.pad_h) +
                   " exceeds half the kernel height " + std::to_string(s.kh));
  }
  if (s.pad_w > s.kw / 2) {
    return invalid("pool2d: pad_w " + std::to_string(s.pad_w) +
                   " exceeds half the kernel width " + std::to_string(s.kw));
  }
  size_t total = 0;
  if (!checked_product({s.n, s.c, s.h, s.w}, total) ||
      !checked_product({s.n, s.c, s.out_h(), s.out_w()}, total)) {
    return invalid("pool2d: tensor sizes overflow (n " + std::to_string(s.n) +
                   ", c " + std::to_string(s.c) + ", " + std::to_string(s.h) +
                   "x" + std::to_string(s.w) + ")");
  }
  return {};
}

} // namespace shoal
