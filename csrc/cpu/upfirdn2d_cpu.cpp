// CPU kernel of upfirdn2d: one task per (sample, channel) plane, every output written once.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "tangentlens/upfirdn2d_args.h"
#include "tangentlens/upfirdn2d_math.h"
#include "upfirdn_rows.h"

namespace tangentlens {
namespace cpu {

namespace {

at::Tensor upfirdn2d_cpu(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                         int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1) {
  const upfirdn::Geom g = check_upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1);
  const at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty({x.size(0), x.size(1), g.out_h, g.out_w}, x.options());
  const int64_t planes = x.size(0) * x.size(1);
  if (out.numel() == 0) return out;
  // Valid row taps per output row, shared by every plane: (input row, filter row) pairs that land on an
  // inserted sample.
  std::vector<int64_t> row_count(g.out_h, 0), row_src(g.out_h * g.fh), row_tap(g.out_h * g.fh);
  for (int64_t oy = 0; oy < g.out_h; ++oy) {
    const int64_t base = oy * g.downy - g.pady0;
    for (int64_t i = upfirdn::first_tap(base, g.upy); i < g.fh; i += g.upy) {
      const int64_t a = base + i;
      if (a < 0 || a / g.upy >= g.h) continue;
      row_src[oy * g.fh + row_count[oy]] = a / g.upy;
      row_tap[oy * g.fh + row_count[oy]] = i;
      ++row_count[oy];
    }
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cpu", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const A* fp = f.data_ptr<A>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.out_h * g.out_w));
    at::parallel_for(0, planes, grain, [&](int64_t p0, int64_t p1) {
      std::vector<A> acc(g.out_w), in_row(g.w);
      for (int64_t p = p0; p < p1; ++p) {
        const scalar_t* plane = xp + p * g.h * g.w;
        scalar_t* dst = op + p * g.out_h * g.out_w;
        for (int64_t oy = 0; oy < g.out_h; ++oy) {
          std::fill(acc.begin(), acc.end(), A(0));
          for (int64_t r = 0; r < row_count[oy]; ++r) {
            const scalar_t* row = plane + row_src[oy * g.fh + r] * g.w;
            for (int64_t ix = 0; ix < g.w; ++ix) in_row[ix] = static_cast<A>(row[ix]);
            row_taps<A>(in_row.data(), fp + row_tap[oy * g.fh + r] * g.fw, g, acc.data());
          }
          for (int64_t ox = 0; ox < g.out_w; ++ox) dst[oy * g.out_w + ox] = static_cast<scalar_t>(acc[ox]);
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tangentlens, CPU, m) { m.impl("upfirdn2d", &upfirdn2d_cpu); }

}  // namespace cpu
}  // namespace tangentlens
