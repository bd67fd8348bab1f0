// Argument checks shared by the CPU and CUDA entry points; messages name the argument.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace tangentlens {

inline bool is_supported_float(c10::ScalarType t) {
  return t == c10::kFloat || t == c10::kDouble || t == c10::kHalf || t == c10::kBFloat16;
}

inline void check_float_matrix(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 2, name, ": expected a 2-D tensor [rows, dim], got ", x.dim(), " dims");
  TORCH_CHECK(is_supported_float(x.scalar_type()), name, ": expected float16, bfloat16, float32 or float64, got ",
              x.scalar_type());
  TORCH_CHECK(x.size(1) <= 1 || x.stride(1) == 1, name, ": expected unit stride along dim 1, got stride ",
              x.stride(1));
}

// An optional output: either empty (skipped) or [rows, dim] like `like`.
inline bool check_optional_out(const at::Tensor& x, const char* name, int64_t rows, int64_t dim,
                               const at::Tensor& like) {
  if (x.numel() == 0 && (x.dim() != 2 || x.size(0) == 0)) return false;
  check_float_matrix(x, name);
  TORCH_CHECK(x.size(0) == rows && x.size(1) == dim, name, ": expected shape [", rows, ", ", dim, "], got ",
              x.sizes());
  TORCH_CHECK(x.device() == like.device(), name, ": expected device ", like.device(), ", got ", x.device());
  return true;
}

}  // namespace tangentlens
