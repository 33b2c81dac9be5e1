#!/usr/bin/python3
"""Fit the rational erf that core/layers.c's float build uses for GELU.

erf(a) ~ a P(a^2) / Q(a^2) on [0, A_MAX], P of degree 6 and Q of degree 4
in a^2 (Q(0) = 1); past A_MAX, erf is 1 to float precision and the C code
clamps a there. The fit is linear least squares on a P - erf(a) Q = 0,
reweighted by 1/|Q| from the previous round (Sanathanan-Koerner) so it
approaches the true rational least-squares fit, then by the absolute error
(Lawson) so the largest error shrinks toward an equal-ripple (minimax) fit.

Prints the coefficients as C float literals, the largest error evaluated in
double, and the largest error of the float evaluation the C code does
(Horner, then a P / Q). Needs only numpy and Python's math.erf:
    /usr/bin/python3 scripts/fit_erf.py
"""
import math

import numpy as np

A_MAX = 3.92
P_TERMS, Q_TERMS = 7, 5


def horner(coeffs, z):
    acc = coeffs[-1]
    for c in coeffs[-2::-1]:
        acc = acc * z + c
    return acc


def fit():
    grid = np.concatenate([np.linspace(0, A_MAX, 6000), A_MAX * np.sin(np.linspace(0, np.pi / 2, 3000))])
    a = np.unique(grid)
    a = a[a > 0]
    exact = np.array([math.erf(v) for v in a])
    ratio = exact / a  # erf(a) / a, even in a: a function of z = a^2
    z = a * a
    weight = np.ones_like(a)
    q_prev = np.ones_like(a)
    for round_ in range(60):
        # unknowns: p_0 .. p_6, q_1 .. q_4;  P(z) - ratio (1 + q_1 z + ...) = 0
        columns = [z**k for k in range(P_TERMS)] + [-ratio * z**k for k in range(1, Q_TERMS)]
        system = np.vstack(columns).T
        scale = (weight / np.abs(q_prev))[:, None]
        solution, *_ = np.linalg.lstsq(system * scale, ratio * scale[:, 0], rcond=None)
        p = solution[:P_TERMS]
        q = np.concatenate([[1.0], solution[P_TERMS:]])
        q_prev = horner(q, z)
        error = a * horner(p, z) / q_prev - exact
        if round_ > 10:
            weight = weight * np.sqrt(np.abs(error))
            weight /= weight.max()
    return p, q, np.abs(error).max()


def float_error(p, q):
    p32 = [np.float32(v) for v in p]
    q32 = [np.float32(v) for v in q]
    a = np.linspace(-6, 6, 400001).astype(np.float32)
    clamped = np.clip(a, -A_MAX, A_MAX).astype(np.float32)
    z = (clamped * clamped).astype(np.float32)
    num = np.float32(p32[-1])
    for c in p32[-2::-1]:
        num = (num * z + c).astype(np.float32)
    den = np.float32(q32[-1])
    for c in q32[-2::-1]:
        den = (den * z + c).astype(np.float32)
    got = (clamped * num / den).astype(np.float32)
    return max(abs(float(g) - math.erf(float(v))) for g, v in zip(got, a))


def main():
    p, q, worst = fit()
    print("P (a^0 .. a^12):", ", ".join("%.9ef" % v for v in p))
    print("Q (a^0 .. a^8): ", ", ".join("%.9ef" % v for v in q))
    print("largest |error|, double evaluation: %.3g" % worst)
    print("largest |error|, float evaluation:  %.3g" % float_error(p, q))


if __name__ == "__main__":
    main()
