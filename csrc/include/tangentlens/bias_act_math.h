// Per-element math of the fused bias + activation + gain + clamp op (NVIDIA's bias_act contract), shared
// by the CPU and CUDA kernels so the CPU tests validate the GPU math.
//
//   y = clamp(gain * act(v), -clamp, clamp),  v = x + b   (clamp < 0: no clamping)
//   dy/dv = gain * act'(v) where -clamp <= gain * act(v) <= clamp (torch.clamp's derivative: 1 on the
//   boundary inclusive), else 0 (also 0 for a NaN pre-clamp value, as in autograd of torch.clamp).
//
// The derivatives follow torch's autograd formulas, kinks included: relu'(0) = 0, lrelu'(0) = alpha,
// elu'(0) = selu'(0)/lambda = exp(0) = 1; tanh and sigmoid use their outputs (1 - y^2, y (1 - y));
// softplus (beta 1, threshold 20): v > 20 -> v, derivative 1; swish = v sigmoid(v).
// A is the accumulation type: float for fp16/bf16/fp32, double for fp64.
#pragma once

#include <cstdint>
#include <type_traits>

#include "tangentlens/macros.h"

#if !defined(__CUDACC__)
#include <cmath>
#endif

namespace tangentlens {
namespace bias_act {

enum Act : int { kLinear = 0, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish, kNumActs };

constexpr double kSeluLambda = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSoftplusThreshold = 20.0;

TL_HD float m_exp(float x) { return ::expf(x); }
TL_HD double m_exp(double x) { return ::exp(x); }
TL_HD float m_expm1(float x) { return ::expm1f(x); }
TL_HD double m_expm1(double x) { return ::expm1(x); }
TL_HD float m_log1p(float x) { return ::log1pf(x); }
TL_HD double m_log1p(double x) { return ::log1p(x); }
TL_HD float m_tanh(float x) { return ::tanhf(x); }
TL_HD double m_tanh(double x) { return ::tanh(x); }

template <typename A>
TL_HD A sigmoid(A v) {
  return A(1) / (A(1) + m_exp(-v));
}

// act(v) and, when d is non-null, act'(v) (before gain and clamp).
template <int kAct, typename A>
TL_HD A act_grad(A v, A alpha, A* d) {
  if constexpr (kAct == kLinear) {
    *d = A(1);
    return v;
  } else if constexpr (kAct == kRelu) {
    *d = v > A(0) ? A(1) : A(0);
    return v > A(0) ? v : A(0);
  } else if constexpr (kAct == kLrelu) {
    *d = v > A(0) ? A(1) : alpha;
    return v > A(0) ? v : v * alpha;
  } else if constexpr (kAct == kTanh) {
    const A y = m_tanh(v);
    *d = A(1) - y * y;
    return y;
  } else if constexpr (kAct == kSigmoid) {
    const A y = sigmoid(v);
    *d = y * (A(1) - y);
    return y;
  } else if constexpr (kAct == kElu) {
    const bool neg = v <= A(0);
    *d = neg ? m_exp(v) : A(1);
    return neg ? m_expm1(v) : v;
  } else if constexpr (kAct == kSelu) {
    const A lam = A(kSeluLambda), la = A(kSeluAlpha * kSeluLambda);
    const bool neg = v <= A(0);
    *d = neg ? la * m_exp(v) : lam;
    return neg ? m_expm1(v) * la : v * lam;
  } else if constexpr (kAct == kSoftplus) {
    const bool lin = v > A(kSoftplusThreshold);
    const A z = m_exp(lin ? A(0) : v);
    *d = lin ? A(1) : z / (z + A(1));
    return lin ? v : m_log1p(z);
  } else {
    static_assert(kAct == kSwish, "unknown activation");
    const A s = sigmoid(v);
    *d = s + v * s * (A(1) - s);
    return v * s;
  }
}

// Forward only: clamp(gain * act(v)).
template <int kAct, typename A>
TL_HD A forward(A v, A alpha, A gain, A clamp) {
  A d;
  A y = act_grad<kAct>(v, alpha, &d) * gain;
  if (clamp >= A(0)) y = y < -clamp ? -clamp : (y > clamp ? clamp : y);
  return y;
}

// Forward and total derivative dy/dv (gain and clamp included).
template <int kAct, typename A>
TL_HD A forward_grad(A v, A alpha, A gain, A clamp, A* dy) {
  A d;
  A y = act_grad<kAct>(v, alpha, &d) * gain;
  d = d * gain;
  if (clamp >= A(0)) {
    const bool inside = y >= -clamp && y <= clamp;  // false for NaN
    d = inside ? d : A(0);
    y = y < -clamp ? -clamp : (y > clamp ? clamp : y);
  }
  *dy = d;
  return y;
}

// The tangent: dy * t, exactly 0 where the derivative is 0 (relu's negative side, clamped elements),
// like autograd's masked gradients, even for a non-finite t.
template <typename A>
TL_HD A tangent(A dy, A t) {
  return dy == A(0) ? A(0) : dy * t;
}

// Host-side dispatch of a runtime activation code to a compile-time one: f(std::integral_constant<int, Act>).
template <typename F>
inline void dispatch_act(int64_t code, F&& f) {
  switch (code) {
    case kLinear: f(std::integral_constant<int, kLinear>{}); break;
    case kRelu: f(std::integral_constant<int, kRelu>{}); break;
    case kLrelu: f(std::integral_constant<int, kLrelu>{}); break;
    case kTanh: f(std::integral_constant<int, kTanh>{}); break;
    case kSigmoid: f(std::integral_constant<int, kSigmoid>{}); break;
    case kElu: f(std::integral_constant<int, kElu>{}); break;
    case kSelu: f(std::integral_constant<int, kSelu>{}); break;
    case kSoftplus: f(std::integral_constant<int, kSoftplus>{}); break;
    default: f(std::integral_constant<int, kSwish>{}); break;
  }
}

}  // namespace bias_act
}  // namespace tangentlens
