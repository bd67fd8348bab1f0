// CPU kernels of the counter-based generator: raw Philox4x32-10 and standard normals.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include "cpu_common.h"
#include "tangentlens/op_args.h"
#include "tangentlens/philox.h"

namespace tangentlens {
namespace cpu {

namespace {

// Pairs are generated in blocks of kBlock: first the Philox words (explicit AVX2 where the CPU has it),
// then Box-Muller in a plain loop the compiler vectorises (an AVX2 clone is selected at run time).
constexpr int64_t kBlock = 64;

// Philox words of pairs first .. first + n - 1 of one (seed, row, stream): the portable version.
void philox_words_scalar(uint64_t seed, uint64_t row, uint32_t stream, uint32_t first, int64_t n, uint32_t* wx,
                         uint32_t* wy, uint32_t* wz, uint32_t* ww) {
  for (int64_t i = 0; i < n; ++i) {
    const philox::U4 r = philox::block(seed, row, stream, first + static_cast<uint32_t>(i));
    wx[i] = r.x;
    wy[i] = r.y;
    wz[i] = r.z;
    ww[i] = r.w;
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TL_PHILOX_AVX2 1
// The same bijection, 16 blocks at a time: each 32-bit word sits in a 64-bit lane so that one
// vpmuludq gives the full 32x32 -> 64 product; four independent groups hide its latency. Only the low
// 32 bits of a lane are meaningful (vpmuludq ignores the high half), so no masking is needed until the
// words are packed. Integer arithmetic: bit-identical to the portable and CUDA versions.
__attribute__((target("avx2"))) void philox_words_avx2(uint64_t seed, uint64_t row, uint32_t stream, uint32_t first,
                                                       int64_t n, uint32_t* wx, uint32_t* wy, uint32_t* wz,
                                                       uint32_t* ww) {
  constexpr int kGroups = 4;
  __m256i key0[10], key1[10];
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    key0[r] = _mm256_set1_epi64x(k0);
    key1[r] = _mm256_set1_epi64x(k1);
    k0 += philox::kWeyl0;
    k1 += philox::kWeyl1;
  }
  const __m256i mul0 = _mm256_set1_epi64x(philox::kMul0), mul1 = _mm256_set1_epi64x(philox::kMul1);
  const __m256i ctr1 = _mm256_set1_epi64x(stream);
  const __m256i ctr2 = _mm256_set1_epi64x(static_cast<uint32_t>(row));
  const __m256i ctr3 = _mm256_set1_epi64x(static_cast<uint32_t>(row >> 32));
  const __m256i lanes = _mm256_set_epi64x(3, 2, 1, 0);
  const __m256i pack = _mm256_set_epi32(7, 7, 7, 7, 6, 4, 2, 0);  // low words of the four lanes
  int64_t i = 0;
  for (; i + 4 * kGroups <= n; i += 4 * kGroups) {
    __m256i c0[kGroups], c1[kGroups], c2[kGroups], c3[kGroups];
    for (int g = 0; g < kGroups; ++g) {
      c0[g] = _mm256_add_epi64(_mm256_set1_epi64x(first + static_cast<uint32_t>(i + 4 * g)), lanes);
      c1[g] = ctr1;
      c2[g] = ctr2;
      c3[g] = ctr3;
    }
    for (int r = 0; r < 10; ++r) {
      for (int g = 0; g < kGroups; ++g) {
        const __m256i p0 = _mm256_mul_epu32(c0[g], mul0);
        const __m256i p1 = _mm256_mul_epu32(c2[g], mul1);
        c0[g] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), c1[g]), key0[r]);
        c2[g] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), c3[g]), key1[r]);
        c1[g] = p1;
        c3[g] = p0;
      }
    }
    for (int g = 0; g < kGroups; ++g) {
      const int64_t o = i + 4 * g;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(wx + o), _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(c0[g], pack)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(wy + o), _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(c1[g], pack)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(wz + o), _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(c2[g], pack)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(ww + o), _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(c3[g], pack)));
    }
  }
  philox_words_scalar(seed, row, stream, first + static_cast<uint32_t>(i), n - i, wx + i, wy + i, wz + i, ww + i);
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

void philox_words(uint64_t seed, uint64_t row, uint32_t stream, uint32_t first, int64_t n, uint32_t* wx, uint32_t* wy,
                  uint32_t* wz, uint32_t* ww) {
#if defined(TL_PHILOX_AVX2)
  if (cpu_has_avx2()) return philox_words_avx2(seed, row, stream, first, n, wx, wy, wz, ww);
#endif
  philox_words_scalar(seed, row, stream, first, n, wx, wy, wz, ww);
}

// Box-Muller over a block of words; a plain loop that the compiler vectorises (AVX2 clone at run time).
TL_CPU_CLONES void box_muller_block(int64_t n, const uint32_t* wx, const uint32_t* wy, const uint32_t* wz,
                                    const uint32_t* ww, double* out /* 2n values */) {
  for (int64_t i = 0; i < n; ++i) {
    double n0, n1;
    philox::box_muller(philox::U4{wx[i], wy[i], wz[i], ww[i]}, &n0, &n1);
    out[2 * i] = n0;
    out[2 * i + 1] = n1;
  }
}

void normal_pairs(uint64_t seed, uint64_t row, uint32_t stream, uint32_t first_pair, int64_t n,
                  double* out /* 2n values */) {
  alignas(32) uint32_t wx[kBlock], wy[kBlock], wz[kBlock], ww[kBlock];
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t m = std::min<int64_t>(kBlock, n - i0);
    philox_words(seed, row, stream, first_pair + static_cast<uint32_t>(i0), m, wx, wy, wz, ww);
    box_muller_block(m, wx, wy, wz, ww, out + 2 * i0);
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
  check_counters(counters);
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
  check_stream(stream);
  check_row_range(start, out.size(0));
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
