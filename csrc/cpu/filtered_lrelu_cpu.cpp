// CPU kernels of filtered_lrelu and its forward rule (StyleGAN3's alias-free leaky ReLU).
//
// One task per (sample, channel) plane. The upsampling pass writes the activation grid [uh, uw] of the plane
// (separable filters: a horizontal pass over the input rows, then a vertical combination of those rows, so
// only the taps that hit inserted samples are visited); the activation and its derivative d are computed
// once per grid sample; the downsampling pass evaluates only the kept output samples (separable: a
// horizontal pass at the output columns, then the output rows). The K tangents of the plane follow with
// the same buffers: upsample tx_k + tb_k, multiply by d (the primal's mask), downsample. Math in float
// (double for float64), shared with the CUDA kernels through filtered_lrelu_math.h and bias_act_math.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "tangentlens/filtered_lrelu_args.h"
#include "tangentlens/filtered_lrelu_math.h"
#include "upfirdn_rows.h"

namespace tangentlens {
namespace cpu {

namespace {

// A one-dimensional pass of upfirdn2d along rows: `n` taps, up / down factors, low padding, sizes.
upfirdn::Geom row_pass(int64_t taps, int64_t up, int64_t down, int64_t pad0, int64_t in_w, int64_t out_w) {
  upfirdn::Geom r{};
  r.w = in_w;
  r.out_w = out_w;
  r.fw = taps;
  r.upx = up;
  r.downx = down;
  r.padx0 = pad0;
  return r;
}

// Per-task buffers, in the accumulation type A.
template <typename A>
struct Scratch {
  std::vector<A> src, rows, grid, mask, cols, acc;
  explicit Scratch(const flrelu::Geom& g)
      : src(g.h * g.w),
        rows(g.fu_sep ? g.h * g.uw : 0),
        grid(g.uh * g.uw),
        mask(g.uh * g.uw),
        cols(g.fd_sep ? g.uh * g.out_w : 0),
        acc(g.out_w) {}
};

// grid = upfirdn(src, fu, up, pad) over the plane [h, w] -> [uh, uw].
template <typename A>
void upsample_plane(const A* src, const A* fu, const flrelu::Geom& g, Scratch<A>& s, A* grid) {
  std::fill(grid, grid + g.uh * g.uw, A(0));
  const upfirdn::Geom rp = row_pass(g.fuw, g.up, 1, g.padx0, g.w, g.uw);
  if (g.fu_sep) {  // horizontal pass over the input rows, then the rows are combined
    std::fill(s.rows.begin(), s.rows.end(), A(0));
    for (int64_t iy = 0; iy < g.h; ++iy) row_taps<A>(src + iy * g.w, fu, rp, s.rows.data() + iy * g.uw);
  }
  for (int64_t Y = 0; Y < g.uh; ++Y) {
    const int64_t by = Y - g.pady0;
    A* out = grid + Y * g.uw;
    for (int64_t i = upfirdn::first_tap(by, g.up); i < g.fuh; i += g.up) {
      const int64_t a = by + i;
      if (a < 0) continue;
      const int64_t iy = a / g.up;
      if (iy >= g.h) break;
      if (g.fu_sep) {
        const A c = fu[i];
        const A* row = s.rows.data() + iy * g.uw;
        for (int64_t X = 0; X < g.uw; ++X) out[X] += c * row[X];
      } else {
        row_taps<A>(src + iy * g.w, fu + i * g.fuw, rp, out);
      }
    }
  }
}

// out = upfirdn(grid, fd, down) over [uh, uw] -> [out_h, out_w], written in the output dtype T.
template <typename A, typename T>
void downsample_plane(const A* grid, const A* fd, const flrelu::Geom& g, Scratch<A>& s, T* out) {
  const upfirdn::Geom rp = row_pass(g.fdw, 1, g.down, 0, g.uw, g.out_w);
  std::vector<A>& acc = s.acc;
  if (g.fd_sep) {  // horizontal pass at the output columns, then the output rows
    std::fill(s.cols.begin(), s.cols.end(), A(0));
    for (int64_t Y = 0; Y < g.uh; ++Y) row_taps<A>(grid + Y * g.uw, fd, rp, s.cols.data() + Y * g.out_w);
  }
  for (int64_t oy = 0; oy < g.out_h; ++oy) {
    std::fill(acc.begin(), acc.end(), A(0));
    for (int64_t i = 0; i < g.fdh; ++i) {
      const int64_t Y = oy * g.down + i;
      if (g.fd_sep) {
        const A c = fd[i];
        const A* row = s.cols.data() + Y * g.out_w;
        for (int64_t ox = 0; ox < g.out_w; ++ox) acc[ox] += c * row[ox];
      } else {
        row_taps<A>(grid + Y * g.uw, fd + i * g.fdw, rp, acc.data());
      }
    }
    for (int64_t ox = 0; ox < g.out_w; ++ox) out[oy * g.out_w + ox] = static_cast<T>(acc[ox]);
  }
}

template <typename T, typename A>
void load_plane(const T* x, A bias, int64_t count, A* dst) {
  for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<A>(x[i]) + bias;
}

// y (and ty for K tangents; tx null for the primal-only op) of every plane.
template <typename T>
void run(const at::Tensor& x, const at::Tensor& fu, const at::Tensor& fd, const std::optional<at::Tensor>& b,
         const T* tx, const T* tb, const flrelu::Geom& g, double gain, double slope, double clamp, T* y, T* ty) {
  using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const T* px = x.const_data_ptr<T>();
  const T* pb = g.has_b ? b->const_data_ptr<T>() : nullptr;
  const A* pfu = fu.const_data_ptr<A>();
  const A* pfd = fd.const_data_ptr<A>();
  const A a_gain = static_cast<A>(gain), a_slope = static_cast<A>(slope);
  const A a_clamp = clamp < 0.0 ? A(-1) : static_cast<A>(clamp);
  const int64_t planes = g.n * g.c, in_plane = g.h * g.w, out_plane = g.out_h * g.out_w, grid = g.uh * g.uw;
  const int64_t work = grid * (g.fuw + g.fdw) * (1 + g.k);
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 20) / std::max<int64_t>(1, work));
  at::parallel_for(0, planes, grain, [&](int64_t p0, int64_t p1) {
    Scratch<A> s(g);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c = p % g.c;
      load_plane<T, A>(px + p * in_plane, pb ? static_cast<A>(pb[c]) : A(0), in_plane, s.src.data());
      upsample_plane<A>(s.src.data(), pfu, g, s, s.grid.data());
      for (int64_t i = 0; i < grid; ++i) s.grid[i] = flrelu::activate(s.grid[i], a_slope, a_gain, a_clamp, &s.mask[i]);
      downsample_plane<A, T>(s.grid.data(), pfd, g, s, y + p * out_plane);
      for (int64_t k = 0; k < g.k; ++k) {  // the tangents, through the primal's mask
        const A tbias = tb ? static_cast<A>(tb[k * g.c + c]) : A(0);
        load_plane<T, A>(tx + (k * planes + p) * in_plane, tbias, in_plane, s.src.data());
        upsample_plane<A>(s.src.data(), pfu, g, s, s.grid.data());
        for (int64_t i = 0; i < grid; ++i) s.grid[i] = bias_act::tangent(s.mask[i], s.grid[i]);
        downsample_plane<A, T>(s.grid.data(), pfd, g, s, ty + (k * planes + p) * out_plane);
      }
    }
  });
}

at::Tensor filtered_lrelu_cpu(const at::Tensor& x, const at::Tensor& fu, const at::Tensor& fd,
                              const std::optional<at::Tensor>& b, int64_t up, int64_t down, int64_t padx0,
                              int64_t padx1, int64_t pady0, int64_t pady1, double gain, double slope, double clamp) {
  const flrelu::Geom g = check_filtered_lrelu(x, fu, fd, b, up, down, padx0, padx1, pady0, pady1, gain, slope, clamp);
  at::Tensor y = at::empty({g.n, g.c, g.out_h, g.out_w}, x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "filtered_lrelu_cpu", [&] {
    run<scalar_t>(x, fu, fd, b, nullptr, nullptr, g, gain, slope, clamp, y.mutable_data_ptr<scalar_t>(), nullptr);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> filtered_lrelu_jvp_cpu(const at::Tensor& x, const at::Tensor& fu,
                                                          const at::Tensor& fd, const std::optional<at::Tensor>& b,
                                                          const at::Tensor& tx, const std::optional<at::Tensor>& tb,
                                                          int64_t up, int64_t down, int64_t padx0, int64_t padx1,
                                                          int64_t pady0, int64_t pady1, double gain, double slope,
                                                          double clamp) {
  const flrelu::Geom g =
      check_filtered_lrelu_jvp(x, fu, fd, b, tx, tb, up, down, padx0, padx1, pady0, pady1, gain, slope, clamp);
  at::Tensor y = at::empty({g.n, g.c, g.out_h, g.out_w}, x.options());
  at::Tensor ty = at::empty({g.k, g.n, g.c, g.out_h, g.out_w}, x.options());
  if (y.numel() == 0) return {y, ty};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "filtered_lrelu_jvp_cpu", [&] {
    const scalar_t* ptb = g.has_tb ? tb->const_data_ptr<scalar_t>() : nullptr;
    run<scalar_t>(x, fu, fd, b, tx.const_data_ptr<scalar_t>(), ptb, g, gain, slope, clamp,
                  y.mutable_data_ptr<scalar_t>(), ty.mutable_data_ptr<scalar_t>());
  });
  return {y, ty};
}

}  // namespace

TORCH_LIBRARY_IMPL(tangentlens, CPU, m) {
  m.impl("filtered_lrelu", &filtered_lrelu_cpu);
  m.impl("filtered_lrelu_jvp", &filtered_lrelu_jvp_cpu);
}

}  // namespace cpu
}  // namespace tangentlens
