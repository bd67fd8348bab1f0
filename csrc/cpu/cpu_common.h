// Helpers for the CPU kernels.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

namespace tangentlens {
namespace cpu {

// double -> output dtype. Half and bfloat16 go through float, exactly as the CUDA kernels do, so both
// devices round identically.
template <typename T>
inline T to_out(double x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else if constexpr (std::is_same_v<T, float>) {
    return static_cast<float>(x);
  } else {
    return T(static_cast<float>(x));
  }
}

template <typename T>
inline double to_double(T x) {
  return static_cast<double>(static_cast<std::conditional_t<std::is_same_v<T, double>, double, float>>(x));
}

// Normals [col_begin, col_end) of (seed, row, stream) into out[0 .. col_end - col_begin), in double.
void fill_normals(uint64_t seed, uint64_t row, uint32_t stream, int64_t col_begin, int64_t col_end, double* out);

}  // namespace cpu
}  // namespace tangentlens
