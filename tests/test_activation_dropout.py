"""jaxdrop.activation_dropout and its layers: the forward equals activation-then-dropout bit
for bit; the gradient equals the unfused one to rounding. (Its memory: tests/test_memory.py.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdrop
import jaxdrop.linen as jdl
import jaxdrop.nnx as jdn

ACTS = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_forward_bit_identical_and_gradient_close(act, mode, dtype):
    key = jax.random.key(3)
    x = jax.random.normal(jax.random.key(4), (32, 48), dtype)
    fused = lambda x: jaxdrop.activation_dropout(key, x, 0.3, act, mode=mode)  # noqa: E731
    plain = lambda x: jaxdrop.dropout(key, ACTS[act](x), 0.3, mode=mode)  # noqa: E731
    np.testing.assert_array_equal(np.asarray(fused(x), np.float32), np.asarray(plain(x), np.float32))
    g = jax.random.normal(jax.random.key(5), x.shape, dtype)
    gf = jax.vjp(fused, x)[1](g)[0]
    gp = jax.vjp(plain, x)[1](g)[0]
    assert bool(((gf == 0) == (gp == 0)).all())  # same dropped elements
    tol = 1e-6 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(gf, np.float32), np.asarray(gp, np.float32), rtol=tol, atol=tol)


def test_broadcast_dims_traced_rate_and_edge_cases():
    key, x = jax.random.key(0), jax.random.normal(jax.random.key(1), (4, 6, 8))
    y = jaxdrop.activation_dropout(key, x, 0.5, "tanh", broadcast_dims=(1,))
    np.testing.assert_array_equal(y, jaxdrop.dropout(key, jnp.tanh(x), 0.5, broadcast_dims=(1,)))
    yt = jax.jit(lambda r: jaxdrop.activation_dropout(key, x, r, "tanh"))(jnp.float32(0.5))
    np.testing.assert_array_equal(yt, jax.jit(lambda r: jaxdrop.dropout(key, jnp.tanh(x), r))(jnp.float32(0.5)))
    np.testing.assert_array_equal(jaxdrop.activation_dropout(key, x, 0.0, "tanh"), jnp.tanh(x))
    np.testing.assert_array_equal(jaxdrop.activation_dropout(key, x, 0.5, "tanh", deterministic=True), jnp.tanh(x))
    assert not jaxdrop.activation_dropout(key, x, 1.0, "sigmoid").any()
    with pytest.raises(ValueError, match=r"^jaxdrop\.activation_dropout: `activation` must be one of"):
        jaxdrop.activation_dropout(key, x, 0.5, "relu")  # type: ignore[arg-type]


def test_layers_equal_activation_then_dropout():
    x, key = jax.random.normal(jax.random.key(2), (8, 16)), jax.random.key(0)
    a = jdl.ActivationDropout(0.3, "tanh", deterministic=False).apply({}, x, rng=key)
    np.testing.assert_array_equal(a, jdl.Dropout(0.3, deterministic=False).apply({}, jnp.tanh(x), rng=key))
    np.testing.assert_array_equal(jdl.ActivationDropout(0.3, "tanh", deterministic=True).apply({}, x), jnp.tanh(x))
    a = jdn.ActivationDropout(0.3, "sigmoid", rngs=nnx.Rngs(dropout=1))(x)
    np.testing.assert_array_equal(a, jdn.Dropout(0.3, rngs=nnx.Rngs(dropout=1))(jax.nn.sigmoid(x)))
    layer = jdn.ActivationDropout(0.3, "tanh", rngs=nnx.Rngs(dropout=1))
    np.testing.assert_array_equal(layer(x, deterministic=True), jnp.tanh(x))
