// dtype conversions shared by the CPU and CUDA kernels. Half and bfloat16 go through float on both
// devices, so both round identically.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <type_traits>

#include "tangentlens/macros.h"

namespace tangentlens {

template <typename T>
TL_HD T to_out(double x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else if constexpr (std::is_same_v<T, float>) {
    return static_cast<float>(x);
  } else {
    return T(static_cast<float>(x));
  }
}

template <typename T>
TL_HD double to_double(T x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    return static_cast<double>(static_cast<float>(x));
  }
}

}  // namespace tangentlens
