// Helpers for the CPU kernels.
#pragma once

#include <cstdint>

#include "tangentlens/convert.h"

// Loops left to the auto-vectoriser get an AVX2 clone, selected at run time (the wheel stays portable).
// -ffp-contract=off holds in both clones, so they give bit-identical results.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define TL_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TL_CPU_CLONES
#endif

namespace tangentlens {
namespace cpu {

// Normals [col_begin, col_end) of (seed, row, stream) into out[0 .. col_end - col_begin), in double.
void fill_normals(uint64_t seed, uint64_t row, uint32_t stream, int64_t col_begin, int64_t col_end, double* out);

}  // namespace cpu
}  // namespace tangentlens
