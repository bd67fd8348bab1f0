// One row of an upfirdn2d pass on the CPU, shared by the upfirdn2d and filtered_lrelu kernels.
#pragma once

#include <algorithm>
#include <cstdint>

#include "tangentlens/upfirdn2d_math.h"

namespace tangentlens {
namespace cpu {

// acc[ox] += sum_j frow[j] * xu[ox * down_x + j - pad_x0] for one input row (already in A): the loops run
// over input columns (up-sampling) or output columns (down-sampling), contiguous on one side, so they
// vectorise. Both factors > 1 at once take the per-element path.
template <typename A>
inline void row_taps(const A* row, const A* frow, const upfirdn::Geom& g, A* acc) {
  if (g.downx == 1) {
    for (int64_t j = 0; j < g.fw; ++j) {
      const A c = frow[j];
      // ox = ix * up + pad0 - j must lie in [0, out_w)
      const int64_t off = g.padx0 - j;
      int64_t lo = off >= 0 ? 0 : (-off + g.upx - 1) / g.upx;
      int64_t hi = (g.out_w - 1 - off) >= 0 ? (g.out_w - 1 - off) / g.upx + 1 : 0;
      hi = std::min(hi, g.w);
      if (g.upx == 1) {
        for (int64_t ix = lo; ix < hi; ++ix) acc[ix + off] += c * row[ix];
      } else {
        for (int64_t ix = lo; ix < hi; ++ix) acc[ix * g.upx + off] += c * row[ix];
      }
    }
  } else if (g.upx == 1) {
    for (int64_t j = 0; j < g.fw; ++j) {
      const A c = frow[j];
      const int64_t off = j - g.padx0;  // ix = ox * down + off must lie in [0, w)
      const int64_t lo = off >= 0 ? 0 : (-off + g.downx - 1) / g.downx;
      const int64_t hi = std::min(g.out_w, (g.w - 1 - off) >= 0 ? (g.w - 1 - off) / g.downx + 1 : 0);
      for (int64_t ox = lo; ox < hi; ++ox) acc[ox] += c * row[ox * g.downx + off];
    }
  } else {
    for (int64_t ox = 0; ox < g.out_w; ++ox) {
      const int64_t base = ox * g.downx - g.padx0;
      for (int64_t j = upfirdn::first_tap(base, g.upx); j < g.fw; j += g.upx) {
        const int64_t b = base + j;
        if (b >= 0 && b / g.upx < g.w) acc[ox] += frow[j] * row[b / g.upx];
      }
    }
  }
}

}  // namespace cpu
}  // namespace tangentlens
