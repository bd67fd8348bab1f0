// Argument checks of upfirdn2d, shared by the CPU and CUDA entry points. Host-only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "tangentlens/checks.h"
#include "tangentlens/upfirdn2d_math.h"

namespace tangentlens {

inline upfirdn::Geom check_upfirdn2d(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy,
                                     int64_t downx, int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0,
                                     int64_t pady1) {
  TORCH_CHECK(x.dim() == 4, "x: expected a 4-D tensor [N, C, H, W], got ", x.dim(), " dims");
  TORCH_CHECK(is_supported_float(x.scalar_type()), "x: expected float16, bfloat16, float32 or float64, got ",
              x.scalar_type());
  const auto acc = x.scalar_type() == c10::kDouble ? c10::kDouble : c10::kFloat;
  TORCH_CHECK(f.dim() == 2 && f.numel() > 0, "f: expected a non-empty 2-D filter [fh, fw], got ", f.sizes());
  TORCH_CHECK(f.scalar_type() == acc, "f: expected ", acc, " for ", x.scalar_type(), " input, got ",
              f.scalar_type());
  TORCH_CHECK(f.is_contiguous(), "f: expected a contiguous filter");
  TORCH_CHECK(f.device() == x.device(), "f: expected device ", x.device(), ", got ", f.device());
  TORCH_CHECK(upx >= 1 && upy >= 1, "up: expected factors >= 1, got (", upx, ", ", upy, ")");
  TORCH_CHECK(downx >= 1 && downy >= 1, "down: expected factors >= 1, got (", downx, ", ", downy, ")");
  upfirdn::Geom g;
  g.h = x.size(2);
  g.w = x.size(3);
  g.fh = f.size(0);
  g.fw = f.size(1);
  g.upx = upx;
  g.upy = upy;
  g.downx = downx;
  g.downy = downy;
  g.padx0 = padx0;
  g.pady0 = pady0;
  const int64_t full_h = g.h * upy + pady0 + pady1 - g.fh + 1;
  const int64_t full_w = g.w * upx + padx0 + padx1 - g.fw + 1;
  TORCH_CHECK(full_h >= 1 && full_w >= 1, "padding: the padded, upsampled input (", g.h * upy + pady0 + pady1, "x",
              g.w * upx + padx0 + padx1, ") is smaller than the filter (", g.fh, "x", g.fw, ")");
  g.out_h = (full_h - 1) / downy + 1;
  g.out_w = (full_w - 1) / downx + 1;
  return g;
}

}  // namespace tangentlens
