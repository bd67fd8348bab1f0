// CUDA kernels of the fused LPIPS layer head (SPEC section 3); the same maths as csrc/cpu/lpips_cpu.cpp
// (shared through tangentlens/lpips_math.h).
//
// Work item: one pixel of one sample (distance), or one pixel and one tangent product (tangent norms:
// tangent i for the squared norms, pair (i, j <= i) for the Gram). Each item reads its channel vectors
// twice, once for the channel sums and once for the weighted products; the second read comes from
// L1/L2, so the feature maps cross DRAM once. Nothing per element is written.
//
// NCHW maps: one thread per item, so a warp reads 32 consecutive pixels of one channel (coalesced).
// channels_last maps: one warp per item, the lanes striding over the contiguous channels, sums by a
// fixed butterfly. Per-pixel sums run in float (double for float64 maps), per-block pixel sums in
// double, written to a partial buffer [N, Q, chunks] that a second kernel reduces in a fixed order:
// results are deterministic and independent of the launch configuration's scheduling.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <type_traits>

#include "cuda_common.cuh"
#include "tangentlens/convert.h"
#include "tangentlens/lpips_args.h"
#include "tangentlens/lpips_math.h"

namespace tangentlens {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarp;
constexpr int64_t kChunkPixels = kThreads;  // pixels per block (NCHW: one per thread; CL: 32 per warp)

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Half and bfloat16 load through their float conversion.
template <typename T>
__device__ __forceinline__ acc_t<T> ld(const T* p) {
  return static_cast<acc_t<T>>(*p);
}

template <typename A>
__device__ __forceinline__ A warp_sum_acc(A v) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// The channel loop of one item: in warp mode the lanes split the channels and every lane ends with the
// full sum; in thread mode one thread takes them all.
template <bool kWarpItem>
struct Channels {
  int begin, step;
  __device__ Channels() : begin(kWarpItem ? static_cast<int>(threadIdx.x % kWarp) : 0), step(kWarpItem ? kWarp : 1) {}
  template <typename A>
  __device__ A reduce(A v) const {
    return kWarpItem ? warp_sum_acc(v) : v;
  }
};

// Block sum of one double per thread, in a fixed order; thread 0 gets the result.
__device__ double block_sum(double v) {
  __shared__ double warp_part[kWarpsPerBlock];
  v = warp_sum(v);
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp;
  if (lane == 0) warp_part[wid] = v;
  __syncthreads();
  double s = 0.0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kWarpsPerBlock; ++w) s += warp_part[w];
  }
  __syncthreads();
  return s;
}

// Pixels of a block: NCHW, pixel chunk * 256 + thread; channels_last, warp w takes the 32 pixels
// chunk * 256 + w * 32 + r, r = 0..31, one after the other.
template <bool kWarpItem>
struct PixelIter {
  int64_t first, count;
  __device__ PixelIter(int64_t chunk, int64_t P) {
    const int64_t base = chunk * kChunkPixels;
    if (kWarpItem) {
      first = base + static_cast<int64_t>(threadIdx.x / kWarp) * kWarp;
      count = kWarp;
    } else {
      first = base + threadIdx.x;
      count = 1;
    }
    if (first >= P) {
      count = 0;
    } else if (first + count > P) {
      count = P - first;
    }
  }
};

// ---- distance ------------------------------------------------------------------------------------------

template <typename T, bool kWarpItem>
__global__ void __launch_bounds__(kThreads)
    layer_distance_kernel(const T* __restrict__ f0, const T* __restrict__ f1, const acc_t<T>* __restrict__ w,
                          int64_t C, int64_t P, int64_t chunks, acc_t<T> eps, int64_t mode, double* __restrict__ partial) {
  using A = acc_t<T>;
  const int64_t chunk = blockIdx.x % chunks, n = blockIdx.x / chunks;
  // channel c of pixel q at (c * cs + q * ps)
  const int64_t cs = kWarpItem ? 1 : P, ps = kWarpItem ? C : 1;
  const T* x0 = f0 + n * C * P;
  const T* x1 = f1 + n * C * P;
  const Channels<kWarpItem> ch;
  const PixelIter<kWarpItem> it(chunk, P);
  double sum = 0.0;
  for (int64_t r = 0; r < it.count; ++r) {
    const int64_t q = it.first + r;
    A s0 = A(0), s1 = A(0);
    for (int64_t c = ch.begin; c < C; c += ch.step) {
      const A u = ld(x0 + c * cs + q * ps), v = ld(x1 + c * cs + q * ps);
      s0 += u * u;
      s1 += v * v;
    }
    const A a0 = lpips::inv_norm(ch.reduce(s0), eps, mode);
    const A a1 = lpips::inv_norm(ch.reduce(s1), eps, mode);
    A d = A(0);
    for (int64_t c = ch.begin; c < C; c += ch.step) {
      const A diff = ld(x0 + c * cs + q * ps) * a0 - ld(x1 + c * cs + q * ps) * a1;
      d += w[c] * (diff * diff);
    }
    d = ch.reduce(d);
    if (!kWarpItem || threadIdx.x % kWarp == 0) sum += static_cast<double>(d);
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[n * chunks + chunk] = sum;
}

// ---- tangent norms ----------------------------------------------------------------------------------------

// The pair (i, j) of product index q: q = i for norms; the upper triangle row by row for the Gram.
__device__ __forceinline__ void product_pair(int64_t q, int64_t K, bool gram, int64_t* i, int64_t* j) {
  if (!gram) {
    *i = *j = q;
    return;
  }
  int64_t r = 0, left = q;
  while (left >= K - r) {
    left -= K - r;
    ++r;
  }
  *i = r;
  *j = r + left;
}

template <typename T, bool kWarpItem>
__global__ void __launch_bounds__(kThreads)
    tangent_norm_kernel(const T* __restrict__ f, const T* __restrict__ t, const acc_t<T>* __restrict__ w, int64_t K,
                        int64_t C, int64_t P, int64_t chunks, acc_t<T> eps, int64_t mode, bool gram,
                        double* __restrict__ partial) {
  using A = acc_t<T>;
  const int64_t Q = gram ? K * (K + 1) / 2 : K;
  const int64_t chunk = blockIdx.x % chunks, q = (blockIdx.x / chunks) % Q, n = blockIdx.x / chunks / Q;
  int64_t i, j;
  product_pair(q, K, gram, &i, &j);
  const int64_t cs = kWarpItem ? 1 : P, ps = kWarpItem ? C : 1;
  const T* xf = f + n * C * P;
  const T* ti = t + (n * K + i) * C * P;
  const T* tj = t + (n * K + j) * C * P;
  const Channels<kWarpItem> ch;
  const PixelIter<kWarpItem> it(chunk, P);
  double sum = 0.0;
  for (int64_t r = 0; r < it.count; ++r) {
    const int64_t p = it.first + r;
    A s = A(0), di = A(0), dj = A(0);
    for (int64_t c = ch.begin; c < C; c += ch.step) {
      const int64_t o = c * cs + p * ps;
      const A v = ld(xf + o);
      s += v * v;
      di += v * ld(ti + o);
      dj += v * ld(tj + o);
    }
    s = ch.reduce(s);
    const A a = lpips::inv_norm(s, eps, mode);
    const A ci = lpips::tangent_coef(s, ch.reduce(di), a, mode);
    const A cj = lpips::tangent_coef(s, ch.reduce(dj), a, mode);
    A acc = A(0);
    for (int64_t c = ch.begin; c < C; c += ch.step) {
      const int64_t o = c * cs + p * ps;
      const A v = ld(xf + o);
      const A gi = a * ld(ti + o) - ci * v;
      const A gj = a * ld(tj + o) - cj * v;
      acc += w[c] * (gi * gj);
    }
    acc = ch.reduce(acc);
    if (!kWarpItem || threadIdx.x % kWarp == 0) sum += static_cast<double>(acc);
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[(n * Q + q) * chunks + chunk] = sum;
}

// out[n, q] (or the symmetric Gram entry) = sum over chunks of partial[n, q, :] / P, in chunk order.
template <typename A>
__global__ void finish_kernel(const double* __restrict__ partial, A* __restrict__ out, int64_t N, int64_t K,
                              int64_t Q, int64_t chunks, int64_t P, bool gram) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= N * Q) return;
  const int64_t n = idx / Q, q = idx % Q;
  double s = 0.0;
  for (int64_t k = 0; k < chunks; ++k) s += partial[idx * chunks + k];
  const A v = static_cast<A>(P == 0 ? 0.0 : s / static_cast<double>(P));
  if (!gram) {
    out[idx] = v;
    return;
  }
  int64_t i, j;
  product_pair(q, K, true, &i, &j);
  out[(n * K + i) * K + j] = v;
  out[(n * K + j) * K + i] = v;
}

// Blocks of one launch (a 1-D grid: chunk fastest, then product, then sample).
unsigned int grid_blocks(int64_t blocks) {
  TORCH_CHECK(blocks <= 0x7fffffff, "lpips: ", blocks, " blocks do not fit one launch (2^31 - 1); split the batch");
  return static_cast<unsigned int>(blocks);
}

at::Tensor lpips_layer_distance_cuda(const at::Tensor& f0, const at::Tensor& f1, const at::Tensor& weight, double eps,
                                     int64_t mode) {
  const LpipsGeom g = check_layer_distance(f0, f1, weight, eps, mode);
  const c10::cuda::CUDAGuard guard(f0.device());
  const auto acc = lpips_acc_dtype(f0.scalar_type());
  at::Tensor out = at::empty({g.n}, f0.options().dtype(acc));
  if (g.n == 0) return out;
  const int64_t chunks = (g.p + kChunkPixels - 1) / kChunkPixels;
  at::Tensor partial = at::empty({g.n, chunks}, f0.options().dtype(at::kDouble));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f0.scalar_type(), "lpips_layer_distance_cuda", [&] {
    using A = acc_t<scalar_t>;
    if (chunks > 0) {
      const unsigned int grid = grid_blocks(chunks * g.n);
      auto kernel = g.channels_last ? layer_distance_kernel<scalar_t, true> : layer_distance_kernel<scalar_t, false>;
      kernel<<<grid, kThreads, 0, stream>>>(f0.data_ptr<scalar_t>(), f1.data_ptr<scalar_t>(), weight.data_ptr<A>(),
                                            g.c, g.p, chunks, static_cast<A>(eps), mode, partial.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    finish_kernel<A><<<blocks_for(g.n, kThreads), kThreads, 0, stream>>>(partial.data_ptr<double>(), out.data_ptr<A>(),
                                                                         g.n, 1, 1, chunks, g.p, false);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor lpips_tangent_norm_cuda(const at::Tensor& f, const at::Tensor& t, const at::Tensor& weight, double eps,
                                   int64_t mode, bool gram) {
  const LpipsGeom g = check_tangent_norm(f, t, weight, eps, mode);
  const c10::cuda::CUDAGuard guard(f.device());
  const auto acc = lpips_acc_dtype(f.scalar_type());
  const int64_t N = g.n, K = g.k;
  at::Tensor out = gram ? at::empty({N, K, K}, f.options().dtype(acc)) : at::empty({N, K}, f.options().dtype(acc));
  if (N == 0 || K == 0) return out;
  const int64_t Q = gram ? K * (K + 1) / 2 : K;
  const int64_t chunks = (g.p + kChunkPixels - 1) / kChunkPixels;
  at::Tensor partial = at::empty({N, Q, chunks}, f.options().dtype(at::kDouble));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "lpips_tangent_norm_cuda", [&] {
    using A = acc_t<scalar_t>;
    if (chunks > 0) {
      const unsigned int grid = grid_blocks(chunks * Q * N);
      auto kernel = g.channels_last ? tangent_norm_kernel<scalar_t, true> : tangent_norm_kernel<scalar_t, false>;
      kernel<<<grid, kThreads, 0, stream>>>(f.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), weight.data_ptr<A>(), K,
                                            g.c, g.p, chunks, static_cast<A>(eps), mode, gram,
                                            partial.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    finish_kernel<A><<<blocks_for(N * Q, kThreads), kThreads, 0, stream>>>(partial.data_ptr<double>(),
                                                                           out.data_ptr<A>(), N, K, Q, chunks, g.p, gram);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tangentlens, CUDA, m) {
  m.impl("lpips_layer_distance", &lpips_layer_distance_cuda);
  m.impl("lpips_tangent_norm", &lpips_tangent_norm_cuda);
}

}  // namespace cuda
}  // namespace tangentlens
