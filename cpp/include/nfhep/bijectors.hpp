// nfhep/bijectors.hpp: batch kernels of the rational-quadratic spline (arXiv:1906.04032) and affine
// (arXiv:1705.07057) bijectors on the CPU: multi-threaded (nfhep::set_num_threads; fixed chunks, so the
// results are bitwise identical for any thread count) and vectorised (runtime SIMD dispatch; AVX2 and
// AVX-512 use FMA and are bitwise identical to each other, the generic level differs by rounding). No Python, no torch: usable from ROOT macros and C++ frameworks.
//
// Layout: n elements (n = product of the input shape); `params` holds the P parameters of each element
// contiguously (element i at params[i*P .. i*P+P-1]). RQS: P = 3K-1, ordered [K width logits, K height
// logits, K-1 interior derivative logits], nflows' parameterisation (see nfhep/math/rqs.hpp). Affine: P = 2
// ordered [s, t] with y = x exp(s) + t.
//
// Tails and special values (RQS): inputs outside [-B, B] pass through unchanged with log|det| = 0 and
// gradient (d out / d in) = 1, zero parameter gradients; NaN in -> NaN out (treated as a tail), +-inf ->
// +-inf with log|det| = 0.
#pragma once
#include <cstddef>

#include "nfhep/config.hpp"

namespace nfhep {

/// Options of the RQ spline (defaults of nflows / normflows).
struct RqsOptions {
  double bound = 5.0;             ///< B: the spline maps [-B, B] onto itself; identity outside
  double min_bin_width = 1e-3;    ///< minimum bin width, as a fraction of 2B (min_bin_width * K < 1)
  double min_bin_height = 1e-3;   ///< minimum bin height, as a fraction of 2B (min_bin_height * K < 1)
  double min_derivative = 1e-3;   ///< minimum interior knot derivative (>= 0)
};

/// Throws std::invalid_argument naming the argument, its value and the rule, unless num_bins >= 2,
/// 0 < bound < inf, all minimums >= 0 and finite, min_bin_width*K < 1, min_bin_height*K < 1.
NFHEP_API void validate_rqs(int num_bins, const RqsOptions& opt);

/// y = RQS(x), logabsdet = log|dy/dx|, for n elements with K = num_bins.
template <class T>
NFHEP_API void rqs_forward(const T* x, const T* params, std::size_t n, int num_bins, const RqsOptions& opt, T* y,
                           T* logabsdet);

/// x = RQS^{-1}(y), logabsdet = log|dx/dy| (= -log|dy/dx| at x).
template <class T>
NFHEP_API void rqs_inverse(const T* y, const T* params, std::size_t n, int num_bins, const RqsOptions& opt, T* x,
                           T* logabsdet);

/// Vector-Jacobian product of (output, logabsdet) of rqs_forward (inverse = false) or rqs_inverse
/// (inverse = true) evaluated at `inputs`, with upstream gradients grad_out and grad_logabsdet (either may
/// be null = zeros). Writes grad_inputs (n) and grad_params (n * (3K-1)).
template <class T>
NFHEP_API void rqs_backward(const T* inputs, const T* params, const T* grad_out, const T* grad_logabsdet,
                            std::size_t n, int num_bins, const RqsOptions& opt, bool inverse, T* grad_inputs,
                            T* grad_params);

/// y = x exp(s) + t, logabsdet = s; params = [s, t] per element.
template <class T>
NFHEP_API void affine_forward(const T* x, const T* params, std::size_t n, T* y, T* logabsdet);

/// x = (y - t) exp(-s), logabsdet = -s.
template <class T>
NFHEP_API void affine_inverse(const T* y, const T* params, std::size_t n, T* x, T* logabsdet);

/// Vector-Jacobian product of affine_forward / affine_inverse (see rqs_backward).
template <class T>
NFHEP_API void affine_backward(const T* inputs, const T* params, const T* grad_out, const T* grad_logabsdet,
                               std::size_t n, bool inverse, T* grad_inputs, T* grad_params);

/// The same two VJPs with "repeated" upstream gradients: each value of grad_out holds the gradient of
/// `grad_out_repeat` consecutive elements (ceil(n / repeat) values; repeat = 1 is the plain array,
/// repeat = n one value for all), likewise grad_logabsdet. This is the layout of a sum's gradient
/// (sum over everything: repeat = n; over the last axis of (N, D): repeat = D), which then needs no
/// materialised (n) copy. Repeats must be >= 1. Results are bitwise those of the plain call on the
/// expanded arrays.
template <class T>
NFHEP_API void rqs_backward(const T* inputs, const T* params, const T* grad_out, std::size_t grad_out_repeat,
                            const T* grad_logabsdet, std::size_t grad_logabsdet_repeat, std::size_t n,
                            int num_bins, const RqsOptions& opt, bool inverse, T* grad_inputs, T* grad_params);
template <class T>
NFHEP_API void affine_backward(const T* inputs, const T* params, const T* grad_out, std::size_t grad_out_repeat,
                               const T* grad_logabsdet, std::size_t grad_logabsdet_repeat, std::size_t n,
                               bool inverse, T* grad_inputs, T* grad_params);

namespace detail {
/// Test hook: evaluate nfhep::math::{exp, log, log1p, softplus, sigmoid} (by name) with the active SIMD
/// level's vectorised loop, so the tests can compare them with the standard library.
template <class T>
NFHEP_API void special_function(const char* name, const T* in, std::size_t n, T* out);
}  // namespace detail

}  // namespace nfhep
