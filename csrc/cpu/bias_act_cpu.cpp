// CPU kernels of the fused bias + activation + gain + clamp op and its forward-mode rule.
//
// x is contiguous and viewed as [outer, C, inner] around `dim`. Work is split into fixed chunks of
// elements (at::parallel_for); a chunk is walked in segments over which the bias is either one scalar
// (inner > 1: a run of `inner` elements of one channel) or a contiguous vector (inner == 1: a run over the
// channels, b[c + j]), so the inner loops are plain strided-by-one loops that the compiler vectorises.
//
// bias_act_jvp reads each x element once, computes y and dy/dv once into a small block buffer, then
// applies the derivative to the K tangents block by block: ty_k = dy * (tx_k + tb_k[c]).
// Math in float (double for float64 inputs), shared with the CUDA kernels through bias_act_math.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <type_traits>

#include "tangentlens/bias_act_args.h"
#include "tangentlens/bias_act_math.h"

namespace tangentlens {
namespace cpu {

namespace {

constexpr int64_t kGrain = 16384;  // elements per parallel task (at least)
constexpr int64_t kBlock = 256;    // elements whose derivative is buffered before the tangent loops

template <typename A>
struct Params {
  A alpha, gain, clamp;
};

template <typename A, typename T>
inline A ld(T v) {
  return static_cast<A>(v);
}

// The segments of [i0, i1): f(start, len, c, vec) with channel c of the first element; vec: the bias runs
// over consecutive channels (inner == 1) instead of being constant.
template <typename F>
inline void for_segments(const BiasActGeom& g, int64_t i0, int64_t i1, F&& f) {
  const bool channels = g.has_b || g.has_tb;
  if (!channels) {
    f(i0, i1 - i0, int64_t(0), false);
    return;
  }
  const bool vec = g.inner == 1;
  const int64_t run = vec ? g.c : g.inner;
  for (int64_t i = i0; i < i1;) {
    const int64_t end = std::min(i1, (i / run + 1) * run);
    const int64_t c = vec ? i % g.c : (i / g.inner) % g.c;
    f(i, end - i, c, vec);
    i = end;
  }
}

template <int kAct, bool kVec, typename T, typename A>
void forward_seg(const T* x, const T* bv, A bs, T* y, int64_t len, Params<A> p) {
  for (int64_t j = 0; j < len; ++j) {
    const A v = ld<A>(x[j]) + (kVec ? ld<A>(bv[j]) : bs);
    y[j] = static_cast<T>(bias_act::forward<kAct>(v, p.alpha, p.gain, p.clamp));
  }
}

template <int kAct, bool kVec, typename T, typename A>
void jvp_seg(const T* x, const T* bv, A bs, T* y, A* d, int64_t len, Params<A> p) {
  for (int64_t j = 0; j < len; ++j) {
    const A v = ld<A>(x[j]) + (kVec ? ld<A>(bv[j]) : bs);
    A dy;
    y[j] = static_cast<T>(bias_act::forward_grad<kAct>(v, p.alpha, p.gain, p.clamp, &dy));
    d[j] = dy;
  }
}

template <bool kVec, typename T, typename A>
void tangent_seg(const A* d, const T* tx, const T* tbv, A tbs, T* ty, int64_t len) {
  for (int64_t j = 0; j < len; ++j) {
    const A t = ld<A>(tx[j]) + (kVec ? ld<A>(tbv[j]) : tbs);
    ty[j] = static_cast<T>(bias_act::tangent(d[j], t));
  }
}

template <typename T, typename A>
Params<A> params(double alpha, double gain, double clamp) {
  return {static_cast<A>(alpha), static_cast<A>(gain), clamp < 0.0 ? A(-1) : static_cast<A>(clamp)};
}

at::Tensor bias_act_cpu(const at::Tensor& x, const std::optional<at::Tensor>& b, int64_t dim, int64_t act,
                        double alpha, double gain, double clamp) {
  const BiasActGeom g = check_bias_act(x, b, dim, act, alpha, gain, clamp);
  at::Tensor y = at::empty_like(x);
  if (g.n == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_cpu", [&] {
    using T = scalar_t;
    using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const Params<A> p = params<T, A>(alpha, gain, clamp);
    const T* px = x.const_data_ptr<T>();
    const T* pb = g.has_b ? b->const_data_ptr<T>() : nullptr;
    T* py = y.mutable_data_ptr<T>();
    bias_act::dispatch_act(act, [&](auto code) {
      constexpr int kAct = decltype(code)::value;
      at::parallel_for(0, g.n, kGrain, [&](int64_t i0, int64_t i1) {
        for_segments(g, i0, i1, [&](int64_t i, int64_t len, int64_t c, bool vec) {
          if (vec && pb) {
            forward_seg<kAct, true, T, A>(px + i, pb + c, A(0), py + i, len, p);
          } else {
            forward_seg<kAct, false, T, A>(px + i, nullptr, pb ? ld<A>(pb[c]) : A(0), py + i, len, p);
          }
        });
      });
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> bias_act_jvp_cpu(const at::Tensor& x, const std::optional<at::Tensor>& b,
                                                    const at::Tensor& tx, const std::optional<at::Tensor>& tb,
                                                    int64_t dim, int64_t act, double alpha, double gain,
                                                    double clamp) {
  const BiasActGeom g = check_bias_act_jvp(x, b, tx, tb, dim, act, alpha, gain, clamp);
  at::Tensor y = at::empty_like(x);
  at::Tensor ty = at::empty_like(tx);
  if (g.n == 0) return {y, ty};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_jvp_cpu", [&] {
    using T = scalar_t;
    using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const Params<A> p = params<T, A>(alpha, gain, clamp);
    const T* px = x.const_data_ptr<T>();
    const T* pb = g.has_b ? b->const_data_ptr<T>() : nullptr;
    const T* ptx = tx.const_data_ptr<T>();
    const T* ptb = g.has_tb ? tb->const_data_ptr<T>() : nullptr;
    T* py = y.mutable_data_ptr<T>();
    T* pty = ty.mutable_data_ptr<T>();
    const int64_t N = g.n, C = g.c, K = g.k;
    bias_act::dispatch_act(act, [&](auto code) {
      constexpr int kAct = decltype(code)::value;
      // Tasks of at least kGrain elements of x; each x element costs 1 + K element updates.
      const int64_t grain = std::max<int64_t>(kBlock, kGrain / (1 + K));
      at::parallel_for(0, N, grain, [&](int64_t i0, int64_t i1) {
        A d[kBlock];
        for_segments(g, i0, i1, [&](int64_t s0, int64_t slen, int64_t c0, bool vec) {
          for (int64_t off = 0; off < slen; off += kBlock) {
            const int64_t i = s0 + off, len = std::min(kBlock, slen - off);
            const int64_t c = vec ? c0 + off : c0;  // vec: channel of element i; else the segment's channel
            if (vec && pb) {
              jvp_seg<kAct, true, T, A>(px + i, pb + c, A(0), py + i, d, len, p);
            } else {
              jvp_seg<kAct, false, T, A>(px + i, nullptr, pb ? ld<A>(pb[c]) : A(0), py + i, d, len, p);
            }
            for (int64_t k = 0; k < K; ++k) {
              const T* txk = ptx + k * N + i;
              T* tyk = pty + k * N + i;
              if (vec && ptb) {
                tangent_seg<true, T, A>(d, txk, ptb + k * C + c, A(0), tyk, len);
              } else {
                tangent_seg<false, T, A>(d, txk, nullptr, ptb ? ld<A>(ptb[k * C + c]) : A(0), tyk, len);
              }
            }
          }
        });
      });
    });
  });
  return {y, ty};
}

}  // namespace

TORCH_LIBRARY_IMPL(tangentlens, CPU, m) {
  m.impl("bias_act", &bias_act_cpu);
  m.impl("bias_act_jvp", &bias_act_jvp_cpu);
}

}  // namespace cpu
}  // namespace tangentlens
