// CPU kernels of the path sampler and of row-wise lerp / slerp. One row per task: the row's
// reductions and outputs stay in cache, and every value is computed in double.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_common.h"
#include "tangentlens/op_args.h"
#include "tangentlens/interp.h"
#include "tangentlens/philox.h"

namespace tangentlens {
namespace cpu {

namespace {

// Row output pointers (nullptr = not requested).
template <typename T>
struct RowOut {
  T* p = nullptr;
  T* p_eps = nullptr;
  T* tangent = nullptr;
};

// p (always), p(t + eps) and the tangent (when asked) of one row.
template <typename T, bool kStep, bool kTangent>
void write_slerp_elem(const interp::SlerpFrame& f, const interp::SlerpAngles& g, double on_axis, double za, double zb,
                      T* __restrict__ p, T* __restrict__ p_eps, T* __restrict__ tangent) {
  const interp::SlerpElem e = interp::slerp_elem(f, g, on_axis, za, zb);
  *p = to_out<T>(e.p);
  if constexpr (kStep) *p_eps = to_out<T>(e.p_eps);
  if constexpr (kTangent) *tangent = to_out<T>(e.tangent);
}

template <typename T, bool kStep, bool kTangent>
TL_CPU_CLONES void write_slerp(const interp::SlerpFrame& f, const interp::SlerpAngles& g,
                               const double* __restrict__ za, const double* __restrict__ zb, int64_t dim,
                               RowOut<T> out) {
  T* __restrict__ p = out.p;
  T* __restrict__ p_eps = out.p_eps;
  T* __restrict__ tangent = out.tangent;
  for (int64_t j = 0; j < dim; ++j) {
    write_slerp_elem<T, kStep, kTangent>(f, g, 0.0, za[j], zb[j], p + j, p_eps + j, tangent + j);
  }
  if (f.axis >= 0) {  // the antipodal frame's e_axis term
    const int64_t j = f.axis;
    write_slerp_elem<T, kStep, kTangent>(f, g, 1.0, za[j], zb[j], p + j, p_eps + j, tangent + j);
  }
}

// Slerp of one row given in double; false if either endpoint is the zero vector. out.p is required.
template <typename T>
TL_CPU_CLONES bool slerp_row(const double* za, const double* zb, int64_t dim, double t, double eps, RowOut<T> out) {
  // Four partial sums per quantity, added in a fixed order: deterministic, and the compiler can keep them
  // in one vector register (a plain `+=` reduction is not vectorised without -ffast-math).
  constexpr int kLanes = 4;
  double s0[kLanes] = {}, s1[kLanes] = {}, s01[kLanes] = {};
  int64_t j0 = 0;
  for (; j0 + kLanes <= dim; j0 += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      s0[l] += za[j0 + l] * za[j0 + l];
      s1[l] += zb[j0 + l] * zb[j0 + l];
      s01[l] += za[j0 + l] * zb[j0 + l];
    }
  }
  for (int64_t j = j0; j < dim; ++j) {
    s0[j - j0] += za[j] * za[j];
    s1[j - j0] += zb[j] * zb[j];
    s01[j - j0] += za[j] * zb[j];
  }
  const double n0 = (s0[0] + s0[1]) + (s0[2] + s0[3]);
  const double n1 = (s1[0] + s1[1]) + (s1[2] + s1[3]);
  const double d01 = (s01[0] + s01[1]) + (s01[2] + s01[3]);
  if (!(n0 > 0.0) || !(n1 > 0.0) || !std::isfinite(n0) || !std::isfinite(n1)) return false;
  interp::SlerpFrame f;
  if (!interp::begin_frame(n0, n1, d01, &f)) {
    double cc = 0.0, ac = 0.0;
    for (int64_t j = 0; j < dim; ++j) {
      const double a = za[j] * f.ia;
      const double c = zb[j] * f.ib - f.delta * a;
      cc += c * c;
      ac += a * c;
    }
    int64_t axis = -1;
    double a_axis = 0.0;
    if (interp::needs_axis(cc, ac, f)) {
      double best = std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < dim; ++j) {
        const double a = std::abs(za[j] * f.ia);
        if (a < best) {
          best = a;
          axis = j;
        }
      }
      a_axis = za[axis] * f.ia;
    }
    interp::finish_frame(cc, ac, axis, a_axis, &f);
  }
  const interp::SlerpAngles g = interp::angles(f, t, eps);
  // The requested outputs are fixed per call: branch once, so the element loop has none.
  if (out.p_eps && out.tangent) {
    write_slerp<T, true, true>(f, g, za, zb, dim, out);
  } else if (out.p_eps) {
    write_slerp<T, true, false>(f, g, za, zb, dim, out);
  } else if (out.tangent) {
    write_slerp<T, false, true>(f, g, za, zb, dim, out);
  } else {
    write_slerp<T, false, false>(f, g, za, zb, dim, out);
  }
  return true;
}

template <typename T>
TL_CPU_CLONES void lerp_row(const double* za, const double* zb, int64_t dim, double t, double eps, RowOut<T> out) {
  for (int64_t j = 0; j < dim; ++j) {
    const interp::LerpElem e = interp::lerp_elem(t, eps, za[j], zb[j]);
    if (out.p) out.p[j] = to_out<T>(e.p);
    if (out.p_eps) out.p_eps[j] = to_out<T>(e.p_eps);
    if (out.tangent) out.tangent[j] = to_out<T>(e.tangent);
  }
}

template <typename T>
T* row_ptr(const at::Tensor& x, bool present, int64_t r) {
  return present ? x.data_ptr<T>() + r * x.stride(0) : nullptr;
}

void paths_sample_cpu(at::Tensor& z0, at::Tensor& z1, at::Tensor& t, at::Tensor& p0, at::Tensor& p1,
                      at::Tensor& tangent, int64_t seed, int64_t start, int64_t dim, int64_t kind, bool full,
                      double eps) {
  const PathsSampleArgs args = check_paths_sample(z0, z1, t, p0, p1, tangent, start, dim, kind, eps);
  const int64_t count = args.count;
  const bool has_z0 = args.z0, has_z1 = args.z1, has_p0 = args.p0, has_p1 = args.p1, has_tan = args.tangent;
  const at::ScalarType dtype = args.dtype;
  const uint64_t useed = static_cast<uint64_t>(seed), ustart = static_cast<uint64_t>(start);
  double* t_out = t.data_ptr<double>();
  const bool need_path = has_p0 || has_p1 || has_tan;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "paths_sample_cpu", [&] {
    at::parallel_for(0, count, std::max<int64_t>(1, 16384 / dim), [&](int64_t b, int64_t e) {
      std::vector<double> za(dim), zb(dim);
      for (int64_t r = b; r < e; ++r) {
        const uint64_t row = ustart + static_cast<uint64_t>(r);
        fill_normals(useed, row, philox::kStreamZ0, 0, dim, za.data());
        fill_normals(useed, row, philox::kStreamZ1, 0, dim, zb.data());
        const double tr = full ? philox::path_t(useed, row) : 0.0;
        t_out[r] = tr;
        scalar_t* d0 = row_ptr<scalar_t>(z0, has_z0, r);
        scalar_t* d1 = row_ptr<scalar_t>(z1, has_z1, r);
        for (int64_t j = 0; d0 && j < dim; ++j) d0[j] = to_out<scalar_t>(za[j]);
        for (int64_t j = 0; d1 && j < dim; ++j) d1[j] = to_out<scalar_t>(zb[j]);
        if (need_path) {
          RowOut<scalar_t> out{row_ptr<scalar_t>(p0, has_p0, r), row_ptr<scalar_t>(p1, has_p1, r),
                               row_ptr<scalar_t>(tangent, has_tan, r)};
          // Gaussian rows are never zero (every normal has |n| > 0 with probability 1).
          slerp_row(za.data(), zb.data(), dim, tr, eps, out);
        }
      }
    });
  });
}

std::tuple<at::Tensor, at::Tensor> interpolate_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& t,
                                                   int64_t kind, bool with_tangent) {
  check_interpolate(a, b, t, kind);
  const int64_t rows = a.size(0), dim = a.size(1);
  at::Tensor p = at::empty({rows, dim}, a.options());
  at::Tensor tan = with_tangent ? at::empty({rows, dim}, a.options()) : at::empty({0}, a.options());
  const double* tp = t.data_ptr<double>();
  std::atomic<int64_t> bad_row{kNoBadRow};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "interpolate_cpu", [&] {
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(dim, 1)), [&](int64_t r0, int64_t r1) {
      std::vector<double> za(dim), zb(dim);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t j = 0; j < dim; ++j) {
          za[j] = to_double(ap[r * a.stride(0) + j]);
          zb[j] = to_double(bp[r * b.stride(0) + j]);
        }
        RowOut<scalar_t> out{p.data_ptr<scalar_t>() + r * dim, nullptr,
                             with_tangent ? tan.data_ptr<scalar_t>() + r * dim : nullptr};
        if (kind == interp::kLerp) {
          lerp_row(za.data(), zb.data(), dim, tp[r], 0.0, out);
        } else if (!slerp_row(za.data(), zb.data(), dim, tp[r], 0.0, out)) {
          int64_t cur = bad_row.load();
          while (r < cur && !bad_row.compare_exchange_weak(cur, r)) {
          }
        }
      }
    });
  });
  check_no_bad_row(bad_row.load());
  return {p, tan};
}

}  // namespace

TORCH_LIBRARY_IMPL(tangentlens, CPU, m) {
  m.impl("paths_sample_", &paths_sample_cpu);
  m.impl("interpolate", &interpolate_cpu);
}

}  // namespace cpu
}  // namespace tangentlens
