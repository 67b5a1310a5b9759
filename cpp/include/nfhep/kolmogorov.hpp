// nfhep/kolmogorov.hpp: null distributions of Kolmogorov-Smirnov statistics (the asymptotic p-values of
// nfhep.metrics.ks_2samp), the same functions scipy evaluates, without Python.
//
// kstwo_sf(d, n) = P(D_n >= d) for the two-sided one-sample statistic D_n = sup |F_n - F| with n events:
// the survival function of scipy.stats.kstwo, which scipy.stats.ks_2samp(method='asymp') evaluates at
// n = round(n1 n2 / (n1 + n2)). The same regimes as scipy (Simard & L'Ecuyer, J. Stat. Softw. 39(11),
// 2011): Ruben-Gambino closed forms for n d <= 1 and n d >= n - 1; Durbin's matrix (Marsaglia, Tsang &
// Wang 2003), Pomeranz's recursion (1974) or the Pelz-Good expansion (1976) for small n d^2; twice the
// one-sided tail otherwise (exactly 2 smirnov_sf for d >= 1/2, the Miller approximation below).
//
// smirnov_sf(d, n) = P(D_n^+ >= d) for the one-sided statistic (scipy.special.smirnov), the
// Smirnov / Birnbaum-Tingey sum
//     P(D_n^+ >= d) = d sum_{v=0}^{floor(n(1-d))} C(n, v) (d + v/n)^(v-1) (1 - d - v/n)^(n-v),
// each term evaluated in logarithms with Loader's saddle-point pieces (stirlerr, bd0: no cancellation of
// O(n) quantities). For n > 10^4 and n d^2 >= 2 the terms are a smooth unimodal function of v whose
// width grows like sqrt(n) and which vanishes like exp(-n d) at both ends: the sum then equals the
// integral over v to double precision (Euler-Maclaurin / Poisson summation), evaluated with a trapezoid
// rule refined until it converges (a few hundred evaluations instead of ~n terms). For n > 10^6 scipy
// (and so this) uses exp(-(6 n d + 1)^2 / (18 n)) (van Mulbregt, arXiv:1802.06966).
//
// One deliberate difference: for n >= 2^31 scipy passes n to smirnov as a C int and returns NaN where the
// one-sided tail is needed; here n is 64-bit and the value is the closed form above.
//
// Out-of-domain arguments give NaN as in scipy (n not a positive integer, d NaN). The array versions run
// over nfhep's threads, one element per chunk: each value depends only on its own (d, n).
#pragma once
#include <cstddef>
#include <cstdint>

#include "nfhep/config.hpp"

namespace nfhep::metrics {

/// P(D_n >= d), two-sided one-sample KS statistic with n events (scipy.stats.kstwo.sf(d, n)).
/// n must be an integer >= 1 (else NaN); d <= 1/(2n) gives 1, d >= 1 gives 0.
NFHEP_API double kstwo_sf(double d, double n);

/// P(D_n^+ >= d), one-sided one-sample KS statistic with n events (scipy.special.smirnov(n, d)).
/// NaN for n < 1 or d outside [0, 1].
NFHEP_API double smirnov_sf(double d, std::int64_t n);

/// Exact two-sided two-sample p-value for equal sizes n1 = n2 = n and D = h/n (h >= 1):
/// P(D_{n,n} >= h/n) = 2 sum_{k>=1} (-1)^(k-1) C(2n, n - kh) / C(2n, n) (Gnedenko-Korolyuk), evaluated as
/// scipy's _compute_prob_outside_square does (each ratio as a product of h factors, nested Horner-like),
/// so the value is the same double. NaN for n < 1 or h < 1.
NFHEP_API double ks_exact_equal_sf(std::int64_t n, std::int64_t h);

/// out[i] = ks_exact_equal_sf(n, h[i]) for i < count, in parallel.
NFHEP_API void ks_exact_equal_sf(const std::int64_t* h, std::size_t count, std::int64_t n, double* out);

/// out[i] = kstwo_sf(d[i], n) for i < count, in parallel.
NFHEP_API void kstwo_sf(const double* d, std::size_t count, double n, double* out);

/// out[i] = smirnov_sf(d[i], n) for i < count, in parallel.
NFHEP_API void smirnov_sf(const double* d, std::size_t count, std::int64_t n, double* out);

}  // namespace nfhep::metrics
