"""Concrete dropout: a differentiable drop probability, the hard-dropout limit, and its regulariser."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import within_binomial

import jaxdrop

KEY = jax.random.key(0)
SHAPE = (200, 500)
P = 0.2
LOGIT = math.log(P / (1 - P))


def relaxed_z(temperature: float, logit: float = LOGIT) -> np.ndarray:
    """The relaxed drop indicator z, recovered from y = x (1 - z) / (1 - p) with x = 1."""
    y = np.asarray(jaxdrop.concrete_dropout(KEY, np.ones(SHAPE, np.float32), logit, temperature=temperature))
    q = 1 / (1 + math.exp(logit))
    return 1 - y.astype(np.float64) * q


def test_gradient_with_respect_to_p_logit_is_finite_nonzero_and_correct():
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    w = np.random.default_rng(2).standard_normal((8, 16)).astype(np.float32)

    @jax.jit
    def loss_and_grad(x, logit):
        def loss(x, logit):
            return jnp.sum(jaxdrop.concrete_dropout(KEY, x, logit) * w) ** 2

        return jax.value_and_grad(loss, argnums=(0, 1))(x, logit)

    _, (gx, gl) = loss_and_grad(x, LOGIT)
    assert np.isfinite(gl) and gl != 0 and np.isfinite(gx).all()
    # The noise is fixed by the key, so the output is smooth in p_logit: central differences.
    h = 1e-3
    fd = (loss_and_grad(x, LOGIT + h)[0] - loss_and_grad(x, LOGIT - h)[0]) / (2 * h)
    np.testing.assert_allclose(float(gl), float(fd), rtol=2e-2)
    # A per-feature logit (broadcast to the noise shape) gets its own gradient.
    per_feature = jax.grad(lambda lg: jaxdrop.concrete_dropout(KEY, x, lg).sum())(np.full(16, LOGIT, np.float32))
    assert per_feature.shape == (16,) and np.isfinite(per_feature).all() and (per_feature != 0).all()


def test_relaxed_mask_approaches_hard_dropout_as_temperature_falls():
    # The fraction of z strictly between 0.01 and 0.99 shrinks as t falls...
    fractions = [float(((z > 0.01) & (z < 0.99)).mean()) for z in map(relaxed_z, (1.0, 0.1, 0.01))]
    assert fractions[0] > fractions[1] > fractions[2]
    assert fractions[0] > 0.5 and fractions[2] < 0.05
    # ... and z > 1/2 exactly when log(p/q) + log(u/(1-u)) > 0, i.e. u > 1 - p: Bernoulli(p) drops.
    z = relaxed_z(0.01)
    n = z.size
    assert within_binomial((z > 0.5).mean(), P, n)
    u = np.asarray(jax.random.uniform(KEY, SHAPE), np.float64)  # the documented noise source
    assert ((z > 0.5) == (u > 1 - P)).mean() > 0.999


def test_deterministic_broadcast_and_dtypes():
    x = jnp.ones((6, 10, 4))
    assert jaxdrop.concrete_dropout(KEY, x, LOGIT, deterministic=True) is x
    y = np.asarray(jaxdrop.concrete_dropout(KEY, x, LOGIT, broadcast_dims=(1,)))
    assert (y == y[:, :1]).all() and len(np.unique(y)) > 1
    y16 = jaxdrop.concrete_dropout(KEY, x.astype(jnp.bfloat16), LOGIT, broadcast_dims=(1,))
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), y, rtol=1e-2)
    with jax.enable_x64(True):
        y64 = jaxdrop.concrete_dropout(KEY, np.ones((3, 4)), np.float64(LOGIT))
        assert y64.dtype == jnp.float64 and np.isfinite(np.asarray(y64)).all()


def test_bad_input():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="finite"):
        jaxdrop.concrete_dropout(KEY, x, float("inf"))
    with pytest.raises(TypeError, match="p_logit"):
        jaxdrop.concrete_dropout(KEY, x, 1)
    with pytest.raises(ValueError, match="temperature"):
        jaxdrop.concrete_dropout(KEY, x, LOGIT, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        jaxdrop.concrete_dropout(KEY, x, LOGIT, temperature=-1.0)
    with pytest.raises(ValueError, match="noise shape"):
        jaxdrop.concrete_dropout(KEY, x, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="noise shape"):
        jaxdrop.concrete_dropout(KEY, x, np.zeros((4, 3), np.float32), broadcast_dims=(0,))
    with pytest.raises(TypeError, match=r"concrete_dropout\(key, x, p_logit\)"):
        jaxdrop.concrete_dropout(x, KEY, LOGIT)
    with pytest.raises(TypeError, match="floating-point"):
        jaxdrop.concrete_dropout(KEY, x.astype(np.int32), LOGIT)


def test_regularizer_formula_and_gradients():
    kernel = np.random.default_rng(3).standard_normal((5, 7)).astype(np.float32)
    wr, dr, k = 1e-2, 0.3, 5

    def reference(logit):
        p = 1 / (1 + math.exp(-logit))
        return wr * float((kernel.astype(np.float64) ** 2).sum()) / (1 - p) + dr * k * (
            p * math.log(p) + (1 - p) * math.log(1 - p)
        )

    reg = jax.jit(
        lambda lg, w, wr, dr: jaxdrop.concrete_dropout_regularizer(
            lg, w, k, weight_regularizer=wr, dropout_regularizer=dr
        )
    )
    for logit in (-3.0, LOGIT, 0.0, 2.5):
        np.testing.assert_allclose(float(reg(logit, kernel, wr, dr)), reference(logit), rtol=1e-5)
    grad = jax.jit(jax.grad(reg))
    # The entropy term alone pulls p towards 1/2; the weight term alone pushes p down.
    assert grad(1.0, kernel, 0.0, dr) > 0 > grad(-1.0, kernel, 0.0, dr)
    assert grad(0.0, kernel, wr, 0.0) > 0
    # Finite at extreme logits (p log p computed from log-sigmoids, no 0 * log 0).
    for logit in (-40.0, 40.0):
        assert np.isfinite(float(grad(logit, kernel, wr, dr))) and np.isfinite(float(reg(logit, kernel, wr, dr)))
    with pytest.raises(ValueError, match="scalar"):
        jaxdrop.concrete_dropout_regularizer(np.zeros(2, np.float32), kernel, k, weight_regularizer=wr,
                                             dropout_regularizer=dr)  # fmt: skip
    with pytest.raises(ValueError, match="input_dim"):
        jaxdrop.concrete_dropout_regularizer(0.0, kernel, 0, weight_regularizer=wr, dropout_regularizer=dr)
    with pytest.raises(ValueError, match="weight_regularizer"):
        jaxdrop.concrete_dropout_regularizer(0.0, kernel, k, weight_regularizer=-1.0, dropout_regularizer=dr)


def test_learning_the_rate_with_the_regulariser_moves_p():
    # With only the regulariser's entropy term, gradient descent drives p to 1/2.
    reg = jax.jit(jax.grad(lambda lg: jaxdrop.concrete_dropout_regularizer(
        lg, jnp.zeros((2, 2)), 2, weight_regularizer=0.0, dropout_regularizer=1.0)))  # fmt: skip
    logit = jnp.float32(LOGIT)
    for _ in range(200):
        logit = logit - 1.0 * reg(logit)
    assert abs(float(jax.nn.sigmoid(logit)) - 0.5) < 1e-3
