"""Seed statistics: mean and a Student-t 95% confidence interval.

scipy is not a dependency, so the t quantile is computed here from the regularised incomplete beta function
(continued fraction, as in Numerical Recipes §6.4) and inverted by bisection: exact to ~1e-10, and the
analysis only ever asks for a handful of small degrees of freedom (the number of seeds minus one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from statistics import NormalDist


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def reg_inc_beta(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)``.

    >>> round(reg_inc_beta(1.0, 1.0, 0.3), 12)  # uniform CDF
    0.3
    >>> round(reg_inc_beta(2.0, 3.0, 0.4), 6)  # 1 - (1-x)^4 - 4x(1-x)^3
    0.5248
    """
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student-t CDF with ``df`` degrees of freedom.

    >>> t_cdf(0.0, 3)
    0.5
    >>> round(t_cdf(12.7062047, 1), 6)
    0.975
    """
    tail = 0.5 * reg_inc_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


@lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """Student-t quantile: the ``t`` with ``t_cdf(t, df) == p``.

    >>> [round(t_quantile(0.975, df), 3) for df in (1, 2, 4, 9, 29)]
    [12.706, 4.303, 2.776, 2.262, 2.045]
    >>> round(t_quantile(0.025, 2), 3), round(t_quantile(0.975, 1e9), 3)
    (-4.303, 1.96)
    """
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if df > 1e6:  # indistinguishable from the normal; the continued fraction converges slowly there
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def ci_half_width(std: float, n: int, level: float = 0.95) -> float:
    """Half-width of the two-sided t interval for a mean of ``n`` values with sample std ``std``;
    NaN with fewer than 2 values (one seed says nothing about the spread).

    >>> round(ci_half_width(1.0, 4), 4)  # t(0.975, 3) / sqrt(4)
    1.5912
    >>> ci_half_width(1.0, 1)
    nan
    """
    if n < 2 or math.isnan(std):
        return math.nan
    return t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, int]:
    """``(mean, CI half-width, n)`` of the non-NaN values.

    >>> mean, half, n = mean_ci([0.2, 0.4, 0.6])  # std 0.2; t(0.975, 2) * 0.2 / sqrt(3)
    >>> round(mean, 12), round(half, 4), n
    (0.4, 0.4968, 3)
    >>> mean_ci([0.5])
    (0.5, nan, 1)
    """
    xs = [float(v) for v in values if not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    return mean, ci_half_width(std, n, level), n
