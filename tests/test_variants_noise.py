"""Alpha dropout, feature alpha dropout, Gaussian dropout and Gaussian noise: their defining statistics.

Every statistical assertion is a seeded 4-sigma test: the tolerance is four
standard errors of the estimated quantity (stated next to each test).
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from helpers import SIGMA, within_binomial
from scipy import stats

import jaxdrop

KEY = jax.random.key(0)
ALPHA_PRIME = -1.7580993408473766


def standard_normal(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_mean_and_variance(y: np.ndarray, mean: float, var: float, mean_var: float | None = None):
    """4-sigma test of the sample mean and variance of n i.i.d. draws.

    The standard error of the mean is sqrt(var / n) (or sqrt(mean_var) if given, for
    correlated draws); that of the variance sqrt((m4 - s^4) / n), with the fourth
    central moment m4 estimated from the sample.
    """
    y = np.asarray(y, np.float64).ravel()
    n = y.size
    m, v = y.mean(), y.var()
    se_mean = math.sqrt(var / n if mean_var is None else mean_var)
    assert abs(m - mean) <= SIGMA * se_mean, f"mean {m} vs {mean} (4 se = {SIGMA * se_mean})"
    m4 = ((y - m) ** 4).mean()
    se_var = math.sqrt((m4 - v**2) / n)
    assert abs(v - var) <= SIGMA * se_var, f"variance {v} vs {var} (4 se = {SIGMA * se_var})"


# --------------------------------------------------------------------------- alpha dropout


def test_alpha_coefficients_match_the_reference_table():
    # a = ((1 - r)(1 + r alpha'^2))^-1/2 and b = -a r alpha'; values from the reference notes.
    from jaxdrop._variants._alpha import alpha_coefficients

    table = {0.05: (0.9548444760, 0.0839355722), 0.10: (0.9212845161, 0.1619709701),
             0.20: (0.8789035834, 0.3090399621), 0.50: (0.8864048947, 0.7791939305)}  # fmt: skip
    for rate, (a, b) in table.items():
        got_a, got_b = alpha_coefficients(rate)
        assert math.isclose(got_a, a, abs_tol=1e-9) and math.isclose(got_b, b, abs_tol=1e-9)


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.2, 0.5])
def test_alpha_dropout_keeps_zero_mean_unit_variance(rate):
    x = standard_normal(1, (400, 500))
    y = np.asarray(jaxdrop.alpha_dropout(KEY, x, rate))
    assert_mean_and_variance(y, 0.0, 1.0)
    # Kept units are a*x + b, dropped ones a*alpha' + b, dropped with probability rate.
    a = ((1 - rate) * (1 + rate * ALPHA_PRIME**2)) ** -0.5
    b = -a * rate * ALPHA_PRIME
    # The mask is documented to be jaxdrop.keep_mask's (jax.random.bernoulli(key, 1 - rate)).
    dropped = ~np.asarray(jaxdrop.keep_mask(KEY, x.shape, rate))
    np.testing.assert_allclose(y[~dropped], a * x[~dropped] + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[dropped], a * ALPHA_PRIME + b, rtol=1e-6)
    p, n = rate, x.size
    assert within_binomial(dropped.mean(), p, n)


def test_alpha_dropout_broadcast_dims_share_the_mask():
    y = np.asarray(jaxdrop.alpha_dropout(KEY, np.zeros((50, 8, 30), np.float32), 0.3, broadcast_dims=(1,)))
    assert (y == y[:, :1]).all()
    assert len(np.unique(y)) == 2


def test_feature_alpha_dropout_drops_whole_channels_and_keeps_moments():
    rate, (n, length, c) = 0.2, (400, 16, 32)
    x = standard_normal(2, (n, length, c))
    y = np.asarray(jaxdrop.feature_alpha_dropout(KEY, x, rate))
    a = ((1 - rate) * (1 + rate * ALPHA_PRIME**2)) ** -0.5
    b = -a * rate * ALPHA_PRIME
    # One mask value per (sample, channel), shared along the length axis.
    dropped = ~np.asarray(jaxdrop.keep_mask(KEY, x.shape, rate, broadcast_dims=(1,)))
    np.testing.assert_allclose(y[dropped], a * ALPHA_PRIME + b, rtol=1e-6)
    np.testing.assert_allclose(y[~dropped], a * x[~dropped] + b, rtol=1e-5, atol=1e-6)
    p = rate
    assert within_binomial(dropped[:, 0, :].mean(), p, n * c)
    # Units of one channel share the mask, so they are correlated:
    # corr = a^2 alpha'^2 rate (1 - rate), Var(mean) = (1 + (L - 1) corr) / N.
    corr = a**2 * ALPHA_PRIME**2 * rate * (1 - rate)
    assert_mean_and_variance(y, 0.0, 1.0, mean_var=(1 + (length - 1) * corr) / y.size)
    # Channel-first layout.
    z = np.asarray(jaxdrop.feature_alpha_dropout(KEY, np.zeros((4, 8, 5, 5), np.float32), 0.5, channel_axis=1))
    assert (z == z[:, :, :1, :1]).all()


# --------------------------------------------------------------------------- Gaussian dropout


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_gaussian_dropout_noise_has_mean_one_and_variance_rate_over_keep(rate):
    shape = (400, 500)
    noise = np.asarray(jaxdrop.gaussian_dropout(KEY, np.ones(shape, np.float32), rate), np.float64)
    var = rate / (1 - rate)
    assert_mean_and_variance(noise, 1.0, var)
    # ... and is Gaussian: Kolmogorov-Smirnov against N(1, var) (fixed seed, p > 1e-4).
    pvalue = stats.kstest(noise.ravel()[:20_000], "norm", args=(1.0, math.sqrt(var))).pvalue
    assert pvalue > 1e-4
    # It is 1 + sigma * jax.random.normal(key, shape), as documented.
    expected = 1 + math.sqrt(var) * np.asarray(jax.random.normal(KEY, shape), np.float64)
    np.testing.assert_allclose(noise, expected, rtol=1e-6, atol=1e-6)


def test_gaussian_dropout_scales_inputs_and_preserves_their_expectation():
    rate, n_keys = 0.5, 2048
    x = np.array([3.0, -1.0, 0.25, 0.0], np.float32)
    keys = jax.random.split(jax.random.key(3), n_keys)
    ys = np.asarray(jax.vmap(lambda k: jaxdrop.gaussian_dropout(k, x, rate))(keys), np.float64)
    assert (ys[:, 3] == 0).all()
    # E[y] = x with standard error |x| sigma / sqrt(n).
    se = np.abs(x) * math.sqrt(rate / (1 - rate) / n_keys)
    assert (np.abs(ys.mean(0) - x) <= SIGMA * se + 1e-7).all()
    # The gradient with respect to x is the noise itself.
    grad = jax.jit(jax.grad(lambda x: jaxdrop.gaussian_dropout(KEY, x, rate).sum()))
    xs = np.linspace(0.5, 2.0, 12, dtype=np.float32)
    np.testing.assert_allclose(grad(xs), np.asarray(jaxdrop.gaussian_dropout(KEY, xs, rate)) / xs, rtol=1e-5)


def test_gaussian_dropout_broadcast_dims_share_the_noise():
    y = np.asarray(jaxdrop.gaussian_dropout(KEY, np.ones((6, 10, 4), np.float32), 0.5, broadcast_dims=(0, 2)))
    assert (y == y[:1, :, :1]).all()
    assert len(np.unique(y)) == 10


def test_gaussian_noise_is_additive_with_the_given_stddev():
    shape = (400, 500)
    for stddev in (0.1, 3.0):  # not a probability: values above 1 are fine
        y = np.asarray(jaxdrop.gaussian_noise(KEY, np.full(shape, 2.0, np.float32), stddev), np.float64)
        assert_mean_and_variance(y, 2.0, stddev**2)
        expected = 2.0 + stddev * np.asarray(jax.random.normal(KEY, shape), np.float64)
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    x = np.ones(3, np.float32)
    with pytest.raises(TypeError, match=r"gaussian_noise\(key, x, stddev\)"):
        jaxdrop.gaussian_noise(x, KEY, 0.1)
    with pytest.raises(TypeError, match="scalar"):
        jaxdrop.gaussian_noise(KEY, x, np.ones(2))
