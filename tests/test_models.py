"""jaxdrop.models: architectures, dropout sites and keys, call-time rates, variants, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdrop import models


def shapes(state) -> dict:
    return {"/".join(map(str, p)): tuple(v.shape) for p, v in nnx.to_flat_state(state)}


def test_mlp_defaults_are_the_papers_784_1024_1024_10():
    abstract = nnx.eval_shape(lambda: models.MLP(rngs=nnx.Rngs(0)))  # no arrays materialised
    assert shapes(nnx.state(abstract, nnx.Param)) == {
        "layers/0/kernel": (784, 1024), "layers/0/bias": (1024,),
        "layers/1/kernel": (1024, 1024), "layers/1/bias": (1024,),
        "layers/2/kernel": (1024, 10), "layers/2/bias": (10,),
    }  # fmt: skip
    assert (abstract.input_rate, abstract.rate, abstract.variant) == (0.2, 0.5, "dropout")


def test_cnn_layout_for_mnist():
    abstract = nnx.eval_shape(lambda: models.CNN(rngs=nnx.Rngs(0)))
    s = shapes(nnx.state(abstract, nnx.Param))
    assert s["conv1/kernel"] == (5, 5, 1, 32) and s["conv2/kernel"] == (5, 5, 32, 64)
    assert s["dense1/kernel"] == (7 * 7 * 64, 256) and s["dense2/kernel"] == (256, 10)


# Shapes shared with the docstring examples, so that eager compilations are reused.
@pytest.fixture(scope="module")
def mlp():
    return models.MLP(784, (64, 64), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def x():
    return jnp.asarray(np.random.default_rng(0).random((5, 784)), jnp.float32)


def test_training_mode_is_random_per_key_and_eval_is_deterministic(mlp, x):
    fwd = nnx.jit(lambda m, x, k: m(x, rngs=nnx.Rngs(dropout=k)))
    a, b, c = fwd(mlp, x, jax.random.key(1)), fwd(mlp, x, jax.random.key(1)), fwd(mlp, x, jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    e1, e2 = mlp(x, deterministic=True), nnx.view(mlp, deterministic=True)(x)
    np.testing.assert_array_equal(e1, e2)
    assert not np.allclose(a, e1)
    # a key array works as well as an nnx.Rngs, and sites get distinct keys
    np.testing.assert_array_equal(mlp(x, rngs=jax.random.key(1)), mlp(x, rngs=jax.random.key(1)))


def test_each_site_has_its_own_mask():
    """With identity weights the two hidden sites see the same values; their masks must differ."""
    m = models.MLP(8, (8, 8), 8, rate=0.5, input_rate=0.0, rngs=nnx.Rngs(0))
    for layer in m.layers:
        layer.kernel[...] = jnp.eye(8)
        layer.bias[...] = jnp.zeros(8)
    out = m(jnp.ones((64, 8)), rngs=jax.random.key(0))
    # Each unit survives both sites with probability 1/4 (value 4) instead of 1/2 if masks were shared.
    survived = float(jnp.mean(out > 0))
    assert abs(survived - 0.25) < 4 * np.sqrt(0.25 * 0.75 / out.size)


def test_call_time_rate_is_traced_and_scales_every_site(mlp, x):
    traces = []

    @nnx.jit
    def fwd(m, x, r):
        traces.append(r)
        return m(x, rngs=nnx.Rngs(dropout=3), rate=r)

    np.testing.assert_array_equal(fwd(mlp, x, 0.0), mlp(x, deterministic=True))  # input site scaled to 0 too
    assert not np.allclose(fwd(mlp, x, 0.5), fwd(mlp, x, 0.25))
    assert len(traces) == 1  # three rates, one compilation


@pytest.mark.parametrize("variant", models.MLP_VARIANTS)
def test_mlp_variants(x, variant):
    m = models.MLP(784, (64, 64), rate=0.3, input_rate=0.1, variant=variant, rngs=nnx.Rngs(0))
    train = m(x, rngs=jax.random.key(0))
    assert train.shape == (5, 10) and bool(jnp.all(jnp.isfinite(train)))
    assert not np.allclose(train, m(x, deterministic=True))


@pytest.mark.parametrize("variant", models.CNN_VARIANTS)
def test_cnn_variants_on_flat_or_image_input(variant):
    cnn = models.CNN((8, 8, 1), channels=(4, 8), hidden=16, variant=variant, rngs=nnx.Rngs(0))
    img = jnp.asarray(np.random.default_rng(1).random((2, 8, 8, 1)), jnp.float32)
    y = cnn(img, rngs=jax.random.key(0))
    assert y.shape == (2, 10) and bool(jnp.all(jnp.isfinite(y)))
    assert not np.allclose(y, cnn(img, deterministic=True))
    np.testing.assert_array_equal(cnn(img.reshape(2, 64), deterministic=True), cnn(img, deterministic=True))


def test_linen_mlp_matches_the_documented_call():
    m = models.LinenMLP(hidden=(8,), input_rate=0.0)
    v = m.init(jax.random.key(0), jnp.ones((1, 784)), deterministic=True)
    assert v["params"]["Dense_0"]["kernel"].shape == (784, 8)
    y1 = m.apply(v, jnp.ones((4, 784)), deterministic=False, rngs={"dropout": jax.random.key(1)})
    y0 = m.apply(v, jnp.ones((4, 784)), deterministic=False, rngs={"dropout": jax.random.key(1)}, rate=0.0)
    np.testing.assert_array_equal(y0, m.apply(v, jnp.ones((4, 784)), deterministic=True))
    assert not np.allclose(y1, y0)


def test_models_reject_bad_configuration(mlp, x):
    with pytest.raises(ValueError, match="DROPPING"):
        models.MLP(4, (4,), rate=1.0, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="input_rate"):
        models.MLP(4, (4,), input_rate="0.2", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown variant 'dropblock'"):
        models.MLP(4, (4,), variant="dropblock", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown variant 'alpha'"):
        models.CNN((8, 8, 1), variant="alpha", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="too small"):
        models.CNN((3, 3, 1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs a dropout key"):
        mlp(x)
    with pytest.raises(TypeError, match="PRNG key"):
        mlp(x, rngs=3.0)
