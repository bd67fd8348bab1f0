// Per-row interpolation math shared by the CPU and CUDA kernels (SPEC section 4).
//
// Slerp between a = z0/|z0| and b = z1/|z1| is written in the orthonormal frame (a, c) of the great
// circle through them: p(t) = a cos(t theta) + c sin(t theta), p'(t) = theta (-a sin(t theta) + c cos(t theta)),
// theta = atan2(|b - a<a,b>|, <a,b>) (accurate at every angle, unlike acos). All of it runs in double.
//
// Degenerate rows have a defined result, never NaN:
//   theta = 0 (b = a):      c = 0, so p(t) = a and p'(t) = 0 for every t;
//   theta = pi (b = -a):    the great circle is not unique; we take the one through e_k, k = the first
//                           index of the smallest |a_k| (c = normalise(e_k - a a_k)); needs dim >= 2;
//   |z0| = 0 or |z1| = 0:   not an interpolation at all: the kernels report the row and the op raises.
#pragma once

#include "tangentlens/macros.h"

#if !defined(__CUDACC__)
#include <cmath>
#endif

namespace tangentlens {
namespace interp {

enum Mode : int64_t { kLerp = 0, kSlerp = 1 };

// Below this 1 - d^2, sqrt(1 - d^2) loses too many digits and |b - a d| is summed explicitly.
constexpr double kSmallSin2 = 1e-2;

struct SlerpFrame {
  double ia, ib;           // 1/|z0|, 1/|z1|
  double beta, delta;      // c_j = (beta b_j + [j == axis] - delta a_j) * inv_nc
  int64_t axis;            // -1 unless antipodal
  double inv_nc;           // 0 when theta = 0 (c vanishes)
  double theta;
};

TL_HD double clamp_unit(double d) { return d > 1.0 ? 1.0 : (d < -1.0 ? -1.0 : d); }

// First step: from the row sums |z0|^2, |z1|^2 and <z0, z1>. Returns false when the explicit sum of
// |b - a d|^2 is needed (then call finish_frame with it).
TL_HD bool begin_frame(double n0, double n1, double d01, SlerpFrame* f) {
  f->ia = 1.0 / ::sqrt(n0);
  f->ib = 1.0 / ::sqrt(n1);
  f->beta = 1.0;
  f->axis = -1;
  f->delta = clamp_unit(d01 * f->ia * f->ib);
  const double sin2 = 1.0 - f->delta * f->delta;
  if (sin2 > kSmallSin2) {
    const double nc = ::sqrt(sin2);
    f->inv_nc = 1.0 / nc;
    f->theta = ::atan2(nc, f->delta);
    return true;
  }
  return false;
}

// Second step for nearly (anti)parallel rows, from the sums over j of c_j = b_j - d a_j:
// cc = sum c_j^2 and ac = sum a_j c_j. The rounding noise in c has a component along a; one more
// Gram-Schmidt step (delta += ac) removes it, so c stays orthogonal to a however small it is.
// Below kDegenerateNc2 the circle is numerically undetermined and the row is treated as exactly
// parallel (c = 0) or antipodal (the canonical circle through e_axis, with a_axis = a[axis]).
constexpr double kDegenerateNc2 = 1e-24;

TL_HD double reorth_nc2(double cc, double ac) { return cc - ac * ac; }

TL_HD bool needs_axis(double cc, double ac, const SlerpFrame& f) {
  return reorth_nc2(cc, ac) <= kDegenerateNc2 && f.delta < 0.0;
}

TL_HD void finish_frame(double cc, double ac, int64_t axis, double a_axis, SlerpFrame* f) {
  const double nc2 = reorth_nc2(cc, ac);
  if (nc2 > kDegenerateNc2) {
    const double nc = ::sqrt(nc2);
    f->inv_nc = 1.0 / nc;
    f->theta = ::atan2(nc, f->delta);
    f->delta += ac;
  } else if (f->delta > 0.0) {  // identical directions
    f->inv_nc = 0.0;
    f->theta = 0.0;
  } else {  // antipodal: the circle through e_axis
    f->beta = 0.0;
    f->axis = axis;
    f->delta = a_axis;
    f->inv_nc = 1.0 / ::sqrt(1.0 - a_axis * a_axis);
    f->theta = 3.14159265358979323846;
  }
}

struct SlerpAngles {
  double cos_t, sin_t;    // at t
  double cos_e, sin_e;    // at t + eps
};

TL_HD SlerpAngles angles(const SlerpFrame& f, double t, double eps) {
  SlerpAngles g;
  g.cos_t = ::cos(t * f.theta);
  g.sin_t = ::sin(t * f.theta);
  g.cos_e = ::cos((t + eps) * f.theta);
  g.sin_e = ::sin((t + eps) * f.theta);
  return g;
}

// Element j of the slerp outputs given raw z0_j, z1_j.
struct SlerpElem {
  double p, p_eps, tangent;
};

// `on_axis` is [j == f.axis] as 1.0 or 0.0 (a CPU loop passes 0.0 for all j and redoes element f.axis
// afterwards, so that the loop has no integer compare; x + 0.0 is what the element got either way).
TL_HD SlerpElem slerp_elem(const SlerpFrame& f, const SlerpAngles& g, double on_axis, double z0, double z1) {
  const double a = z0 * f.ia;
  const double b = z1 * f.ib;
  const double c = (f.beta * b + on_axis - f.delta * a) * f.inv_nc;
  SlerpElem e;
  e.p = a * g.cos_t + c * g.sin_t;
  e.p_eps = a * g.cos_e + c * g.sin_e;
  e.tangent = f.theta * (c * g.cos_t - a * g.sin_t);
  return e;
}

// Lerp: p = a + t (b - a), tangent = b - a (NVIDIA's W-space path, over the whole tensor).
struct LerpElem {
  double p, p_eps, tangent;
};

TL_HD LerpElem lerp_elem(double t, double eps, double a, double b) {
  const double diff = b - a;
  return LerpElem{a + t * diff, a + (t + eps) * diff, diff};
}

}  // namespace interp
}  // namespace tangentlens
