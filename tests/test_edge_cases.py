"""Edge cases that once gave silent wrong answers, misleading errors or behaviour against the docstring.

The table-driven probe (``test_probe.py``) covers the families of bad input; these are the
cases that need a closer look: numerics at the extremes, ``checked`` across jit boundaries,
schedules past int32, the wording of errors, and documented statistics.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import binomial_bound

import jaxdrop
from jaxdrop import mc

KEY = jax.random.key(0)
X = jnp.ones((4, 5))


# ---------------------------------------------------------------- concrete dropout at the extremes


@pytest.mark.parametrize("p_logit", [44.0, 88.0, 200.0, -88.0])
def test_concrete_dropout_is_finite_for_extreme_logits(p_logit):
    y = jaxdrop.concrete_dropout(KEY, X, p_logit)
    g = jax.grad(lambda lg: jaxdrop.concrete_dropout(KEY, X, lg).sum())(jnp.float32(p_logit))
    assert bool(jnp.isfinite(y).all()) and bool(jnp.isfinite(g))
    if p_logit > 0:  # p ~ 1: everything dropped
        assert float(jnp.abs(y).max()) < 1e-6
    else:  # p ~ 0: everything kept, unscaled
        np.testing.assert_allclose(np.asarray(y), 1.0, rtol=1e-5)


def test_concrete_dropout_log_space_rescaling_equals_the_formula_at_ordinary_logits():
    logit = jnp.float32(math.log(0.3 / 0.7))
    y = jaxdrop.concrete_dropout(KEY, X, logit, temperature=0.5)
    u = jax.random.uniform(KEY, X.shape)
    p, e, t = 0.3, 1e-7, 0.5
    z = jax.nn.sigmoid((jnp.log(p + e) - jnp.log(1 - p + e) + jnp.log(u + e) - jnp.log(1 - u + e)) / t)
    # atol: the formula's 1 - z cancels in float32 where z ~ 1 (about 1e-7 absolute); log space does not.
    np.testing.assert_allclose(np.asarray(y), np.asarray(X * (1 - z) / (1 - p)), rtol=2e-5, atol=2e-7)


def test_nnx_concrete_dropout_layer_with_a_large_logit_is_finite():
    from flax import nnx

    import jaxdrop.nnx as jdn

    layer = jdn.ConcreteDropout(nnx.Linear(5, 3, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    layer.p_logit[...] = jnp.float32(90.0)
    assert bool(jnp.isfinite(layer(X)).all())


# ------------------------------------------------------------------------- checked across jit


def test_checked_sees_a_function_jitted_and_traced_before():
    inner = jax.jit(lambda k, x, r: jaxdrop.dropout(k, x, r))
    inner(KEY, jnp.ones(8), 0.5)  # traced and cached outside `checked`
    err, _ = jax.jit(jaxdrop.checked(lambda k, x, r: inner(k, x, r)))(KEY, jnp.ones(8), 1.5)
    assert err.get() is not None and "`rate` must be in [0, 1]" in err.get()


def test_plain_calls_work_after_a_checked_trace():
    inner = jax.jit(lambda k, x, r: jaxdrop.dropout(k, x, r))
    err, _ = jax.jit(jaxdrop.checked(lambda k, x, r: inner(k, x, r)))(KEY, jnp.ones(8), 0.5)
    assert err.get() is None
    y = inner(KEY, jnp.ones(8), 0.5)  # once crashed: a checkify.check that was not functionalized
    assert y.shape == (8,)


def test_traced_nan_rate_drops_everything_as_documented():
    y = jax.jit(lambda r: jaxdrop.dropout(KEY, X, r))(jnp.float32(jnp.nan))
    assert bool((y == 0).all())
    h = jax.jit(lambda r: jaxdrop.zoneout(KEY, jnp.zeros(4), jnp.ones(4), r))(jnp.float32(jnp.nan))
    assert bool((h == 0).all())  # zoneout: NaN counts as 1, every unit keeps h_prev


@pytest.mark.parametrize("tau", [-1.0, 0.0, float("nan")])
def test_traced_mc_parameters_are_reported_and_give_finite_variances(tau):
    ys = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3)), jnp.float32)
    err, r = jax.jit(jaxdrop.checked(lambda t: mc.regression(ys, tau=t)))(jnp.float32(tau))
    assert "`tau` must be a finite, positive number (> 0)" in err.get()
    assert bool(jnp.isfinite(r.variance).all() & (r.variance >= 0).all())
    err, prec = jax.jit(jaxdrop.checked(lambda r: mc.model_precision(1e-2, r, 100, 1e-4)))(jnp.float32(1.0))
    assert "`rate` must be < 1" in err.get() and bool(jnp.isfinite(prec))


# ------------------------------------------------------------------------------ schedules


def test_schedules_take_steps_past_int32():
    assert float(jaxdrop.curriculum_schedule(0.5, 0.01)(2**31)) == pytest.approx(0.5)
    late = jaxdrop.late_dropout_schedule(0.3, 2**31 - 1)
    assert float(late(2**40)) == pytest.approx(0.3) and float(late(5)) == 0.0
    with pytest.raises(ValueError, match=r"^jaxdrop\.early_dropout_schedule: `cutoff_steps` must be at most"):
        jaxdrop.early_dropout_schedule(0.1, 2**31)


# ------------------------------------------------------------------------------ wording


def test_errors_name_the_function_called_and_the_right_meaning():
    with pytest.raises(ValueError, match=r"^jaxdrop\.dropconnect_dense: `rate`"):
        jaxdrop.dropconnect_dense(KEY, jnp.ones((2, 4)), jnp.ones((4, 3)), 2.0)
    with pytest.raises(ValueError, match=r"the probability of keeping h_prev"):
        jaxdrop.zoneout(KEY, jnp.zeros(3), jnp.ones(3), 1.5)
    with pytest.raises(TypeError, match=r"^jaxdrop\.prng\.as_key\(key\)"):
        jaxdrop.prng.as_key(3)
    with pytest.raises(TypeError) as info:
        mc.regression(jnp.arange(6).reshape(3, 2))
    assert "rescales" not in str(info.value) and str(info.value).startswith("jaxdrop.mc.regression: `samples`")


def test_locked_dropout_rank_error_states_the_layout_with_its_axis():
    with pytest.raises(ValueError, match=r"\(T, F\) with time_axis=0"):
        jaxdrop.locked_dropout(KEY, jnp.ones(5), 0.5)
    # and (T, F) with time_axis=0 shares one mask over time
    y = jaxdrop.locked_dropout(KEY, jnp.ones((6, 8)), 0.5, time_axis=0)
    assert bool((y == y[:1]).all())


# --------------------------------------------------------------------- dropblock, as documented


def test_dropblock_realised_rate_is_below_the_target_as_documented():
    # 16x16 map, block 3, rate 0.5: the docstring states 0.39 dropped.
    n = 400
    m = jaxdrop.dropblock_mask(KEY, (n, 16, 16, 1), 0.5, block_size=3)
    dropped = 1 - float(m.mean())
    assert abs(dropped - 0.39) < 0.01
    # ... and the exact per-element law 1 - (1 - gamma)^n_i, averaged over positions.
    gamma = jaxdrop.dropblock_gamma(0.5, (16, 16), 3)
    cover = np.convolve(np.ones(14), np.ones(3))  # seed positions covering each index, per axis
    expected = 1 - np.mean((1 - gamma) ** np.outer(cover, cover))
    assert abs(dropped - expected) <= binomial_bound(expected, n * 16)  # rows of one sample are dependent


@pytest.mark.parametrize("channels", [1, 2])
def test_dropblock_expectation_when_the_block_covers_the_map(channels):
    n = 4000
    y = jaxdrop.dropblock(KEY, jnp.ones((n, 3, 3, channels)), 0.5, block_size=3)
    expected = 1 - 0.5**channels  # documented: (1 - rate^C) x
    per_sample = np.asarray(y.mean(axis=(1, 2, 3)))
    assert abs(per_sample.mean() - expected) <= 4 * per_sample.std() / math.sqrt(n)
