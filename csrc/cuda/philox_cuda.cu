// CUDA kernels of the counter-based generator. Same header math as the CPU kernels: bit-identical output.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "cuda_common.cuh"
#include "tangentlens/op_args.h"
#include "tangentlens/convert.h"
#include "tangentlens/philox.h"

namespace tangentlens {
namespace cuda {

namespace {

__global__ void philox4x32_10_kernel(const int64_t* __restrict__ src, int64_t* __restrict__ dst, int64_t n,
                                     uint64_t key) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t* w = src + 4 * i;
    const philox::U4 r = philox::philox4x32_10(
        philox::U4{static_cast<uint32_t>(w[0]), static_cast<uint32_t>(w[1]), static_cast<uint32_t>(w[2]),
                   static_cast<uint32_t>(w[3])},
        static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32));
    dst[4 * i] = r.x;
    dst[4 * i + 1] = r.y;
    dst[4 * i + 2] = r.z;
    dst[4 * i + 3] = r.w;
  }
}

// One thread per (row, column pair); consecutive threads write consecutive pairs (coalesced). The job
// is write-bound: 2 * sizeof(T) bytes per Philox block.
template <typename T>
__global__ void philox_normal_kernel(T* __restrict__ out, int64_t rows, int64_t dim, int64_t ld, uint64_t seed,
                                     uint64_t start, uint32_t stream) {
  const int64_t pairs = (dim + 1) / 2;
  const int64_t total = rows * pairs;
  for (int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; g < total;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = g / pairs, j = g - r * pairs;
    double n0, n1;
    philox::box_muller(philox::block(seed, start + static_cast<uint64_t>(r), stream, static_cast<uint32_t>(j)), &n0,
                       &n1);
    T* dst = out + r * ld + 2 * j;
    dst[0] = to_out<T>(n0);
    if (2 * j + 1 < dim) dst[1] = to_out<T>(n1);
  }
}

at::Tensor philox4x32_10_cuda(const at::Tensor& counters, int64_t seed) {
  check_counters(counters);
  const c10::cuda::CUDAGuard guard(counters.device());
  const at::Tensor c = counters.contiguous();
  at::Tensor out = at::empty_like(c);
  const int64_t n = c.size(0);
  if (n == 0) return out;
  constexpr int threads = 256;
  philox4x32_10_kernel<<<blocks_for(n, threads), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      c.data_ptr<int64_t>(), out.data_ptr<int64_t>(), n, static_cast<uint64_t>(seed));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

void philox_normal_cuda(at::Tensor& out, int64_t seed, int64_t start, int64_t stream) {
  check_float_matrix(out, "out");
  check_stream(stream);
  check_row_range(start, out.size(0));
  const int64_t rows = out.size(0), dim = out.size(1);
  if (rows == 0 || dim == 0) return;
  const c10::cuda::CUDAGuard guard(out.device());
  constexpr int threads = 256;
  const int64_t work = rows * ((dim + 1) / 2);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "philox_normal_cuda", [&] {
    philox_normal_kernel<scalar_t><<<blocks_for(work, threads), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        out.data_ptr<scalar_t>(), rows, dim, out.stride(0), static_cast<uint64_t>(seed),
        static_cast<uint64_t>(start), static_cast<uint32_t>(stream));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(tangentlens, CUDA, m) {
  m.impl("philox4x32_10", &philox4x32_10_cuda);
  m.impl("philox_normal_", &philox_normal_cuda);
}

}  // namespace cuda
}  // namespace tangentlens
