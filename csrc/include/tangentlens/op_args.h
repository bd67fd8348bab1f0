// Argument validation of the ops, shared by the CPU and CUDA entry points (one message per mistake,
// naming the argument). Host-only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <limits>

#include "tangentlens/checks.h"
#include "tangentlens/interp.h"

namespace tangentlens {

inline void check_counters(const at::Tensor& counters) {
  TORCH_CHECK(counters.dim() == 2 && counters.size(1) == 4, "counters: expected shape [N, 4], got ",
              counters.sizes());
  TORCH_CHECK(counters.scalar_type() == at::kLong, "counters: expected int64 holding uint32 words, got ",
              counters.scalar_type());
}

inline void check_stream(int64_t stream) {
  TORCH_CHECK(stream >= 0 && stream <= 0xFFFFFFFFll, "stream: expected an integer in [0, 2^32), got ", stream);
}

// Sample indices start .. start + rows - 1 are a 64-bit counter (the int64 carries the uint64's bits):
// a range past 2^64 would wrap to index 0 and repeat the first samples.
inline void check_row_range(int64_t start, int64_t rows) {
  const uint64_t first = static_cast<uint64_t>(start);
  TORCH_CHECK(rows <= 0 || static_cast<uint64_t>(rows - 1) <= ~uint64_t{0} - first,
              "start + count: expected at most 2^64 (sample indices are 64-bit counters), got start ", first,
              " and count ", rows);
}

inline void check_path_kind(int64_t kind) {
  TORCH_CHECK(kind == interp::kLerp || kind == interp::kSlerp, "path_kind: expected 0 (lerp) or 1 (slerp), got ",
              kind);
}

// What paths_sample_ is asked to write.
struct PathsSampleArgs {
  int64_t count = 0;
  bool z0 = false, z1 = false, p0 = false, p1 = false, tangent = false;
  at::ScalarType dtype = at::kFloat;
  int64_t ld = 0;  // the row stride shared by every written matrix
};

inline PathsSampleArgs check_paths_sample(const at::Tensor& z0, const at::Tensor& z1, const at::Tensor& t,
                                          const at::Tensor& p0, const at::Tensor& p1, const at::Tensor& tangent,
                                          int64_t start, int64_t dim, int64_t kind, double eps) {
  check_path_kind(kind);
  TORCH_CHECK(t.dim() == 1 && t.scalar_type() == at::kDouble && t.is_contiguous(),
              "t: expected a contiguous float64 vector, got ", t.scalar_type(), " of shape ", t.sizes());
  TORCH_CHECK(dim >= 1, "dim: expected >= 1, got ", dim);
  TORCH_CHECK(kind == interp::kLerp || dim >= 2, "dim: slerp needs dim >= 2, got ", dim);
  TORCH_CHECK(std::isfinite(eps), "eps: expected a finite number, got ", eps);
  PathsSampleArgs args;
  args.count = t.size(0);
  check_row_range(start, args.count);
  args.ld = dim;
  args.z0 = check_optional_out(z0, "z0", args.count, dim, t);
  args.z1 = check_optional_out(z1, "z1", args.count, dim, t);
  args.p0 = check_optional_out(p0, "p0", args.count, dim, t);
  args.p1 = check_optional_out(p1, "p1", args.count, dim, t);
  args.tangent = check_optional_out(tangent, "tangent", args.count, dim, t);
  TORCH_CHECK(kind == interp::kSlerp || !(args.p0 || args.p1 || args.tangent),
              "paths_sample_: lerp paths are taken after the mapping network; p0, p1 and tangent must be empty");
  TORCH_CHECK(args.p0 || !(args.p1 || args.tangent), "p0: required (non-empty) when p1 or tangent is requested");
  bool first = true;
  for (const at::Tensor* x : {&z0, &z1, &p0, &p1, &tangent}) {
    if (x->numel() == 0) continue;
    TORCH_CHECK(first || x->scalar_type() == args.dtype, "paths_sample_: all outputs must share one dtype, got ",
                args.dtype, " and ", x->scalar_type());
    TORCH_CHECK(first || x->stride(0) == args.ld, "paths_sample_: all outputs must share one row stride, got ",
                args.ld, " and ", x->stride(0));
    args.dtype = x->scalar_type();
    args.ld = x->stride(0);
    first = false;
  }
  return args;
}

inline void check_interpolate(const at::Tensor& a, const at::Tensor& b, const at::Tensor& t, int64_t kind) {
  check_path_kind(kind);
  check_float_matrix(a, "a");
  check_float_matrix(b, "b");
  TORCH_CHECK(a.sizes() == b.sizes(), "b: expected the shape of a ", a.sizes(), ", got ", b.sizes());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "b: expected the dtype of a (", a.scalar_type(), "), got ",
              b.scalar_type());
  TORCH_CHECK(a.device() == b.device() && a.device() == t.device(), "a, b, t: expected one device, got ",
              a.device(), ", ", b.device(), ", ", t.device());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == a.size(0) && t.scalar_type() == at::kDouble && t.is_contiguous(),
              "t: expected contiguous float64 of shape [", a.size(0), "], got ", t.scalar_type(), " of shape ",
              t.sizes());
  TORCH_CHECK(kind == interp::kLerp || a.size(1) >= 2 || a.size(0) == 0, "a: slerp needs vectors of dim >= 2, got ",
              a.size(1));
}

// Sentinel of "no bad row" for the zero-vector report of slerp.
constexpr int64_t kNoBadRow = std::numeric_limits<int64_t>::max();

inline void check_no_bad_row(int64_t bad) {
  TORCH_CHECK(bad == kNoBadRow, "slerp: a and b must be non-zero vectors; row ", bad,
              " has a zero (or non-finite) norm");
}

}  // namespace tangentlens
