// CUDA kernel of upfirdn2d: one thread per output element (grid-stride), consecutive threads on
// consecutive output columns so reads and writes coalesce; the filter taps come from L1/constant cache.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <type_traits>

#include "cuda_common.cuh"
#include "tangentlens/upfirdn2d_args.h"
#include "tangentlens/upfirdn2d_math.h"

namespace tangentlens {
namespace cuda {

namespace {

constexpr int kThreads = 256;

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    upfirdn2d_kernel(const T* __restrict__ x, const A* __restrict__ f, T* __restrict__ out, upfirdn::Geom g,
                     int64_t total) {
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ox = idx % g.out_w;
    const int64_t oy = (idx / g.out_w) % g.out_h;
    const int64_t plane = idx / (g.out_w * g.out_h);
    out[idx] = static_cast<T>(upfirdn::output_at<A>(x + plane * g.h * g.w, f, g, oy, ox));
  }
}

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1) {
  const upfirdn::Geom g = check_upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty({x.size(0), x.size(1), g.out_h, g.out_w}, x.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    upfirdn2d_kernel<scalar_t, A><<<blocks_for(total, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        xc.data_ptr<scalar_t>(), f.data_ptr<A>(), out.data_ptr<scalar_t>(), g, total);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tangentlens, CUDA, m) { m.impl("upfirdn2d", &upfirdn2d_cuda); }

}  // namespace cuda
}  // namespace tangentlens
