"""Structured Bernoulli masks: channel dropout, drop-path, locked/embedding dropout, DropConnect, zoneout.

Each test checks the property that defines the method (what is dropped together)
and, with 4-sigma binomial tolerances on seeded draws, how often.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SIGMA, within_binomial

import jaxdrop

KEY = jax.random.key(0)
N_KEYS = 2048  # one key-batch shape for every Monte-Carlo test: split compiles once


def keys(seed: int) -> jax.Array:
    return jax.random.split(jax.random.key(seed), N_KEYS)


def normal(seed: int, shape, shift: float = 0.0) -> np.ndarray:
    """Test inputs from NumPy: no JAX compilation per shape."""
    return (np.random.default_rng(seed).standard_normal(shape) + shift).astype(np.float32)


def ones(shape) -> np.ndarray:
    return np.ones(shape, np.float32)


def assert_constant_along(y, axes):
    y = np.asarray(y)
    for a in axes:
        first = np.take(y, [0], axis=a)
        assert (y == first).all(), f"values vary along axis {a}"


# --------------------------------------------------------------------------- channel dropout


@pytest.mark.parametrize(
    ("shape", "kw", "shared"),
    [
        ((64, 5, 5, 48), {}, (1, 2)),  # NHWC, the default
        ((64, 48, 5, 5), {"channel_axis": 1}, (2, 3)),  # NCHW
        ((64, 9, 48), {}, (1,)),  # (N, L, C)
        ((8, 3, 4, 5, 48), {}, (1, 2, 3)),  # (N, D, H, W, C)
        ((5, 5, 48), {"batch_axis": None}, (0, 1)),  # unbatched (H, W, C)
    ],
    ids=["nhwc", "nchw", "nlc", "ndhwc", "unbatched"],
)
def test_channel_dropout_zeros_whole_channels(shape, kw, shared):
    rate = 0.3
    y = np.asarray(jaxdrop.channel_dropout(KEY, ones(shape), rate, **kw))
    assert_constant_along(y, shared)
    values = np.unique(y)
    np.testing.assert_allclose(values, [0.0, 1 / (1 - rate)], rtol=1e-6)
    # One Bernoulli(1 - rate) per (sample, channel): count channels, not elements.
    n_channels = y.size // math.prod(shape[a] for a in shared)
    assert within_binomial(float((y != 0).mean()), 1 - rate, n_channels)
    # Bit-identical to dropout with the spatial axes broadcast.
    x = normal(1, shape)
    np.testing.assert_array_equal(
        jaxdrop.channel_dropout(KEY, x, rate, **kw), jaxdrop.dropout(KEY, x, rate, broadcast_dims=shared)
    )


def test_channel_dropout_masks_differ_between_samples_and_channels():
    y = np.asarray(jaxdrop.channel_dropout(KEY, ones((64, 2, 2, 48)), 0.5))[:, 0, 0, :]
    assert not (y == y[:1]).all() and not (y == y[:, :1]).all()


def test_channel_dropout_bad_layouts():
    x = ones((4, 5, 3))
    with pytest.raises(ValueError, match="rank >= 2"):
        jaxdrop.channel_dropout(KEY, ones(5), 0.5)
    with pytest.raises(ValueError, match="same axis"):
        jaxdrop.channel_dropout(KEY, x, 0.5, channel_axis=0)
    with pytest.raises(ValueError, match="out of range"):
        jaxdrop.channel_dropout(KEY, x, 0.5, channel_axis=3)
    with pytest.raises(TypeError, match="channel_axis"):
        jaxdrop.channel_dropout(KEY, x, 0.5, channel_axis=None)
    with pytest.raises(TypeError, match="batch_axis"):
        jaxdrop.channel_dropout(KEY, x, 0.5, batch_axis=1.0)


# --------------------------------------------------------------------------- drop path


def test_drop_path_zeros_whole_samples():
    rate, n = 0.25, 4096
    x = normal(2, (n, 3, 5), shift=8.0)  # no exact zeros
    y = np.asarray(jaxdrop.drop_path(KEY, x, rate))
    dropped = (y == 0).all(axis=(1, 2))
    kept = (y != 0).all(axis=(1, 2))
    assert (dropped | kept).all(), "a sample was partly dropped"
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
    assert within_binomial(float(kept.mean()), 1 - rate, n)
    # Not inverted: kept samples unchanged, the same samples dropped.
    z = np.asarray(jaxdrop.drop_path(KEY, x, rate, scale_by_keep=False))
    np.testing.assert_array_equal(z[kept], x[kept])
    assert (z[~kept] == 0).all()


def test_drop_path_batch_axis_and_batch_wise():
    x = ones((5, 64, 3))
    y = np.asarray(jaxdrop.drop_path(KEY, x, 0.5, batch_axis=1))
    assert_constant_along(y, (0, 2))
    assert len(np.unique(y[0, :, 0])) == 2
    # batch_wise: one draw for the whole batch; over many keys kept with probability 1 - rate.
    rate = 0.3
    ys = np.asarray(jax.vmap(lambda k: jaxdrop.drop_path(k, x, rate, batch_wise=True))(keys(3)))
    kept = (ys != 0).all(axis=(1, 2, 3))
    assert (kept | (ys == 0).all(axis=(1, 2, 3))).all(), "batch partly dropped"
    assert within_binomial(float(kept.mean()), 1 - rate, N_KEYS)


def test_drop_path_residual_expectation():
    # h + drop_path(f(h)) has expectation h + f(h) (inverted scaling): average over keys.
    rate = 0.5
    branch = np.array([[1.0, -2.0, 3.0]], np.float32)
    ys = np.asarray(jax.vmap(lambda k: jaxdrop.drop_path(k, branch, rate))(keys(4)), np.float64)
    sd = np.abs(branch) * math.sqrt(rate / (1 - rate) / N_KEYS)
    assert (np.abs(ys.mean(0) - branch) <= SIGMA * sd).all()


def test_drop_path_bad_input():
    with pytest.raises(ValueError, match="rank >= 1"):
        jaxdrop.drop_path(KEY, ones(()), 0.5)
    with pytest.raises(TypeError, match="batch_axis"):
        jaxdrop.drop_path(KEY, ones(3), 0.5, batch_axis=None)
    with pytest.raises(ValueError, match="out of range"):
        jaxdrop.drop_path(KEY, ones((2, 3)), 0.5, batch_axis=2)
    with pytest.raises(TypeError, match="scale_by_keep"):
        jaxdrop.drop_path(KEY, ones(3), 0.5, scale_by_keep=1)


def test_stochastic_depth_rates_follow_both_conventions():
    for depth in (1, 2, 7, 12):
        rates = jaxdrop.stochastic_depth_rates(0.3, depth)
        np.testing.assert_array_equal(rates, np.linspace(0, 0.3, depth))
        paper = jaxdrop.stochastic_depth_rates(0.3, depth, first_zero=False)
        np.testing.assert_allclose(paper, [0.3 * (i + 1) / depth for i in range(depth)], rtol=1e-15)
        assert len(rates) == len(paper) == depth and all(type(r) is float for r in rates + paper)
        assert math.isclose(paper[-1], 0.3) and (depth == 1 or math.isclose(rates[-1], 0.3))
        assert list(rates) == sorted(rates) and rates[0] == 0.0
    with pytest.raises(ValueError, match="depth"):
        jaxdrop.stochastic_depth_rates(0.3, 0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        jaxdrop.stochastic_depth_rates(1.3, 4)
    with pytest.raises(TypeError, match="depth"):
        jaxdrop.stochastic_depth_rates(0.3, 4.0)


# --------------------------------------------------------------------------- locked / embedding dropout


@pytest.mark.parametrize("time_axis", [1, 0, -2])
def test_locked_dropout_mask_is_identical_across_time(time_axis):
    rate = 0.4
    x = normal(5, (32, 16, 24), shift=8.0)  # no exact zeros
    y = np.asarray(jaxdrop.locked_dropout(KEY, x, rate, time_axis=time_axis))
    mask = y != 0
    assert_constant_along(mask, (time_axis % 3,))
    np.testing.assert_allclose(y[mask], x[mask] / (1 - rate), rtol=1e-6)
    n_masks = x.size // x.shape[time_axis]
    assert within_binomial(float(mask.mean()), 1 - rate, n_masks)
    np.testing.assert_array_equal(y, jaxdrop.dropout(KEY, x, rate, broadcast_dims=(time_axis,)))


def test_locked_dropout_bad_input():
    with pytest.raises(ValueError, match="time axis"):
        jaxdrop.locked_dropout(KEY, ones(5), 0.5)
    with pytest.raises(ValueError, match="out of range"):
        jaxdrop.locked_dropout(KEY, ones((2, 3)), 0.5, time_axis=2)
    with pytest.raises(TypeError, match="time_axis"):
        jaxdrop.locked_dropout(KEY, ones((2, 3)), 0.5, time_axis=(1,))


def test_embedding_dropout_drops_whole_rows_and_every_occurrence():
    rate, vocab = 0.2, 4000
    emb = normal(6, (vocab, 8), shift=8.0)
    out = np.asarray(jaxdrop.embedding_dropout(KEY, emb, rate))
    dropped = (out == 0).all(axis=1)
    assert (dropped | (out != 0).all(axis=1)).all(), "a row was partly dropped"
    np.testing.assert_allclose(out[~dropped], emb[~dropped] / (1 - rate), rtol=1e-6)
    assert within_binomial(float(dropped.mean()), rate, vocab)
    # A dropped word is zero wherever it occurs in the batch.
    word = int(np.flatnonzero(dropped)[0])
    tokens = np.array([[word, 1, word], [2, word, 3]])
    looked_up = np.take(out, tokens, axis=0)
    assert (looked_up[tokens == word] == 0).all()
    # Gradients reach only the kept rows.
    lookup = jax.jit(lambda e: jnp.take(jaxdrop.embedding_dropout(KEY, e, rate), tokens, axis=0).sum())
    g = np.asarray(jax.grad(lookup)(emb))
    assert (g[word] == 0).all() and (g[tokens[0, 1]] != 0).all() == (not dropped[tokens[0, 1]])


def test_embedding_dropout_needs_a_matrix():
    with pytest.raises(ValueError, match="vocab_size, features"):
        jaxdrop.embedding_dropout(KEY, ones((2, 3, 4)), 0.5)
    with pytest.raises(ValueError, match="vocab_size, features"):
        jaxdrop.embedding_dropout(KEY, ones(5), 0.5)


# --------------------------------------------------------------------------- DropConnect


def test_dropconnect_masks_weights_once_for_the_whole_batch():
    rate = 0.5
    kernel = normal(7, (16, 12))
    bias = np.arange(12.0, dtype=np.float32)
    x = normal(8, (5, 7, 16))
    w = np.asarray(jaxdrop.dropconnect(KEY, kernel, rate))
    np.testing.assert_array_equal(w, jaxdrop.dropout(KEY, kernel, rate))
    assert within_binomial(float((w != 0).mean()), 1 - rate, kernel.size)
    y = np.asarray(jaxdrop.dropconnect_dense(KEY, x, kernel, rate, bias))
    assert y.shape == (5, 7, 12)
    np.testing.assert_allclose(y, x @ w + bias, rtol=1e-4, atol=1e-4)
    det = jaxdrop.dropconnect_dense(KEY, x, kernel, rate, deterministic=True)
    np.testing.assert_allclose(det, x @ kernel, rtol=1e-4, atol=1e-4)
    # The kernel's gradient is zero exactly at the dropped weights.
    g = jax.jit(jax.grad(lambda k: jaxdrop.dropconnect_dense(KEY, x, k, rate, bias).sum()))(kernel)
    np.testing.assert_array_equal(np.asarray(g) == 0, w == 0)


def test_dropconnect_dense_is_unbiased():
    # E over masks of x @ (M * W / q) = x @ W; Var of each output = sum_i x_i^2 W_ij^2 rate / q.
    rate = 0.5
    kernel, x = normal(9, (6, 3)), normal(10, (6,))
    ys = np.asarray(jax.vmap(lambda k: jaxdrop.dropconnect_dense(k, x, kernel, rate))(keys(11)), np.float64)
    sd = np.sqrt((x[:, None] ** 2 * kernel**2).sum(0) * rate / (1 - rate) / N_KEYS)
    assert (np.abs(ys.mean(0) - x @ kernel) <= SIGMA * sd).all()


def test_dropconnect_dense_shape_errors():
    with pytest.raises(ValueError, match=r"\(in, out\)"):
        jaxdrop.dropconnect_dense(KEY, ones((2, 3)), ones((3, 4, 1)), 0.5)
    with pytest.raises(ValueError, match=r"in = kernel\.shape"):
        jaxdrop.dropconnect_dense(KEY, ones((2, 5)), ones((3, 4)), 0.5)
    with pytest.raises(ValueError, match=r"bias"):
        jaxdrop.dropconnect_dense(KEY, ones((2, 3)), ones((3, 4)), 0.5, ones(3))
    with pytest.raises(TypeError, match="floating-point"):
        jaxdrop.dropconnect_dense(KEY, ones((2, 3)), np.ones((3, 4), np.int32), 0.5)
    with pytest.raises(TypeError, match=r"dropconnect_dense\(key, x, kernel, rate\)"):
        jaxdrop.dropconnect_dense(ones((2, 3)), KEY, ones((3, 4)), 0.5)


# --------------------------------------------------------------------------- zoneout


def test_zoneout_keeps_previous_units_with_probability_rate():
    rate, n = 0.15, 50_000
    h_prev = normal(12, (n,))
    h_new = h_prev + 1.0
    h = np.asarray(jaxdrop.zoneout(KEY, h_prev, h_new, rate))
    kept_prev = h == h_prev
    assert (kept_prev | (h == h_new)).all(), "a unit is neither h_prev nor h_new"
    assert within_binomial(float(kept_prev.mean()), rate, n)
    # Gradients follow the same selection.
    grad = jax.jit(jax.grad(lambda a, b: jaxdrop.zoneout(KEY, a, b, rate).sum(), argnums=(0, 1)))
    gp, gn = grad(h_prev, h_new)
    np.testing.assert_array_equal(gp, kept_prev.astype(np.float32))
    np.testing.assert_array_equal(gn, 1 - kept_prev.astype(np.float32))


def test_zoneout_evaluation_is_the_training_expectation():
    rate = 0.3
    h_prev, h_new = jnp.array([1.0, -2.0, 0.5]), jnp.array([3.0, 1.0, 0.5])
    expected = np.asarray(jaxdrop.zoneout(KEY, h_prev, h_new, rate, deterministic=True), np.float64)
    np.testing.assert_allclose(expected, rate * np.asarray(h_prev) + (1 - rate) * np.asarray(h_new), rtol=1e-6)
    hs = np.asarray(jax.vmap(lambda k: jaxdrop.zoneout(k, h_prev, h_new, rate))(keys(13)), np.float64)
    sd = np.abs(np.asarray(h_prev - h_new)) * math.sqrt(rate * (1 - rate) / N_KEYS)
    assert (np.abs(hs.mean(0) - expected) <= SIGMA * sd + 1e-6).all()
    # rate 0 / 1 in both modes: h_new / h_prev themselves.
    for det in (False, True):
        assert jaxdrop.zoneout(KEY, h_prev, h_new, 0.0, deterministic=det) is h_new
        assert jaxdrop.zoneout(KEY, h_prev, h_new, 1.0, deterministic=det) is h_prev


def test_zoneout_in_a_scan_draws_a_fresh_mask_each_step():
    steps, units, rate = 6, 2000, 0.5

    def step(h, key):
        h_new = h + 1.0  # a trivially simple "cell"
        h = jaxdrop.zoneout(key, h, h_new, rate)
        return h, h

    step_keys = keys(14)[:steps]
    _, hs = jax.jit(lambda h0, ks: jax.lax.scan(step, h0, ks))(np.zeros(units, np.float32), step_keys)
    updates = np.diff(np.concatenate([np.zeros((1, units)), np.asarray(hs)]), axis=0) == 1
    assert not (updates == updates[:1]).all(), "the same mask was reused across steps"
    assert within_binomial(float(updates.mean()), 1 - rate, steps * units)


def test_zoneout_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        jaxdrop.zoneout(KEY, ones(3), ones(4), 0.5)
    with pytest.raises(TypeError, match="h_new"):
        jaxdrop.zoneout(KEY, ones(3), np.ones(3, np.int32), 0.5)
    with pytest.raises(TypeError, match=r"zoneout\(key, h_prev, h_new, rate\)"):
        jaxdrop.zoneout(ones(3), KEY, ones(3), 0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        jaxdrop.zoneout(KEY, ones(3), ones(3), 1.2)
