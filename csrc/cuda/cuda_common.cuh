// Helpers for the CUDA kernels (only c10/cuda and ATen core headers, so `nvcc -c` works against any
// torch wheel's headers).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

namespace tangentlens {
namespace cuda {

constexpr int kWarp = 32;

// Fixed butterfly: every lane ends with the same sum, in the same order on every run.
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Lexicographic (value, index) minimum over the warp.
__device__ __forceinline__ void warp_argmin(double* v, int64_t* i) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off >>= 1) {
    const double ov = __shfl_xor_sync(0xffffffffu, *v, off);
    const long long oi = __shfl_xor_sync(0xffffffffu, static_cast<long long>(*i), off);
    if (ov < *v || (ov == *v && oi < *i)) {
      *v = ov;
      *i = oi;
    }
  }
}

inline unsigned int blocks_for(int64_t work, int threads, int64_t cap = 1 << 20) {
  const int64_t b = (work + threads - 1) / threads;
  return static_cast<unsigned int>(b < 1 ? 1 : (b > cap ? cap : b));
}

}  // namespace cuda
}  // namespace tangentlens
