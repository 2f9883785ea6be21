"""jaxdrop.dropout / keep_mask: statistics, edge cases, errors, dtypes and transformations."""

from __future__ import annotations

import math

import chex
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SIGMA, binomial_bound, within_binomial
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy import stats

import jaxdrop

KEY = jax.random.key(0)


def kept_fraction_bound(n: int, keep: float) -> float:
    """SIGMA half-width of the kept fraction of n independent Bernoulli(keep) draws."""
    return binomial_bound(keep, n)


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
@pytest.mark.parametrize("shape", [(100_003,), (257, 389), (13, 17, 19, 7)])
def test_kept_fraction_matches_keep_probability(rate, shape):
    mask = jaxdrop.keep_mask(jax.random.key(int(rate * 1000)), shape, rate)
    n = math.prod(shape)
    keep = 1 - rate
    assert abs(float(mask.mean()) - keep) <= kept_fraction_bound(n, keep)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_kept_values_are_rescaled_and_mean_is_preserved(rate):
    x = jax.random.normal(jax.random.key(1), (200_000,)) + 3.0
    y = jaxdrop.dropout(jax.random.key(2), x, rate)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
    # E[y - x] = 0 with Var[y_i - x_i] = x_i^2 rate / (1 - rate).
    diff = y - x
    sd = float(jnp.sqrt(jnp.sum(x**2) * rate / (1 - rate))) / x.size
    assert abs(float(diff.mean())) <= SIGMA * sd


def test_masks_from_different_keys_are_independent():
    # Agreement rate of two independent Bernoulli(q) masks is q^2 + (1 - q)^2.
    n, rate = 400_000, 0.3
    k1, k2 = jax.random.split(jax.random.key(3))
    a = jaxdrop.keep_mask(k1, (n,), rate)
    b = jaxdrop.keep_mask(k2, (n,), rate)
    q = 1 - rate
    agree = q * q + (1 - q) * (1 - q)
    assert within_binomial(float((a == b).mean()), agree, n)


def test_dropped_positions_are_uniform_chi_square():
    # Over many keys each of the 64 positions is dropped equally often.
    n_keys, size, rate = 4000, 64, 0.5
    keys = jax.random.split(jax.random.key(4), n_keys)
    masks = jax.vmap(lambda k: jaxdrop.keep_mask(k, (size,), rate))(keys)
    counts = np.asarray((~masks).sum(0))
    pvalue = stats.chisquare(counts).pvalue
    assert pvalue > 1e-4, f"positions not uniform: chi-square p = {pvalue}"


@pytest.mark.parametrize("dims", [(0,), (1, 2), (-1,), (0, -2)])
def test_broadcast_dims_share_the_mask(dims):
    x = jnp.ones((6, 5, 4, 3))
    y = jaxdrop.dropout(jax.random.key(5), x, 0.5, broadcast_dims=dims)
    for d in dims:
        first = jnp.take(y, jnp.array([0]), axis=d)
        assert bool((y == first).all()), f"mask varies along broadcast axis {d}"
    # The remaining axes still vary (6*5*4*3 / broadcast elements all equal has ~0 probability).
    assert 0 < float((y == 0).mean()) < 1


def test_broadcast_mask_equals_flax():
    x = jax.random.normal(jax.random.key(6), (4, 6, 6, 8))
    for dims in [(), (1, 2), (-3, -2)]:
        ours = jaxdrop.dropout(KEY, x, 0.3, broadcast_dims=dims)
        theirs = fnn.Dropout(0.3, broadcast_dims=dims, deterministic=False).apply({}, x, rng=KEY)
        np.testing.assert_array_equal(np.asarray(ours).view(np.uint32), np.asarray(theirs).view(np.uint32))


def test_keep_mask_reproduces_dropout():
    x = jax.random.normal(jax.random.key(7), (33, 9))
    m = jaxdrop.keep_mask(KEY, x.shape, 0.4, broadcast_dims=(1,))
    np.testing.assert_array_equal(
        jnp.where(m, x / (1 - 0.4), 0), jaxdrop.dropout(KEY, x, 0.4, broadcast_dims=(1,))
    )


# --------------------------------------------------------------------------- edge cases


def test_rate_zero_and_deterministic_return_x_itself():
    x = jnp.arange(5.0)
    assert jaxdrop.dropout(KEY, x, 0.0) is x
    assert jaxdrop.dropout(KEY, x, 0.7, deterministic=True) is x
    assert jaxdrop.dropout(KEY, x, 0, deterministic=False) is x


def test_rate_one_gives_zeros_and_zero_finite_gradients():
    x = jnp.arange(1.0, 6.0)
    y = jaxdrop.dropout(KEY, x, 1.0)
    np.testing.assert_array_equal(y, jnp.zeros_like(x))
    g = jax.grad(lambda x: jaxdrop.dropout(KEY, x, 1.0).sum())(x)
    np.testing.assert_array_equal(g, jnp.zeros_like(x))
    # The same with a traced rate equal to one: no 0/0 in the forward or backward pass.
    f = jax.jit(jax.grad(lambda x, r: jaxdrop.dropout(KEY, x, r).sum(), argnums=(0, 1)))
    gx, gr = f(x, jnp.float32(1.0))
    np.testing.assert_array_equal(gx, jnp.zeros_like(x))
    assert bool(jnp.isfinite(gr))


def test_dropped_nan_becomes_zero():
    x = jnp.array([jnp.nan, jnp.inf, -jnp.inf, -1.0] * 50)
    y = jaxdrop.dropout(KEY, x, 0.5)
    dropped = ~jaxdrop.keep_mask(KEY, x.shape, 0.5)
    assert bool(dropped.any())
    np.testing.assert_array_equal(np.asarray(y)[np.asarray(dropped)], 0.0)
    assert not np.signbit(np.asarray(y)[np.asarray(dropped)]).any()  # +0.0, as Flax


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,), (1, 1, 1)])
def test_scalars_and_empty_arrays(shape):
    x = jnp.full(shape, 2.0)
    y = jaxdrop.dropout(KEY, x, 0.5)
    assert y.shape == shape and y.dtype == x.dtype
    expected = fnn.Dropout(0.5, deterministic=False).apply({}, x, rng=KEY)
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_output_dtype_and_bit_equality_with_flax(dtype):
    x = jax.random.normal(jax.random.key(8), (64, 31)).astype(dtype)
    for rate in (0.1, 0.5, 1 / 3):
        y = jaxdrop.dropout(KEY, x, rate)
        assert y.dtype == dtype
        ref = fnn.Dropout(rate, deterministic=False).apply({}, x, rng=KEY)
        np.testing.assert_array_equal(np.asarray(y).view(np.uint8), np.asarray(ref).view(np.uint8))


def test_float64_under_x64_matches_bernoulli():
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(9), (40, 7), dtype=jnp.float64)
        y = jaxdrop.dropout(KEY, x, 0.3)
        assert y.dtype == jnp.float64
        mask = jax.random.bernoulli(KEY, 1.0 - 0.3, x.shape)  # float64 p under x64
        np.testing.assert_array_equal(y, jnp.where(mask, x / 0.7, 0.0))


@pytest.mark.parametrize(
    "key",
    [jax.random.key(11), jax.random.PRNGKey(11), jax.random.key(11, impl="rbg"), jax.random.key(11, impl="unsafe_rbg")],
    ids=["new", "legacy", "rbg", "unsafe_rbg"],
)
def test_key_kinds(key):
    x = jnp.ones((1000,))
    y = jaxdrop.dropout(key, x, 0.5)
    assert abs(float((y == 0).mean()) - 0.5) <= kept_fraction_bound(1000, 0.5)
    typed = key if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(key)
    np.testing.assert_array_equal(y, jnp.where(jax.random.bernoulli(typed, 0.5, x.shape), 2.0, 0.0))


def test_same_key_same_mask_eager_and_jit():
    x = jax.random.normal(jax.random.key(12), (17, 23))
    eager = jaxdrop.dropout(KEY, x, 0.25)
    jitted = jax.jit(lambda k, x: jaxdrop.dropout(k, x, 0.25))(KEY, x)
    traced_rate = jax.jit(lambda k, x, r: jaxdrop.dropout(k, x, r))(KEY, x, 0.25)
    np.testing.assert_array_equal(eager, jitted)
    np.testing.assert_array_equal(eager, traced_rate)
    np.testing.assert_array_equal(eager, jaxdrop.dropout(KEY, x, 0.25))


def test_fast_mode_statistics_and_difference():
    x = jnp.ones((200_000,))
    fast = jaxdrop.dropout(KEY, x, 0.3, mode="fast")
    exact = jaxdrop.dropout(KEY, x, 0.3)
    assert abs(float((fast != 0).mean()) - 0.7) <= kept_fraction_bound(x.size, 0.7)
    assert not bool((fast == exact).all())
    np.testing.assert_array_equal(fast[fast != 0], 1 / 0.7 * jnp.ones(()).astype(jnp.float32))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), float("inf"), -float("inf")])
def test_bad_concrete_rate_raises_value_error(rate):
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        jaxdrop.dropout(KEY, jnp.ones(3), rate)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        jaxdrop.dropout(KEY, jnp.ones(3), jnp.float32(rate))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        jaxdrop.keep_mask(KEY, (3,), rate)


def test_non_scalar_or_bool_rate_raises_type_error():
    with pytest.raises(TypeError, match="scalar"):
        jaxdrop.dropout(KEY, jnp.ones(3), jnp.array([0.1, 0.2]))
    with pytest.raises(TypeError, match="bool"):
        jaxdrop.dropout(KEY, jnp.ones(3), True)


@pytest.mark.parametrize(
    "bad_key",
    [0, 3.5, None, jnp.ones(2), jnp.zeros((3,), jnp.uint32), jnp.zeros((2, 2), jnp.uint32), "key"],
    ids=["int", "float", "none", "float-array", "uint32-3", "uint32-2x2", "str"],
)
def test_non_key_raises_type_error_with_howto(bad_key):
    with pytest.raises(TypeError, match=r"jax\.random\.key\(0\).*\n?.*|PRNG key") as info:
        jaxdrop.dropout(bad_key, jnp.ones(3), 0.5)
    msg = str(info.value)
    assert "jax.random.key" in msg and "dropout(key, x, rate)" in msg


def test_arguments_in_wrong_order():
    x = jnp.ones(3)
    with pytest.raises(TypeError, match="wrong order"):
        jaxdrop.dropout(x, KEY, 0.5)
    with pytest.raises(TypeError, match="key comes first"):
        jaxdrop.dropout(KEY, KEY, 0.5)


def test_batch_of_keys_raises_and_points_to_vmap():
    with pytest.raises(TypeError, match="vmap"):
        jaxdrop.dropout(jax.random.split(KEY, 3), jnp.ones(3), 0.5)


@pytest.mark.parametrize("x", [jnp.arange(3), jnp.ones(3, bool), np.arange(3, dtype=np.int8), [1, 2]])
def test_integer_or_bool_x_raises_type_error(x):
    with pytest.raises(TypeError, match="floating-point"):
        jaxdrop.dropout(KEY, x, 0.5)


@pytest.mark.parametrize("dims", [(2,), (-3,), (0, 0), (1, -1)])
def test_bad_broadcast_dims_raise_value_error(dims):
    with pytest.raises(ValueError, match=r"out of range|repeats"):
        jaxdrop.dropout(KEY, jnp.ones((2, 2)), 0.5, broadcast_dims=dims)


def test_bad_mode_and_deterministic():
    with pytest.raises(ValueError, match="mode"):
        jaxdrop.dropout(KEY, jnp.ones(2), 0.5, mode="turbo")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="deterministic"):
        jaxdrop.dropout(KEY, jnp.ones(2), 0.5, deterministic="yes")  # type: ignore[arg-type]


def test_traced_rate_out_of_range_is_clamped_and_checked_reports_it():
    f = jax.jit(lambda k, x, r: jaxdrop.dropout(k, x, r))
    x = jnp.ones(8)
    np.testing.assert_array_equal(f(KEY, x, 1.5), jnp.zeros(8))  # clamped to 1
    np.testing.assert_array_equal(f(KEY, x, -0.5), x)  # clamped to 0
    checked = jax.jit(jaxdrop.checked(lambda k, x, r: jaxdrop.dropout(k, x, r)))
    err, _ = checked(KEY, x, 1.5)
    with pytest.raises(Exception, match=r"must be in \[0, 1\], got 1.5"):
        err.throw()
    err, y = checked(KEY, x, 0.5)
    assert err.get() is None
    np.testing.assert_array_equal(y, jaxdrop.dropout(KEY, x, 0.5))


# --------------------------------------------------------------------------- transformations


def test_vmap_over_keys_equals_python_loop():
    keys = jax.random.split(jax.random.key(13), 5)
    x = jax.random.normal(jax.random.key(14), (7, 3))
    batched = jax.vmap(lambda k: jaxdrop.dropout(k, x, 0.5))(keys)
    for i in range(5):
        np.testing.assert_array_equal(batched[i], jaxdrop.dropout(keys[i], x, 0.5))


def test_vmap_over_data_and_rates():
    xs = jax.random.normal(jax.random.key(15), (4, 10))
    ys = jax.vmap(lambda x: jaxdrop.dropout(KEY, x, 0.5))(xs)
    for i in range(4):
        np.testing.assert_array_equal(ys[i], jaxdrop.dropout(KEY, xs[i], 0.5))
    rates = jnp.array([0.0, 0.3, 0.6, 1.0])
    yr = jax.vmap(lambda r: jaxdrop.dropout(KEY, xs[0], r))(rates)
    np.testing.assert_array_equal(yr[0], xs[0])
    np.testing.assert_array_equal(yr[3], jnp.zeros(10))
    np.testing.assert_allclose(yr[1], jaxdrop.dropout(KEY, xs[0], jnp.float32(0.3)))


def test_gradients_numerically_both_modes_second_order():
    x = jnp.linspace(-2.0, 2.0, 12).reshape(3, 4)
    check_grads(lambda x: jaxdrop.dropout(KEY, x, 0.3), (x,), order=2, modes=("fwd", "rev"))
    check_grads(lambda x: jnp.sin(jaxdrop.dropout(KEY, x, 0.3, broadcast_dims=(0,))) ** 2, (x,), order=2)
    # Gradient with respect to a traced rate: d/dr [x m / (1 - r)] = y / (1 - r), mask held fixed.
    check_grads(lambda r: jaxdrop.dropout(KEY, x, r), (0.3,), order=2, modes=("fwd", "rev"))


def test_gradient_is_the_mask_over_keep():
    x = jnp.ones((50,))
    g = jax.grad(lambda x: jaxdrop.dropout(KEY, x, 0.2).sum())(x)
    np.testing.assert_array_equal(g, jnp.where(jaxdrop.keep_mask(KEY, x.shape, 0.2), 1 / 0.8, 0.0))


def test_jvp_and_linearize():
    x = jax.random.normal(jax.random.key(16), (20,))
    t = jax.random.normal(jax.random.key(17), (20,))
    y, dy = jax.jvp(lambda x: jaxdrop.dropout(KEY, x, 0.5), (x,), (t,))
    np.testing.assert_array_equal(y, jaxdrop.dropout(KEY, x, 0.5))
    np.testing.assert_array_equal(dy, jaxdrop.dropout(KEY, t, 0.5))


def test_scan_with_per_step_keys_and_checkpoint():
    def step(h, k):
        h = jnp.tanh(jaxdrop.dropout(k, h, 0.25))
        return h, h.sum()

    keys = jax.random.split(jax.random.key(18), 6)
    h0 = jnp.linspace(0.1, 1.0, 8)

    def loss(h0, remat):
        f = jax.checkpoint(step) if remat else step
        return jax.lax.scan(f, h0, keys)[1].sum()

    plain = jax.value_and_grad(loss)(h0, False)
    remat = jax.value_and_grad(loss)(h0, True)
    chex.assert_trees_all_close(plain, remat)
    # The python loop gives the same value.
    h, total = h0, 0.0
    for k in keys:
        h, s = step(h, k)
        total += s
    np.testing.assert_allclose(plain[0], total, rtol=1e-6)


def test_traced_rate_does_not_recompile():
    traces = []

    @jax.jit
    def f(x, r):
        traces.append(1)
        return jaxdrop.dropout(KEY, x, r)

    x = jnp.ones(100)
    outs = [f(x, r) for r in (0.1, 0.2, 0.5, 0.9)]
    assert len(traces) == 1
    fractions = [float((o == 0).mean()) for o in outs]
    assert fractions == sorted(fractions)  # nested masks: more rate, more zeros


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    shape=st.lists(st.integers(1, 6), min_size=0, max_size=4).map(tuple),
    rate=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_matches_bernoulli_reference(shape, rate, seed):
    key = jax.random.key(seed)
    x = jnp.arange(1, math.prod(shape) + 1, dtype=jnp.float32).reshape(shape)
    y = jaxdrop.dropout(key, x, rate)
    if rate == 0.0:
        assert y is x
        return
    if rate == 1.0:
        np.testing.assert_array_equal(y, jnp.zeros_like(x))
        return
    mask = jax.random.bernoulli(key, 1.0 - rate, shape)
    np.testing.assert_array_equal(y, jnp.where(mask, x / (1.0 - rate), 0.0))
