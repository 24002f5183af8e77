// The shapes of the spatial layers (conv2d, max/avg pooling) and their
// checks: the arithmetic the graph resolver, the CPU kernels and the CUDA
// layers share, so that every backend infers the same output extents and
// refuses the same manifests with the same messages.
//
// Semantics follow PyTorch's defaults (NCHW, floor mode). check() runs once
// when a graph is loaded; the kernels trust a checked shape.
#pragma once

#include <cstddef>

#include <caf/error.hpp>

namespace shoal {

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

  // A 1x1 kernel with stride 1 and no padding: the input already is the
  // column matrix of an im2col, so no workspace is needed.
  bool is_pointwise() const noexcept;

  // Floats of im2col workspace that the CPU's conv2d needs: one image's
  // column matrix [c_in·kh·kw, out_h·out_w]. Zero for pointwise shapes.
  size_t workspace_floats() const noexcept;

  // Element counts of the input, weight and output tensors.
  size_t x_floats() const noexcept { return n * c_in * h * w; }
  size_t w_floats() const noexcept { return c_out * c_in * kh * kw; }
  size_t y_floats() const noexcept { return n * c_out * out_h() * out_w(); }
};

// Refuses shapes that have no output or overflow: zero sizes (except n),
// zero stride or dilation, a dilated kernel larger than the padded input,
// sizes whose products overflow or exceed what one GEMM call takes (int
// dimensions, as OpenBLAS and cuDNN want them). Returns an
// errc::invalid_argument error naming the offending field.
caf::error check(const conv2d_shape& s);

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

} // namespace shoal
