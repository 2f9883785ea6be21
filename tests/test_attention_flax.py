"""Flax's own attention tests, run against Flax's layers and functions and against jaxdrop's.

Ported from google/flax at commit 18f8f311c275d57f46d95e41b15aa97b454754c0 (the
source of ``flax/linen/attention.py`` and ``flax/nnx/nn/attention.py`` there is
identical to the installed flax 0.12.8):

* ``tests/linen/linen_attention_test.py`` (``AttentionTest``)
* ``tests/nnx/nn/attention_test.py`` (``TestMultiHeadAttention``, ``TestLinenConsistency``,
  ``TestKVFeatures``, ``TestGQADotProductAttention``, ``TestDotProductAttentionValidation``)

Copyright 2024 The Flax Authors. Licensed under the Apache License, Version 2.0 (the
"License"); you may not use this file except in compliance with the License. You may
obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0. Unless
required by applicable law or agreed to in writing, software distributed under the
License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY
KIND, either express or implied. See the License for the specific language governing
permissions and limitations under the License. Changes: absltest/parameterized turned
into pytest functions, parametrised over the implementation ("the import swapped"), so
each test runs with Flax's class or function and with jaxdrop's; a failure in a
``jaxdrop`` case next to a passing ``flax`` case is a jaxdrop incompatibility.

Every test of those files that exercises the attention layers or functions is ported;
``test_causal_mask_1d`` (the subject is Flax's ``make_causal_mask``, which jaxdrop does
not reimplement) runs once, unparametrised, as the decoding tests use that mask.
``test_nnx_attention_equivalence`` runs 8 of Flax's 96 argument combinations (see there).

Parametrisation:

* layers: ``flax.linen.MultiHeadDotProductAttention`` / ``MultiHeadAttention`` vs
  ``jaxdrop.linen``'s, ``flax.nnx.MultiHeadAttention`` vs ``jaxdrop.nnx``'s;
  ``test_autoregressive_receptive_field_1d`` also runs jaxdrop's layer with
  ``implementation="blockwise"`` (``block_size=4``: short sequences span several,
  padded, blocks); part 2 covers blockwise layers against Flax's, decoding included.
* functions: ``flax.linen.dot_product_attention`` (linen tests) or
  ``flax.nnx.dot_product_attention`` (nnx tests) vs
  ``jaxdrop.attention.dot_product_attention``, and its ``implementation="blockwise"``
  where the test checks numerics rather than exact identity.

Tolerances, where jaxdrop is compared with Flax (``assert_matches_flax``): bit for bit
when both run the same computation: while dropout is applied (default or ``"dense"``:
Flax's einsums with Flax's mask), or without dropout ``"dense"`` against Flax's einsums
and the default against Flax nnx's fused path (nnx calls ``jax.nn.dot_product_attention``
when its rate is 0). Otherwise ``FUSED_TOL`` (atol = rtol = 2e-6: jaxdrop's default
runs the fused ``jax.nn.dot_product_attention`` without dropout, equal to Flax's einsums
to float rounding); ``BLOCKWISE_TOL`` (atol = rtol = 1e-5) for ``"blockwise"`` (the same
dropout mask, blocks summed in another order, in float32) and for gradients with dropout.

Part 2 ("side by side") goes beyond Flax's tests: jaxdrop's layer is run on the
variables Flax's layer initialised (a Flax checkpoint loads unchanged) with dropout on
and the same rngs, and must give Flax's output bit for bit, in decode (cache) mode too,
with the cache identical after every step; the variable trees the two initialise must
be identical.

The port found two jaxdrop bugs, fixed and covered here: the grouped-query head error did
not match the message of nnx's fused path, and complex inputs took the fused path, which
drops imaginary parts (they now run densely; blockwise refuses them).
"""

from __future__ import annotations

import functools
import re
import typing as tp

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import errors, jax_utils, nnx
from flax import linen as nn
from flax.core import pop
from flax.nnx.nn.attention import combine_masks
from helpers import assert_identical, assert_trees_identical
from jax import lax, random
from jax.lax import Precision
from jax.nn import initializers

import jaxdrop.attention as jda
import jaxdrop.linen as jdl
import jaxdrop.nnx as jdn

try:  # JAX v0.8.0 and newer
    from jax import enable_x64
except ImportError:  # pragma: no cover
    from jax.experimental import enable_x64

BLOCK = 4
FUSED_TOL = dict(atol=2e-6, rtol=2e-6)
BLOCKWISE_TOL = dict(atol=1e-5, rtol=1e-5)


def _blockwise(cls):
    return functools.partial(cls, implementation="blockwise", block_size=BLOCK)


IDS = ["flax", "jaxdrop"]
IDS3 = ["flax", "jaxdrop", "jaxdrop-blockwise"]

# linen layers
MHDPA = pytest.mark.parametrize(
    "MHDPA", [nn.MultiHeadDotProductAttention, jdl.MultiHeadDotProductAttention], ids=IDS
)
MHDPA3 = pytest.mark.parametrize(
    "MHDPA",
    [
        nn.MultiHeadDotProductAttention,
        jdl.MultiHeadDotProductAttention,
        _blockwise(jdl.MultiHeadDotProductAttention),
    ],
    ids=IDS3,
)
LINEN_PAIR = pytest.mark.parametrize(
    "MHDPA, MHA",
    [
        (nn.MultiHeadDotProductAttention, nn.MultiHeadAttention),
        (jdl.MultiHeadDotProductAttention, jdl.MultiHeadAttention),
    ],
    ids=IDS,
)
# linen functions
LINEN_DPA = pytest.mark.parametrize(
    "dot_product_attention", [nn.dot_product_attention, jda.dot_product_attention], ids=IDS
)
# nnx layers
NNX_MHA = pytest.mark.parametrize("MHA", [nnx.MultiHeadAttention, jdn.MultiHeadAttention], ids=IDS)
# nnx functions
NNX_DPA_LIST = [
    nnx.dot_product_attention,
    jda.dot_product_attention,
    functools.partial(jda.dot_product_attention, implementation="blockwise", block_size=BLOCK),
]
NNX_DPA3 = pytest.mark.parametrize("dot_product_attention", NNX_DPA_LIST, ids=IDS3)

# ---------------------------------------------------------------------- helpers


def assert_matches_flax(ref, out, implementation, dropout, flax_fused=False):
    """jaxdrop's ``out`` against Flax's ``ref`` with the documented tolerance.

    Bit for bit when both ran the same computation: with dropout (Flax's einsums, which
    the default and "dense" reproduce), or without dropout when both ran the fused
    ``jax.nn.dot_product_attention`` (jaxdrop's default; Flax nnx's when its rate is 0,
    ``flax_fused``) or both ran the einsums ("dense" vs Flax linen).
    """
    assert np.asarray(ref).dtype == np.asarray(out).dtype
    if implementation == "blockwise":
        np.testing.assert_allclose(out, ref, **BLOCKWISE_TOL)
    elif dropout or (implementation is None) == flax_fused:
        assert_identical(ref, out)
    else:
        np.testing.assert_allclose(out, ref, **FUSED_TOL)


def implementation_of(fn):
    return fn.keywords.get("implementation") if isinstance(fn, functools.partial) else None


# ======================================================= part 1: Flax's own tests
# ------------------------------------------- linen: tests/linen/linen_attention_test.py


# AttentionTest.test_multihead_self_attention
@MHDPA
def test_multihead_self_attention(MHDPA):
    rng = random.key(0)
    x = jnp.ones((4, 6, 5))
    sa_module = MHDPA(
        num_heads=8,
        qkv_features=16,
        kernel_init=initializers.ones,
        bias_init=initializers.zeros,
        deterministic=False,
    )
    y, _ = sa_module.init_with_output(rng, x)
    assert y.shape == x.shape
    assert y.dtype == jnp.float32


# AttentionTest.test_dtype_infer
@MHDPA
def test_dtype_infer(MHDPA):
    rng = random.key(0)
    x = jnp.ones((4, 6, 5), jnp.complex64)
    sa_module = MHDPA(
        num_heads=8,
        qkv_features=16,
        kernel_init=initializers.ones,
        bias_init=initializers.zeros,
        deterministic=False,
    )
    y, _ = sa_module.init_with_output(rng, x)
    assert y.shape == x.shape
    assert y.dtype == jnp.complex64


# AttentionTest.test_multihead_encoder_decoder_attention
@MHDPA
def test_multihead_encoder_decoder_attention(MHDPA):
    rng = random.key(0)
    q = jnp.ones((4, 2, 3, 5))
    sa_module = MHDPA(
        num_heads=8,
        qkv_features=16,
        kernel_init=initializers.ones,
        bias_init=initializers.zeros,
        deterministic=False,
    )
    y, _ = sa_module.init_with_output(rng, q)
    assert y.shape == q.shape


# AttentionTest.test_mha_out_initializers
@MHDPA
def test_mha_out_initializers(MHDPA):
    rng = random.key(0)
    q = jnp.ones((4, 2, 3, 5))
    sa_module = MHDPA(
        num_heads=8,
        qkv_features=16,
        kernel_init=initializers.ones,
        out_kernel_init=initializers.zeros,
        bias_init=initializers.zeros,
        out_bias_init=initializers.ones,
        deterministic=False,
    )
    variables = sa_module.init(rng, q)
    params = variables["params"]
    # test kernels
    np.testing.assert_allclose(params["query"]["kernel"], 1.0)
    np.testing.assert_allclose(params["key"]["kernel"], 1.0)
    np.testing.assert_allclose(params["value"]["kernel"], 1.0)
    np.testing.assert_allclose(params["out"]["kernel"], 0.0)
    # test biases
    np.testing.assert_allclose(params["query"]["bias"], 0.0)
    np.testing.assert_allclose(params["key"]["bias"], 0.0)
    np.testing.assert_allclose(params["value"]["bias"], 0.0)
    np.testing.assert_allclose(params["out"]["bias"], 1.0)


# AttentionTest.test_multihead_self_attention_w_dropout
@MHDPA
def test_multihead_self_attention_w_dropout(MHDPA):
    rng = random.key(0)
    x = jnp.ones((4, 2, 3, 5))
    sa_module = MHDPA(
        num_heads=8,
        qkv_features=16,
        kernel_init=initializers.ones,
        bias_init=initializers.zeros,
        dropout_rate=0.1,
        deterministic=False,
    )
    rng1, rng2 = random.split(rng)
    rngs = {"params": rng1, "dropout": rng2}
    y, _ = sa_module.init_with_output(rngs, x)
    assert y.shape == x.shape


# AttentionTest.test_multihead_self_attention_explicit_dropout
@MHDPA
def test_multihead_self_attention_explicit_dropout(MHDPA):
    def clone(key):
        return jax.tree.map(jax.random.clone, key)

    class Foo(nn.Module):
        attention_kwargs: dict

        @nn.compact
        def __call__(self, x, dropout_rng=None):
            a = MHDPA(**self.attention_kwargs)(x, x, dropout_rng=dropout_rng)
            if dropout_rng is not None:
                dropout_rng = clone(dropout_rng)
            b = MHDPA(**self.attention_kwargs)(x, x, dropout_rng=dropout_rng)
            return a, b

    module = Foo(
        dict(
            num_heads=8,
            qkv_features=16,
            kernel_init=initializers.ones,
            bias_init=initializers.zeros,
            dropout_rate=0.5,
            deterministic=False,
        )
    )
    rng1, rng2, rng3, rng4 = random.split(random.key(0), 4)
    x = jnp.ones((4, 2, 3, 5))
    rngs = {"params": rng1, "dropout": rng2}
    v = module.init(rngs, x)
    a, b = module.apply(v, x, rngs=clone(rngs))
    c, d = module.apply(v, x, rngs={"dropout": clone(rng2)})
    e, f = module.apply(v, x, rngs={"dropout": rng3})
    assert not (a == b).all()
    assert (a == c).all()
    assert (b == d).all()
    assert not (a == e).all()
    assert not (b == f).all()
    a, b = module.apply(v, x, rngs=clone(rngs), dropout_rng=rng4)
    assert (a == b).all()
    a, b = module.apply(v, x, dropout_rng=clone(rng4))
    assert (a == b).all()
    assert a.shape == b.shape == x.shape


# AttentionTest.test_multihead_self_attention_w_dropout_disabled
@MHDPA
def test_multihead_self_attention_w_dropout_disabled(MHDPA):
    rng = random.key(0)
    x = jnp.ones((4, 2, 3, 5))
    sa_module0 = MHDPA(
        num_heads=8,
        qkv_features=16,
        kernel_init=initializers.ones,
        bias_init=initializers.zeros,
        dropout_rate=0.0,
        deterministic=True,
    )
    rng1, rng2, rng3, rng4 = random.split(rng, 4)
    rngs1 = {"params": rng1, "dropout": rng2}
    rngs2 = {"params": rng3, "dropout": rng4}
    y1, vs = sa_module0.init_with_output(rngs1, x)
    y2, _ = sa_module0.init_with_output(rngs2, x)
    np.testing.assert_allclose(y1, y2)
    y3 = sa_module0.apply(vs, x, rngs=rngs1)
    y4 = sa_module0.apply(vs, x, rngs=rngs2)
    np.testing.assert_allclose(y3, y4)
    sa_module1 = MHDPA(
        num_heads=8,
        qkv_features=16,
        kernel_init=initializers.ones,
        bias_init=initializers.zeros,
        dropout_rate=0.0,
    )
    y5 = sa_module1.apply(vs, x, deterministic=True, rngs=rngs1)
    y6 = sa_module1.apply(vs, x, deterministic=True, rngs=rngs2)
    np.testing.assert_allclose(y5, y6)
    sa_module2 = MHDPA(
        num_heads=8,
        qkv_features=16,
        kernel_init=initializers.ones,
        bias_init=initializers.zeros,
        dropout_rate=0.5,
    )
    y7 = sa_module2.apply(vs, x, deterministic=True, rngs=rngs1)
    y8 = sa_module2.apply(vs, x, deterministic=True, rngs=rngs2)
    np.testing.assert_allclose(y7, y8)


# AttentionTest.test_causal_mask_1d. Its subject is flax.linen.attention.make_causal_mask,
# which jaxdrop does not reimplement; kept (unparametrised, cheap) because the decoding
# and receptive-field tests below take it as their reference mask.
def test_causal_mask_1d():
    """Tests autoregressive masking for 1d attention."""
    x = jnp.ones((3, 16))  # (bs1, length)
    mask_1d = nn.attention.make_causal_mask(x)
    ts = np.arange(16)
    mask_1d_simple = (ts[:, None] >= ts[None, :])[None, None, :, :]
    mask_1d_simple = jnp.broadcast_to(mask_1d_simple, (3, 1, 16, 16))
    np.testing.assert_allclose(mask_1d, mask_1d_simple)


# AttentionTest.test_decoding
@MHDPA
@pytest.mark.parametrize("spatial_shape, attn_dims", [((5,), (1,)), ((6, 5), (2,))], ids=["1d", "2d"])
def test_decoding(MHDPA, spatial_shape, attn_dims):
    bs = 2
    num_heads = 3
    num_features = 4
    rng = random.key(0)
    key1, key2 = random.split(rng)
    inputs = random.normal(key1, (bs, *spatial_shape, num_heads * num_features))
    module = MHDPA(
        num_heads=num_heads,
        qkv_features=num_heads * num_features,
        precision=lax.Precision.HIGHEST,
        deterministic=False,
        decode=False,
    )
    decode_module = module.clone(decode=True)

    initial_vars = decode_module.init(key2, inputs)
    state, params = pop(initial_vars, "params")
    causal_mask = nn.attention.make_causal_mask(jnp.ones((bs, *spatial_shape)))
    y_ref = jax.jit(lambda x, y: module.apply(initial_vars, x, mask=y))(inputs, causal_mask)

    # feed the inputs sequentially to simulate decoding
    def body_fn(state, x):
        y, state = decode_module.apply({"params": params, **state}, x, mutable=["cache"])
        return state, y

    # scan_in_dim supports scanning multiple dims
    _, y = jax_utils.scan_in_dim(body_fn, state, inputs, axis=attn_dims, keepdims=True)

    np.testing.assert_allclose(y_ref, y, atol=1e-5)


# AttentionTest.test_autoregressive_receptive_field_1d
@MHDPA3
def test_autoregressive_receptive_field_1d(MHDPA):
    """Tests the autoregressive self-attention receptive field."""
    rng = random.key(0)
    rng1, rng2 = random.split(rng, num=2)

    length = 10
    dim = 1
    num_heads = 1
    input_shape = (1, length, dim)
    inputs = random.normal(rng2, input_shape)

    module = MHDPA(
        num_heads=num_heads,
        kernel_init=jax.nn.initializers.ones,
        deterministic=False,
    )

    initial_vars = module.init(rng1, inputs)
    causal_mask = nn.attention.make_causal_mask(jnp.ones(input_shape[:-1]))

    def model_loss(inputs, pos):
        out = module.apply(initial_vars, inputs, mask=causal_mask)
        assert out.shape == input_shape
        assert len(out.shape) == 3
        return out[0, pos, :].sum()

    grad_fn = jax.jit(jax.grad(model_loss))

    def get_receptive_field_1d(pos):
        g = grad_fn(inputs, pos)[0, :, :]
        return jnp.any((jnp.abs(g) > 1e-5).astype(jnp.uint32), axis=-1)

    for i in range(length):
        deps = get_receptive_field_1d(i)
        assert (deps[:i] == 1).all(), (
            "Receptive Field Error: Some of the previous postions are not reachable "
            "in autoregressive self-attention."
        )
        if i != length - 1:
            k = i + 1
            assert (deps[k:] == 0).all(), (
                "Receptive Field Error: Some of the future postions are reachable in "
                "autoregressive self-attention."
            )


# AttentionTest.test_multihead_kv_args
@MHDPA
def test_multihead_kv_args(MHDPA):
    key1, key2 = random.split(random.key(0), 2)
    query = random.uniform(key1, (3, 5))
    key_value = random.uniform(key2, (9, 5))
    module = MHDPA(
        num_heads=8,
        qkv_features=16,
        kernel_init=initializers.ones,
        bias_init=initializers.zeros,
        deterministic=False,
    )

    def key():
        return random.key(43279)

    y0, v0 = module.init_with_output(key(), query, inputs_k=key_value, inputs_v=key_value)
    y1, v1 = module.init_with_output(key(), query, inputs_k=key_value)
    with pytest.warns(DeprecationWarning, match="The inputs_kv arg will be deprecated soon."):
        y2, v2 = module.init_with_output(key(), query, inputs_kv=key_value)
    assert (y0 == y1).all() and (y1 == y2).all()
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda x, y, z: (x == y).all() and (y == z).all(), v0, v1, v2)
    )

    with pytest.raises(ValueError, match=re.escape("`inputs_k` cannot be None if `inputs_v` is not None.")):
        module.init_with_output(key(), query, inputs_v=key_value)
    msg = re.escape("If either `inputs_k` or `inputs_v` is not None, `inputs_kv` must be None.")
    with pytest.raises(ValueError, match=msg):
        module.init_with_output(key(), query, inputs_kv=key_value, inputs_v=key_value)
    with pytest.raises(ValueError, match=msg):
        module.init_with_output(key(), query, key_value, key_value, inputs_kv=key_value)


# AttentionTest.test_multihead_mask_warning
@MHDPA
def test_multihead_mask_warning(MHDPA):
    rng = random.key(0)
    rng1, rng2 = random.split(rng, num=2)

    length = 10
    dim = 1
    num_heads = 1
    input_shape = (1, length, dim)
    query = key = random.normal(rng2, input_shape)

    module = MHDPA(
        num_heads=num_heads,
        kernel_init=jax.nn.initializers.ones,
        deterministic=False,
    )

    initial_vars = module.init(rng1, query, key)
    causal_mask = nn.attention.make_causal_mask(jnp.ones(input_shape[:-1]))

    module.apply(initial_vars, query, key, mask=causal_mask)
    with (
        pytest.warns(
            DeprecationWarning,
            match="the function signature of MultiHeadDotProductAttention's `__call__` method has changed",
        ),
        pytest.raises(errors.ScopeParamShapeError),
    ):
        module.apply(initial_vars, query, key, causal_mask)


# AttentionTest.test_multihead_sow_attention_weights
@MHDPA
def test_multihead_sow_attention_weights(MHDPA):
    rng = random.key(0)
    x = jnp.ones((4, 6, 5))

    class Model(nn.Module):
        attention_kwargs: dict

        @nn.compact
        def __call__(self, x, sow_weights=False):
            x = MHDPA(**self.attention_kwargs)(x, sow_weights=sow_weights)
            x = MHDPA(**self.attention_kwargs)(x)
            x = MHDPA(**self.attention_kwargs)(x, sow_weights=sow_weights)
            return x

    module = Model(
        dict(
            num_heads=8,
            qkv_features=16,
            kernel_init=initializers.ones,
            bias_init=initializers.zeros,
            deterministic=False,
        )
    )
    v = module.init(rng, x)
    _, intermediates = module.apply(v, x, mutable=["intermediates"], sow_weights=True)
    inter = intermediates["intermediates"]
    assert inter["MultiHeadDotProductAttention_0"]["attention_weights"][0].shape == (4, 8, 6, 6)
    assert "MultiHeadDotProductAttention_1" not in inter
    assert inter["MultiHeadDotProductAttention_2"]["attention_weights"][0].shape == (4, 8, 6, 6)
    _, intermediates = module.apply(v, x, mutable=["intermediates"], sow_weights=False)
    assert "intermediates" not in intermediates


# AttentionTest.test_autoregressive_decode_with_x64
@MHDPA
def test_autoregressive_decode_with_x64(MHDPA):
    with enable_x64():
        x = jnp.ones((1, 4, 4))
        module = MHDPA(num_heads=2, qkv_features=4, decode=True)

        rng = random.PRNGKey(0)
        variables = module.init(rng, x, x, x)
        params, cache = variables["params"], variables["cache"]
        y1, updates = module.apply({"params": params, "cache": cache}, x[:, :1, :], mutable=["cache"])
        cache = updates["cache"]
        y2, updates = module.apply({"params": params, "cache": cache}, x[:, 1:2, :], mutable=["cache"])
        assert y1.shape == (1, 1, 4)
        assert y2.shape == (1, 1, 4)


# AttentionTest.test_attention_alias_equivalence
@LINEN_PAIR
def test_attention_alias_equivalence(MHDPA, MHA):
    key1, key2 = random.split(random.key(0), 2)
    query = random.uniform(key1, (3, 5))
    key_value = random.uniform(key2, (9, 5))
    attention_kwargs = dict(
        num_heads=8,
        qkv_features=16,
        kernel_init=initializers.lecun_normal(),
        bias_init=initializers.uniform(),
        deterministic=False,
    )
    module1 = MHDPA(**attention_kwargs)
    module2 = MHA(**attention_kwargs)

    def key():
        return random.key(43279)

    out1, v1 = module1.init_with_output(key(), query, key_value)
    out2, v2 = module2.init_with_output(key(), query, key_value, key_value)
    assert (out1 == out2).all()
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda x, y: (x == y).all(), v1, v2))


# AttentionTest.test_attention_alias_submodule
@LINEN_PAIR
def test_attention_alias_submodule(MHDPA, MHA):
    key1, key2 = random.split(random.key(0), 2)
    query = random.uniform(key1, (3, 5))
    key_value = random.uniform(key2, (9, 5))
    attention_kwargs = dict(
        num_heads=8,
        qkv_features=16,
        kernel_init=initializers.lecun_normal(),
        bias_init=initializers.uniform(),
        deterministic=False,
    )

    class Foo1(nn.Module):
        attention_kwargs: dict

        @nn.compact
        def __call__(self, query, key):
            return MHDPA(**self.attention_kwargs)(query, key)

    class Foo2(nn.Module):
        attention_kwargs: dict

        @nn.compact
        def __call__(self, query, key, value):
            return MHA(**self.attention_kwargs)(query, key, value)

    def key():
        return random.key(5478392)

    module1 = Foo1(attention_kwargs)
    module2 = Foo2(attention_kwargs)
    out1, v1 = module1.init_with_output(key(), query, key_value)
    out2, v2 = module2.init_with_output(key(), query, key_value, key_value)

    # test different output and variables if layer names are different
    assert (out1 != out2).all()
    v2["params"]["MultiHeadDotProductAttention_0"] = v2["params"]["MultiHeadAttention_0"]
    del v2["params"]["MultiHeadAttention_0"]
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda x, y: (x != y).all(), v1, v2))

    # test same output if variables are the same
    v2 = jax.tree_util.tree_map(lambda x: x, v1)
    v2["params"]["MultiHeadAttention_0"] = v2["params"]["MultiHeadDotProductAttention_0"]
    del v2["params"]["MultiHeadDotProductAttention_0"]
    out2 = module2.apply(v2, query, key_value, key_value)
    assert (out1 == out2).all()

    # test same output and variables if names are the same
    class Foo3(nn.Module):
        attention_kwargs: dict

        @nn.compact
        def __call__(self, query, key, value):
            return MHA(**self.attention_kwargs, name="MultiHeadDotProductAttention_0")(query, key, value)

    module2 = Foo3(attention_kwargs)
    out2, v2 = module2.init_with_output(key(), query, key_value, key_value)
    assert (out1 == out2).all()
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda x, y: (x == y).all(), v1, v2))


# AttentionTest.test_mixed_precision_multihead_attention
@MHDPA
@pytest.mark.parametrize(
    "force_fp32, attn_weights_dtype", [(True, jnp.float32), (False, jnp.bfloat16)], ids=["fp32", "bf16"]
)
def test_mixed_precision_multihead_attention(MHDPA, force_fp32, attn_weights_dtype):
    input_key, params_key, dropout_key = random.split(random.key(0), 3)
    x = random.uniform(input_key, (2, 4))
    attention_kwargs = dict(
        num_heads=2,
        qkv_features=4,
        kernel_init=initializers.lecun_normal(),
        bias_init=initializers.uniform(),
        force_fp32_for_softmax=force_fp32,
        deterministic=False,
        dtype=jnp.bfloat16,
    )
    mha = MHDPA(**attention_kwargs)
    init_vars = mha.init({"params": params_key, "dropout": dropout_key}, x)
    _, updated_vars = mha.apply(init_vars, x, mutable=["intermediates"], sow_weights=True)
    assert updated_vars["intermediates"]["attention_weights"][0].dtype == attn_weights_dtype


# AttentionTest.test_dot_product_attention_precision_and_einsum_override
@LINEN_DPA
@pytest.mark.parametrize(
    "precision, einsum_dot_general",
    [(lax.Precision.DEFAULT, None), (None, jax.lax.dot_general)],
    ids=["precision", "dot_general"],
)
def test_dot_product_attention_precision_and_einsum_override(
    dot_product_attention, precision, einsum_dot_general
):
    # Test that we raise a ValueError if the user specifies both
    # `precision` and/or `einsum_dot_general` and `qk_attn_weights_einsum`.
    def einsum_cls():
        return jnp.einsum

    with pytest.raises(ValueError):
        dot_product_attention(
            query=jnp.ones((1, 4, 2)),
            key=jnp.ones((1, 4, 2)),
            value=jnp.ones((1, 4, 2)),
            precision=precision,
            einsum_dot_general=einsum_dot_general,
            qk_attn_weights_einsum=einsum_cls,
            attn_weights_value_einsum=einsum_cls,
        )


# AttentionTest.test_dot_product_attention_specify_einsums_together
@LINEN_DPA
@pytest.mark.parametrize(
    "qk_attn_weights_einsum, attn_weights_value_einsum",
    [(lambda: jax.lax.dot_general, None), (None, lambda: jax.lax.dot_general)],
    ids=["qk_only", "value_only"],
)
def test_dot_product_attention_specify_einsums_together(
    dot_product_attention, qk_attn_weights_einsum, attn_weights_value_einsum
):
    # Test that we raise a ValueError if the user specifies only one of
    # `qk_attn_weights_einsum` and `attn_weights_value_einsum`.
    with pytest.raises(ValueError):
        dot_product_attention(
            query=jnp.ones((1, 4, 2)),
            key=jnp.ones((1, 4, 2)),
            value=jnp.ones((1, 4, 2)),
            qk_attn_weights_einsum=qk_attn_weights_einsum,
            attn_weights_value_einsum=attn_weights_value_einsum,
        )


# ------------------------------------------------------ nnx: tests/nnx/nn/attention_test.py


# TestMultiHeadAttention.test_basic
@NNX_MHA
def test_nnx_basic(MHA):
    module = MHA(num_heads=2, in_features=3, qkv_features=6, out_features=6, rngs=nnx.Rngs(0))
    y = module(jnp.ones((1, 7, 3)), decode=False)
    assert y.shape == (1, 7, 6)


# TestMultiHeadAttention.test_multihead_sow_attention_weights
@NNX_MHA
def test_nnx_multihead_sow_attention_weights(MHA):
    class Model(nnx.Module):
        attention_kwargs: dict

        def __init__(self, attention_kwargs, rng):
            self.attention_layers = nnx.data([MHA(**attention_kwargs, rngs=rng) for i in range(3)])

        def __call__(self, x, sow_weights=False):
            x = self.attention_layers[0](x, sow_weights=sow_weights)
            x = self.attention_layers[1](x)
            x = self.attention_layers[2](x, sow_weights=sow_weights)
            return x

    rng = nnx.Rngs(0)
    x = jnp.ones((4, 6, 8))

    module = Model(
        dict(
            in_features=8,
            num_heads=8,
            kernel_init=nnx.initializers.ones_init(),
            bias_init=nnx.initializers.zeros_init(),
            deterministic=False,
        ),
        rng,
    )
    module.set_attributes(decode=False)

    _, intermediates = nnx.capture(module, nnx.Intermediate)(x, True)
    assert intermediates["attention_layers"][0]["attention_weights"][0].shape == (4, 8, 6, 6)
    assert 1 not in intermediates["attention_layers"]
    assert intermediates["attention_layers"][2]["attention_weights"][0].shape == (4, 8, 6, 6)

    _, intermediates = nnx.capture(module, nnx.Intermediate)(x)
    assert not intermediates  # empty


# TestMultiHeadAttention.test_autoregressive_decode_with_x64
@NNX_MHA
def test_nnx_autoregressive_decode_with_x64(MHA):
    with enable_x64():
        x = jnp.ones((1, 4, 4))
        module = MHA(in_features=4, num_heads=2, qkv_features=4, decode=True, rngs=nnx.Rngs(0))
        module.init_cache(x.shape, dtype=x.dtype)
        assert module.cached_key.shape == (1, 4, 2, 2)
        assert module.cached_value.shape == (1, 4, 2, 2)

        y1 = module(x[:, :1, :])
        y2 = module(x[:, 1:2, :])

        assert y1.shape == (1, 1, 4)
        assert y2.shape == (1, 1, 4)


# TestMultiHeadAttention.test_keep_rngs
@NNX_MHA
@pytest.mark.parametrize("keep_rngs", [True, False])
def test_nnx_keep_rngs(MHA, keep_rngs):
    rngs = nnx.Rngs(42)
    module = MHA(
        in_features=4,
        num_heads=2,
        qkv_features=4,
        decode=True,
        rngs=rngs,
        dropout_rate=0.5,
        keep_rngs=keep_rngs,
    )
    if keep_rngs:
        assert module.rngs is not None
    else:
        assert module.rngs is None
    if keep_rngs:
        _, _, nondiff = nnx.split(module, nnx.Param, ...)
        assert isinstance(nondiff["rngs"]["count"], nnx.RngCount)
        assert isinstance(nondiff["rngs"]["key"], nnx.RngKey)
    else:
        nnx.split(module, nnx.Param)


# TestMultiHeadAttention.test_causal_mask_equivalence. Beyond Flax's test, jaxdrop's
# result is also compared with Flax's (FUSED_TOL / BLOCKWISE_TOL).
@NNX_DPA3
@pytest.mark.parametrize("use_padding", [True, False])
@pytest.mark.parametrize("is_cross_attention", [True, False])
def test_nnx_causal_mask_equivalence(dot_product_attention, use_padding, is_cross_attention):
    batch_size = 1
    num_heads = 2
    q_len = 2
    kv_len = 4 if is_cross_attention else q_len
    head_dim = 4

    q = jax.random.normal(key=jax.random.key(0), shape=(batch_size, 1, q_len, num_heads, head_dim))
    k = jax.random.normal(key=jax.random.key(1), shape=(batch_size, 1, kv_len, num_heads, head_dim))
    v = jax.random.normal(key=jax.random.key(2), shape=(batch_size, 1, kv_len, num_heads, head_dim))

    causal_mask = jnp.tril(jnp.ones(shape=(q_len, kv_len), dtype=jnp.bool_))
    causal_mask = jnp.broadcast_to(array=causal_mask, shape=(batch_size, 1, num_heads, q_len, kv_len))

    padding_mask = None

    if use_padding:
        padding_mask = jnp.ones(shape=(batch_size, 1, 1, q_len, kv_len), dtype=jnp.bool_)
        padding_mask = padding_mask.at[..., -2:].set(False)

    manual_mask = combine_masks(padding_mask, causal_mask, dtype=q.dtype)

    # Jax.nn path with precombined mask and is_causal = False
    attn_jax = dot_product_attention(
        query=q, key=k, value=v, mask=manual_mask, is_causal=False, deterministic=True, module=None
    )

    class DummyModule(nnx.Module):
        pass

    # nnx path with padding mask and is_causal = True (internally combines them)
    dummy = DummyModule()

    def _run(m):
        return dot_product_attention(
            query=q, key=k, value=v, mask=padding_mask, is_causal=True, deterministic=True, module=m
        )

    attn_manual, _ = nnx.capture(_run, nnx.Intermediate)(dummy)

    np.testing.assert_allclose(attn_jax, attn_manual, atol=1e-6)

    if dot_product_attention is not nnx.dot_product_attention:
        impl = implementation_of(dot_product_attention)
        ref = nnx.dot_product_attention(q, k, v, mask=manual_mask, deterministic=True)
        assert_matches_flax(ref, attn_jax, impl, dropout=False, flax_fused=True)
        ref, _ = nnx.capture(
            lambda m: nnx.dot_product_attention(q, k, v, mask=padding_mask, is_causal=True, module=m),
            nnx.Intermediate,
        )(DummyModule())
        # Flax's module path is its einsum computation, which "dense" reproduces exactly.
        assert_matches_flax(ref, attn_manual, impl or "dense", dropout=False)


# TestLinenConsistency.test_nnx_attention_equivalence. The pair is Flax nnx vs Flax linen,
# or jaxdrop nnx vs jaxdrop linen. Flax's product has 2*2*2*3*2*2 = 96 cases; to keep the
# runtime small this runs 8 of them, an orthogonal array of strength 2 over the five
# two-valued arguments (every pair of their values occurs), the precision cycling
# through its three values.
def _equivalence_grid():
    precisions = [Precision.DEFAULT, Precision.HIGH, Precision.HIGHEST]
    dtypes = [jnp.float32, jnp.float16]
    for i in range(8):
        d, p, c = i >> 2, (i >> 1) & 1, i & 1
        use_bias, normalize_qk, decode = bool(d ^ c), bool(d ^ p ^ c), bool(c)
        dtype, param_dtype, precision = dtypes[d], dtypes[p], precisions[i % 3]
        yield pytest.param(
            use_bias, dtype, param_dtype, precision, decode, normalize_qk,
            id=f"bias{use_bias:d}-{dtype.__name__}-p{param_dtype.__name__}-{precision.name}"
            f"-decode{decode:d}-nqk{normalize_qk:d}",
        )  # fmt: skip


@pytest.mark.parametrize(
    "NnxMHA, LinenMHDPA",
    [
        (nnx.MultiHeadAttention, nn.MultiHeadDotProductAttention),
        (jdn.MultiHeadAttention, jdl.MultiHeadDotProductAttention),
    ],
    ids=IDS,
)
@pytest.mark.parametrize("use_bias, dtype, param_dtype, precision, decode, normalize_qk", _equivalence_grid())
def test_nnx_attention_equivalence(
    NnxMHA,
    LinenMHDPA,
    use_bias: bool,
    dtype: tp.Any,
    param_dtype: tp.Any,
    precision: tp.Any,
    decode: bool,
    normalize_qk: bool,
):
    key = jax.random.key(42)
    rngs = nnx.Rngs(42)

    num_heads = 2
    in_features = 3
    qkv_features = 6
    out_features = 6

    x = jax.numpy.ones((1, in_features))
    model_nnx = NnxMHA(
        num_heads=num_heads,
        in_features=in_features,
        qkv_features=qkv_features,
        out_features=out_features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        decode=decode,
        normalize_qk=normalize_qk,
        rngs=rngs,
    )
    model = LinenMHDPA(
        num_heads=num_heads,
        qkv_features=qkv_features,
        out_features=out_features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        decode=decode,
        normalize_qk=normalize_qk,
    )
    variables = model.init(key, x)

    for qkvo in ("query", "key", "value", "out"):
        getattr(model_nnx, qkvo).kernel[...] = variables["params"][qkvo]["kernel"]
        if use_bias:
            getattr(model_nnx, qkvo).bias[...] = variables["params"][qkvo]["bias"]
    if decode:
        model_nnx.init_cache(x.shape, dtype=dtype)

    out_nnx = model_nnx(x)
    out, _cache = model.apply(variables, x, mutable=["cache"])
    np.testing.assert_array_equal(out, out_nnx)


# TestKVFeatures.test_varying_num_features
@NNX_MHA
def test_nnx_varying_num_features(MHA):
    key = jax.random.key(42)
    rngs = nnx.Rngs(42)

    num_heads = 2
    in_features = 3
    in_kv_features = 4
    qkv_features = 6
    out_features = 6

    x = jax.numpy.ones((1, in_features))
    y = jax.random.normal(key, (1, in_kv_features))
    layer = MHA(
        num_heads=num_heads,
        in_features=in_features,
        qkv_features=qkv_features,
        out_features=out_features,
        in_kv_features=in_kv_features,
        rngs=rngs,
        decode=False,
    )

    assert layer(x, y) is not None


# TestGQADotProductAttention.test_gqa_shapes. Beyond Flax's test: jaxdrop vs Flax values.
@NNX_DPA3
def test_nnx_gqa_shapes(dot_product_attention):
    B, T, S = 2, 4, 5
    D = 8
    num_heads_q = 6
    num_heads_kv = 3

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    query = jax.random.normal(k1, (B, T, num_heads_q, D))
    key = jax.random.normal(k2, (B, S, num_heads_kv, D))
    value = jax.random.normal(k3, (B, S, num_heads_kv, D))

    output = dot_product_attention(query, key, value)
    expected_shape = (B, T, num_heads_q, D)
    assert output.shape == expected_shape

    if dot_product_attention is not nnx.dot_product_attention:
        ref = nnx.dot_product_attention(query, key, value)
        impl = implementation_of(dot_product_attention)
        assert_matches_flax(ref, output, impl, dropout=False, flax_fused=True)


# TestGQADotProductAttention.test_gqa_invalid_heads
@pytest.mark.parametrize(
    "dot_product_attention",
    NNX_DPA_LIST,
    ids=IDS3,
)
def test_nnx_gqa_invalid_heads(dot_product_attention):
    B, T, D = 1, 4, 8
    query = jnp.ones((B, T, 5, D))
    key = jnp.ones((B, T, 2, D))
    value = key

    with pytest.raises(ValueError, match="must be a multiple"):
        dot_product_attention(query, key, value)


# TestGQADotProductAttention.test_gqa_multihead_attention
@NNX_MHA
def test_nnx_gqa_multihead_attention(MHA):
    in_feat = 128
    n_heads = 32
    n_kv_heads = 8
    qkv_feat = 2048
    head_dim = qkv_feat // n_heads

    model = MHA(
        num_heads=n_heads,
        in_features=in_feat,
        qkv_features=qkv_feat,
        num_kv_heads=n_kv_heads,
        rngs=nnx.Rngs(0),
    )

    assert model.query.kernel.shape == (in_feat, n_heads, head_dim)
    assert model.key.kernel.shape == (in_feat, n_kv_heads, head_dim)
    assert model.value.kernel.shape == (in_feat, n_kv_heads, head_dim)

    x = jnp.ones((1, 10, in_feat))
    y = model(x, decode=False)
    assert y.shape == (1, 10, in_feat)

    model.init_cache((1, 10, in_feat))
    assert model.cached_key.shape == (1, 10, n_kv_heads, head_dim)

    x_token = jnp.ones((1, 1, in_feat))
    y_token = model(x_token, decode=True)
    assert y_token.shape == (1, 1, in_feat)
    assert model.cache_index == 1


# TestGQADotProductAttention.test_gqa_parity_with_jax
@NNX_DPA3
def test_nnx_gqa_parity_with_jax(dot_product_attention):
    class DummyModule(nnx.Module):
        pass

    dummy_module = DummyModule()

    B, T, S, D = 2, 8, 8, 16
    num_heads_q = 4
    num_heads_kv = 2

    rng = jax.random.key(42)
    k1, k2, k3 = jax.random.split(rng, 3)

    query = jax.random.normal(k1, (B, T, num_heads_q, D))
    key = jax.random.normal(k2, (B, S, num_heads_kv, D))
    value = jax.random.normal(k3, (B, S, num_heads_kv, D))

    jax_out = jax.nn.dot_product_attention(query, key, value)

    # NNX should handle broadcasting internally
    def _run(m):
        return dot_product_attention(query, key, value, module=m)

    nnx_out, _ = nnx.capture(_run, nnx.Intermediate)(dummy_module)

    np.testing.assert_allclose(nnx_out, jax_out, atol=1e-3, rtol=1e-3)


# TestDotProductAttentionValidation.test_invalid_shapes
@NNX_DPA3
@pytest.mark.parametrize(
    "q_shape, k_shape, v_shape, match",
    [
        ((2, 16, 4, 8), (16, 4, 8), (16, 4, 8), "same rank"),
        ((2, 16, 4, 8), (3, 16, 4, 8), (3, 16, 4, 8), "batch dims"),
        ((2, 16, 4, 8), (2, 16, 4, 8), (2, 15, 4, 8), "lengths must match"),
        ((2, 16, 4, 8), (2, 16, 4, 7), (2, 16, 4, 8), "depths must match"),
    ],
    ids=["rank", "batch", "lengths", "depths"],
)
def test_nnx_invalid_shapes(dot_product_attention, q_shape, k_shape, v_shape, match):
    q = jnp.ones(q_shape)
    k = jnp.ones(k_shape)
    v = jnp.ones(v_shape)
    with pytest.raises(ValueError, match=match):
        dot_product_attention(q, k, v, dropout_rate=0.1, dropout_rng=jax.random.key(0))


# ============================================ part 2: side by side, Flax vs jaxdrop
# Same params, same rngs, dropout on: jaxdrop's layer on the variables Flax's layer
# initialised (a Flax checkpoint loads unchanged) must give Flax's output bit for bit
# (default implementation; "blockwise" to BLOCKWISE_TOL), and both layers must
# initialise identical variable trees. Without dropout see ``assert_matches_flax``.

LINEN_LAYER_CASES = [
    # layer, dropout rate, implementation, broadcast_dropout, dtype
    ("MultiHeadDotProductAttention", 0.3, None, True, "float32"),
    ("MultiHeadDotProductAttention", 0.3, "blockwise", True, "float32"),
    ("MultiHeadDotProductAttention", 0.3, None, False, "float32"),
    ("MultiHeadDotProductAttention", 0.0, None, True, "float32"),
    ("MultiHeadDotProductAttention", 0.0, "dense", True, "float32"),
    # as test_mixed_precision_multihead_attention: bfloat16, softmax in float32
    ("MultiHeadDotProductAttention", 0.3, None, True, "bfloat16"),
    ("MultiHeadAttention", 0.3, None, True, "float32"),
    ("SelfAttention", 0.3, None, True, "float32"),
]


def _case_id(case):
    def name(c):
        if isinstance(c, str):
            return c
        if isinstance(c, bool):
            return "bcast" if c else "nobcast"
        return "default" if c is None else "drop" if c > 0 else "nodrop"

    return "-".join(map(name, case))


# Extends test_multihead_self_attention_w_dropout, test_attention_alias_equivalence and
# test_multihead_sow_attention_weights: outputs and sown weights.
@pytest.mark.parametrize(
    "name, rate, implementation, broadcast_dropout, dtype",
    LINEN_LAYER_CASES,
    ids=map(_case_id, LINEN_LAYER_CASES),
)
def test_linen_layer_matches_flax(name, rate, implementation, broadcast_dropout, dtype):
    kwargs = dict(
        num_heads=4,
        qkv_features=16,
        dropout_rate=rate,
        broadcast_dropout=broadcast_dropout,
        deterministic=False,
        dtype=dtype,
        force_fp32_for_softmax=dtype != "float32",
    )
    fl = getattr(nn, name)(**kwargs)
    jd = getattr(jdl, name)(**kwargs, implementation=implementation, block_size=BLOCK)
    assert isinstance(jd, type(fl))
    kx, kp, kd, km = random.split(random.key(7), 4)
    x = random.normal(kx, (2, 7, 12))
    mask = random.bernoulli(km, 0.8, (2, 1, 7, 7))
    rngs = {"params": kp, "dropout": kd}
    vf = fl.init(rngs, x)
    vj = jd.init(rngs, x)
    assert_trees_identical(vf, vj)  # the same parameter tree: a Flax checkpoint loads unchanged
    params = vf["params"]

    def run(module, params, sow=False):
        args, kw = ((x, mask), {}) if name == "SelfAttention" else ((x, x), {"mask": mask})
        return module.apply(
            {"params": params}, *args, **kw, sow_weights=sow, rngs={"dropout": kd},
            mutable=["intermediates"] if sow else False,
        )  # fmt: skip

    dropout = rate > 0
    assert_matches_flax(run(fl, params), run(jd, params), implementation, dropout)

    # sown attention weights (before dropout); sowing makes jaxdrop's default compute densely
    (yf, sf), (yj, sj) = run(fl, params, True), run(jd, params, True)
    assert_trees_identical(sf, sj)
    assert_matches_flax(yf, yj, implementation or "dense", dropout)


# Extends test_dtype_infer, which checks only the output dtype, with the values.
@pytest.mark.parametrize(
    "implementation",
    [None, "dense", "blockwise"],
    ids=["default", "dense", "blockwise"],
)
def test_linen_complex_matches_flax(implementation):
    # test_dtype_infer's layer and shapes, on inputs with imaginary parts. "blockwise"
    # (jaxdrop's own, no Flax counterpart) may refuse complex inputs with an error
    # instead; it must not return other values.
    kx, ky = random.split(random.key(1))
    x = (random.normal(kx, (4, 6, 5)) + 1j * random.normal(ky, (4, 6, 5))).astype(jnp.complex64)
    kwargs = dict(
        num_heads=8,
        qkv_features=16,
        kernel_init=initializers.ones,
        bias_init=initializers.zeros,
        deterministic=False,
    )
    yf, v = nn.MultiHeadDotProductAttention(**kwargs).init_with_output(random.key(0), x)
    jd = jdl.MultiHeadDotProductAttention(**kwargs, implementation=implementation, block_size=BLOCK)
    if implementation == "blockwise":
        with pytest.raises(ValueError, match="real floating-point"):
            jd.apply(v, x)
        return
    assert_matches_flax(yf, jd.apply(v, x), implementation, dropout=False)


LINEN_DECODE_CASES = [(0.3, None), (0.3, "blockwise"), (0.0, None), (0.0, "dense")]


# Extends test_decoding (its 1-d case): decode (cache) mode with dropout, step by step,
# the cache compared after each step. The shapes are test_nnx_decoding_matches_flax's.
@pytest.mark.parametrize("rate, implementation", LINEN_DECODE_CASES, ids=map(_case_id, LINEN_DECODE_CASES))
def test_linen_decoding_matches_flax(rate, implementation):
    length = 5
    key1, key2, key3 = random.split(random.key(0), 3)
    inputs = random.normal(key1, (2, length, 12))
    kwargs = dict(num_heads=4, qkv_features=16, dropout_rate=rate, deterministic=False, decode=True)
    fl = nn.MultiHeadDotProductAttention(**kwargs)
    jd = jdl.MultiHeadDotProductAttention(**kwargs, implementation=implementation, block_size=BLOCK)
    vf = fl.init(key2, inputs)
    vj = jd.init(key2, inputs)
    assert_trees_identical(vf, vj)  # params and the cache collection
    state_f, params = pop(vf, "params")
    state_j = state_f

    def step(module, state, x, key):
        return module.apply({"params": params, **state}, x, rngs={"dropout": key}, mutable=["cache"])

    for i in range(length):
        key = random.fold_in(key3, i)
        yf, state_f = step(fl, state_f, inputs[:, i : i + 1], key)
        yj, state_j = step(jd, state_j, inputs[:, i : i + 1], key)
        assert_matches_flax(yf, yj, implementation, dropout=rate > 0)
        if implementation != "blockwise":
            assert_trees_identical(state_f, state_j)
    assert int(state_j["cache"]["cache_index"]) == length


def _nnx_pair(rate, implementation, num_kv_heads):
    kwargs = dict(
        num_heads=4,
        in_features=12,
        qkv_features=16,
        num_kv_heads=num_kv_heads,
        dropout_rate=rate,
        deterministic=False,
        decode=False,
    )
    fl = nnx.MultiHeadAttention(**kwargs, rngs=nnx.Rngs(params=0, dropout=1))
    jd = jdn.MultiHeadAttention(
        **kwargs, implementation=implementation, block_size=BLOCK, rngs=nnx.Rngs(params=0, dropout=1)
    )
    assert isinstance(jd, type(fl))
    return fl, jd


def _nnx_state(module):
    return nnx.to_pure_dict(nnx.state(module))


NNX_CASES = [
    # dropout rate, implementation, num_kv_heads
    (0.3, None, None),
    (0.0, None, None),
    (0.3, None, 2),
    (0.3, "blockwise", 2),
]


# Extends test_nnx_basic, test_nnx_gqa_multihead_attention and test_nnx_attention_equivalence.
@pytest.mark.parametrize(
    "rate, implementation, num_kv_heads",
    NNX_CASES,
    ids=[_case_id(c[:2]) + ("-gqa" if c[2] else "-mha") for c in NNX_CASES],
)
def test_nnx_layer_matches_flax(rate, implementation, num_kv_heads):
    fl, jd = _nnx_pair(rate, implementation, num_kv_heads)
    assert_trees_identical(_nnx_state(fl), _nnx_state(jd))  # params and rng state
    dropout, fused = rate > 0, rate == 0  # Flax nnx runs jax.nn.dot_product_attention at rate 0
    x = random.normal(random.key(3), (2, 7, 12))
    mask = random.bernoulli(random.key(4), 0.8, (2, 1, 7, 7))
    for _ in range(2):  # consecutive calls: the layers' dropout streams advance alike
        assert_matches_flax(fl(x, mask=mask), jd(x, mask=mask), implementation, dropout, fused)
    assert_trees_identical(_nnx_state(fl), _nnx_state(jd))
    # is_causal and rngs passed at call time
    yf = fl(x, is_causal=True, rngs=nnx.Rngs(dropout=5))
    yj = jd(x, is_causal=True, rngs=nnx.Rngs(dropout=5))
    assert_matches_flax(yf, yj, implementation, dropout, fused)

    # Flax's state (a checkpoint) loads unchanged into a fresh jaxdrop layer
    nnx.update(fl, jax.tree.map(lambda a: a * 1.5, nnx.state(fl, nnx.Param)))
    _, jd2 = _nnx_pair(rate, implementation, num_kv_heads)
    nnx.update(jd2, nnx.state(fl))
    assert_matches_flax(fl(x), jd2(x), implementation, dropout, fused)


NNX_DECODE_CASES = [(0.3, None, None), (0.0, None, None), (0.3, None, 2)]


# Extends test_nnx_autoregressive_decode_with_x64 and test_nnx_gqa_multihead_attention:
# decode (cache) mode with dropout, step by step, the cache compared after each step.
@pytest.mark.parametrize(
    "rate, implementation, num_kv_heads",
    NNX_DECODE_CASES,
    ids=[_case_id(c[:2]) + ("-gqa" if c[2] else "-mha") for c in NNX_DECODE_CASES],
)
def test_nnx_decoding_matches_flax(rate, implementation, num_kv_heads):
    fl, jd = _nnx_pair(rate, implementation, num_kv_heads)
    length = 5
    x = random.normal(random.key(3), (2, length, 12))
    for m in (fl, jd):
        m.init_cache(x.shape)
        m.set_attributes(decode=True)
    for i in range(length):
        yf = fl(x[:, i : i + 1])
        yj = jd(x[:, i : i + 1])
        assert_matches_flax(yf, yj, implementation, rate > 0, flax_fused=rate == 0)
        if implementation != "blockwise":
            assert_trees_identical(_nnx_state(fl), _nnx_state(jd))
    assert int(jd.cache_index[...]) == length


FUNCTION_CASES = [
    # Flax's function, jaxdrop's implementation, broadcast_dropout
    ("linen", None, True),
    ("linen", None, False),
    ("linen", "blockwise", True),
    ("linen", "blockwise", False),
    ("nnx", None, True),
]


# Function level with dropout (and bias, mask): Flax's
# dot_product_attention and dot_product_attention_weights against jaxdrop's.
@pytest.mark.parametrize(
    "api, implementation, broadcast_dropout", FUNCTION_CASES, ids=map(_case_id, FUNCTION_CASES)
)
def test_function_matches_flax_with_dropout(api, implementation, broadcast_dropout):
    from flax.nnx.nn import attention as nnx_attention

    flax_fn, flax_weights = {
        "linen": (nn.dot_product_attention, nn.dot_product_attention_weights),
        "nnx": (nnx_attention.dot_product_attention, nnx_attention.dot_product_attention_weights),
    }[api]
    kq, kk, kv, kb, km, kd = random.split(random.key(11), 6)
    # the shapes inside test_linen_layer_matches_flax's layers
    q = random.normal(kq, (2, 7, 4, 4))
    k = random.normal(kk, (2, 7, 4, 4))
    v = random.normal(kv, (2, 7, 4, 4))
    bias = random.normal(kb, (1, 4, 7, 7))
    mask = random.bernoulli(km, 0.8, (2, 1, 7, 7))
    common = dict(broadcast_dropout=broadcast_dropout, dropout_rate=0.25, dropout_rng=kd)
    ref = flax_fn(q, k, v, bias, mask, **common)
    out = jda.dot_product_attention(
        q, k, v, bias, mask, **common, implementation=implementation, block_size=BLOCK
    )
    assert_matches_flax(ref, out, implementation, dropout=True)
    assert_identical(
        flax_weights(q, k, bias, mask, **common),
        jda.dot_product_attention_weights(q, k, bias, mask, **common),
    )

    # gradients (query, key, value, bias): the same mask, regenerated in jaxdrop's
    # backward pass; equal to float rounding (XLA fuses the backward passes differently)
    def loss(fn, **kw):
        return lambda *a: jnp.sum(fn(*a, mask, **common, **kw) ** 2)

    argnums = (0, 1, 2, 3)
    gf = jax.grad(loss(flax_fn), argnums)(q, k, v, bias)
    gj = jax.grad(loss(jda.dot_product_attention, implementation=implementation, block_size=BLOCK), argnums)(
        q, k, v, bias
    )
    for a, b in zip(gf, gj, strict=True):
        np.testing.assert_allclose(b, a, **BLOCKWISE_TOL)
