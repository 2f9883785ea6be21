"""Shared constants and statistical bounds for the tests.

Every statistical test is seeded (deterministic) and allows ``SIGMA`` standard
deviations: a correct implementation fails one given check with probability about
6e-5, a wrong one (another rate, a reused key) fails it by many sigma.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

SIGMA = 4.0
"""Tolerance of every statistical test, in standard deviations (standard errors)."""


def binomial_bound(p: float, n: int, sigma: float = SIGMA) -> float:
    """``sigma`` standard deviations of the fraction of successes in ``n`` Bernoulli(``p``) draws."""
    return sigma * math.sqrt(p * (1 - p) / n)


def assert_identical(a, b) -> None:
    """Same shape, dtype and bytes (bit for bit: +0.0/-0.0 and NaN payloads too); ``a`` is Flax's."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    if a.tobytes() != b.tobytes():
        bad = int(np.sum(a.reshape(-1).view(np.uint8) != b.reshape(-1).view(np.uint8)))
        raise AssertionError(f"outputs differ ({bad} differing bytes):\nflax    {a}\njaxdrop {b}")


def assert_trees_identical(a, b) -> None:
    """Two pytrees of the same structure whose leaves are :func:`assert_identical` (keys by their data)."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb, (ta, tb)
    for x, y in zip(la, lb, strict=True):
        if jnp.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert_identical(x, y)


def within_binomial(fraction: float, p: float, n: int, sigma: float = SIGMA) -> bool:
    """Whether an observed fraction of ``n`` independent Bernoulli(``p``) draws is within ``sigma`` sd of ``p``."""
    return abs(fraction - p) <= binomial_bound(p, n, sigma)
