// Portability macros for code shared by the CPU (.cpp) and CUDA (.cu) kernels.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TL_HD __host__ __device__ __forceinline__
#define TL_UNROLL _Pragma("unroll")
#else
#define TL_HD inline
#define TL_UNROLL _Pragma("GCC unroll 16")
#endif

// Correctly rounded double arithmetic that is never contracted into FMA. On the device the _rn
// intrinsics forbid contraction; on the host the CPU sources are compiled with -ffp-contract=off.
// Together they make the CPU and CUDA kernels produce bit-identical results.
namespace tangentlens {
namespace exact {

#if defined(__CUDA_ARCH__)
TL_HD double add(double a, double b) { return __dadd_rn(a, b); }
TL_HD double sub(double a, double b) { return __dsub_rn(a, b); }
TL_HD double mul(double a, double b) { return __dmul_rn(a, b); }
TL_HD double div(double a, double b) { return __ddiv_rn(a, b); }
TL_HD double sqrt(double a) { return __dsqrt_rn(a); }
TL_HD uint64_t as_bits(double x) { return static_cast<uint64_t>(__double_as_longlong(x)); }
TL_HD double from_bits(uint64_t b) { return __longlong_as_double(static_cast<long long>(b)); }
#else
TL_HD double add(double a, double b) { return a + b; }
TL_HD double sub(double a, double b) { return a - b; }
TL_HD double mul(double a, double b) { return a * b; }
TL_HD double div(double a, double b) { return a / b; }
TL_HD double sqrt(double a) { return __builtin_sqrt(a); }
TL_HD uint64_t as_bits(double x) {
  uint64_t b;
  __builtin_memcpy(&b, &x, sizeof(b));
  return b;
}
TL_HD double from_bits(uint64_t b) {
  double x;
  __builtin_memcpy(&x, &b, sizeof(x));
  return x;
}
#endif

// a * b + c with two roundings (never an FMA).
TL_HD double madd(double a, double b, double c) { return add(mul(a, b), c); }

}  // namespace exact
}  // namespace tangentlens
