// Counter-based random numbers shared by the CPU and CUDA kernels.
//
// Generator: Philox4x32-10 (Salmon et al., SC'11), the same bijection as Random123 and cuRAND.
// Normals:  Box-Muller on two 53-bit uniforms taken from one Philox block, evaluated in double
//           precision with our own log / sincos built from correctly rounded + - * / sqrt and bit
//           operations only, so a
//           value depends on nothing but (seed, row, stream, column) - not on the device, the
//           compiler's libm, the chunking of the rows or the output dtype (fp32 is the rounded fp64).
//
// Counter layout for row r (64-bit), stream s and column pair j:  ctr = {j, s, lo32(r), hi32(r)},
// key = {lo32(seed), hi32(seed)}. Columns 2j and 2j+1 of a row are the cos / sin halves of pair j.
#pragma once

#include "tangentlens/macros.h"

namespace tangentlens {
namespace philox {

constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;

struct U4 {
  uint32_t x, y, z, w;
};

TL_HD U4 philox4x32_10(U4 ctr, uint32_t k0, uint32_t k1) {
TL_UNROLL
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kMul0) * ctr.x;
    const uint64_t p1 = static_cast<uint64_t>(kMul1) * ctr.z;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    ctr = U4{hi1 ^ ctr.y ^ k0, lo1, hi0 ^ ctr.w ^ k1, lo0};
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return ctr;
}

TL_HD U4 block(uint64_t seed, uint64_t row, uint32_t stream, uint32_t pair) {
  return philox4x32_10(U4{pair, stream, static_cast<uint32_t>(row), static_cast<uint32_t>(row >> 32)},
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// 52 random bits from two words: the top 26 of each.
TL_HD uint64_t bits52(uint32_t a, uint32_t b) {
  return (static_cast<uint64_t>(a >> 6) << 26) | static_cast<uint64_t>(b >> 6);
}

// 53 random bits from two words: the top 27 of a and the top 26 of b.
TL_HD uint64_t bits53(uint32_t a, uint32_t b) {
  return (static_cast<uint64_t>(a >> 5) << 26) | static_cast<uint64_t>(b >> 6);
}

constexpr double kTwoPow52 = 4503599627370496.0;   // 2^52
constexpr double kTwoPow53Inv = 1.0 / 9007199254740992.0;  // 2^-53
constexpr double kTwoPow52Inv = 1.0 / kTwoPow52;           // 2^-52
constexpr double kTwoPow50Inv = 1.0 / 1125899906842624.0;  // 2^-50

// Exact integer -> double for k < 2^52 with bit operations only (vectorises without AVX-512).
TL_HD double u52_to_double(uint64_t k) {
  return exact::sub(exact::from_bits(0x4330000000000000ull | k), kTwoPow52);
}

// Uniform on [0, 1) with 53 random bits (a multiple of 2^-53).
TL_HD double uniform53(uint32_t a, uint32_t b) { return static_cast<double>(bits53(a, b)) * kTwoPow53Inv; }

// ---- double-precision log and sincos from exact + - * / only (about 1 ulp), branch-free ----------

constexpr double kLn2Hi = 6.93147180369123816490e-01;  // ln 2 rounded to 32 bits: e * kLn2Hi is exact
constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln 2 - kLn2Hi

// c0 + c1 y + ... + c9 y^9 by Estrin's scheme: a dependency chain of 4 multiply-adds instead of Horner's 9,
// which is what bounds the vectorised loops (their latency, not their throughput).
TL_HD double estrin10(double y, double c0, double c1, double c2, double c3, double c4, double c5, double c6, double c7,
                      double c8, double c9) {
  using namespace exact;
  const double y2 = mul(y, y);
  const double y4 = mul(y2, y2);
  const double y8 = mul(y4, y4);
  const double q0 = madd(c1, y, c0), q1 = madd(c3, y, c2), q2 = madd(c5, y, c4), q3 = madd(c7, y, c6);
  const double q4 = madd(c9, y, c8);
  const double r0 = madd(q1, y2, q0), r1 = madd(q3, y2, q2);
  return madd(q4, y8, madd(r1, y4, r0));
}

// log(x) for a positive normal double x.
TL_HD double log_pos(double x) {
  using namespace exact;
  const uint64_t b = as_bits(x);
  const uint64_t biased = (b >> 52) & 0x7ff;
  const uint64_t mant = b & 0x000FFFFFFFFFFFFFull;
  // Centre the mantissa on 1: m in [sqrt(1/2), sqrt(2)], halving it (exponent 0x3FE) when 1.m > sqrt(2).
  // Integer arithmetic only, no branch or select, so the loops over many values vectorise.
  const uint64_t big = mant > 0x6A09E667F3BCCull ? 1u : 0u;  // mantissa bits of sqrt(2), rounded down
  const double m = from_bits(mant | ((0x3FFull - big) << 52));
  const double de = sub(u52_to_double(biased + big), 1023.0);
  // log m = 2 atanh(s), s = (m - 1)/(m + 1), |s| <= 0.1716: the series to s^21 is below 2^-53.
  const double s = div(sub(m, 1.0), add(m, 1.0));
  const double s2 = mul(s, s);
  const double p = estrin10(s2, 1.0 / 3.0, 1.0 / 5.0, 1.0 / 7.0, 1.0 / 9.0, 1.0 / 11.0, 1.0 / 13.0, 1.0 / 15.0,
                           1.0 / 17.0, 1.0 / 19.0, 1.0 / 21.0);
  const double two_s = add(s, s);
  const double log_m = add(two_s, mul(mul(two_s, s2), p));
  return add(mul(de, kLn2Hi), add(log_m, mul(de, kLn2Lo)));
}

// sin and cos of 2*pi*k/2^52 for a 52-bit integer k. The quarter turn comes from k's top bits, so
// the range reduction is exact; only x = f * pi/2 with |f| <= 1/2 is rounded.
TL_HD void sincos_2pi_bits52(uint64_t k, double* s_out, double* c_out) {
  using namespace exact;
  constexpr uint64_t kHalf = 1ull << 49;  // 1/2 quarter turn in units of 2^-50 quarter turns
  const uint64_t n = (k + kHalf) >> 50;   // nearest quarter turn, 0..4
  const uint64_t g = k + kHalf - (n << 50);  // f + 1/2 in units of 2^-50, in [0, 2^50)
  const double f = mul(sub(u52_to_double(g), 562949953421312.0), kTwoPow50Inv);  // exact, [-1/2, 1/2)
  const double x = mul(f, 1.5707963267948966);                                     // |x| <= pi/4
  const double x2 = mul(x, x);
  // Taylor polynomials; on |x| <= pi/4 the first omitted terms are below 1e-19.
  const double ps = estrin10(x2, -1.0 / 6.0, 1.0 / 120.0, -1.0 / 5040.0, 1.0 / 362880.0, -1.0 / 39916800.0,
                            1.0 / 6227020800.0, -1.0 / 1307674368000.0, 1.0 / 355687428096000.0,
                            -1.0 / 121645100408832000.0, 0.0);  // x^3 .. x^19 terms of sin x / x
  const double sin_x = add(x, mul(mul(x, x2), ps));
  const double pc = estrin10(x2, -0.5, 1.0 / 24.0, -1.0 / 720.0, 1.0 / 40320.0, -1.0 / 3628800.0, 1.0 / 479001600.0,
                            -1.0 / 87178291200.0, 1.0 / 20922789888000.0, -1.0 / 6402373705728000.0,
                            1.0 / 2432902008176640000.0);  // x^2 .. x^20 terms of cos x
  const double cos_x = madd(x2, pc, 1.0);
  // Rotate by n quarter turns: odd n swaps sin and cos, and the signs follow the quadrant. Done with
  // bit masks (exact, and vectorisable: no branch or select).
  const uint64_t swap = 0 - (n & 1u);  // all ones for odd n
  const uint64_t sb = as_bits(sin_x), cb = as_bits(cos_x);
  const uint64_t s0 = (cb & swap) | (sb & ~swap);
  const uint64_t c0 = (sb & swap) | (cb & ~swap);
  *s_out = from_bits(s0 ^ ((n & 2u) << 62));
  *c_out = from_bits(c0 ^ (((n + 1u) & 2u) << 62));
}

// Two independent standard normals from one Philox block (Box-Muller):
// u1 = 1 - bits52(x, y) 2^-52 in (0, 1] (log is finite; r <= sqrt(-2 log 2^-52) ~ 8.49) and
// angle = 2 pi bits52(z, w) 2^-52.
TL_HD void box_muller(U4 r, double* n0, double* n1) {
  using namespace exact;
  const double u1 = sub(1.0, mul(u52_to_double(bits52(r.x, r.y)), kTwoPow52Inv));
  const double radius = exact::sqrt(mul(-2.0, log_pos(u1)));
  double s, c;
  sincos_2pi_bits52(bits52(r.z, r.w), &s, &c);
  *n0 = mul(radius, c);
  *n1 = mul(radius, s);
}

// Normal number `col` of (seed, row, stream), computed on its own (used by tests and tails).
TL_HD double normal_at(uint64_t seed, uint64_t row, uint32_t stream, uint64_t col) {
  double n0, n1;
  box_muller(block(seed, row, stream, static_cast<uint32_t>(col >> 1)), &n0, &n1);
  return (col & 1) ? n1 : n0;
}

// Stream ids: z0 and z1 of a path and its t. philox_normal's default stream is 0 (= z0 of paths).
constexpr uint32_t kStreamZ0 = 0;
constexpr uint32_t kStreamZ1 = 1;
constexpr uint32_t kStreamT = 2;

// t ~ U[0, 1) for a path sample: the first two words of block (seed, row, kStreamT, 0).
TL_HD double path_t(uint64_t seed, uint64_t row) {
  const U4 r = block(seed, row, kStreamT, 0);
  return uniform53(r.x, r.y);
}

}  // namespace philox
}  // namespace tangentlens
