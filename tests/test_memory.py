"""The memory claim: jaxdrop's backward pass regenerates the mask instead of storing it.

Nothing here runs a large computation. The training step is only compiled, and XLA's
buffer assignment (``compiled.memory_analysis()``) says how much temporary memory it
needs; the residual checks run a small MLP.

Four independent checks, each of which also shows that Flax-style dropout
(``jax.random.bernoulli`` + select, as in ``flax.linen.Dropout``) *does* keep a mask, so
the checks can fail:

1. compiled temp memory of a 4-layer MLP training step: jaxdrop's extra memory over the
   same step without dropout is at most a third of Flax-style dropout's;
2. the residuals that ``jax.vjp`` saves for the backward pass contain no boolean or
   integer array of the activation shape (jaxdrop saves a scalar key instead);
3. in the optimised HLO of the training step, no top-level instruction produces a
   ``pred``/integer array of the activation shape (a materialised mask or its bits);
4. with the layers in a ``lax.scan``, where residuals are stacked across iterations,
   jaxdrop's temp memory grows with depth exactly like the network without dropout.

Checks 1 and 3 hold on the CPU even for a naive ``where(prng.bernoulli(...), x / q, 0)``,
because XLA recomputes the fused mask instead of storing it; checks 2 and 4 are the
ones that catch a stored mask there (verified by substituting that naive version).
"""

from __future__ import annotations

import re

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop

RATE = 0.5
# Width 1024, batch 4096: each hidden activation is 16 MiB in float32, so a stored
# boolean mask is 4 MiB per layer. Compiling does not allocate any of it.
WIDTH, BATCH, LAYERS = 1024, 4096, 4


def _flax_dropout(key, h):
    return fnn.Dropout(RATE, deterministic=False).apply({}, h, rngs={"dropout": key})


DROPOUTS = {
    "none": lambda key, h: h,
    "flax": _flax_dropout,
    "exact": lambda key, h: jaxdrop.dropout(key, h, RATE),
    "fast": lambda key, h: jaxdrop.dropout(key, h, RATE, mode="fast"),
}


def mlp(params, x, key, drop, act=jax.nn.relu):
    """Dense layers; dropout after every hidden layer (all but the last)."""
    keys = jax.random.split(key, len(params))
    for i, (w, b) in enumerate(params):
        x = x @ w + b
        if i < len(params) - 1:
            x = drop(keys[i], act(x))
    return x


def train_step(drop):
    def loss(params, x, y, key):
        return jnp.mean((mlp(params, x, key, drop) - y) ** 2)

    def step(params, x, y, key):
        value, grads = jax.value_and_grad(loss)(params, x, y, key)
        return jax.tree.map(lambda p, g: p - 0.01 * g, params, grads), value

    return step


def _abstract_params(width=WIDTH, layers=LAYERS):
    return [
        (jax.ShapeDtypeStruct((width, width), jnp.float32), jax.ShapeDtypeStruct((width,), jnp.float32))
        for _ in range(layers)
    ]


@pytest.fixture(scope="module")
def compiled_steps():
    x = jax.ShapeDtypeStruct((BATCH, WIDTH), jnp.float32)
    key = jax.random.key(0)
    return {
        name: jax.jit(train_step(drop)).lower(_abstract_params(), x, x, key).compile()
        for name, drop in DROPOUTS.items()
    }


def test_training_step_temp_memory(compiled_steps):
    temp = {name: c.memory_analysis().temp_size_in_bytes for name, c in compiled_steps.items()}
    mask_bytes = BATCH * WIDTH  # one bool per activation element
    flax_extra = temp["flax"] - temp["none"]
    # Sanity (the comparison is meaningful): Flax-style keeps at least a mask per hidden layer.
    assert flax_extra >= (LAYERS - 1) * mask_bytes, temp
    for mode in ("exact", "fast"):
        extra = temp[mode] - temp["none"]
        assert extra <= flax_extra / 3, (mode, temp)


def test_optimised_hlo_materialises_no_mask(compiled_steps):
    act = rf"\[{BATCH},{WIDTH}\]"
    pattern = re.compile(rf"= (?:pred|u8|s8|u16|s16|u32|s32|u64|s64){act}")

    def top_level_masks(compiled):
        text = compiled.as_text()
        entry = text[text.index("\nENTRY") :]
        entry = entry[: entry.index("\n}")]  # instructions of the entry computation, not inside fusions
        return pattern.findall(entry)

    assert len(top_level_masks(compiled_steps["flax"])) >= LAYERS - 1  # sanity: detectable
    for name in ("none", "exact", "fast"):
        assert top_level_masks(compiled_steps[name]) == [], name


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_vjp_residuals_hold_a_key_not_a_mask(mode):
    # What jax.vjp keeps for the backward pass (the leaves of the returned function).
    width, batch = 32, 48
    keys = jax.random.split(jax.random.key(0), LAYERS)
    params = [(jax.random.normal(k, (width, width)) / np.sqrt(width), jnp.zeros(width)) for k in keys]
    x = jnp.ones((batch, width))

    def residuals(drop):
        _, vjp_fn = jax.vjp(lambda p: mlp(p, x, jax.random.key(1), drop), params)
        return list({id(leaf): leaf for leaf in jax.tree_util.tree_leaves(vjp_fn)}.values())

    def is_key(leaf):
        return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)

    def n_bool(leaves):  # ReLU saves one bool (x > 0) per hidden layer; a stored mask is another
        return sum(leaf.dtype == jnp.bool_ and leaf.shape == (batch, width) for leaf in leaves)

    def array_bytes(leaves):
        return sum(leaf.nbytes for leaf in leaves if not is_key(leaf))

    none, flax, ours = (residuals(DROPOUTS[name]) for name in ("none", "flax", mode))
    hidden = LAYERS - 1
    assert n_bool(none) == hidden
    assert n_bool(flax) == 2 * hidden  # sanity: Flax-style stores a mask per dropout layer
    assert n_bool(ours) == hidden
    # Exactly the residuals of the network without dropout, plus one key per dropout layer.
    assert array_bytes(ours) == array_bytes(none)
    assert sum(map(is_key, ours)) == hidden


def test_scanned_layers_memory_does_not_grow_with_depth():
    # Layers applied with lax.scan: residuals cross the loop as stacked arrays, so a stored
    # mask costs one activation-sized bool per layer. jaxdrop's temporary memory must grow
    # with depth exactly like the network without dropout; Flax-style grows faster.
    width, batch = 512, 1024

    def scan_mlp(params, x, key, drop):
        ws, bs = params

        def body(h, layer):
            w, b, k = layer
            return drop(k, jax.nn.relu(h @ w + b)), None

        return jax.lax.scan(body, x, (ws, bs, jax.random.split(key, ws.shape[0])))[0]

    def temp(drop, depth):
        params = (
            jax.ShapeDtypeStruct((depth, width, width), jnp.float32),
            jax.ShapeDtypeStruct((depth, width), jnp.float32),
        )
        x = jax.ShapeDtypeStruct((batch, width), jnp.float32)
        grad = jax.grad(lambda p, x, k: jnp.mean(scan_mlp(p, x, k, drop) ** 2))
        return (
            jax.jit(grad).lower(params, x, jax.random.key(0)).compile().memory_analysis().temp_size_in_bytes
        )

    def growth(name):  # extra temp memory of 4 more layers
        return temp(DROPOUTS[name], 6) - temp(DROPOUTS[name], 2)

    none = growth("none")
    assert growth("flax") >= none + 4 * batch * width  # sanity: a bool mask per extra layer
    assert growth("exact") == none


# --------------------------------------------------------------------------- dropout free in the step
# Compiled temporary memory of jit(grad) with dropout equals the same step without dropout.
# Keys come in pre-split (an input, not a temporary), so the figures are equal to the byte.
# Small sizes, compile only (benchmarks/bench_train_memory.py has the full-size figures).


def _temp(f, *args):
    return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes


def _mlp_temp(act_drop, width=256, batch=512, layers=4):
    params = _abstract_params(width, layers)
    x = jax.ShapeDtypeStruct((batch, width), jnp.float32)
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), layers))

    def loss(params, x, keys):
        for i, (w, b) in enumerate(params):
            x = x @ w + b
            if i < layers - 1:
                x = act_drop(keys[i], x)
        return jnp.mean(x**2)

    return _temp(jax.grad(loss), params, x, keys)


def _flax_style(key, h, rate=0.1):
    return jax.lax.select(jax.random.bernoulli(key, 1 - rate, h.shape), h / (1 - rate), jnp.zeros_like(h))


def test_tanh_mlp_step_activation_dropout_costs_no_memory():
    none = _mlp_temp(lambda k, z: jnp.tanh(z))
    act = _mlp_temp(lambda k, z: jaxdrop.activation_dropout(k, z, 0.1, "tanh"))
    plain = _mlp_temp(lambda k, z: jaxdrop.dropout(k, jnp.tanh(z), 0.1))
    flax = _mlp_temp(lambda k, z: _flax_style(k, jnp.tanh(z)))
    act_bytes = 512 * 256 * 4
    # Sanity (the comparison can fail): tanh then any dropout keeps an extra activation per layer.
    assert plain - none >= 3 * act_bytes, (none, plain)
    assert flax > plain, (plain, flax)
    assert act == none, (none, act)


@pytest.mark.parametrize("act", [jax.nn.gelu, jax.nn.relu], ids=["gelu", "relu"])
def test_mlp_step_dropout_costs_no_memory(act):
    none = _mlp_temp(lambda k, z: act(z))
    ours = _mlp_temp(lambda k, z: jaxdrop.dropout(k, act(z), 0.1))
    flax = _mlp_temp(lambda k, z: _flax_style(k, act(z)))
    assert flax > none  # sanity: a stored mask shows
    assert ours == none, (none, ours)

