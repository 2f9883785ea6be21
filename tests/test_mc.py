"""jaxdrop.mc: MC-dropout sampling, Flax adapters, uncertainty summaries and metrics."""

from __future__ import annotations

import functools
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import SIGMA
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special, stats

import jaxdrop
from jaxdrop import mc

KEY = jax.random.key(0)


# --------------------------------------------------------------------------- shared models


# Weights and inputs come from NumPy: every distinct jax.random computation is an XLA
# compilation of a 20-round Threefry, which dominates the run time of small tests on CPU.


def normal(seed, shape, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def numpy_init(seed):
    """A Flax kernel initializer drawing He-normal weights with NumPy (ignores the key)."""
    return lambda key, shape, dtype=jnp.float32: normal(seed, shape, math.sqrt(2.0 / shape[0])).astype(dtype)


def mlp_init(seed, sizes):
    return [
        (normal(seed + i, (a, b), math.sqrt(2.0 / a)), jnp.full(b, 0.1))
        for i, (a, b) in enumerate(itertools.pairwise(sizes))
    ]


def mlp(params, key, x, rate):
    """ReLU MLP with jaxdrop dropout after every hidden layer."""
    keys = jax.random.split(key, len(params) - 1)
    h = x
    for (w, b), k in zip(params[:-1], keys, strict=True):
        h = jaxdrop.dropout(k, jax.nn.relu(h @ w + b), rate)
    w, b = params[-1]
    return h @ w + b


PARAMS = mlp_init(1, (5, 32, 4))
X = normal(2, (6, 5))
F = functools.partial(lambda k, x, rate: mlp(PARAMS, k, x, rate), rate=0.3)
T = 16  # passes in the small tests: one T (and one X) lets eager calls reuse compilations
SAMPLE = jax.jit(mc.sample, static_argnums=(0, 3), static_argnames="chunk_size")  # compiled once per use


def elementwise(key, x):
    return jaxdrop.dropout(key, x, 0.5)


# --------------------------------------------------------------------------- sample


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_sample_chunked_equals_unchunked_exactly(chunk):
    # T = 16: chunk 7 leaves a remainder chunk of 2; chunk 100 > T runs all at once.
    full = mc.sample(elementwise, KEY, X, T)
    assert full.shape == (T, *X.shape)
    assert np.array_equal(mc.sample(elementwise, KEY, X, T, chunk_size=chunk), full)


def test_sample_chunked_equals_unchunked_for_an_mlp_under_jit():
    # The masks are identical (exactly, as the elementwise test above shows); the MLP's
    # matmuls are batched over chunks of different sizes, and XLA's CPU matmul may round
    # the last bit differently per batch shape, so compare to float32 rounding.
    full = SAMPLE(F, KEY, X, T)
    for chunk in (1, 5):  # 5: three chunks and a remainder of 1
        np.testing.assert_allclose(SAMPLE(F, KEY, X, T, chunk_size=chunk), full, rtol=1e-6, atol=1e-6)


def test_sample_matches_a_python_loop_over_split_keys():
    keys = jax.random.split(KEY, T)
    loop = np.stack([elementwise(k, X) for k in keys])
    assert np.array_equal(mc.sample(elementwise, KEY, X, T, chunk_size=5), loop)
    jf = jax.jit(F)
    loop = np.stack([jf(k, X) for k in keys])  # batched vs unbatched matmuls: rounding only
    np.testing.assert_allclose(SAMPLE(F, KEY, X, T), loop, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(SAMPLE(F, KEY, X, T, chunk_size=5), loop, rtol=1e-5, atol=1e-6)


def test_sample_passes_are_distinct_and_pytrees_work():
    f = lambda k, inp: {"y": elementwise(k, inp["a"]), "n": inp["b"] * 2}  # noqa: E731
    out = mc.sample(f, KEY, {"a": jnp.ones(64), "b": jnp.arange(3.0)}, 5, chunk_size=2)
    assert out["y"].shape == (5, 64) and out["n"].shape == (5, 3)
    assert all(not np.array_equal(out["y"][i], out["y"][j]) for i in range(5) for j in range(i))
    assert np.array_equal(out["n"], np.broadcast_to(np.arange(3.0) * 2, (5, 3)))


def test_sample_accepts_legacy_keys():
    legacy = jax.random.PRNGKey(0)
    assert np.array_equal(
        mc.sample(elementwise, legacy, X, 4), mc.sample(elementwise, jax.random.wrap_key_data(legacy), X, 4)
    )


# --------------------------------------------------------------------------- streaming summaries


@jax.jit
def streaming_vs_samples(key):
    """Samples-based summaries and the streamed ones, unchunked and chunked (3 chunks + 1)."""
    ys = mc.sample(F, key, X, T)
    reg = [mc.predict_regression(F, key, X, T, tau=2.0, chunk_size=c) for c in (None, 5)]
    cls = [mc.predict_classification(F, key, X, T, chunk_size=c) for c in (None, 5)]
    return mc.regression(ys, tau=2.0), reg, mc.classification(ys), cls


def test_streaming_summaries_match_samples():
    reg_ref, (reg_full, reg_chunked), cls_ref, (cls_full, cls_chunked) = streaming_vs_samples(KEY)
    for ref, full, chunked in ((reg_ref, reg_full, reg_chunked), (cls_ref, cls_full, cls_chunked)):
        for name, r, a, b in zip(ref._fields, ref, full, chunked, strict=True):
            np.testing.assert_array_equal(a, r, err_msg=name)  # unchunked: the same computation
            np.testing.assert_allclose(b, r, rtol=2e-5, atol=2e-6, err_msg=name)  # merge rounding


def test_regression_moments_match_numpy():
    ys = np.asarray(SAMPLE(F, KEY, X, T), np.float64)
    r = mc.regression(ys.astype(np.float32), tau=4.0)
    np.testing.assert_allclose(r.mean, ys.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.epistemic_variance, ys.var(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r.variance, ys.var(0) + 0.25, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r.std, np.sqrt(ys.var(0) + 0.25), rtol=1e-4)
    assert float(r.aleatoric_variance) == 0.25
    assert np.array_equal(mc.regression(ys).variance, mc.regression(ys).epistemic_variance)


def test_regression_variance_is_stable_for_a_large_offset():
    # E[y^2] - E[y]^2 in float32 would lose all digits here; the two-pass variance does not.
    ys = 1e4 + jnp.array([[-1.0], [1.0]] * 50)
    assert float(mc.regression(ys).epistemic_variance[0]) == 1.0
    # Streaming merges chunk means of size ~1e4 whose float32 spacing is ~1e-3, so the
    # merged variance is good to ~(|mean| / std) * eps = 1e4 * 6e-8 relative, not exact.
    f = lambda k, x: x + jnp.where(jax.random.key_data(k)[-1] % 2 == 0, 1.0, -1.0)  # noqa: E731  (+-1)
    got = mc.predict_regression(f, KEY, jnp.full((1,), 1e4), 64, chunk_size=8).epistemic_variance
    ref = mc.regression(mc.sample(f, KEY, jnp.full((1,), 1e4), 64)).epistemic_variance
    np.testing.assert_allclose(got, ref, rtol=1e-3)


# --------------------------------------------------------------------------- rate 0


def summaries(f, key, x):
    """Streamed regression (tau = 5) and classification summaries of T passes in chunks of 5."""
    r = mc.predict_regression(f, key, x, T, tau=5.0, chunk_size=5)
    return r, mc.predict_classification(f, key, x, T, chunk_size=5)


def test_rate_zero_gives_zero_variance_and_mutual_information():
    f0 = functools.partial(lambda k, x, rate: mlp(PARAMS, k, x, rate), rate=0.0)
    r, c = jax.jit(summaries, static_argnums=0)(f0, KEY, X)
    assert np.array_equal(r.epistemic_variance, np.zeros_like(r.epistemic_variance))
    assert np.array_equal(r.variance, np.full_like(r.variance, 0.2))
    # Identical passes: exact zero up to float32 rounding of logsumexp - log T.
    assert np.max(c.mutual_information) <= 1e-6
    assert np.array_equal(c.variation_ratio, np.zeros_like(c.variation_ratio))
    np.testing.assert_allclose(c.probs, jax.nn.softmax(f0(KEY, X)), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- classification properties


def reference_classification(p):
    """float64 numpy reference: predictive probs, entropy, expected entropy, MI."""
    pbar = p.mean(0)
    h = -special.xlogy(pbar, pbar).sum(-1)
    e = (-special.xlogy(p, p).sum(-1)).mean(0)
    return pbar, h, e, h - e


CLASSIFY_PROBS = jax.jit(functools.partial(mc.classification, from_logits=False))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    hnp.arrays(np.float64, (6, 4, 7), elements=st.floats(0.0, 1.0)),
    st.sampled_from([1.0, 3.0, 40.0]),
    st.integers(1, 7),
)
def test_entropy_mutual_information_bounds(raw, sharpness, num_classes):
    # Random probability tensors (T=6, B=4, K=7), from flat to nearly one-hot rows with exact
    # zeros; classes >= num_classes get probability 0, so the support size K' varies.
    # One fixed shape keeps this to a single compilation.
    p = raw**sharpness
    p[..., num_classes:] = 0.0
    s = p.sum(-1, keepdims=True)
    uniform = np.where(np.arange(7) < num_classes, 1.0 / num_classes, 0.0)
    p = np.where(s > 0, p / np.where(s > 0, s, 1.0), uniform)
    c = CLASSIFY_PROBS(jnp.asarray(p, jnp.float32))
    mi, h = np.asarray(c.mutual_information), np.asarray(c.entropy)
    assert np.all(mi >= 0.0)
    assert np.all(mi <= h)
    assert np.all(h <= math.log(num_classes) + 1e-6)  # float32 rounding of a uniform row
    assert np.all(np.asarray(c.expected_entropy) >= 0.0)
    vr = np.asarray(c.variation_ratio)
    assert np.all((vr >= 0) & (vr <= 1 - 1 / min(num_classes, 6) + 1e-6))
    pbar, h_ref, e_ref, mi_ref = reference_classification(p)
    np.testing.assert_allclose(c.probs, pbar, atol=1e-6)
    np.testing.assert_allclose(c.entropy, h_ref, atol=1e-5)
    np.testing.assert_allclose(c.expected_entropy, e_ref, atol=1e-5)
    np.testing.assert_allclose(c.mutual_information, np.maximum(mi_ref, 0.0), atol=2e-5)


def test_classification_from_logits_matches_reference_and_variation_ratio():
    z = np.asarray(SAMPLE(F, KEY, X, T), np.float64)
    c = mc.classification(z.astype(np.float32))
    p = special.softmax(z, -1)
    pbar, _, _, mi = reference_classification(p)
    np.testing.assert_allclose(c.probs, pbar, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(c.log_probs, np.log(pbar), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c.mutual_information, mi, atol=1e-5)
    votes = np.stack([np.bincount(a, minlength=z.shape[-1]) for a in z.argmax(-1).T])
    np.testing.assert_allclose(c.variation_ratio, 1 - votes.max(-1) / T, atol=1e-7)


def test_log_probs_stay_finite_where_probs_underflow():
    z = jnp.array([[[0.0, -200.0]], [[0.0, -210.0]]])  # p(class 1) ~ e^-200: 0 in float32
    c = mc.classification(z)
    assert float(c.probs[0, 1]) == 0.0
    np.testing.assert_allclose(c.log_probs[0, 1], np.log(np.exp(-200.0) + np.exp(-210.0)) - np.log(2), rtol=1e-6)
    np.testing.assert_allclose(mc.negative_log_likelihood(c.log_probs, jnp.array([1])), 200 - np.log1p(np.exp(-10)) + np.log(2), rtol=1e-6)


# --------------------------------------------------------------------------- regression formulas


def test_model_precision_uses_keep_probability():
    tau = mc.model_precision(length_scale=0.01, rate=0.1, n_data=500, weight_decay=1e-6)
    assert tau == pytest.approx(0.9 * 0.01**2 / (2 * 500 * 1e-6))
    assert mc.model_precision(1.0, 0.0, 10, 0.5) == pytest.approx(0.1)
    lam = mc.weight_decay(0.01, 0.1, 500, tau)
    assert lam == pytest.approx(1e-6)
    traced = jax.jit(mc.model_precision)(0.01, 0.1, 500, 1e-6)
    np.testing.assert_allclose(traced, tau, rtol=1e-6)


def test_log_likelihood_matches_scipy_mixture():
    rng = np.random.default_rng(0)
    ys = rng.normal(size=(7, 4, 3))
    y = rng.normal(size=(4, 3))
    tau = 2.5
    ll = mc.log_likelihood(jnp.asarray(ys, jnp.float32), jnp.asarray(y, jnp.float32), tau)
    dens = stats.norm.pdf(y, loc=ys, scale=1 / math.sqrt(tau)).mean(0)
    np.testing.assert_allclose(ll, np.log(dens), rtol=1e-5)
    ll_vec = mc.log_likelihood(jnp.asarray(ys, jnp.float32), jnp.asarray(y, jnp.float32), tau, event_ndims=1)
    # One 3-d observation per row: a mixture of isotropic Gaussians N(ys[t], I / tau).
    dens = np.mean([stats.multivariate_normal.pdf(y - ys[t], cov=np.eye(3) / tau) for t in range(7)], axis=0)
    assert ll_vec.shape == (4,)
    np.testing.assert_allclose(ll_vec, np.log(dens), rtol=1e-5)


# --------------------------------------------------------------------------- metrics


def reference_ece(probs, labels, m):
    conf, pred = probs.max(-1), probs.argmax(-1)
    total = 0.0
    for b in range(m):
        sel = (conf > b / m) & (conf <= (b + 1) / m)
        if sel.any():
            total += sel.mean() * abs((pred[sel] == labels[sel]).mean() - conf[sel].mean())
    return total


def test_ece_and_nll_match_numpy():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(5, 0.4), size=400).astype(np.float32)
    labels = rng.integers(0, 5, 400)
    for m in (1, 10, 15):
        np.testing.assert_allclose(
            mc.expected_calibration_error(probs, labels, num_bins=m), reference_ece(probs, labels, m), atol=1e-6
        )
    nll = mc.negative_log_likelihood(jnp.log(probs), labels)
    np.testing.assert_allclose(nll, -np.log(probs[np.arange(400), labels]).mean(), rtol=1e-5)
    # Batch dimensions are flattened.
    np.testing.assert_allclose(
        mc.expected_calibration_error(probs.reshape(20, 20, 5), labels.reshape(20, 20)),
        reference_ece(probs, labels, 15),
        atol=1e-6,
    )


def test_ece_is_zero_for_perfect_calibration_and_large_for_overconfidence():
    probs = jnp.tile(jnp.array([[0.75, 0.25]]), (4, 1))
    assert float(mc.expected_calibration_error(probs, jnp.array([0, 0, 0, 1]))) == pytest.approx(0.0, abs=1e-7)
    assert float(mc.expected_calibration_error(probs, jnp.array([1, 1, 1, 1]))) == pytest.approx(0.75)


def test_out_of_range_labels_give_nan_under_jit():
    probs = jnp.full((2, 3), 1 / 3)
    nll, ece = jax.jit(mc.negative_log_likelihood), jax.jit(mc.expected_calibration_error)
    for bad in ([0, 3], [0, -1]):
        assert bool(np.isnan(nll(jnp.log(probs), jnp.array(bad))))
        assert bool(np.isnan(ece(probs, jnp.array(bad))))
    assert not bool(np.isnan(nll(jnp.log(probs), jnp.array([0, 2]))))
    assert not bool(np.isnan(ece(probs, jnp.array([0, 2]))))


# --------------------------------------------------------------------------- errors


def test_errors_are_clear():
    with pytest.raises(TypeError, match="first argument must be the function"):
        mc.sample(KEY, elementwise, X, 4)
    with pytest.raises(TypeError, match="PRNG key"):
        mc.sample(elementwise, 0, X, 4)
    with pytest.raises(ValueError, match="num_samples"):
        mc.sample(elementwise, KEY, X, 0)
    with pytest.raises(TypeError, match="num_samples"):
        mc.predict_regression(elementwise, KEY, X, 4.0)
    with pytest.raises(TypeError, match="chunk_size"):
        mc.sample(elementwise, KEY, X, 4, chunk_size=True)
    with pytest.raises(TypeError, match="floating-point"):
        mc.regression(jnp.ones((3, 2), jnp.int32))
    with pytest.raises(ValueError, match="leading axis"):
        mc.classification(jnp.ones(3))
    with pytest.raises(ValueError, match="tau"):
        mc.regression(jnp.ones((3, 2)), tau=0.0)
    with pytest.raises(ValueError, match="DROP probability"):
        mc.model_precision(0.01, 1.0, 100, 1e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mc.model_precision(0.01, -0.1, 100, 1e-4)
    with pytest.raises(ValueError, match="length_scale"):
        mc.model_precision(-0.01, 0.1, 100, 1e-4)
    with pytest.raises(ValueError, match="shape"):
        mc.log_likelihood(jnp.ones((3, 2)), jnp.ones(3), 1.0)
    with pytest.raises(ValueError, match="event_ndims"):
        mc.log_likelihood(jnp.ones((3, 2)), jnp.ones(2), 1.0, event_ndims=2)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        mc.negative_log_likelihood(jnp.zeros((2, 3)), jnp.array([0, 3]))
    with pytest.raises(TypeError, match="integer class indices"):
        mc.expected_calibration_error(jnp.zeros((2, 3)), jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="batch shape"):
        mc.expected_calibration_error(jnp.zeros((2, 3)), jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match="num_bins"):
        mc.expected_calibration_error(jnp.zeros((2, 3)), jnp.array([0, 1]), num_bins=0)
    with pytest.raises(TypeError, match="single array"):
        mc.predict_classification(lambda k, x: (x, x), KEY, X, 4)
    with pytest.raises(TypeError, match=r"nnx\.Module"):
        mc.from_nnx(nn.Dense(3))


# --------------------------------------------------------------------------- Flax linen


class LinenNet(nn.Module):
    """Dense -> BatchNorm -> Dropout -> Dense; ``how`` chooses how `deterministic` is passed."""

    how: str
    rate: float = 0.5
    twin: bool = False  # the reference: dropout always on, BatchNorm always in eval mode

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(16, kernel_init=numpy_init(0))(x)
        x = nn.BatchNorm(use_running_average=self.twin or not train)(x)
        det = False if self.twin else not train
        if self.how == "field":
            x = nn.Dropout(self.rate, deterministic=det)(x)
        elif self.how == "kwarg":
            x = nn.Dropout(self.rate)(x, deterministic=det)
        else:
            x = nn.Dropout(self.rate)(x, det)
        return nn.Dense(3, kernel_init=numpy_init(1))(x)


XL = normal(5, (8, 4)) + 3.0  # batch statistics far from the running (0, 1)


@pytest.mark.parametrize("how", ["field", "kwarg", "positional"])
def test_from_linen_turns_on_dropout_only(how):
    net = LinenNet(how)
    variables = net.init(jax.random.key(0), XL, train=False)
    f = mc.from_linen(net, variables, train=False)
    twin = LinenNet(how, twin=True)
    for k in jax.random.split(KEY, 3):
        expected = twin.apply(variables, XL, train=False, rngs={"dropout": k})
        assert np.array_equal(f(k, XL), expected)
    eval_out = net.apply(variables, XL, train=False)
    assert not np.allclose(f(KEY, XL), eval_out)  # dropout really is on
    # Afterwards the model still runs deterministically: the forcing was temporary.
    assert np.array_equal(net.apply(variables, XL, train=False), eval_out)


def test_from_linen_sampling_and_rate_zero():
    net = LinenNet("field", rate=0.0)
    variables = net.init(jax.random.key(0), XL, train=False)
    f = mc.from_linen(net, variables, train=False)
    r, c = jax.jit(summaries, static_argnums=0)(f, KEY, XL)
    assert np.array_equal(r.epistemic_variance, np.zeros_like(r.epistemic_variance))
    np.testing.assert_allclose(r.mean, net.apply(variables, XL, train=False), rtol=1e-6, atol=1e-6)
    assert np.max(c.mutual_information) <= 1e-6


class TwoStreams(nn.Module):
    det: bool = True  # det=False is the reference with dropout hard-wired on

    @nn.compact
    def __call__(self, x):
        a = nn.Dropout(0.5, deterministic=self.det)(x)
        b = nn.Dropout(0.5, deterministic=self.det, rng_collection="noise")(x)
        return jnp.stack([a, b])

    def second(self, x):
        return self(x)[1]


def test_from_linen_multiple_collections_and_method():
    x = jnp.ones(64)
    rngs = {"dropout": jax.random.fold_in(KEY, 0), "noise": jax.random.fold_in(KEY, 1)}
    f = mc.from_linen(TwoStreams(), {}, rng_collection=("dropout", "noise"), method="second")
    expected = TwoStreams(det=False).apply({}, x, rngs=rngs, method="second")
    assert np.array_equal(f(KEY, x), expected)
    y = mc.from_linen(TwoStreams(), {}, rng_collection=["dropout", "noise"])(KEY, x)
    assert np.array_equal(y, TwoStreams(det=False).apply({}, x, rngs=rngs))
    assert not np.array_equal(y[0], y[1])


def test_is_dropout_is_not_fooled_by_lookalikes():
    class Block(nn.Module):  # a user module with the same fields, not a dropout layer
        rate: float = 0.1
        deterministic: bool = True

    assert not mc.is_dropout(Block())
    # jaxdrop's Flax layers are recognised by their module; jaxdrop's whole models are not.
    for module, expected in (("jaxdrop.linen", True), ("jaxdrop.nnx", True), ("jaxdrop.models", False)):
        fake = type("Fake", (), {"__module__": module, "rate": 0.1, "deterministic": False})
        assert mc.is_dropout(fake()) is expected
    assert mc.is_dropout(nn.Dropout(0.1)) and mc.is_dropout(nnx.Dropout(0.1))
    assert not mc.is_dropout(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


# --------------------------------------------------------------------------- Flax nnx


class NnxNet(nnx.Module):
    def __init__(self, rate, rngs):
        self.lin1 = nnx.Linear(4, 16, kernel_init=numpy_init(0), rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.drop = nnx.Dropout(rate, rngs=rngs)
        self.lin2 = nnx.Linear(16, 3, kernel_init=numpy_init(1), rngs=rngs)

    def __call__(self, x):
        return self.lin2(self.drop(self.bn(self.lin1(x))))


def test_from_nnx_turns_on_dropout_only_and_leaves_the_model_alone():
    model = NnxNet(0.5, nnx.Rngs(0))
    count = int(model.drop.rngs.count[...])
    f = mc.from_nnx(model)
    ev = nnx.with_attributes(model, deterministic=True, use_running_average=True)

    @jax.jit
    def expected(k):
        # Documented key derivation: dropout layer 0's stream gets fold_in(key, 0), counter 0.
        mask_key = jax.random.fold_in(jax.random.fold_in(k, 0), 0)
        return ev.lin2(ev.drop(ev.bn(ev.lin1(XL)), deterministic=False, rngs=mask_key))

    jf = jax.jit(f)
    for k in jax.random.split(KEY, 2):  # a different mask would change the output by O(1)
        np.testing.assert_allclose(jf(k, XL), expected(k), rtol=1e-5, atol=1e-6)
    # The documented jit pattern: the model is an argument, from_nnx is called inside.
    sample = jax.jit(lambda m, k, x: mc.sample(mc.from_nnx(m), k, x, T, chunk_size=5))
    ys = sample(model, KEY, XL)
    assert all(not np.array_equal(ys[i], ys[j]) for i in range(T) for j in range(i))
    np.testing.assert_allclose(ys[3], jf(jax.random.split(KEY, T)[3], XL), rtol=1e-5, atol=1e-6)
    assert model.drop.deterministic is False and model.bn.use_running_average is False
    assert int(model.drop.rngs.count[...]) == count


def test_from_nnx_rate_zero_equals_eval_mode():
    model = NnxNet(0.0, nnx.Rngs(0))
    f = mc.from_nnx(model)
    r, _ = jax.jit(summaries, static_argnums=0)(f, KEY, XL)
    assert np.array_equal(r.epistemic_variance, np.zeros_like(r.epistemic_variance))
    ev = nnx.with_attributes(model, deterministic=True, use_running_average=True)
    np.testing.assert_allclose(r.mean, ev(XL), rtol=1e-6, atol=1e-6)
    assert not np.allclose(ev(XL), nnx.with_attributes(model, use_running_average=False)(XL))


def test_from_nnx_call_time_rngs_and_errors():
    class CallRngs(nnx.Module):
        def __init__(self):
            self.drop = nnx.Dropout(0.5)

        def __call__(self, x, rngs=None):
            return self.drop(x, rngs=rngs)

    model = CallRngs()
    with pytest.raises(ValueError, match="holds no RNG stream"):
        mc.from_nnx(model)(KEY, XL)
    f = mc.from_nnx(model, call=lambda m, x, key: m(x, rngs=key))
    assert np.array_equal(f(KEY, XL), nnx.Dropout(0.5)(XL, deterministic=False, rngs=KEY))

    class NoDropout(nnx.Module):
        def __init__(self):
            self.lin = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    with pytest.raises(ValueError, match="no dropout layer"):
        mc.from_nnx(NoDropout())


def test_from_nnx_two_dropout_layers_get_independent_keys():
    class Two(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Dropout(0.5, rngs=rngs)
            self.b = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            return jnp.stack([self.a(x), self.b(x)])

    y = mc.from_nnx(Two(nnx.Rngs(0)))(KEY, jnp.ones(256))
    assert not np.array_equal(y[0], y[1])


def test_models_that_take_the_key_at_call_time_are_sampled_directly():
    from jaxdrop.models import MLP

    model = MLP(5, (16,), 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs no adapter"):
        mc.from_nnx(model)
    ys = mc.sample(lambda k, x: model(x, deterministic=False, rngs=k), KEY, X, T)
    assert ys.shape == (T, 6, 4)
    assert all(not np.array_equal(ys[i], ys[j]) for i in range(T) for j in range(i))


# --------------------------------------------------------------------------- end to end: regression toy


def test_predictive_std_grows_away_from_the_training_data():
    rng = np.random.default_rng(0)
    xtr = rng.uniform(-1, 1, (64, 1)).astype(np.float32)
    ytr = (np.sin(3 * xtr) + 0.05 * rng.normal(size=xtr.shape)).astype(np.float32)
    tx = optax.adam(1e-2)

    # Data and parameters are passed as arguments (not closed over): faster to compile.
    @jax.jit
    def train(params, key, xtr, ytr):
        def step(carry, k):
            p, o = carry
            g = jax.grad(lambda p: jnp.mean((mlp(p, k, xtr, 0.1) - ytr) ** 2))(p)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None

        (p, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, 500))
        return p

    @jax.jit
    def predict(params, key, x):
        return mc.predict_regression(lambda k, x: mlp(params, k, x, 0.1), key, x, 200, chunk_size=100)

    params = train(mlp_init(0, (1, 64, 64, 1)), jax.random.key(0), xtr, ytr)
    xs = jnp.linspace(-4.0, 4.0, 81)[:, None]
    r = predict(params, jax.random.key(1), xs)
    std, grid = np.asarray(r.std[:, 0]), np.asarray(xs[:, 0])
    inside, far = np.abs(grid) <= 1, np.abs(grid) >= 3
    # The fit is good where there is data...
    assert np.sqrt(np.mean((np.asarray(r.mean[inside, 0]) - np.sin(3 * grid[inside])) ** 2)) < 0.15
    # ...and the uncertainty is larger away from it. With T = 200 passes the relative
    # standard error of each std estimate is ~1/sqrt(2T) = 5%, far below these margins.
    assert std[far].min() > std[inside].max()
    assert std[far].mean() > 3 * std[inside].mean()


# --------------------------------------------------------------------------- end to end: digits


class DigitsMLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        for i in range(2):
            x = nn.Dense(64, kernel_init=numpy_init(i))(x)
            x = nn.Dropout(0.5, deterministic=not train)(nn.relu(x))
        return nn.Dense(10, kernel_init=numpy_init(10))(x)


def test_corrupted_digits_get_higher_mutual_information():
    from sklearn.datasets import load_digits

    data, target = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(data))
    data, target = (data[perm] / 16.0).astype(np.float32), target[perm]
    xtr, ytr, xte, yte = data[:1200], target[:1200], data[1200:], target[1200:]
    net, tx = DigitsMLP(), optax.adam(5e-3)

    # Data and parameters are passed as arguments (not closed over): faster to compile.
    @jax.jit
    def train(params, key, xtr, ytr):
        def step(carry, k):
            p, o = carry

            def loss(p):
                logits = net.apply({"params": p}, xtr, train=True, rngs={"dropout": k})
                return optax.softmax_cross_entropy_with_integer_labels(logits, ytr).mean()

            u, o = tx.update(jax.grad(loss)(p), o, p)
            return (optax.apply_updates(p, u), o), None

        (p, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, 250))
        return p

    @jax.jit
    def predict(params, key, x, labels):
        f = mc.from_linen(net, {"params": params}, train=False)
        c = mc.predict_classification(f, key, x, 100, chunk_size=50)
        return c, mc.expected_calibration_error(c.probs, labels)

    params = net.init(jax.random.key(0), xtr[:1], train=False)["params"]  # NumPy weights
    params = train(params, jax.random.key(0), xtr, ytr)
    noisy = np.clip(xte + np.random.default_rng(1).normal(0, 0.5, xte.shape), 0, 1).astype(np.float32)
    clean, ece = predict(params, jax.random.key(1), xte, yte)
    corrupted, _ = predict(params, jax.random.key(1), noisy, yte)
    assert (np.asarray(clean.probs).argmax(-1) == yte).mean() > 0.9  # the model did learn
    assert float(ece) < 0.15
    mi_c, mi_n = np.asarray(clean.mutual_information), np.asarray(corrupted.mutual_information)
    # Welch z-statistic of the difference of the mean MI over the 597 test images.
    se = math.sqrt(mi_c.var(ddof=1) / len(mi_c) + mi_n.var(ddof=1) / len(mi_n))
    assert (mi_n.mean() - mi_c.mean()) / se > SIGMA
    assert mi_n.mean() > 1.5 * mi_c.mean()
    assert np.mean(corrupted.entropy) > np.mean(clean.entropy)
