// Argument checks of the filtered_lrelu ops, shared by the CPU and CUDA entry points. Host-only.
//
// x [N, C, H, W] contiguous, fp16/bf16/fp32/fp64; fu, fd: FIR filters in the accumulation dtype (float32,
// float64 for float64 x), contiguous, either 1-D [taps] (separable: the same taps along both axes) or 2-D
// [fh, fw]; they are correlation filters (already flipped) and fu carries the upsampling gain. b [C] or
// undefined. Tangents tx [K, N, C, H, W] contiguous, tb [K, C] or undefined, all of x's dtype and device.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

#include "tangentlens/checks.h"
#include "tangentlens/filtered_lrelu_math.h"

namespace tangentlens {

inline void check_flrelu_filter(const at::Tensor& f, const at::Tensor& x, const char* name) {
  const auto acc = x.scalar_type() == c10::kDouble ? c10::kDouble : c10::kFloat;
  TORCH_CHECK((f.dim() == 1 || f.dim() == 2) && f.numel() > 0, name,
              ": expected a non-empty 1-D (separable) or 2-D [fh, fw] filter, got ", f.sizes());
  TORCH_CHECK(f.scalar_type() == acc, name, ": expected ", acc, " for ", x.scalar_type(), " input, got ",
              f.scalar_type());
  TORCH_CHECK(f.is_contiguous(), name, ": expected a contiguous filter");
  TORCH_CHECK(f.device() == x.device(), name, ": expected device ", x.device(), ", got ", f.device());
}

inline void check_flrelu_like_x(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), name, ": expected the dtype of x (", x.scalar_type(), "), got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), name, ": expected device ", x.device(), ", got ", t.device());
  TORCH_CHECK(t.is_contiguous(), name, ": expected a contiguous tensor, got strides ", t.strides());
}

inline flrelu::Geom check_filtered_lrelu(const at::Tensor& x, const at::Tensor& fu, const at::Tensor& fd,
                                         const std::optional<at::Tensor>& b, int64_t up, int64_t down,
                                         int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, double gain,
                                         double slope, double clamp) {
  TORCH_CHECK(x.dim() == 4, "x: expected a 4-D tensor [N, C, H, W], got ", x.dim(), " dims");
  TORCH_CHECK(is_supported_float(x.scalar_type()), "x: expected float16, bfloat16, float32 or float64, got ",
              x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), "x: expected a contiguous tensor, got strides ", x.strides());
  check_flrelu_filter(fu, x, "fu");
  check_flrelu_filter(fd, x, "fd");
  TORCH_CHECK(up >= 1, "up: expected an integer >= 1, got ", up);
  TORCH_CHECK(down >= 1, "down: expected an integer >= 1, got ", down);
  TORCH_CHECK(std::isfinite(gain), "gain: expected a finite number, got ", gain);
  TORCH_CHECK(std::isfinite(slope), "slope: expected a finite number, got ", slope);
  TORCH_CHECK(!std::isnan(clamp), "clamp: expected a number (< 0: no clamping), got NaN");
  flrelu::Geom g;
  g.n = x.size(0);
  g.c = x.size(1);
  g.h = x.size(2);
  g.w = x.size(3);
  g.up = up;
  g.down = down;
  g.padx0 = padx0;
  g.pady0 = pady0;
  g.fu_sep = fu.dim() == 1;
  g.fd_sep = fd.dim() == 1;
  g.fuh = fu.size(0);
  g.fuw = fu.size(-1);
  g.fdh = fd.size(0);
  g.fdw = fd.size(-1);
  g.uh = g.h * up + pady0 + pady1 - g.fuh + 1;
  g.uw = g.w * up + padx0 + padx1 - g.fuw + 1;
  TORCH_CHECK(g.uh >= g.fdh && g.uw >= g.fdw, "padding: the upsampled, padded and filtered input (", g.uh, "x",
              g.uw, ") is smaller than the downsampling filter (", g.fdh, "x", g.fdw, ")");
  g.out_h = (g.uh - g.fdh) / down + 1;
  g.out_w = (g.uw - g.fdw) / down + 1;
  g.has_b = b.has_value() && b->defined();
  if (g.has_b) {
    TORCH_CHECK(b->dim() == 1 && b->size(0) == g.c, "b: expected shape [", g.c, "] (x.shape[1]), got ", b->sizes());
    check_flrelu_like_x(*b, x, "b");
  }
  return g;
}

inline flrelu::Geom check_filtered_lrelu_jvp(const at::Tensor& x, const at::Tensor& fu, const at::Tensor& fd,
                                             const std::optional<at::Tensor>& b, const at::Tensor& tx,
                                             const std::optional<at::Tensor>& tb, int64_t up, int64_t down,
                                             int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1,
                                             double gain, double slope, double clamp) {
  flrelu::Geom g = check_filtered_lrelu(x, fu, fd, b, up, down, padx0, padx1, pady0, pady1, gain, slope, clamp);
  bool shape_ok = tx.dim() == 5;
  for (int64_t i = 0; shape_ok && i < 4; ++i) shape_ok = tx.size(i + 1) == x.size(i);
  TORCH_CHECK(shape_ok, "tx: expected shape [K, N, C, H, W] (K tangents of x, x.shape = ", x.sizes(), "), got ",
              tx.sizes());
  check_flrelu_like_x(tx, x, "tx");
  g.k = tx.size(0);
  g.has_tb = tb.has_value() && tb->defined();
  if (g.has_tb) {
    TORCH_CHECK(g.has_b, "tb: tangents of b given without b");
    TORCH_CHECK(tb->dim() == 2 && tb->size(0) == g.k && tb->size(1) == g.c, "tb: expected shape [", g.k, ", ", g.c,
                "] (K tangents of b), got ", tb->sizes());
    check_flrelu_like_x(*tb, x, "tb");
  }
  return g;
}

}  // namespace tangentlens
