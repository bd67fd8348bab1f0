// Counter-based random numbers shared by the CPU and CUDA kernels.
//
// Generator: Philox4x32-10 (Salmon et al., SC'11), the same bijection as Random123 and cuRAND.
// Normals:  Box-Muller on two 53-bit uniforms taken from one Philox block, evaluated in double
//           precision with our own log / sincos built from correctly rounded + - * / sqrt only, so a
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

// 53 random bits from two words: the top 27 of a and the top 26 of b.
TL_HD uint64_t bits53(uint32_t a, uint32_t b) {
  return (static_cast<uint64_t>(a >> 5) << 26) | static_cast<uint64_t>(b >> 6);
}

constexpr double kTwoPow53Inv = 1.0 / 9007199254740992.0;  // 2^-53
constexpr double kTwoPow51Inv = 1.0 / 2251799813685248.0;  // 2^-51

// Uniform on [0, 1) with 53 random bits (a multiple of 2^-53).
TL_HD double uniform53(uint32_t a, uint32_t b) { return static_cast<double>(bits53(a, b)) * kTwoPow53Inv; }

// ---- double-precision log and sincos from exact + - * / only (about 1 ulp) ----

constexpr double kSqrt2 = 1.4142135623730951;
constexpr double kLn2Hi = 6.93147180369123816490e-01;  // ln 2 rounded to 32 bits: e * kLn2Hi is exact
constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln 2 - kLn2Hi

// log(x) for a positive normal double x.
TL_HD double log_pos(double x) {
  using namespace exact;
  const uint64_t b = as_bits(x);
  int e = static_cast<int>((b >> 52) & 0x7ff) - 1023;
  double m = from_bits((b & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);  // [1, 2)
  if (m > kSqrt2) {  // centre the mantissa on 1: m in [sqrt(1/2), sqrt(2)]
    m = mul(m, 0.5);
    e += 1;
  }
  // log m = 2 atanh(s), s = (m - 1)/(m + 1), |s| <= 0.1716: the series to s^21 is below 2^-53.
  const double s = div(sub(m, 1.0), add(m, 1.0));
  const double s2 = mul(s, s);
  double p = 1.0 / 21.0;
  p = madd(p, s2, 1.0 / 19.0);
  p = madd(p, s2, 1.0 / 17.0);
  p = madd(p, s2, 1.0 / 15.0);
  p = madd(p, s2, 1.0 / 13.0);
  p = madd(p, s2, 1.0 / 11.0);
  p = madd(p, s2, 1.0 / 9.0);
  p = madd(p, s2, 1.0 / 7.0);
  p = madd(p, s2, 1.0 / 5.0);
  p = madd(p, s2, 1.0 / 3.0);
  const double two_s = add(s, s);
  const double log_m = add(two_s, mul(mul(two_s, s2), p));
  const double de = static_cast<double>(e);
  return add(mul(de, kLn2Hi), add(log_m, mul(de, kLn2Lo)));
}

// sin and cos of 2*pi*K/2^53 for a 53-bit integer K. The quadrant comes from K's top bits, so the
// range reduction is exact; only x = f * pi/2 with |f| <= 1/2 is rounded.
TL_HD void sincos_2pi_bits53(uint64_t k, double* s_out, double* c_out) {
  using namespace exact;
  constexpr uint64_t kHalf = 1ull << 50;  // 1/2 in units of 2^-51
  const uint64_t n = (k + kHalf) >> 51;   // nearest quarter turn, 0..4
  const int64_t f_units = static_cast<int64_t>(k) - static_cast<int64_t>(n << 51);  // [-2^50, 2^50)
  const double f = mul(static_cast<double>(f_units), kTwoPow51Inv);  // exact, in [-1/2, 1/2)
  const double x = mul(f, 1.5707963267948966);                       // |x| <= pi/4
  const double x2 = mul(x, x);
  // Taylor polynomials; on |x| <= pi/4 the first omitted terms are below 1e-19.
  double ps = -1.0 / 121645100408832000.0;  // -1/19!
  ps = madd(ps, x2, 1.0 / 355687428096000.0);
  ps = madd(ps, x2, -1.0 / 1307674368000.0);
  ps = madd(ps, x2, 1.0 / 6227020800.0);
  ps = madd(ps, x2, -1.0 / 39916800.0);
  ps = madd(ps, x2, 1.0 / 362880.0);
  ps = madd(ps, x2, -1.0 / 5040.0);
  ps = madd(ps, x2, 1.0 / 120.0);
  ps = madd(ps, x2, -1.0 / 6.0);
  const double sin_x = add(x, mul(mul(x, x2), ps));
  double pc = 1.0 / 2432902008176640000.0;  // 1/20!
  pc = madd(pc, x2, -1.0 / 6402373705728000.0);
  pc = madd(pc, x2, 1.0 / 20922789888000.0);
  pc = madd(pc, x2, -1.0 / 87178291200.0);
  pc = madd(pc, x2, 1.0 / 479001600.0);
  pc = madd(pc, x2, -1.0 / 3628800.0);
  pc = madd(pc, x2, 1.0 / 40320.0);
  pc = madd(pc, x2, -1.0 / 720.0);
  pc = madd(pc, x2, 1.0 / 24.0);
  pc = madd(pc, x2, -0.5);
  const double cos_x = madd(x2, pc, 1.0);
  // Rotate by n quarter turns.
  const unsigned q = static_cast<unsigned>(n) & 3u;
  const double s = (q == 0) ? sin_x : (q == 1) ? cos_x : (q == 2) ? -sin_x : -cos_x;
  const double c = (q == 0) ? cos_x : (q == 1) ? -sin_x : (q == 2) ? -cos_x : sin_x;
  *s_out = s;
  *c_out = c;
}

// Two independent standard normals from one Philox block (Box-Muller). r <= sqrt(-2 log 2^-53) ~ 8.57.
TL_HD void box_muller(U4 r, double* n0, double* n1) {
  using namespace exact;
  const uint64_t k1 = bits53(r.x, r.y);
  const double u1 = mul(static_cast<double>(k1 + 1), kTwoPow53Inv);  // (0, 1]: log is finite
  const double radius = exact::sqrt(mul(-2.0, log_pos(u1)));
  double s, c;
  sincos_2pi_bits53(bits53(r.z, r.w), &s, &c);
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
