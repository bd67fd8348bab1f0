// Helpers for the CPU kernels.
#pragma once

#include <cstdint>

#include "tangentlens/convert.h"

namespace tangentlens {
namespace cpu {

// Normals [col_begin, col_end) of (seed, row, stream) into out[0 .. col_end - col_begin), in double.
void fill_normals(uint64_t seed, uint64_t row, uint32_t stream, int64_t col_begin, int64_t col_end, double* out);

}  // namespace cpu
}  // namespace tangentlens
