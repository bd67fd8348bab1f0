// CPU kernels of the fused LPIPS layer head (SPEC section 3).
//
// Both ops stream each feature map from memory once: pixels are taken in blocks small enough that the
// block's channels stay in cache, phase 1 sums |f|^2 (and <f, t_i>) per pixel, phase 2 re-reads the block
// from cache and accumulates the weighted squared difference (or tangent products) of the normalised
// features. Nothing per-element is written. Per-pixel sums run in float (double for float64 inputs); the
// sum over pixels in double. Tasks are fixed chunks of pixels of one sample, reduced in a fixed order, so
// results do not depend on the number of threads.
//
// Layouts: NCHW contiguous (the inner loops run over pixels of one channel) and channels_last (the inner
// loops run over the channels of one pixel, in kLanes independent accumulators so that they vectorise).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "tangentlens/lpips_args.h"
#include "tangentlens/lpips_math.h"

namespace tangentlens {
namespace cpu {

namespace {

constexpr int64_t kChunkPixels = 256;   // pixels per task
constexpr int64_t kCacheElems = 16384;  // elements per pixel block re-read from cache in phase 2
constexpr int64_t kMaxBlock = 64;       // pixels per block (NCHW)
constexpr int kLanes = 8;               // independent accumulators of the channel loops (channels_last)

int64_t block_pixels(int64_t maps, int64_t c) {
  int64_t bp = kCacheElems / std::max<int64_t>(1, maps * c);
  bp = std::clamp<int64_t>(bp, 1, kMaxBlock);
  return bp >= 8 ? bp / 8 * 8 : bp;
}

template <typename A, typename T>
inline A ld(T x) {
  return static_cast<A>(x);
}

// ---- distance ------------------------------------------------------------------------------------------

// Sum over nb pixels (NCHW: channel c of pixel j at x[c * P + j]) of sum_c w_c (a0 f0 - a1 f1)^2.
template <typename T, typename A>
double distance_block_nchw(const T* x0, const T* x1, const A* w, int64_t C, int64_t P, int64_t nb, A eps,
                           int64_t mode, A* s0, A* s1, A* d) {
  for (int64_t j = 0; j < nb; ++j) s0[j] = s1[j] = d[j] = A(0);
  for (int64_t c = 0; c < C; ++c) {
    const T* a = x0 + c * P;
    const T* b = x1 + c * P;
    for (int64_t j = 0; j < nb; ++j) {
      const A u = ld<A>(a[j]), v = ld<A>(b[j]);
      s0[j] += u * u;
      s1[j] += v * v;
    }
  }
  for (int64_t j = 0; j < nb; ++j) {
    s0[j] = lpips::inv_norm(s0[j], eps, mode);
    s1[j] = lpips::inv_norm(s1[j], eps, mode);
  }
  for (int64_t c = 0; c < C; ++c) {
    const T* a = x0 + c * P;
    const T* b = x1 + c * P;
    const A wc = w[c];
    for (int64_t j = 0; j < nb; ++j) {
      const A diff = ld<A>(a[j]) * s0[j] - ld<A>(b[j]) * s1[j];
      d[j] += wc * (diff * diff);
    }
  }
  double sum = 0.0;
  for (int64_t j = 0; j < nb; ++j) sum += static_cast<double>(d[j]);
  return sum;
}

template <typename A>
inline A lane_sum(const A* v) {
  A s = A(0);
  for (int l = 0; l < kLanes; ++l) s += v[l];
  return s;
}

// One pixel, channels contiguous.
template <typename T, typename A>
double distance_pixel_cl(const T* a, const T* b, const A* w, int64_t C, A eps, int64_t mode) {
  A s0[kLanes] = {}, s1[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const A u = ld<A>(a[c + l]), v = ld<A>(b[c + l]);
      s0[l] += u * u;
      s1[l] += v * v;
    }
  }
  for (; c < C; ++c) {
    const A u = ld<A>(a[c]), v = ld<A>(b[c]);
    s0[0] += u * u;
    s1[0] += v * v;
  }
  const A a0 = lpips::inv_norm(lane_sum(s0), eps, mode);
  const A a1 = lpips::inv_norm(lane_sum(s1), eps, mode);
  A d[kLanes] = {};
  c = 0;
  for (; c + kLanes <= C; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const A diff = ld<A>(a[c + l]) * a0 - ld<A>(b[c + l]) * a1;
      d[l] += w[c + l] * (diff * diff);
    }
  }
  for (; c < C; ++c) {
    const A diff = ld<A>(a[c]) * a0 - ld<A>(b[c]) * a1;
    d[0] += w[c] * (diff * diff);
  }
  return static_cast<double>(lane_sum(d));
}

at::Tensor lpips_layer_distance_cpu(const at::Tensor& f0, const at::Tensor& f1, const at::Tensor& weight, double eps,
                                    int64_t mode) {
  const LpipsGeom g = check_layer_distance(f0, f1, weight, eps, mode);
  const auto acc = lpips_acc_dtype(f0.scalar_type());
  at::Tensor out = at::empty({g.n}, f0.options().dtype(acc));
  if (g.n == 0) return out;
  const int64_t N = g.n, C = g.c, P = g.p;
  const int64_t chunks = P == 0 ? 0 : (P + kChunkPixels - 1) / kChunkPixels;
  std::vector<double> partial(N * chunks, 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f0.scalar_type(), "lpips_layer_distance_cpu", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* p0 = f0.data_ptr<scalar_t>();
    const scalar_t* p1 = f1.data_ptr<scalar_t>();
    const A* w = weight.data_ptr<A>();
    const A e = static_cast<A>(eps);
    const int64_t bp = block_pixels(2, C);
    at::parallel_for(0, N * chunks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<A> buf(3 * kMaxBlock);
      for (int64_t task = t0; task < t1; ++task) {
        const int64_t n = task / chunks, q0 = (task % chunks) * kChunkPixels, q1 = std::min(P, q0 + kChunkPixels);
        const scalar_t* x0 = p0 + n * C * P;
        const scalar_t* x1 = p1 + n * C * P;
        double sum = 0.0;
        if (g.channels_last) {
          for (int64_t q = q0; q < q1; ++q) sum += distance_pixel_cl(x0 + q * C, x1 + q * C, w, C, e, mode);
        } else {
          for (int64_t q = q0; q < q1; q += bp) {
            sum += distance_block_nchw(x0 + q, x1 + q, w, C, P, std::min(bp, q1 - q), e, mode, buf.data(),
                                       buf.data() + kMaxBlock, buf.data() + 2 * kMaxBlock);
          }
        }
        partial[task] = sum;
      }
    });
    A* o = out.data_ptr<A>();
    for (int64_t n = 0; n < N; ++n) {
      double s = 0.0;
      for (int64_t k = 0; k < chunks; ++k) s += partial[n * chunks + k];
      o[n] = static_cast<A>(P == 0 ? 0.0 : s / static_cast<double>(P));
    }
  });
  return out;
}

// ---- tangent norms ----------------------------------------------------------------------------------------

// Number of accumulated products per pixel: K (norms) or K (K + 1) / 2 (the upper triangle of the Gram).
inline int64_t num_products(int64_t K, bool gram) { return gram ? K * (K + 1) / 2 : K; }

// Scratch of one task.
template <typename A>
struct TangentScratch {
  std::vector<A> s, a, dot, coef, gv, acc;
  TangentScratch(int64_t K, int64_t Q, int64_t rows) : s(rows), a(rows), dot(K * rows), coef(K * rows),
                                                       gv(K * rows), acc(Q * rows) {}
};

// NCHW block of nb pixels: f at xf[c * P + j], tangent i at xt[(i * C + c) * P + j]. Adds the block's sums
// of the Q products to out.
template <typename T, typename A>
void tangent_block_nchw(const T* xf, const T* xt, const A* w, int64_t K, int64_t C, int64_t P, int64_t nb, A eps,
                        int64_t mode, bool gram, int64_t bp, TangentScratch<A>& sc, double* out) {
  A* s = sc.s.data();
  A* a = sc.a.data();
  A* dot = sc.dot.data();
  A* coef = sc.coef.data();
  A* gv = sc.gv.data();
  A* acc = sc.acc.data();
  const int64_t Q = num_products(K, gram);
  for (int64_t j = 0; j < nb; ++j) s[j] = A(0);
  for (int64_t i = 0; i < K * bp; ++i) dot[i] = A(0);
  for (int64_t i = 0; i < Q * bp; ++i) acc[i] = A(0);
  for (int64_t c = 0; c < C; ++c) {
    const T* fr = xf + c * P;
    for (int64_t j = 0; j < nb; ++j) {
      const A v = ld<A>(fr[j]);
      s[j] += v * v;
    }
    for (int64_t i = 0; i < K; ++i) {
      const T* tr = xt + (i * C + c) * P;
      A* di = dot + i * bp;
      for (int64_t j = 0; j < nb; ++j) di[j] += ld<A>(fr[j]) * ld<A>(tr[j]);
    }
  }
  for (int64_t j = 0; j < nb; ++j) a[j] = lpips::inv_norm(s[j], eps, mode);
  for (int64_t i = 0; i < K; ++i) {
    for (int64_t j = 0; j < nb; ++j) coef[i * bp + j] = lpips::tangent_coef(s[j], dot[i * bp + j], a[j], mode);
  }
  for (int64_t c = 0; c < C; ++c) {
    const T* fr = xf + c * P;
    const A wc = w[c];
    for (int64_t i = 0; i < K; ++i) {
      const T* tr = xt + (i * C + c) * P;
      const A* ci = coef + i * bp;
      A* gi = gv + i * bp;
      for (int64_t j = 0; j < nb; ++j) gi[j] = a[j] * ld<A>(tr[j]) - ci[j] * ld<A>(fr[j]);
    }
    if (!gram) {
      for (int64_t i = 0; i < K; ++i) {
        const A* gi = gv + i * bp;
        A* ai = acc + i * bp;
        for (int64_t j = 0; j < nb; ++j) ai[j] += wc * (gi[j] * gi[j]);
      }
    } else {
      int64_t q = 0;
      for (int64_t i = 0; i < K; ++i) {
        const A* gi = gv + i * bp;
        for (int64_t i2 = i; i2 < K; ++i2, ++q) {
          const A* g2 = gv + i2 * bp;
          A* aq = acc + q * bp;
          for (int64_t j = 0; j < nb; ++j) aq[j] += wc * (gi[j] * g2[j]);
        }
      }
    }
  }
  for (int64_t q = 0; q < Q; ++q) {
    double sum = 0.0;
    for (int64_t j = 0; j < nb; ++j) sum += static_cast<double>(acc[q * bp + j]);
    out[q] += sum;
  }
}

// One channels_last pixel: f at xf[c], tangent i at xt[i * tstride + c]. Scratch rows are kLanes wide.
template <typename T, typename A>
void tangent_pixel_cl(const T* xf, const T* xt, int64_t tstride, const A* w, int64_t K, int64_t C, A eps,
                      int64_t mode, bool gram, TangentScratch<A>& sc, double* out) {
  A* dot = sc.dot.data();
  A* coef = sc.coef.data();
  A* gv = sc.gv.data();
  A* acc = sc.acc.data();
  const int64_t Q = num_products(K, gram);
  A sl[kLanes] = {};
  for (int64_t i = 0; i < K * kLanes; ++i) dot[i] = A(0);
  for (int64_t i = 0; i < Q * kLanes; ++i) acc[i] = A(0);
  for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
    const int len = static_cast<int>(std::min<int64_t>(kLanes, C - c0));
    A fv[kLanes] = {};
    for (int l = 0; l < len; ++l) fv[l] = ld<A>(xf[c0 + l]);
    for (int l = 0; l < kLanes; ++l) sl[l] += fv[l] * fv[l];
    for (int64_t i = 0; i < K; ++i) {
      const T* tr = xt + i * tstride + c0;
      A* di = dot + i * kLanes;
      for (int l = 0; l < len; ++l) di[l] += fv[l] * ld<A>(tr[l]);
    }
  }
  const A s = lane_sum(sl);
  const A a = lpips::inv_norm(s, eps, mode);
  for (int64_t i = 0; i < K; ++i) coef[i] = lpips::tangent_coef(s, lane_sum(dot + i * kLanes), a, mode);
  for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
    const int len = static_cast<int>(std::min<int64_t>(kLanes, C - c0));
    A fv[kLanes] = {}, wv[kLanes] = {};
    for (int l = 0; l < len; ++l) {
      fv[l] = ld<A>(xf[c0 + l]);
      wv[l] = w[c0 + l];
    }
    for (int64_t i = 0; i < K; ++i) {
      const T* tr = xt + i * tstride + c0;
      A* gi = gv + i * kLanes;
      for (int l = 0; l < kLanes; ++l) gi[l] = A(0);
      for (int l = 0; l < len; ++l) gi[l] = a * ld<A>(tr[l]) - coef[i] * fv[l];
    }
    int64_t q = 0;
    for (int64_t i = 0; i < K; ++i) {
      const A* gi = gv + i * kLanes;
      for (int64_t i2 = i; i2 < (gram ? K : i + 1); ++i2, ++q) {
        const A* g2 = gv + i2 * kLanes;
        A* aq = acc + q * kLanes;
        for (int l = 0; l < kLanes; ++l) aq[l] += wv[l] * (gi[l] * g2[l]);
      }
    }
  }
  for (int64_t q = 0; q < Q; ++q) out[q] += static_cast<double>(lane_sum(acc + q * kLanes));
}

at::Tensor lpips_tangent_norm_cpu(const at::Tensor& f, const at::Tensor& t, const at::Tensor& weight, double eps,
                                  int64_t mode, bool gram) {
  const LpipsGeom g = check_tangent_norm(f, t, weight, eps, mode);
  const auto acc_type = lpips_acc_dtype(f.scalar_type());
  const int64_t N = g.n, C = g.c, P = g.p, K = g.k;
  at::Tensor out = gram ? at::empty({N, K, K}, f.options().dtype(acc_type)) : at::empty({N, K}, f.options().dtype(acc_type));
  if (N == 0 || K == 0) return out;
  const int64_t Q = num_products(K, gram);
  const int64_t chunks = P == 0 ? 0 : (P + kChunkPixels - 1) / kChunkPixels;
  std::vector<double> partial(N * chunks * Q, 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "lpips_tangent_norm_cpu", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* pf = f.data_ptr<scalar_t>();
    const scalar_t* pt = t.data_ptr<scalar_t>();
    const A* w = weight.data_ptr<A>();
    const A e = static_cast<A>(eps);
    const int64_t bp = block_pixels(K + 1, C);
    at::parallel_for(0, N * chunks, 1, [&](int64_t t0, int64_t t1) {
      TangentScratch<A> sc(K, Q, g.channels_last ? kLanes : bp);
      for (int64_t task = t0; task < t1; ++task) {
        const int64_t n = task / chunks, q0 = (task % chunks) * kChunkPixels, q1 = std::min(P, q0 + kChunkPixels);
        const scalar_t* xf = pf + n * C * P;
        const scalar_t* xt = pt + n * K * C * P;
        double* o = partial.data() + task * Q;
        if (g.channels_last) {
          for (int64_t q = q0; q < q1; ++q) {
            tangent_pixel_cl(xf + q * C, xt + q * C, C * P, w, K, C, e, mode, gram, sc, o);
          }
        } else {
          for (int64_t q = q0; q < q1; q += bp) {
            tangent_block_nchw(xf + q, xt + q, w, K, C, P, std::min(bp, q1 - q), e, mode, gram, bp, sc, o);
          }
        }
      }
    });
    A* o = out.data_ptr<A>();
    const double inv_p = P == 0 ? 0.0 : 1.0 / static_cast<double>(P);
    for (int64_t n = 0; n < N; ++n) {
      int64_t q = 0;
      for (int64_t i = 0; i < K; ++i) {
        for (int64_t i2 = i; i2 < (gram ? K : i + 1); ++i2, ++q) {
          double s = 0.0;
          for (int64_t k = 0; k < chunks; ++k) s += partial[(n * chunks + k) * Q + q];
          const A v = static_cast<A>(s * inv_p);
          if (gram) {
            o[(n * K + i) * K + i2] = v;
            o[(n * K + i2) * K + i] = v;
          } else {
            o[n * K + i] = v;
          }
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tangentlens, CPU, m) {
  m.impl("lpips_layer_distance", &lpips_layer_distance_cpu);
  m.impl("lpips_tangent_norm", &lpips_tangent_norm_cpu);
}

}  // namespace cpu
}  // namespace tangentlens
