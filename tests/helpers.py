"""Shared constants and statistical bounds for the tests.

Every statistical test is seeded (deterministic) and allows ``SIGMA`` standard
deviations: a correct implementation fails one given check with probability about
6e-5, a wrong one (another rate, a reused key) fails it by many sigma.
"""

from __future__ import annotations

import math

SIGMA = 4.0
"""Tolerance of every statistical test, in standard deviations (standard errors)."""


def binomial_bound(p: float, n: int, sigma: float = SIGMA) -> float:
    """``sigma`` standard deviations of the fraction of successes in ``n`` Bernoulli(``p``) draws."""
    return sigma * math.sqrt(p * (1 - p) / n)


def within_binomial(fraction: float, p: float, n: int, sigma: float = SIGMA) -> bool:
    """Whether an observed fraction of ``n`` independent Bernoulli(``p``) draws is within ``sigma`` sd of ``p``."""
    return abs(fraction - p) <= binomial_bound(p, n, sigma)
