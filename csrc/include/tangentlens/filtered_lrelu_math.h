// filtered_lrelu (StyleGAN3, NVIDIA's contract) per element, shared by the CPU and CUDA kernels.
//
// With x + b zero-inserted by `up` and padded (pad_x0, pad_y0 on the low sides; negative crops):
//   u[Y, X]   = sum_{i, j} fu(i, j) * xu[Y + i - pad_y0, X + j - pad_x0]       (Y < uh, X < uw)
//   a[Y, X]   = clamp(gain * lrelu(u, slope), -clamp, clamp)                 (bias_act_math.h)
//   y[oy, ox] = sum_{i, j} fd(i, j) * a[oy * down + i, ox * down + j]
// with fu(i, j) = fu[i] * fu[j] for a separable (1-D) filter, else fu[i * fuw + j]; likewise fd. The
// forward rule: ty_k = down(d * up(tx_k + tb_k)) with d = da/du of the primal (its "mask": gain or
// gain * slope where the clamp does not bind, else 0), computed once per activation sample.
#pragma once

#include <cstdint>

#include "tangentlens/bias_act_math.h"
#include "tangentlens/macros.h"
#include "tangentlens/upfirdn2d_math.h"

namespace tangentlens {
namespace flrelu {

struct Geom {
  int64_t n = 0, c = 0, h = 0, w = 0;  // input
  int64_t up = 1, down = 1, padx0 = 0, pady0 = 0;
  int64_t fuh = 1, fuw = 1, fdh = 1, fdw = 1;
  bool fu_sep = true, fd_sep = true;
  int64_t uh = 0, uw = 0;        // the activation grid (upsampled, padded, filtered)
  int64_t out_h = 0, out_w = 0;  // output
  int64_t k = 0;                 // tangents
  bool has_b = false, has_tb = false;
};

template <typename A>
TL_HD A tap(const A* f, bool sep, int64_t fw, int64_t i, int64_t j) {
  return sep ? f[i] * f[j] : f[i * fw + j];
}

// u[Y, X] of one [h, w] plane x (plus a bias constant over the plane).
template <typename A, typename T>
TL_HD A up_at(const T* x, A bias, const A* fu, const Geom& g, int64_t Y, int64_t X) {
  const int64_t by = Y - g.pady0, bx = X - g.padx0;
  A acc = A(0);
  for (int64_t i = upfirdn::first_tap(by, g.up); i < g.fuh; i += g.up) {
    const int64_t a = by + i;
    if (a < 0) continue;
    const int64_t iy = a / g.up;
    if (iy >= g.h) break;
    const T* row = x + iy * g.w;
    for (int64_t j = upfirdn::first_tap(bx, g.up); j < g.fuw; j += g.up) {
      const int64_t bb = bx + j;
      if (bb < 0) continue;
      const int64_t ix = bb / g.up;
      if (ix >= g.w) break;
      acc += tap(fu, g.fu_sep, g.fuw, i, j) * (static_cast<A>(row[ix]) + bias);
    }
  }
  return acc;
}

// y[oy, ox] of one [uh, uw] activation plane (always inside it: the down stage has no padding).
template <typename A>
TL_HD A down_at(const A* a, const A* fd, const Geom& g, int64_t oy, int64_t ox) {
  A acc = A(0);
  for (int64_t i = 0; i < g.fdh; ++i) {
    const A* row = a + (oy * g.down + i) * g.uw + ox * g.down;
    for (int64_t j = 0; j < g.fdw; ++j) acc += tap(fd, g.fd_sep, g.fdw, i, j) * row[j];
  }
  return acc;
}

// The activation and its derivative (lrelu with alpha = slope, gain, clamp < 0: none).
template <typename A>
TL_HD A activate(A u, A slope, A gain, A clamp, A* d) {
  return bias_act::forward_grad<bias_act::kLrelu>(u, slope, gain, clamp, d);
}

}  // namespace flrelu
}  // namespace tangentlens
