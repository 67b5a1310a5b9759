"""Fit the float64 polynomials of cpp/include/nfhep/math/special.hpp (exp and log kernels).

Run ``python cpp/tools/fit_special_polys.py`` to print the coefficients and their error bounds;
tests/test_kernels_special.py checks that the header holds exactly these values.

- exp: P(r) ~ (e^r - 1 - r) / r^2 on [-ln2/2, ln2/2] (degree 10), used as exp(r) = 1 + r + r^2 P(r).
- log: Q(z) ~ R(z) / z on [0, z_max], z_max = ((sqrt2 - 1) / (sqrt2 + 1))^2 (degree 6), where
  R(z) = 2 (atanh(s) / s - 1), s = sqrt(z), so that log(1 + f) = f - f^2/2 + s (f^2/2 + z Q(z)).

Both are Chebyshev interpolants computed in 50-digit arithmetic (mpmath), which are within a small
factor of the minimax polynomials; the coefficients are rounded to double, and the error of the rounded
polynomial is measured on a 4001-point grid in 50-digit arithmetic.
"""

from __future__ import annotations

import mpmath as mp

EXP_DEGREE = 10
LOG_DEGREE = 6


def _fit(f, a, b, degree: int) -> tuple[list[float], float]:
    with mp.workdps(50):
        poly = mp.chebyfit(f, [a, b], degree + 1)
        coeffs = [float(c) for c in poly[::-1]]  # ascending powers, rounded to double
        worst = mp.mpf(0)
        for i in range(4001):
            x = a + (b - a) * mp.mpf(i) / 4000
            v = mp.mpf(0)
            for c in reversed(coeffs):
                v = v * x + mp.mpf(c)
            worst = max(worst, abs(v - f(x)))
        return coeffs, float(worst)


def exp_poly() -> tuple[list[float], float]:
    """Coefficients (ascending) of P and max |P - (e^r - 1 - r)/r^2| over the range."""
    with mp.workdps(50):
        h = mp.log(2) / 2 * mp.mpf("1.0001")

        def p(r):
            return mp.mpf(1) / 2 if abs(r) < mp.mpf(10) ** -20 else (mp.exp(r) - 1 - r) / r**2

        return _fit(p, -h, h, EXP_DEGREE)


def log_poly() -> tuple[list[float], float]:
    """Coefficients (ascending) of Q and max |Q - R(z)/z| over the range."""
    with mp.workdps(50):
        zmax = ((mp.sqrt(2) - 1) / (mp.sqrt(2) + 1)) ** 2 * mp.mpf("1.0001")

        def q(z):
            if z == 0:
                return mp.mpf(2) / 3
            s = mp.sqrt(z)
            return 2 * (mp.atanh(s) / s - 1) / z

        return _fit(q, mp.mpf(0), zmax, LOG_DEGREE)


if __name__ == "__main__":
    for name, (coeffs, err) in (("exp P", exp_poly()), ("log Q", log_poly())):
        print(f"{name}: max error of the rounded polynomial {err:.3g}")
        for k, c in enumerate(coeffs):
            print(f"  c{k} = {c!r}")
