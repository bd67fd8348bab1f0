// CUDA kernels of the fused bias + activation + gain + clamp op and its forward-mode rule; the same math
// as csrc/cpu/bias_act_cpu.cpp (shared through tangentlens/bias_act_math.h).
//
// One thread per element of x in a grid-stride loop: consecutive threads take consecutive elements, so
// the reads of x, tx_k and the writes of y, ty_k are coalesced. bias_act_jvp computes y and dy/dv once per
// element and then loops over the K tangents inside the thread (tangent k of element i at k * N + i).
// Math in float (double for float64), loads and stores in the tensors' dtype.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <type_traits>

#include "cuda_common.cuh"
#include "tangentlens/bias_act_args.h"
#include "tangentlens/bias_act_math.h"

namespace tangentlens {
namespace cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename A>
struct Params {
  A alpha, gain, clamp;
};

// Channel of element i: (i / inner) % C (C = 1 without bias).
__device__ __forceinline__ int64_t channel_of(int64_t i, int64_t inner, int64_t C) { return (i / inner) % C; }

template <int kAct, typename T>
__global__ void bias_act_kernel(const T* __restrict__ x, const T* __restrict__ b, T* __restrict__ y, int64_t N,
                                int64_t C, int64_t inner, Params<acc_t<T>> p) {
  using A = acc_t<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N; i += stride) {
    A v = static_cast<A>(x[i]);
    if (b != nullptr) v += static_cast<A>(b[channel_of(i, inner, C)]);
    y[i] = static_cast<T>(bias_act::forward<kAct>(v, p.alpha, p.gain, p.clamp));
  }
}

template <int kAct, typename T>
__global__ void bias_act_jvp_kernel(const T* __restrict__ x, const T* __restrict__ b, const T* __restrict__ tx,
                                    const T* __restrict__ tb, T* __restrict__ y, T* __restrict__ ty, int64_t N,
                                    int64_t C, int64_t inner, int64_t K, Params<acc_t<T>> p) {
  using A = acc_t<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N; i += stride) {
    const int64_t c = channel_of(i, inner, C);
    A v = static_cast<A>(x[i]);
    if (b != nullptr) v += static_cast<A>(b[c]);
    A d;
    y[i] = static_cast<T>(bias_act::forward_grad<kAct>(v, p.alpha, p.gain, p.clamp, &d));
    for (int64_t k = 0; k < K; ++k) {
      A t = static_cast<A>(tx[k * N + i]);
      if (tb != nullptr) t += static_cast<A>(tb[k * C + c]);
      ty[k * N + i] = static_cast<T>(bias_act::tangent(d, t));
    }
  }
}

template <typename A>
Params<A> params(double alpha, double gain, double clamp) {
  return {static_cast<A>(alpha), static_cast<A>(gain), clamp < 0.0 ? A(-1) : static_cast<A>(clamp)};
}

at::Tensor bias_act_cuda(const at::Tensor& x, const std::optional<at::Tensor>& b, int64_t dim, int64_t act,
                         double alpha, double gain, double clamp) {
  const BiasActGeom g = check_bias_act(x, b, dim, act, alpha, gain, clamp);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  if (g.n == 0) return y;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_cuda", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* pb = g.has_b ? b->const_data_ptr<T>() : nullptr;
    bias_act::dispatch_act(act, [&](auto code) {
      constexpr int kAct = decltype(code)::value;
      bias_act_kernel<kAct, T><<<blocks_for(g.n, kThreads), kThreads, 0, stream>>>(
          x.const_data_ptr<T>(), pb, y.mutable_data_ptr<T>(), g.n, g.c, g.inner, params<A>(alpha, gain, clamp));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> bias_act_jvp_cuda(const at::Tensor& x, const std::optional<at::Tensor>& b,
                                                     const at::Tensor& tx, const std::optional<at::Tensor>& tb,
                                                     int64_t dim, int64_t act, double alpha, double gain,
                                                     double clamp) {
  const BiasActGeom g = check_bias_act_jvp(x, b, tx, tb, dim, act, alpha, gain, clamp);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  at::Tensor ty = at::empty_like(tx);
  if (g.n == 0) return {y, ty};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_jvp_cuda", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* pb = g.has_b ? b->const_data_ptr<T>() : nullptr;
    const T* ptb = g.has_tb ? tb->const_data_ptr<T>() : nullptr;
    bias_act::dispatch_act(act, [&](auto code) {
      constexpr int kAct = decltype(code)::value;
      bias_act_jvp_kernel<kAct, T><<<blocks_for(g.n, kThreads), kThreads, 0, stream>>>(
          x.const_data_ptr<T>(), pb, tx.const_data_ptr<T>(), ptb, y.mutable_data_ptr<T>(),
          ty.mutable_data_ptr<T>(), g.n, g.c, g.inner, g.k, params<A>(alpha, gain, clamp));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {y, ty};
}

}  // namespace

TORCH_LIBRARY_IMPL(tangentlens, CUDA, m) {
  m.impl("bias_act", &bias_act_cuda);
  m.impl("bias_act_jvp", &bias_act_jvp_cuda);
}

}  // namespace cuda
}  // namespace tangentlens
