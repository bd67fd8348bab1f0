// Argument validation of the LPIPS ops, shared by the CPU and CUDA entry points. Host-only.
//
// Feature maps are [N, C, H, W] in one of two dense layouts: NCHW contiguous (pixels contiguous per
// channel) or channels_last (channels contiguous per pixel). Tangents are [N, K, C, H, W] with each
// [C, H, W] slice in the layout of f (a channels_last tangent stack is t.permute(0, 1, 3, 4, 2) contiguous).
// The Python wrappers convert other strides; the kernels only accept these two.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "tangentlens/checks.h"
#include "tangentlens/lpips_math.h"

namespace tangentlens {

struct LpipsGeom {
  int64_t n = 0, c = 0, p = 0, k = 0;  // samples, channels, pixels (H W), tangents
  bool channels_last = false;
};

inline c10::ScalarType lpips_acc_dtype(c10::ScalarType t) { return t == c10::kDouble ? c10::kDouble : c10::kFloat; }

inline void check_feature_map(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 4, name, ": expected a 4-D feature map [N, C, H, W], got ", x.dim(), " dims");
  TORCH_CHECK(is_supported_float(x.scalar_type()), name, ": expected float16, bfloat16, float32 or float64, got ",
              x.scalar_type());
}

// True for channels_last, false for NCHW contiguous; anything else is an error.
inline bool feature_layout(const at::Tensor& x, const char* name) {
  if (x.is_contiguous()) return false;
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), name,
              ": expected an NCHW-contiguous or channels_last tensor, got strides ", x.strides());
  return true;
}

inline void check_lpips_weight(const at::Tensor& w, const at::Tensor& f) {
  const auto acc = lpips_acc_dtype(f.scalar_type());
  TORCH_CHECK(w.dim() == 1 && w.size(0) == f.size(1), "weight: expected shape [", f.size(1), "] (one per channel), got ",
              w.sizes());
  TORCH_CHECK(w.scalar_type() == acc, "weight: expected ", acc, " for ", f.scalar_type(), " features, got ",
              w.scalar_type());
  TORCH_CHECK(w.is_contiguous(), "weight: expected a contiguous tensor");
  TORCH_CHECK(w.device() == f.device(), "weight: expected device ", f.device(), ", got ", w.device());
}

inline void check_eps(double eps, int64_t mode) {
  TORCH_CHECK(mode == lpips::kEpsOutside || mode == lpips::kEpsInside,
              "eps_mode: expected 0 (outside the sqrt) or 1 (inside), got ", mode);
  TORCH_CHECK(eps >= 0.0 && eps < 1e300, "eps: expected a finite number >= 0, got ", eps);
}

inline LpipsGeom check_layer_distance(const at::Tensor& f0, const at::Tensor& f1, const at::Tensor& w, double eps,
                                      int64_t mode) {
  check_feature_map(f0, "f0");
  check_feature_map(f1, "f1");
  TORCH_CHECK(f0.sizes() == f1.sizes(), "f1: expected the shape of f0 ", f0.sizes(), ", got ", f1.sizes());
  TORCH_CHECK(f0.scalar_type() == f1.scalar_type(), "f1: expected the dtype of f0 (", f0.scalar_type(), "), got ",
              f1.scalar_type());
  TORCH_CHECK(f0.device() == f1.device(), "f1: expected device ", f0.device(), ", got ", f1.device());
  check_lpips_weight(w, f0);
  check_eps(eps, mode);
  LpipsGeom g;
  g.n = f0.size(0);
  g.c = f0.size(1);
  g.p = f0.size(2) * f0.size(3);
  g.channels_last = feature_layout(f0, "f0");
  // A map dense in both layouts (1x1 pixels or one channel) counts as NCHW, for f0 and f1 alike.
  TORCH_CHECK(feature_layout(f1, "f1") == g.channels_last, "f1: expected the memory layout of f0 (",
              g.channels_last ? "channels_last" : "NCHW", ")");
  return g;
}

inline LpipsGeom check_tangent_norm(const at::Tensor& f, const at::Tensor& t, const at::Tensor& w, double eps,
                                    int64_t mode) {
  check_feature_map(f, "f");
  TORCH_CHECK(t.dim() == 5, "tangents: expected a 5-D tensor [N, K, C, H, W], got ", t.dim(), " dims");
  TORCH_CHECK(t.size(0) == f.size(0) && t.size(2) == f.size(1) && t.size(3) == f.size(2) && t.size(4) == f.size(3),
              "tangents: expected shape [", f.size(0), ", K, ", f.size(1), ", ", f.size(2), ", ", f.size(3),
              "], got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == f.scalar_type(), "tangents: expected the dtype of f (", f.scalar_type(), "), got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == f.device(), "tangents: expected device ", f.device(), ", got ", t.device());
  check_lpips_weight(w, f);
  check_eps(eps, mode);
  LpipsGeom g;
  g.n = f.size(0);
  g.c = f.size(1);
  g.p = f.size(2) * f.size(3);
  g.k = t.size(1);
  g.channels_last = feature_layout(f, "f");
  if (g.channels_last) {
    TORCH_CHECK(t.permute({0, 1, 3, 4, 2}).is_contiguous(),
                "tangents: expected each [C, H, W] slice channels_last like f (t.permute(0, 1, 3, 4, 2) contiguous), "
                "got strides ",
                t.strides());
  } else {
    TORCH_CHECK(t.is_contiguous(), "tangents: expected a contiguous tensor like f (NCHW), got strides ", t.strides());
  }
  return g;
}

}  // namespace tangentlens
