// Per-pixel LPIPS channel-normalisation math shared by the CPU and CUDA kernels (SPEC section 3).
//
// For one pixel with channel vector f (s = sum_c f_c^2) the normalised features are f_hat = a f with
//   eps_mode 0 (lpips):        a = 1 / (root(s) + eps)
//   eps_mode 1 (torchmetrics): a = 1 / root(s + eps)
// The tangent of the normalisation along t (dot = <f, t>) is d f_hat = a t - c f with
//   eps_mode 0: c = a^2 dot / root(s)   (and c = 0 at f = 0: the one-sided derivative there is t / eps)
//   eps_mode 1: c = a^3 dot
// which is (t - f_hat <f_hat, t>) / root(s + eps) for eps_mode 1 and the same with the eps-outside norm for 0.
#pragma once

#include "tangentlens/macros.h"

#if !defined(__CUDACC__)
#include <cmath>
#endif

namespace tangentlens {
namespace lpips {

enum EpsMode : int64_t { kEpsOutside = 0, kEpsInside = 1 };

TL_HD float root(float x) { return ::sqrtf(x); }
TL_HD double root(double x) { return ::sqrt(x); }

template <typename A>
TL_HD A inv_norm(A s, A eps, int64_t mode) {
  return mode == kEpsInside ? A(1) / root(s + eps) : A(1) / (root(s) + eps);
}

template <typename A>
TL_HD A tangent_coef(A s, A dot, A a, int64_t mode) {
  if (mode == kEpsInside) return a * a * a * dot;
  return s > A(0) ? a * a * dot / root(s) : A(0);
}

}  // namespace lpips
}  // namespace tangentlens
