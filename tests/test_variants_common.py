"""Guarantees every dropout variant shares: identity cases, dtypes, jit/vmap/grad, traced rates, errors.

Method-specific properties (statistics, shapes of the masks) live in the other
``test_variants_*`` files.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop

KEY = jax.random.key(0)
# Inputs from NumPy (a jax.random draw would compile once per shape); jnp arrays so that
# "returns the input itself" can be checked with `is`.
_RNG = np.random.default_rng(1)
X = jnp.asarray(_RNG.standard_normal((4, 6, 6, 3)), jnp.float32)
EMB = jnp.asarray(_RNG.standard_normal((12, 5)), jnp.float32)


def _zoneout(key, x, rate, **kw):
    # h_prev = x / 2 and h_new = x: rate 0 gives h_new (x itself).
    return jaxdrop.zoneout(key, jnp.asarray(x) * 0.5, x, rate, **kw)


# name -> (function(key, x, rate, **kw), input)
VARIANTS = {
    "channel_dropout": (jaxdrop.channel_dropout, X),
    "alpha_dropout": (jaxdrop.alpha_dropout, X),
    "feature_alpha_dropout": (jaxdrop.feature_alpha_dropout, X),
    "gaussian_dropout": (jaxdrop.gaussian_dropout, X),
    "gaussian_noise": (jaxdrop.gaussian_noise, X),
    "dropblock": (functools.partial(jaxdrop.dropblock, block_size=3), X),
    "drop_path": (jaxdrop.drop_path, X),
    "dropconnect": (jaxdrop.dropconnect, X),
    "locked_dropout": (jaxdrop.locked_dropout, X),
    "embedding_dropout": (jaxdrop.embedding_dropout, EMB),
    "zoneout": (_zoneout, X),
}
NAMES = list(VARIANTS)
# Methods whose rate is a probability (gaussian_noise takes a standard deviation instead).
PROB_NAMES = [n for n in NAMES if n != "gaussian_noise"]
# Methods undefined at rate 1 (a concrete 1 raises, a traced 1 is capped below 1).
BELOW_ONE = {"alpha_dropout", "feature_alpha_dropout", "gaussian_dropout"}


# The methods that compute in float32 for half-precision inputs (the others select or scale).
HALF_PRECISION = {"alpha_dropout", "gaussian_dropout", "gaussian_noise", "dropblock"}
FLOAT16 = {"alpha_dropout", "dropblock"}  # float16 too (its range is the narrowest)
# channel_dropout, drop_path, dropconnect, locked_dropout and embedding_dropout only choose
# a mask shape for jaxdrop's dropout core (masked_scale), whose gradients, dtypes and
# traced-rate checks tests/test_dropout.py covers; channel_dropout represents them in the
# more expensive (compiling) tests below, next to every method with numerics of its own.
OWN_CODE = ["channel_dropout", "alpha_dropout", "gaussian_dropout", "gaussian_noise", "dropblock", "zoneout"]
W = _RNG.standard_normal(X.shape).astype(np.float32)  # weights of the scalar test loss


@functools.cache
def jitted(name: str):
    """One compiled function per method, with a traced rate, shared by the tests below."""
    fn, _ = VARIANTS[name]
    traces: list[int] = []

    def f(key, x, rate):
        traces.append(1)
        return fn(key, x, rate)

    return jax.jit(f), traces


@functools.cache
def loss_and_grad(name: str):
    """A smooth scalar loss of the output and its gradient in (x, rate), compiled once per method."""
    fn, x = VARIANTS[name]
    w = W.reshape(-1)[: x.size].reshape(x.shape)

    def loss(x, rate):
        return jnp.sum(jnp.sin(fn(KEY, x, rate)) * w)

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    return (lambda x, rate: value_and_grad(x, rate)[0]), (lambda x, rate: value_and_grad(x, rate)[1])


def central_difference(f, h=1e-2):
    return (f(h) - f(-h)) / (2 * h)


@pytest.mark.parametrize("name", NAMES)
def test_rate_zero_and_deterministic_return_the_input_itself(name):
    fn, x = VARIANTS[name]
    assert fn(KEY, x, 0.0) is x
    assert fn(KEY, x, 0) is x
    if name != "zoneout":  # zoneout's deterministic mode is its expectation (test_variants_masks)
        assert fn(KEY, x, 0.3, deterministic=True) is x
    # Under jit a traced 0 gives x's values.
    f, _ = jitted(name)
    np.testing.assert_array_equal(f(KEY, x, 0.0), x)


@pytest.mark.parametrize("name", OWN_CODE)
def test_output_dtype_shape_and_finiteness(name):
    fn, x = VARIANTS[name]
    y32 = np.asarray(fn(KEY, x, 0.25), np.float64)
    x_np = np.asarray(x)
    for dtype in (jnp.float16, jnp.bfloat16) if name in FLOAT16 else (jnp.bfloat16,):
        y = fn(KEY, x_np.astype(dtype), 0.25)
        assert y.dtype == dtype and y.shape == x.shape
        y = np.asarray(y).astype(np.float64)
        assert np.isfinite(y).all()
        # Same mask or noise as float32; values equal up to the low precision's rounding.
        np.testing.assert_allclose(y, y32, rtol=2e-2, atol=2e-2)


def test_float64_under_x64():
    with jax.enable_x64(True):
        for name in sorted(HALF_PRECISION):
            fn, x = VARIANTS[name]
            y = fn(KEY, x.astype(jnp.float64), 0.25)
            assert y.dtype == jnp.float64, name
            assert np.isfinite(np.asarray(y)).all(), name


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager_and_a_traced_rate_does_not_recompile(name):
    fn, x = VARIANTS[name]
    f, traces = jitted(name)
    # A traced rate computes its constants in float32 rather than in double: same up to rounding.
    np.testing.assert_allclose(f(KEY, x, 0.25), fn(KEY, x, 0.25), rtol=1e-6, atol=1e-6)
    n = len(traces)
    for rate in (0.5, 0.125, 0.3):
        f(KEY, x, rate)
    assert len(traces) == n == 1, "a new rate value recompiled the function"


@pytest.mark.parametrize("name", OWN_CODE)
def test_vmap_over_keys_equals_a_loop(name):
    fn, x = VARIANTS[name]
    keys = jax.random.split(jax.random.key(3), 3)
    batched = jax.vmap(lambda k: fn(k, x, 0.5))(keys)
    for i in range(3):
        np.testing.assert_allclose(batched[i], fn(keys[i], x, 0.5), rtol=1e-6, atol=1e-7)
    assert not bool((batched[0] == batched[1]).all()), "different keys gave the same output"


@pytest.mark.parametrize("name", OWN_CODE)
def test_fast_mode_runs_and_differs_from_exact(name):
    fn, x = VARIANTS[name]
    fast = fn(KEY, x, 0.5, mode="fast")
    assert fast.shape == x.shape and fast.dtype == x.dtype
    assert not bool((fast == fn(KEY, x, 0.5)).all())
    with pytest.raises(ValueError, match="mode"):
        fn(KEY, x, 0.5, mode="turbo")


@pytest.mark.parametrize(
    ("name", "dims"),
    [("channel_dropout", (1, 2)), ("drop_path", (1, 2, 3)), ("dropconnect", ()), ("locked_dropout", (1,)),
     ("embedding_dropout", (1,))],
)
def test_mask_methods_are_dropout_with_their_broadcast_dims_in_both_modes(name, dims):
    fn, x = VARIANTS[name]
    for mode in ("exact", "fast"):
        expected = jaxdrop.dropout(KEY, x, 0.5, broadcast_dims=dims, mode=mode)
        np.testing.assert_array_equal(fn(KEY, x, 0.5, mode=mode), expected)


@pytest.mark.parametrize("name", OWN_CODE)
def test_gradients_match_finite_differences(name):
    # With the key fixed, each output is a smooth function of x and of the rate
    # (the mask or noise does not move for small changes), so central differences
    # of a smooth loss must match the gradient, in x and in a traced rate.
    _, x = VARIANTS[name]
    loss, grad = loss_and_grad(name)
    gx, gr = grad(x, 0.3)
    assert bool(jnp.isfinite(gx).all()) and bool(jnp.isfinite(gr))
    v = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    fd = central_difference(lambda h: loss(x + h * v, 0.3))
    np.testing.assert_allclose(float(jnp.vdot(gx, v)), float(fd), rtol=2e-2, atol=2e-2)
    # h small enough that no mask element flips for this key (a flip is a jump, not a slope).
    fd_rate = central_difference(lambda h: loss(x, 0.3 + h), h=1e-4)
    np.testing.assert_allclose(float(gr), float(fd_rate), rtol=2e-2, atol=2e-2)
    if name in ("gaussian_noise", "gaussian_dropout", "alpha_dropout", "feature_alpha_dropout"):
        assert float(gr) != 0.0  # the output depends continuously on the rate
    if name == "zoneout":
        assert float(gr) == 0.0  # a select between two states: no slope in the rate


@pytest.mark.parametrize("name", OWN_CODE)
def test_backward_pass_stores_no_mask_or_noise(name):
    # Reverse mode keeps the key (and scalars), not a per-element mask or noise sample:
    # the backward pass regenerates them.
    fn, x = VARIANTS[name]
    _, vjp = jax.vjp(lambda x: fn(KEY, x, 0.25), x)
    big = [leaf.shape for leaf in jax.tree_util.tree_leaves(vjp) if np.size(leaf) > 1]
    assert not big, f"residuals of shape {big} are stored for the backward pass"


# --------------------------------------------------------------------------- rate 1 and bad input


@functools.cache
def checked_fn(name: str):
    fn, _ = VARIANTS[name]
    return jax.jit(jaxdrop.checked(lambda k, x, r: fn(k, x, r)))


@pytest.mark.parametrize("name", PROB_NAMES)
def test_rate_one(name):
    fn, x = VARIANTS[name]
    f, _ = jitted(name)
    if name in BELOW_ONE:
        with pytest.raises(ValueError, match="must be < 1"):
            fn(KEY, x, 1.0)
        y = f(KEY, x, 1.0)  # a traced 1 is capped just below 1: finite
        assert bool(jnp.isfinite(y).all())
        err, _ = checked_fn(name)(KEY, x, 1.0)
        with pytest.raises(Exception, match="must be < 1"):
            err.throw()
        return
    expected = 0.5 * x if name == "zoneout" else jnp.zeros_like(x)
    np.testing.assert_array_equal(fn(KEY, x, 1.0), expected)
    np.testing.assert_array_equal(f(KEY, x, 1.0), expected)
    if name in OWN_CODE:
        _, grad = loss_and_grad(name)
        assert all(bool(jnp.isfinite(v).all()) for v in grad(x, 1.0))


@pytest.mark.parametrize("name", PROB_NAMES)
@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), float("inf")])
def test_bad_concrete_rate_raises(name, rate):
    fn, x = VARIANTS[name]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fn(KEY, x, rate)


@pytest.mark.parametrize("stddev", [-0.1, float("nan"), float("inf")])
def test_bad_stddev_raises(stddev):
    with pytest.raises(ValueError, match=r"finite and >= 0"):
        jaxdrop.gaussian_noise(KEY, X, stddev)


@pytest.mark.parametrize("name", NAMES)
def test_bad_x_key_rate_type_and_flag(name):
    fn, x = VARIANTS[name]
    with pytest.raises(TypeError, match="floating-point"):
        fn(KEY, x.astype(jnp.int32), 0.5)
    with pytest.raises(TypeError, match=r"jax\.random\.key"):
        fn(0, x, 0.5)
    if name != "zoneout":  # the test wrapper computes x / 2 first; see test_variants_masks
        with pytest.raises(TypeError, match="wrong order"):
            fn(x, KEY, 0.5)
    with pytest.raises(TypeError, match="bool"):
        fn(KEY, x, True)
    with pytest.raises(TypeError, match="scalar"):
        fn(KEY, x, jnp.array([0.1, 0.2]))
    with pytest.raises(TypeError, match="deterministic"):
        fn(KEY, x, 0.5, deterministic="yes")


@pytest.mark.parametrize("name", OWN_CODE)
def test_traced_rate_out_of_range_is_reported_by_checked(name):
    fn, x = VARIANTS[name]
    checked = checked_fn(name)
    bad = -0.5 if name == "gaussian_noise" else 1.5
    err, y = checked(KEY, x, bad)
    with pytest.raises(Exception, match=r"must be (in \[0, 1\]|finite and >= 0)"):
        err.throw()
    assert bool(jnp.isfinite(y).all())  # clamped, not NaN
    err, y = checked(KEY, x, 0.25)
    assert err.get() is None
    np.testing.assert_allclose(y, fn(KEY, x, 0.25), rtol=1e-6, atol=1e-6)
