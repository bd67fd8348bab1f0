// CUDA kernels of the path sampler and of row-wise lerp / slerp: one warp per row, the row reductions
// in double with a fixed butterfly (deterministic), every output written once, coalesced.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <limits>

#include "cuda_common.cuh"
#include "tangentlens/op_args.h"
#include "tangentlens/convert.h"
#include "tangentlens/interp.h"
#include "tangentlens/philox.h"

namespace tangentlens {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;

// Row sources: element pair q = (2q, 2q + 1) of z0 and z1 as doubles.
struct PhiloxSource {
  uint64_t seed, row;
  __device__ void pair(int64_t q, double* a, double* b) const {
    philox::box_muller(philox::block(seed, row, philox::kStreamZ0, static_cast<uint32_t>(q)), &a[0], &a[1]);
    philox::box_muller(philox::block(seed, row, philox::kStreamZ1, static_cast<uint32_t>(q)), &b[0], &b[1]);
  }
};

template <typename T>
struct MemorySource {
  const T* a;
  const T* b;
  int64_t dim;
  __device__ void pair(int64_t q, double* x, double* y) const {
    const int64_t j = 2 * q;
    x[0] = to_double(a[j]);
    y[0] = to_double(b[j]);
    const bool second = j + 1 < dim;
    x[1] = second ? to_double(a[j + 1]) : 0.0;
    y[1] = second ? to_double(b[j + 1]) : 0.0;
  }
};

template <typename T>
struct RowOut {
  T* z0;
  T* z1;
  T* p;
  T* p_eps;
  T* tangent;
};

template <typename T>
__device__ void store(T* dst, int64_t j, int64_t dim, const double* v) {
  if (!dst) return;
  dst[j] = to_out<T>(v[0]);
  if (j + 1 < dim) dst[j + 1] = to_out<T>(v[1]);
}

// One warp computes one row. Returns false (on every lane) if z0 or z1 has a zero or non-finite norm.
template <class Src, typename T>
__device__ bool slerp_row(const Src& src, int lane, int64_t dim, double t, double eps, const RowOut<T>& out) {
  const int64_t pairs = (dim + 1) / 2;
  double n0 = 0.0, n1 = 0.0, d01 = 0.0;
  for (int64_t q = lane; q < pairs; q += kWarp) {
    double a[2], b[2];
    src.pair(q, a, b);
    n0 += a[0] * a[0] + a[1] * a[1];
    n1 += b[0] * b[0] + b[1] * b[1];
    d01 += a[0] * b[0] + a[1] * b[1];
  }
  n0 = warp_sum(n0);
  n1 = warp_sum(n1);
  d01 = warp_sum(d01);
  if (!(n0 > 0.0) || !(n1 > 0.0) || !isfinite(n0) || !isfinite(n1)) return false;
  interp::SlerpFrame f;
  if (!interp::begin_frame(n0, n1, d01, &f)) {  // nearly (anti)parallel: sum |b - a d|^2 explicitly
    double cc = 0.0, ac = 0.0;
    for (int64_t q = lane; q < pairs; q += kWarp) {
      double a[2], b[2];
      src.pair(q, a, b);
      for (int e = 0; e < 2; ++e) {
        const double an = a[e] * f.ia;
        const double c = b[e] * f.ib - f.delta * an;
        const bool inside = 2 * q + e < dim;
        cc += inside ? c * c : 0.0;
        ac += inside ? an * c : 0.0;
      }
    }
    cc = warp_sum(cc);
    ac = warp_sum(ac);
    int64_t axis = -1;
    double a_axis = 0.0;
    if (interp::needs_axis(cc, ac, f)) {
      double best = INFINITY;
      int64_t best_j = std::numeric_limits<int64_t>::max();
      for (int64_t q = lane; q < pairs; q += kWarp) {
        double a[2], b[2];
        src.pair(q, a, b);
        for (int e = 0; e < 2; ++e) {
          const double v = fabs(a[e] * f.ia);
          if (2 * q + e < dim && v < best) {
            best = v;
            best_j = 2 * q + e;
          }
        }
      }
      warp_argmin(&best, &best_j);
      axis = best_j;
      const int64_t owner_q = axis / 2;
      double a[2], b[2];
      src.pair(owner_q, a, b);  // every lane reads the same pair: no shuffle needed
      a_axis = a[axis & 1] * f.ia;
    }
    interp::finish_frame(cc, ac, axis, a_axis, &f);
  }
  const interp::SlerpAngles g = interp::angles(f, t, eps);
  for (int64_t q = lane; q < pairs; q += kWarp) {
    double a[2], b[2];
    src.pair(q, a, b);
    double p[2], pe[2], tg[2];
    for (int e = 0; e < 2; ++e) {
      const interp::SlerpElem r = interp::slerp_elem(f, g, 2 * q + e == f.axis ? 1.0 : 0.0, a[e], b[e]);
      p[e] = r.p;
      pe[e] = r.p_eps;
      tg[e] = r.tangent;
    }
    store(out.z0, 2 * q, dim, a);
    store(out.z1, 2 * q, dim, b);
    store(out.p, 2 * q, dim, p);
    store(out.p_eps, 2 * q, dim, pe);
    store(out.tangent, 2 * q, dim, tg);
  }
  return true;
}

template <class Src, typename T>
__device__ void lerp_row(const Src& src, int lane, int64_t dim, double t, double eps, const RowOut<T>& out) {
  for (int64_t q = lane; q < (dim + 1) / 2; q += kWarp) {
    double a[2], b[2];
    src.pair(q, a, b);
    double p[2], pe[2], tg[2];
    for (int e = 0; e < 2; ++e) {
      const interp::LerpElem r = interp::lerp_elem(t, eps, a[e], b[e]);
      p[e] = r.p;
      pe[e] = r.p_eps;
      tg[e] = r.tangent;
    }
    store(out.z0, 2 * q, dim, a);
    store(out.z1, 2 * q, dim, b);
    store(out.p, 2 * q, dim, p);
    store(out.p_eps, 2 * q, dim, pe);
    store(out.tangent, 2 * q, dim, tg);
  }
}

template <typename T>
__global__ void paths_sample_kernel(T* z0, T* z1, double* t_out, T* p0, T* p1, T* tangent, int64_t ld, int64_t count,
                                    int64_t dim, uint64_t seed, uint64_t start, bool slerp, bool full, double eps) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / kWarp; r < count; r += warps) {
    const uint64_t row = start + static_cast<uint64_t>(r);
    const double t = full ? philox::path_t(seed, row) : 0.0;
    if (lane == 0) t_out[r] = t;
    auto at = [&](T* base) { return base ? base + r * ld : nullptr; };
    const RowOut<T> out{at(z0), at(z1), at(p0), at(p1), at(tangent)};
    const PhiloxSource src{seed, row};
    if (slerp) {
      slerp_row(src, lane, dim, t, eps, out);  // Gaussian rows are never zero
    } else {
      lerp_row(src, lane, dim, t, eps, RowOut<T>{out.z0, out.z1, nullptr, nullptr, nullptr});
    }
  }
}

template <typename T>
__global__ void interpolate_kernel(const T* a, const T* b, int64_t lda, int64_t ldb, const double* t, T* p, T* tangent,
                                   int64_t rows, int64_t dim, bool slerp, unsigned long long* bad_row) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / kWarp; r < rows; r += warps) {
    const MemorySource<T> src{a + r * lda, b + r * ldb, dim};
    const RowOut<T> out{nullptr, nullptr, p + r * dim, nullptr, tangent ? tangent + r * dim : nullptr};
    if (!slerp) {
      lerp_row(src, lane, dim, t[r], 0.0, out);
    } else if (!slerp_row(src, lane, dim, t[r], 0.0, out) && lane == 0) {
      atomicMin(bad_row, static_cast<unsigned long long>(r));
    }
  }
}

void paths_sample_cuda(at::Tensor& z0, at::Tensor& z1, at::Tensor& t, at::Tensor& p0, at::Tensor& p1,
                       at::Tensor& tangent, int64_t seed, int64_t start, int64_t dim, int64_t kind, bool full,
                       double eps) {
  const PathsSampleArgs args = check_paths_sample(z0, z1, t, p0, p1, tangent, start, dim, kind, eps);
  const int64_t count = args.count, ld = args.ld;
  const bool has_z0 = args.z0, has_z1 = args.z1, has_p0 = args.p0, has_p1 = args.p1, has_tan = args.tangent;
  if (count == 0) return;
  const c10::cuda::CUDAGuard guard(t.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.dtype, "paths_sample_cuda", [&] {
    auto ptr = [](at::Tensor& x, bool present) { return present ? x.data_ptr<scalar_t>() : nullptr; };
    paths_sample_kernel<scalar_t>
        <<<blocks_for(count, kRowsPerBlock), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            ptr(z0, has_z0), ptr(z1, has_z1), t.data_ptr<double>(), ptr(p0, has_p0), ptr(p1, has_p1),
            ptr(tangent, has_tan), ld, count, dim, static_cast<uint64_t>(seed), static_cast<uint64_t>(start),
            kind == interp::kSlerp, full, eps);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> interpolate_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& t,
                                                    int64_t kind, bool with_tangent) {
  check_interpolate(a, b, t, kind);
  const int64_t rows = a.size(0), dim = a.size(1);
  const c10::cuda::CUDAGuard guard(a.device());
  at::Tensor p = at::empty({rows, dim}, a.options());
  at::Tensor tan = with_tangent ? at::empty({rows, dim}, a.options()) : at::empty({0}, a.options());
  if (rows == 0 || dim == 0) return {p, tan};
  at::Tensor bad = at::full({1}, kNoBadRow, a.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "interpolate_cuda", [&] {
    interpolate_kernel<scalar_t><<<blocks_for(rows, kRowsPerBlock), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), a.stride(0), b.stride(0), t.data_ptr<double>(),
        p.data_ptr<scalar_t>(), with_tangent ? tan.data_ptr<scalar_t>() : nullptr, rows, dim, kind == interp::kSlerp,
        reinterpret_cast<unsigned long long*>(bad.data_ptr<int64_t>()));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (kind == interp::kSlerp) {
    check_no_bad_row(bad.item<int64_t>());  // one 8-byte read back: input validation
  }
  return {p, tan};
}

}  // namespace

TORCH_LIBRARY_IMPL(tangentlens, CUDA, m) {
  m.impl("paths_sample_", &paths_sample_cuda);
  m.impl("interpolate", &interpolate_cuda);
}

}  // namespace cuda
}  // namespace tangentlens
