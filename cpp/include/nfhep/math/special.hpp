// nfhep/math/special.hpp: vectorisable exp, log, log1p, softplus and sigmoid for float and double.
//
// Why not std::exp/std::log: glibc's scalar functions are opaque calls, so a loop that uses them never
// vectorises (the SIMD variants of libmvec are only declared under -ffast-math, which nfhep refuses
// because it breaks NaN/inf handling). These helpers are straight-line code (bit manipulation, Cody-Waite
// range reduction, a short polynomial, selects instead of branches) that GCC vectorises inside the lane
// loops of the kernels and that nvcc compiles unchanged for the device (NFHEP_HD).
//
// Accuracy (tested against std:: in tests/test_kernels_special.py through the bindings' self-test
// entry points): within 2 ulp over the whole range, including subnormal results/arguments, overflow to
// inf, underflow to 0; NaN in -> NaN out; exp(-inf) = 0, exp(+inf) = inf, log(0) = -inf, log(x<0) = NaN,
// log(+inf) = +inf. Results are deterministic: the same operations in the same order on every SIMD level
// (the build uses -ffp-contract=off, so no FMA contraction).
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "nfhep/config.hpp"

// NFHEP_MATH marks every per-element function of nfhep/math/: __host__ __device__ under nvcc (as NFHEP_HD)
// and ALWAYS inlined. The forced inlining matters for correctness, not only speed: these templates are
// compiled once per SIMD level (cpp/src/isa/), and an out-of-line copy would be a weak symbol shared by
// all levels, so the linker could make the generic path call an AVX-512 copy (SIGILL on older CPUs) and
// the levels would silently run the same code.
#define NFHEP_MATH NFHEP_FORCEINLINE

namespace nfhep::math {

namespace detail {

// Bit casts that vectorise on the host (memcpy of a scalar becomes a register move) and use the
// intrinsics on the device.
NFHEP_FORCEINLINE std::uint64_t bits(double v) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::uint64_t>(__double_as_longlong(v));
#else
  std::uint64_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
#endif
}
NFHEP_FORCEINLINE std::uint32_t bits(float v) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::uint32_t>(__float_as_uint(v));
#else
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
#endif
}
NFHEP_FORCEINLINE double from_bits(std::uint64_t u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(u));
#else
  double v;
  std::memcpy(&v, &u, sizeof v);
  return v;
#endif
}
NFHEP_FORCEINLINE float from_bits(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
#endif
}

// Constants per precision. ln2_hi has trailing zero bits so that n*ln2_hi is exact for the n that occur.
template <class T>
struct Consts;
template <>
struct Consts<double> {
  using U = std::uint64_t;
  static constexpr int mant = 52;
  static constexpr U exp_mask = 0x7ff0000000000000ull;
  static constexpr U bias = 1023;
  static constexpr double ln2_hi = 6.93147180369123816490e-01;  // 0x3fe62e42fee00000
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr double log2e = 1.44269504088896338700e+00;
  static constexpr double shifter = 6755399441055744.0;  // 1.5 * 2^52: rounds to an integer in the low bits
  static constexpr double exp_lo = -760.0;               // clamp: 2^(n/2) stays normal, result underflows
  static constexpr double exp_hi = 720.0;                // clamp: result overflows to inf
  static constexpr double min_normal = 2.2250738585072014e-308;
  static constexpr double subnormal_scale = 18014398509481984.0;  // 2^54
  static constexpr int subnormal_shift = 54;
  static constexpr double sqrt_half = 0.70710678118654752440;
};
template <>
struct Consts<float> {
  using U = std::uint32_t;
  static constexpr int mant = 23;
  static constexpr U exp_mask = 0x7f800000u;
  static constexpr U bias = 127;
  static constexpr float ln2_hi = 6.93145752e-01f;  // 0x3f317200
  static constexpr float ln2_lo = 1.42860677e-06f;
  static constexpr float log2e = 1.44269502e+00f;
  static constexpr float shifter = 12582912.0f;  // 1.5 * 2^23
  static constexpr float exp_lo = -110.0f;
  static constexpr float exp_hi = 95.0f;
  static constexpr float min_normal = 1.17549435e-38f;
  static constexpr float subnormal_scale = 33554432.0f;  // 2^25
  static constexpr int subnormal_shift = 25;
  static constexpr float sqrt_half = 0.707106781f;
};

// exp(r) - 1 - r for |r| <= ln2/2, as r^2 P(r). Double: P of degree 10 fitted to (e^r - 1 - r)/r^2 on
// [-ln2/2, ln2/2] (Chebyshev fit in 50-digit arithmetic, tools/fit_special_polys.py; with the rounded
// coefficients |P - (e^r - 1 - r)/r^2| <= 2.6e-18, i.e. <= 3.2e-19 relative in exp; the Taylor series
// needs degree 11 for the same). Float: Taylor coefficients 1/k!.
namespace exp_poly {
constexpr double c0 = 0.5;
constexpr double c1 = 0.1666666666666667;
constexpr double c2 = 0.04166666666666667;
constexpr double c3 = 0.008333333333326136;
constexpr double c4 = 0.0013888888888883748;
constexpr double c5 = 0.00019841269874820627;
constexpr double c6 = 2.4801587325547743e-05;
constexpr double c7 = 2.7557255400206422e-06;
constexpr double c8 = 2.75572736431103e-07;
constexpr double c9 = 2.5105217004720745e-08;
constexpr double c10 = 2.0914686968086876e-09;
}  // namespace exp_poly

// Horner's rule: the fewest operations (the softmax numerators, many independent exps per element).
NFHEP_FORCEINLINE double expm1_tail(double r) {
  using namespace exp_poly;
  double p = c10;
  p = p * r + c9;
  p = p * r + c8;
  p = p * r + c7;
  p = p * r + c6;
  p = p * r + c5;
  p = p * r + c4;
  p = p * r + c3;
  p = p * r + c2;
  p = p * r + c1;
  p = p * r + c0;
  return (r * r) * p;
}
// The same polynomial in Estrin's form: depth 4 instead of 10 dependent multiply-adds, two more
// operations. For exp() (softplus, sigmoid), which sits on the kernels' longest dependency chain
// (derivative logit -> derivative -> denominator -> log); the softmax numerators keep Horner's rule.
NFHEP_FORCEINLINE double expm1_tail_short(double r) {
  using namespace exp_poly;
  const double r2 = r * r;
  const double r4 = r2 * r2;
  const double q0 = (c0 + c1 * r) + r2 * (c2 + c3 * r);
  const double q1 = (c4 + c5 * r) + r2 * (c6 + c7 * r);
  const double q2 = (c8 + c9 * r) + r2 * c10;
  return r2 * ((q0 + r4 * q1) + (r4 * r4) * q2);
}
NFHEP_FORCEINLINE float expm1_tail(float r) {
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  return (r * r) * p;
}
NFHEP_FORCEINLINE float expm1_tail_short(float r) { return expm1_tail(r); }

// R(z) = sum_{k>=1} 2 z^k / (2k+1), z = s^2, so that log(1+f) = f - f^2/2 + s (f^2/2 + R(z)) with
// s = f / (2 + f) (the atanh series; |s| <= 0.1716, z <= 0.0295). Double: R = z Q(z), Q of degree 6
// fitted to R(z)/z on [0, 0.02944] (tools/fit_special_polys.py; |Q - R/z| <= 3.2e-16, i.e. ~5e-18
// relative in log), in Estrin's form (log sits on dependency chains). Float: the series to z^6.
NFHEP_FORCEINLINE double log_tail(double z) {
  constexpr double c0 = 0.666666666666667;
  constexpr double c1 = 0.39999999999899444;
  constexpr double c2 = 0.2857142862600327;
  constexpr double c3 = 0.22222211130259878;
  constexpr double c4 = 0.18182889455674947;
  constexpr double c5 = 0.15331710618210773;
  constexpr double c6 = 0.14616585424888623;
  const double z2 = z * z;
  const double q0 = (c0 + c1 * z) + z2 * (c2 + c3 * z);
  const double q1 = (c4 + c5 * z) + z2 * c6;
  return z * (q0 + (z2 * z2) * q1);
}
NFHEP_FORCEINLINE float log_tail(float z) {
  float p = 2.0f / 13.0f;
  p = p * z + 2.0f / 11.0f;
  p = p * z + 2.0f / 9.0f;
  p = p * z + 2.0f / 7.0f;
  p = p * z + 2.0f / 5.0f;
  p = p * z + 2.0f / 3.0f;
  return z * p;
}

}  // namespace detail

/// sqrt(x): the IEEE instruction on every target (correctly rounded, vectorises with -fno-math-errno).
NFHEP_FORCEINLINE double sqrt_(double x) {
#if defined(__CUDA_ARCH__)
  return ::sqrt(x);
#else
  return __builtin_sqrt(x);
#endif
}
NFHEP_FORCEINLINE float sqrt_(float x) {
#if defined(__CUDA_ARCH__)
  return ::sqrtf(x);
#else
  return __builtin_sqrtf(x);
#endif
}

/// exp(x), branch-free. x = n ln2 + r with |r| <= ln2/2 (Cody-Waite), exp(r) = 1 + r + r^2 P(r), and the
/// scale 2^n applied as two factors 2^(n/2) 2^(n-n/2) so that subnormal results and the largest finite
/// results come out right without a branch.
template <class T>
NFHEP_MATH T exp(T x) {
  using C = detail::Consts<T>;
  using U = typename C::U;
  using S = std::conditional_t<sizeof(T) == 8, std::int64_t, std::int32_t>;
  T xc = x < C::exp_lo ? T(C::exp_lo) : x;  // NaN passes both clamps unchanged
  xc = xc > C::exp_hi ? T(C::exp_hi) : xc;
  const T kd = xc * C::log2e + C::shifter;
  const S n = static_cast<S>(detail::bits(kd) - detail::bits(T(C::shifter)));  // round(x log2 e)
  const T nd = kd - C::shifter;
  const T r = (xc - nd * C::ln2_hi) - nd * C::ln2_lo;
  const T p = T(1) + (r + detail::expm1_tail_short(r));
  const S n1 = n >> 1;  // arithmetic shift: floor(n/2)
  const S n2 = n - n1;
  const T s1 = detail::from_bits(static_cast<U>(static_cast<U>(n1 + static_cast<S>(C::bias)) << C::mant));
  const T s2 = detail::from_bits(static_cast<U>(static_cast<U>(n2 + static_cast<S>(C::bias)) << C::mant));
  return (p * s1) * s2;
}

/// log(2^e m) for m in [sqrt(1/2), sqrt(2)) and e given as a floating value: f = m - 1 (exact),
/// log(1+f) = f - f^2/2 + s (f^2/2 + R(s^2)), s = f/(2+f), plus e ln2 in two parts. The common core of log()
/// and log1p_unit(), which differ only in how they split their argument.
template <class T>
NFHEP_MATH T log_reduced(T m, T ed) {
  using C = detail::Consts<T>;
  const T f = m - T(1);
  const T hfsq = T(0.5) * f * f;
  const T s = f / (T(2) + f);
  const T R = detail::log_tail(s * s);
  return ed * C::ln2_hi + ((f - hfsq) + (s * (hfsq + R) + ed * C::ln2_lo));
}

/// log(x), branch-free: x = 2^e m with m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact),
/// log(1+f) = f - f^2/2 + s (f^2/2 + R(s^2)), s = f/(2+f); subnormal x is rescaled by 2^54 (2^25) first.
/// log(0) = -inf, log(x<0) = NaN, log(inf) = inf, log(NaN) = NaN.
/// exp(x) for x <= 0 (softmax numerators, x = logit - max): the same reduction and polynomial as exp,
/// but x is clamped below at -708 (double) / -87 (float) so that 2^n is a normal number and one scale
/// suffices. Below the clamp the result is exp(clamp) (< 2e-38 in float) instead of a smaller value,
/// which no softmax with a largest term of 1 can tell apart. NaN passes through.
template <class T>
NFHEP_MATH T exp_nonpos(T x) {
  using C = detail::Consts<T>;
  using U = typename C::U;
  using S = std::conditional_t<sizeof(T) == 8, std::int64_t, std::int32_t>;
  const T lo = sizeof(T) == 8 ? T(-708.0) : T(-87.0);
  const T xc = x < lo ? lo : x;
  const T kd = xc * C::log2e + C::shifter;
  const S n = static_cast<S>(detail::bits(kd) - detail::bits(T(C::shifter)));
  const T nd = kd - C::shifter;
  const T r = (xc - nd * C::ln2_hi) - nd * C::ln2_lo;
  const T p = T(1) + (r + detail::expm1_tail(r));
  const T sc = detail::from_bits(static_cast<U>(static_cast<U>(n + static_cast<S>(C::bias)) << C::mant));
  return p * sc;
}

template <class T>
NFHEP_MATH T log(T x) {
  using C = detail::Consts<T>;
  using U = typename C::U;
  const bool sub = x < C::min_normal;
  const T xs = sub ? x * C::subnormal_scale : x;
  using S = std::conditional_t<sizeof(T) == 8, std::int64_t, std::int32_t>;
  const U ux = detail::bits(xs);
  // x = 2^e m with m in [sqrt(1/2), sqrt(2)): e = (bits(x) - bits(sqrt(1/2))) >> mant (arithmetic shift).
  const S e = static_cast<S>(ux - detail::bits(T(C::sqrt_half))) >> C::mant;
  const T m = detail::from_bits(static_cast<U>(ux - (static_cast<U>(e) << C::mant)));
  // e as a floating value without an int->float conversion (AVX2 has none for int64):
  // from_bits(bits(2^mant) | (e + bias)) = 2^mant + e + bias exactly.
  const T two_mant = T(static_cast<U>(1) << C::mant);
  const U e_biased = static_cast<U>(e + static_cast<S>(C::bias)) & (C::exp_mask >> C::mant);
  const T ed = (detail::from_bits(static_cast<U>(detail::bits(two_mant) | e_biased)) - two_mant) -
               (sub ? T(C::bias + C::subnormal_shift) : T(C::bias));
  const T lg = log_reduced(m, ed);
  // Specials: x == 0 -> -inf, x < 0 or NaN -> NaN, x == inf -> inf.
  const T inf = detail::from_bits(static_cast<U>(C::exp_mask));
  T out = x == T(0) ? -inf : lg;
  // x < 0: a quiet NaN constant (not (x - x) / (x - x): a division costs as much as ~16 FMAs on AVX-512).
  const T qnan = detail::from_bits(static_cast<U>(C::exp_mask | (static_cast<U>(1) << (C::mant - 1))));
  out = x < T(0) ? qnan : out;
  out = x == inf ? inf : out;
  out = x != x ? x : out;
  return out;
}

/// log(1 + x) accurate for small |x|: u = 1 + x, log1p(x) = log(u) - ((u - 1) - x) / u (the correction
/// undoes the rounding of u to first order); x when u == 1; inf for x = inf; -inf for x = -1.
template <class T>
NFHEP_MATH T log1p(T x) {
  const T u = T(1) + x;
  const T lu = math::log(u);
  const T corr = ((u - T(1)) - x) / u;  // NaN only for u = 0 (0/0) or u = inf (inf/inf)
  T out = corr == corr ? lu - corr : lu;
  out = u == T(1) ? x : out;
  return out;
}

/// log(1 + e) for e in [0, 1] (and NaN), as log1p but without its division: the correction c / u,
/// c = (u - 1) - e the rounding error of u = 1 + e in [1, 2], uses 1/u ~ 2 - u (exact at u = 1). The
/// error |c| (u - 1)^2 / u <= 2^-53 e^2 / (1 + e) (2^-24 in float) is below 0.4 ulp of log(1 + e).
///
/// log(u) for u in [1, 2] is log() without its special cases and bit manipulations: u = 2^k m with k = 0
/// (m = u) below 2 sqrt(1/2) and k = 1 (m = u / 2, exact) from there on, the split log() makes, and the
/// same arithmetic after it (bitwise log(u) without FMA contraction, i.e. on the generic level; the FMA
/// levels may contract the two differently); NaN propagates through the arithmetic.
template <class T>
NFHEP_MATH T log1p_unit(T e) {
  using C = detail::Consts<T>;
  const T u = T(1) + e;
  const bool upper = u >= T(2) * T(C::sqrt_half);
  const T m = upper ? T(0.5) * u : u;
  const T ed = upper ? T(1) : T(0);
  const T lu = log_reduced(m, ed);
  const T corr = ((u - T(1)) - e) * (T(2) - u);
  return u == T(1) ? e : lu - corr;
}

/// softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)); never overflows.
template <class T>
NFHEP_MATH T softplus(T x) {
  const T ax = x < T(0) ? -x : x;
  const T pos = x > T(0) ? x : T(0);
  return pos + math::log1p_unit(math::exp(-ax));
}

/// sigmoid(x) = 1 / (1 + exp(-x)) = d softplus / dx, written to stay finite for any x.
template <class T>
NFHEP_MATH T sigmoid(T x) {
  const T ax = x < T(0) ? -x : x;
  const T e = math::exp(-ax);  // in (0, 1]
  const T r = T(1) / (T(1) + e);
  return x >= T(0) ? r : e * r;
}

}  // namespace nfhep::math
