// Argument validation of the bias_act ops, shared by the CPU and CUDA entry points. Host-only.
//
// x: any rank, contiguous (the Python wrappers make it so); viewed as [outer, C, inner] around `dim`
// (C = x.size(dim), inner = prod of the sizes after dim). b: [C] or undefined. Tangents tx: [K, *x.shape]
// contiguous; tb: [K, C] or undefined. Everything shares x's dtype and device. `dim` is checked (in
// [0, x.dim())) only when b or tb is given, as in NVIDIA's kernel; otherwise it is ignored.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

#include "tangentlens/bias_act_math.h"
#include "tangentlens/checks.h"

namespace tangentlens {

struct BiasActGeom {
  int64_t n = 0;      // elements of x
  int64_t c = 1;      // channels (size of dim), 1 without bias
  int64_t inner = 1;  // elements after dim (the bias is constant over runs of `inner` elements)
  int64_t k = 0;      // tangents
  bool has_b = false, has_tb = false;
};

inline c10::ScalarType bias_act_acc_dtype(c10::ScalarType t) { return t == c10::kDouble ? c10::kDouble : c10::kFloat; }

inline void check_like_x(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), name, ": expected the dtype of x (", x.scalar_type(), "), got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), name, ": expected device ", x.device(), ", got ", t.device());
  TORCH_CHECK(t.is_contiguous(), name, ": expected a contiguous tensor, got strides ", t.strides());
}

inline BiasActGeom check_bias_act(const at::Tensor& x, const std::optional<at::Tensor>& b, int64_t dim, int64_t act,
                                  double alpha, double gain, double clamp, bool has_tb = false) {
  TORCH_CHECK(is_supported_float(x.scalar_type()), "x: expected float16, bfloat16, float32 or float64, got ",
              x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), "x: expected a contiguous tensor, got strides ", x.strides());
  TORCH_CHECK(act >= 0 && act < bias_act::kNumActs, "act: expected an activation code in [0, ", bias_act::kNumActs,
              "), got ", act);
  TORCH_CHECK(std::isfinite(alpha), "alpha: expected a finite number, got ", alpha);
  TORCH_CHECK(std::isfinite(gain), "gain: expected a finite number, got ", gain);
  TORCH_CHECK(!std::isnan(clamp), "clamp: expected a number (< 0: no clamping), got NaN");
  BiasActGeom g;
  g.n = x.numel();
  g.has_b = b.has_value() && b->defined();
  g.has_tb = has_tb;
  if (g.has_b || g.has_tb) {
    TORCH_CHECK(dim >= 0 && dim < x.dim(), "dim: expected an integer in [0, ", x.dim(), ") (x has ", x.dim(),
                " dims), got ", dim);
    g.c = x.size(dim);
    g.inner = 1;
    for (int64_t i = dim + 1; i < x.dim(); ++i) g.inner *= x.size(i);
  }
  if (g.has_b) {
    TORCH_CHECK(b->dim() == 1 && b->size(0) == g.c, "b: expected shape [", g.c, "] (x.shape[", dim, "]), got ",
                b->sizes());
    check_like_x(*b, x, "b");
  }
  return g;
}

inline BiasActGeom check_bias_act_jvp(const at::Tensor& x, const std::optional<at::Tensor>& b, const at::Tensor& tx,
                                      const std::optional<at::Tensor>& tb, int64_t dim, int64_t act, double alpha,
                                      double gain, double clamp) {
  const bool has_tb = tb.has_value() && tb->defined();
  BiasActGeom g = check_bias_act(x, b, dim, act, alpha, gain, clamp, has_tb);
  bool shape_ok = tx.dim() == x.dim() + 1;
  for (int64_t i = 0; shape_ok && i < x.dim(); ++i) shape_ok = tx.size(i + 1) == x.size(i);
  TORCH_CHECK(shape_ok, "tx: expected shape [K, *x.shape] (K tangents of x, x.shape = ", x.sizes(), "), got ",
              tx.sizes());
  check_like_x(tx, x, "tx");
  g.k = tx.size(0);
  if (has_tb) {
    TORCH_CHECK(tb->dim() == 2 && tb->size(0) == g.k && tb->size(1) == g.c, "tb: expected shape [", g.k, ", ", g.c,
                "] (K tangents of b), got ", tb->sizes());
    check_like_x(*tb, x, "tb");
  }
  return g;
}

}  // namespace tangentlens
