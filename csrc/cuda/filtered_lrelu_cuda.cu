// CUDA kernels of filtered_lrelu and its forward rule; the same math as csrc/cpu/filtered_lrelu_cpu.cpp
// (shared through tangentlens/filtered_lrelu_math.h).
//
// Two launches per call. up_kernel: one thread per activation sample (plane, Y, X) computes the upsampled
// primal u, the activation a and its derivative d (the mask), then for each of the K tangents the
// upsampled tangent times d; all 1 + K results go to a temporary grid [1 + K, planes, uh, uw] in the
// accumulation type. down_kernel: one thread per output sample of the 1 + K grids applies the
// downsampling filter. Consecutive threads take consecutive columns, so reads and writes coalesce.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <type_traits>

#include "cuda_common.cuh"
#include "tangentlens/filtered_lrelu_args.h"
#include "tangentlens/filtered_lrelu_math.h"

namespace tangentlens {
namespace cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename A>
struct Act {
  A slope, gain, clamp;
};

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    up_kernel(const T* __restrict__ x, const T* __restrict__ b, const T* __restrict__ tx, const T* __restrict__ tb,
              const A* __restrict__ fu, A* __restrict__ grid, flrelu::Geom g, Act<A> act) {
  const int64_t planes = g.n * g.c, cells = g.uh * g.uw, total = planes * cells;
  const int64_t in_plane = g.h * g.w;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t X = idx % g.uw;
    const int64_t Y = (idx / g.uw) % g.uh;
    const int64_t p = idx / cells;
    const int64_t c = p % g.c;
    const A bias = b != nullptr ? static_cast<A>(b[c]) : A(0);
    A d;
    grid[idx] = flrelu::activate(flrelu::up_at<A>(x + p * in_plane, bias, fu, g, Y, X), act.slope, act.gain,
                                 act.clamp, &d);
    for (int64_t k = 0; k < g.k; ++k) {
      const A tbias = tb != nullptr ? static_cast<A>(tb[k * g.c + c]) : A(0);
      const A tu = flrelu::up_at<A>(tx + (k * planes + p) * in_plane, tbias, fu, g, Y, X);
      grid[(k + 1) * total + idx] = bias_act::tangent(d, tu);
    }
  }
}

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    down_kernel(const A* __restrict__ grid, const A* __restrict__ fd, T* __restrict__ y, T* __restrict__ ty,
                flrelu::Geom g) {
  const int64_t planes = g.n * g.c, out_plane = g.out_h * g.out_w, per_slot = planes * out_plane;
  const int64_t total = (1 + g.k) * per_slot;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ox = idx % g.out_w;
    const int64_t oy = (idx / g.out_w) % g.out_h;
    const int64_t plane = idx / out_plane;  // slot * planes + p
    const A v = flrelu::down_at<A>(grid + plane * g.uh * g.uw, fd, g, oy, ox);
    if (idx < per_slot) {
      y[idx] = static_cast<T>(v);
    } else {
      ty[idx - per_slot] = static_cast<T>(v);
    }
  }
}

template <typename T>
void launch(const at::Tensor& x, const at::Tensor& fu, const at::Tensor& fd, const std::optional<at::Tensor>& b,
            const T* tx, const T* tb, const flrelu::Geom& g, double gain, double slope, double clamp, T* y, T* ty) {
  using A = acc_t<T>;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t cells = g.n * g.c * g.uh * g.uw;
  at::Tensor grid = at::empty({(1 + g.k) * cells}, x.options().dtype(fu.scalar_type()));
  const Act<A> act{static_cast<A>(slope), static_cast<A>(gain), clamp < 0.0 ? A(-1) : static_cast<A>(clamp)};
  const T* pb = g.has_b ? b->const_data_ptr<T>() : nullptr;
  up_kernel<T, A><<<blocks_for(cells, kThreads), kThreads, 0, stream>>>(
      x.const_data_ptr<T>(), pb, tx, tb, fu.const_data_ptr<A>(), grid.mutable_data_ptr<A>(), g, act);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t outputs = (1 + g.k) * g.n * g.c * g.out_h * g.out_w;
  down_kernel<T, A><<<blocks_for(outputs, kThreads), kThreads, 0, stream>>>(grid.const_data_ptr<A>(),
                                                                             fd.const_data_ptr<A>(), y, ty, g);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor filtered_lrelu_cuda(const at::Tensor& x, const at::Tensor& fu, const at::Tensor& fd,
                               const std::optional<at::Tensor>& b, int64_t up, int64_t down, int64_t padx0,
                               int64_t padx1, int64_t pady0, int64_t pady1, double gain, double slope,
                               double clamp) {
  const flrelu::Geom g = check_filtered_lrelu(x, fu, fd, b, up, down, padx0, padx1, pady0, pady1, gain, slope, clamp);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty({g.n, g.c, g.out_h, g.out_w}, x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "filtered_lrelu_cuda", [&] {
    launch<scalar_t>(x, fu, fd, b, nullptr, nullptr, g, gain, slope, clamp, y.mutable_data_ptr<scalar_t>(),
                     nullptr);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> filtered_lrelu_jvp_cuda(const at::Tensor& x, const at::Tensor& fu,
                                                           const at::Tensor& fd, const std::optional<at::Tensor>& b,
                                                           const at::Tensor& tx, const std::optional<at::Tensor>& tb,
                                                           int64_t up, int64_t down, int64_t padx0, int64_t padx1,
                                                           int64_t pady0, int64_t pady1, double gain, double slope,
                                                           double clamp) {
  const flrelu::Geom g =
      check_filtered_lrelu_jvp(x, fu, fd, b, tx, tb, up, down, padx0, padx1, pady0, pady1, gain, slope, clamp);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty({g.n, g.c, g.out_h, g.out_w}, x.options());
  at::Tensor ty = at::empty({g.k, g.n, g.c, g.out_h, g.out_w}, x.options());
  if (y.numel() == 0) return {y, ty};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "filtered_lrelu_jvp_cuda", [&] {
    const scalar_t* ptb = g.has_tb ? tb->const_data_ptr<scalar_t>() : nullptr;
    launch<scalar_t>(x, fu, fd, b, tx.const_data_ptr<scalar_t>(), ptb, g, gain, slope, clamp,
                     y.mutable_data_ptr<scalar_t>(), ty.mutable_data_ptr<scalar_t>());
  });
  return {y, ty};
}

}  // namespace

TORCH_LIBRARY_IMPL(tangentlens, CUDA, m) {
  m.impl("filtered_lrelu", &filtered_lrelu_cuda);
  m.impl("filtered_lrelu_jvp", &filtered_lrelu_jvp_cuda);
}

}  // namespace cuda
}  // namespace tangentlens
