// upfirdn2d (NVIDIA's contract) per output element, shared by the CPU and CUDA kernels.
//
// With xu the input upsampled by zero insertion (xu[a, b] = x[a / up_y, b / up_x] where both divide,
// else 0) and fc the correlation filter (already flipped and scaled by the wrapper):
//   out[oy, ox] = sum_{i, j} fc[i, j] * xu[oy * down_y + i - pad_y0, ox * down_x + j - pad_x0].
// Only the taps that land on an inserted sample are visited (every up-th row and column).
#pragma once

#include <cstdint>

#include "tangentlens/macros.h"

namespace tangentlens {
namespace upfirdn {

struct Geom {
  int64_t h, w, out_h, out_w, fh, fw;
  int64_t upx, upy, downx, downy, padx0, pady0;
};

// First tap index i >= 0 with (base + i) divisible by up, for base possibly negative.
TL_HD int64_t first_tap(int64_t base, int64_t up) {
  const int64_t r = base % up;
  return r == 0 ? 0 : (r < 0 ? -r : up - r);
}

// x: one [h, w] plane; f: [fh, fw] correlation filter (row-major).
template <typename A, typename T>
TL_HD A output_at(const T* x, const A* f, const Geom& g, int64_t oy, int64_t ox) {
  const int64_t by = oy * g.downy - g.pady0;  // row of tap i is by + i in upsampled coordinates
  const int64_t bx = ox * g.downx - g.padx0;
  A acc = A(0);
  for (int64_t i = first_tap(by, g.upy); i < g.fh; i += g.upy) {
    const int64_t a = by + i;
    if (a < 0) continue;
    const int64_t iy = a / g.upy;
    if (iy >= g.h) break;
    const T* row = x + iy * g.w;
    const A* frow = f + i * g.fw;
    for (int64_t j = first_tap(bx, g.upx); j < g.fw; j += g.upx) {
      const int64_t b = bx + j;
      if (b < 0) continue;
      const int64_t ix = b / g.upx;
      if (ix >= g.w) break;
      acc += frow[j] * static_cast<A>(row[ix]);
    }
  }
  return acc;
}

}  // namespace upfirdn
}  // namespace tangentlens
