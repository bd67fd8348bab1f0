// CPU kernels of the counter-based generator: raw Philox4x32-10 and standard normals.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>

#include "cpu_common.h"
#include "tangentlens/checks.h"
#include "tangentlens/philox.h"

namespace tangentlens {
namespace cpu {

namespace {

// Pairs are generated in blocks of kBlock so that the loops below have no cross-iteration dependence
// and the compiler can vectorise them (an AVX2 clone is selected at run time where GCC supports it).
constexpr int64_t kBlock = 64;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define TL_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TL_CPU_CLONES
#endif

TL_CPU_CLONES void normal_pairs(uint64_t seed, uint64_t row, uint32_t stream, uint32_t first_pair, int64_t n,
                                double* out /* 2n values */) {
  for (int64_t i = 0; i < n; ++i) {
    double n0, n1;
    philox::box_muller(philox::block(seed, row, stream, first_pair + static_cast<uint32_t>(i)), &n0, &n1);
    out[2 * i] = n0;
    out[2 * i + 1] = n1;
  }
}

}  // namespace

void fill_normals(uint64_t seed, uint64_t row, uint32_t stream, int64_t col_begin, int64_t col_end, double* out) {
  int64_t col = col_begin;
  if (col < col_end && (col & 1)) {  // odd start: the sin half of a pair
    *out++ = philox::normal_at(seed, row, stream, static_cast<uint64_t>(col));
    ++col;
  }
  const int64_t full_pairs = (col_end - col) / 2;
  normal_pairs(seed, row, stream, static_cast<uint32_t>(col >> 1), full_pairs, out);
  out += 2 * full_pairs;
  col += 2 * full_pairs;
  if (col < col_end) *out = philox::normal_at(seed, row, stream, static_cast<uint64_t>(col));
}

namespace {

at::Tensor philox4x32_10_cpu(const at::Tensor& counters, int64_t seed) {
  TORCH_CHECK(counters.dim() == 2 && counters.size(1) == 4, "counters: expected shape [N, 4], got ",
              counters.sizes());
  TORCH_CHECK(counters.scalar_type() == at::kLong, "counters: expected int64 holding uint32 words, got ",
              counters.scalar_type());
  const at::Tensor c = counters.contiguous();
  at::Tensor out = at::empty_like(c);
  const int64_t* src = c.data_ptr<int64_t>();
  int64_t* dst = out.data_ptr<int64_t>();
  const uint64_t key = static_cast<uint64_t>(seed);
  at::parallel_for(0, c.size(0), 1024, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t* w = src + 4 * i;
      const philox::U4 r = philox::philox4x32_10(
          philox::U4{static_cast<uint32_t>(w[0]), static_cast<uint32_t>(w[1]), static_cast<uint32_t>(w[2]),
                     static_cast<uint32_t>(w[3])},
          static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32));
      dst[4 * i] = r.x;
      dst[4 * i + 1] = r.y;
      dst[4 * i + 2] = r.z;
      dst[4 * i + 3] = r.w;
    }
  });
  return out;
}

void philox_normal_cpu(at::Tensor& out, int64_t seed, int64_t start, int64_t stream) {
  check_float_matrix(out, "out");
  TORCH_CHECK(stream >= 0 && stream <= 0xFFFFFFFFll, "stream: expected an integer in [0, 2^32), got ", stream);
  const int64_t rows = out.size(0), dim = out.size(1);
  if (rows == 0 || dim == 0) return;
  const int64_t ld = out.stride(0);
  const uint64_t useed = static_cast<uint64_t>(seed), ustart = static_cast<uint64_t>(start);
  // Parallel over the flat (row, column) range so that few long rows use every core too.
  const int64_t total = rows * dim;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "philox_normal_cpu", [&] {
    scalar_t* base = out.data_ptr<scalar_t>();
    at::parallel_for(0, total, 8192, [&](int64_t b, int64_t e) {
      double buf[2 * kBlock];
      int64_t idx = b;
      while (idx < e) {
        const int64_t r = idx / dim, c0 = idx % dim;
        const int64_t c1 = std::min<int64_t>(dim, c0 + std::min<int64_t>(2 * kBlock - (c0 & 1), e - idx));
        fill_normals(useed, ustart + static_cast<uint64_t>(r), static_cast<uint32_t>(stream), c0, c1, buf);
        scalar_t* dst = base + r * ld;
        for (int64_t c = c0; c < c1; ++c) dst[c] = to_out<scalar_t>(buf[c - c0]);
        idx += c1 - c0;
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(tangentlens, CPU, m) {
  m.impl("philox4x32_10", &philox4x32_10_cpu);
  m.impl("philox_normal_", &philox_normal_cpu);
}

}  // namespace cpu
}  // namespace tangentlens
