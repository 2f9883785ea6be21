"""``jaxdrop.attention``: parity with Flax, the blockwise path against the dense one, errors, memory.

* **dense** (and the default with dropout on) must equal ``flax.linen.dot_product_attention``
  / ``flax.nnx.dot_product_attention`` bit for bit for the same ``dropout_rng``: outputs and
  gradients, over shapes, dtypes, bias, masks, causal, grouped-query heads,
  ``broadcast_dropout`` both ways and rates 0 / 0.1 / 1 (at rate 1 Flax divides 0 by 0;
  jaxdrop gives zeros, tested separately).
* **blockwise** must apply the same dropout mask (checked exactly: with ``value`` the identity
  the output *is* the dropped weight matrix, so every dropped weight must be exactly 0 where
  Flax's is, and nowhere else) and agree with dense to float rounding. Tolerances: float32
  outputs 2e-6 absolute (inputs of unit scale; the blocks are summed in another order), float32
  gradients 1e-5 relative to the largest entry; bfloat16 outputs 2e-2 (blockwise computes in
  float32, Flax in bfloat16: a few bf16 ulps), bfloat16 gradients 5e-2 relative.
* Without dropout the default path is ``jax.nn.dot_product_attention``: equal to nnx's rate-0
  path bit for bit and to linen's einsum path to 1e-6.
* The backward pass of blockwise attention stores nothing of size T²: its compiled temporary
  memory grows linearly in T (checked by compiling only), and dense dropout keeps no mask.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.nnx.nn.attention import dot_product_attention_weights as nnx_weights
from jax import lax
from jax.test_util import check_grads

import jaxdrop
from jaxdrop import attention as jda

KEY = jax.random.key(7)


def _qkv(shape_q, shape_kv, dtype=jnp.float32, seed=0, v_depth=None):
    # NumPy draws: jax.random would compile a sampler for every shape.
    rng = np.random.default_rng(seed)
    v_shape = shape_kv if v_depth is None else (*shape_kv[:-1], v_depth)
    return tuple(jnp.asarray(rng.standard_normal(s, np.float32), dtype) for s in (shape_q, shape_kv, v_shape))


def _normal(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


def _padding_mask(batch, tq, tk, seed=1):
    """[B, 1, Tq, Tk] from per-sequence lengths (as nn.make_attention_mask), one row fully masked."""
    rng = np.random.default_rng(seed)
    q_len = rng.integers(1, tq + 1, size=batch)
    k_len = rng.integers(1, tk + 1, size=batch)
    m = (np.arange(tq)[None, :, None] < q_len[:, None, None]) & (np.arange(tk)[None, None, :] < k_len[:, None, None])
    return jnp.asarray(m[:, None])


def _bitwise_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    assert a.tobytes() == b.tobytes(), f"max |diff| {np.nanmax(np.abs(a.astype(np.float64) - b))}"


# ------------------------------------------------------------------ parity with Flax (dense)

CASES = [
    # id, q shape, kv shape, bias, mask, causal
    ("plain", (2, 9, 4, 8), (2, 13, 4, 8), False, False, False),
    ("bias+mask", (2, 9, 4, 8), (2, 13, 4, 8), True, True, False),
    ("no-batch", (9, 2, 8), (11, 2, 8), True, False, False),
    ("two-batch-dims", (2, 3, 5, 2, 4), (2, 3, 7, 2, 4), False, True, False),
]


@pytest.mark.parametrize(
    ("case", "rate", "broadcast_dropout"),
    [(c, 0.1, bd) for c in CASES for bd in (True, False)] + [(CASES[1], 0.0, True)],
    ids=[f"{c[0]}-bcast={bd}" for c in CASES for bd in (True, False)] + ["bias+mask-rate0"],
)
def test_dense_bit_identical_to_linen(case, rate, broadcast_dropout):
    """Outputs bit for bit (gradients: two cases, below)."""
    q, k, v, kw = _dense_case(case, rate, broadcast_dropout)
    ours = functools.partial(jda.dot_product_attention, implementation="dense")
    _bitwise_equal(
        jax.jit(lambda q, k, v: nn.dot_product_attention(q, k, v, **kw))(q, k, v),
        jax.jit(lambda q, k, v: ours(q, k, v, **kw))(q, k, v),
    )


def _dense_case(case, rate, broadcast_dropout):
    _, sq, skv, with_bias, with_mask, _ = case
    q, k, v = _qkv(sq, skv)
    target = (*sq[:-3], sq[-2], sq[-3], skv[-3])
    bias = _normal((1,) * (len(target) - 3) + target[-3:], 3) if with_bias else None
    mask = None
    if with_mask:
        b = int(np.prod(sq[:-3]))
        mask = _padding_mask(b, sq[-3], skv[-3]).reshape((*sq[:-3], 1, sq[-3], skv[-3]))
    return q, k, v, dict(bias=bias, mask=mask, broadcast_dropout=broadcast_dropout, dropout_rng=KEY, dropout_rate=rate)


@pytest.mark.parametrize(("case", "broadcast_dropout"), [(CASES[0], False), (CASES[1], True)], ids=["plain", "bias+mask"])
def test_dense_gradients_match_linen(case, broadcast_dropout):
    """Gradients to float32 rounding (XLA orders the backward's sums by fusion); the default path too."""
    q, k, v, kw = _dense_case(case, 0.1, broadcast_dropout)
    ct = jnp.cos(jnp.arange(v.shape[-1]))

    def loss(fn, q, k, v):
        return (fn(q, k, v, **kw) * ct).sum()

    ours = functools.partial(jda.dot_product_attention, implementation="dense")
    ga = jax.jit(jax.grad(functools.partial(loss, nn.dot_product_attention), argnums=(0, 1, 2)))(q, k, v)
    gb = jax.jit(jax.grad(functools.partial(loss, ours), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(ga, gb, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6 * float(jnp.abs(a).max()))
    # The default takes the dense path while dropout is on (eager, op for op: bit for bit).
    _bitwise_equal(nn.dot_product_attention(q, k, v, **kw), jda.dot_product_attention(q, k, v, **kw))


@pytest.mark.parametrize(("dtype", "force_fp32"), [(jnp.bfloat16, False), (jnp.float16, True)])
def test_dense_low_precision(dtype, force_fp32):
    """Op for op (eager) bit-identical; jitted within one ulp of Flax's jitted result.

    In 16-bit dtypes XLA's fusion decides which intermediate results are rounded to 16 bits
    (Flax's own jitted and eager results differ by an ulp), so jitted programs that are
    built differently agree to one ulp, not bit for bit.
    """
    q, k, v = _qkv((2, 8, 2, 8), (2, 8, 2, 8), dtype)
    kw = dict(dropout_rng=KEY, dropout_rate=0.1, force_fp32_for_softmax=force_fp32)
    _bitwise_equal(nn.dot_product_attention(q, k, v, **kw), jda.dot_product_attention(q, k, v, **kw))
    ours = jax.jit(lambda q, k, v: jda.dot_product_attention(q, k, v, **kw))(q, k, v)
    ref = jax.jit(lambda q, k, v: nn.dot_product_attention(q, k, v, **kw))(q, k, v)
    assert ours.dtype == ref.dtype
    ulp = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(ref, np.float32), rtol=ulp, atol=ulp)


def test_dense_weights_bit_identical():
    q, k, _ = _qkv((3, 6, 2, 4), (3, 5, 2, 4))
    kw = dict(dropout_rng=KEY, dropout_rate=0.3, broadcast_dropout=False)
    _bitwise_equal(nn.dot_product_attention_weights(q, k, **kw), jda.dot_product_attention_weights(q, k, **kw))
    kw = dict(dropout_rng=KEY, dropout_rate=0.3, is_causal=True)
    _bitwise_equal(nnx_weights(q, k, **kw), jda.dot_product_attention_weights(q, k, **kw))


@pytest.mark.parametrize(("kv_heads", "causal"), [(4, False), (2, True), (1, True)])
def test_nnx_gqa_and_causal_bit_identical(kv_heads, causal):
    q, k, v = _qkv((2, 7, 4, 8), (2, 7, kv_heads, 8))
    mask = _padding_mask(2, 7, 7)
    kw = dict(mask=mask, dropout_rng=KEY, dropout_rate=0.2, broadcast_dropout=False, is_causal=causal)
    _bitwise_equal(
        jax.jit(lambda q, k, v: nnx.dot_product_attention(q, k, v, **kw))(q, k, v),
        jax.jit(lambda q, k, v: jda.dot_product_attention(q, k, v, **kw))(q, k, v),
    )


def test_no_dropout_uses_fused_attention_with_flax_numerics():
    q, k, v = _qkv((2, 9, 4, 8), (2, 9, 2, 8))
    mask = _padding_mask(2, 9, 9)
    # nnx fuses at rate 0: the same call, so the same bits.
    _bitwise_equal(
        nnx.dot_product_attention(q, k, v, mask=mask, is_causal=True),
        jda.dot_product_attention(q, k, v, mask=mask, is_causal=True),
    )
    q, k, v = _qkv((2, 9, 4, 8), (2, 9, 4, 8))
    ref = nn.dot_product_attention(q, k, v, mask=mask, dropout_rate=0.1, deterministic=True)
    got = jda.dot_product_attention(q, k, v, mask=mask, dropout_rate=0.1, deterministic=True)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    lowered = jax.jit(lambda q, k, v: jda.dot_product_attention(q, k, v, dropout_rate=0.1, deterministic=True))
    text = lowered.lower(q, k, v).as_text()
    assert "rng" not in text.lower() and "threefry" not in text.lower()
    # implementation="dense" keeps Flax's exact computation in evaluation too.
    _bitwise_equal(
        ref,
        jda.dot_product_attention(q, k, v, mask=mask, dropout_rate=0.1, deterministic=True, implementation="dense"),
    )


def test_rate_one_gives_zeros_not_nan():
    q, k, v = _qkv((2, 5, 2, 4), (2, 5, 2, 4))
    for impl in ("dense", "blockwise"):
        f = functools.partial(jda.dot_product_attention, dropout_rng=KEY, dropout_rate=1.0, implementation=impl)
        out = jax.jit(f)(q, k, v)
        assert out.dtype == q.dtype and not np.asarray(out).any()
        g = jax.jit(jax.grad(lambda q, f=f: f(q, k, v).sum()))(q)
        assert np.isfinite(np.asarray(g)).all() and not np.asarray(g).any()


def test_mask_is_regenerated_not_stored():
    """Arrays of the weights' shape saved for the backward pass: dropout adds none to jaxdrop's.

    Flax saves the softmax weights and their cotangent's factor without dropout, and the
    dropout multiplier on top; jaxdrop's dense path saves what it saves without dropout;
    blockwise saves no array of that shape at all.
    """
    q = _normal((2, 16, 2, 8), 0)

    def saved(fn, rate):
        _, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, dropout_rng=KEY, dropout_rate=rate, broadcast_dropout=False), q, q, q)
        return sum(1 for x in jax.tree.leaves(vjp) if getattr(x, "shape", None) == (2, 2, 16, 16))

    dense = functools.partial(jda.dot_product_attention, implementation="dense")
    assert saved(nn.dot_product_attention, 0.1) > saved(nn.dot_product_attention, 0.0)  # the check can fail
    assert saved(dense, 0.1) == saved(dense, 0.0) == saved(nn.dot_product_attention, 0.0)
    assert saved(functools.partial(jda.dot_product_attention, implementation="blockwise", block_size=4), 0.1) == 0


# ------------------------------------------------------------------ blockwise vs dense


def _blockwise(block=(4, 8), **kw):
    """Jitted blockwise attention with ``kw`` bound (eager scans would dispatch op by op)."""
    return jax.jit(functools.partial(jda.dot_product_attention, implementation="blockwise", block_size=block, **kw))


@pytest.mark.parametrize(("kv_heads", "broadcast_dropout"), [(4, True), (2, False)])
def test_blockwise_applies_flax_mask_exactly(broadcast_dropout, kv_heads):
    """value = identity: the output is the dropped weight matrix, zero exactly where Flax's is."""
    b, tq, tk, h = 2, 11, 13, 4
    q = _normal((b, tq, h, 8), 0)
    k = _normal((b, tk, kv_heads, 8), 1)
    v = jnp.broadcast_to(jnp.eye(tk)[None, :, None, :], (b, tk, kv_heads, tk))
    kw = dict(dropout_rng=KEY, dropout_rate=0.4, broadcast_dropout=broadcast_dropout)
    ref = nnx_weights(q, k, **kw)  # [b, h, tq, tk]
    got = jnp.moveaxis(_blockwise(**kw)(q, k, v), 2, 1)  # [b, tq, h, tk] -> [b, h, tq, tk]
    np.testing.assert_array_equal(np.asarray(got) == 0, np.asarray(ref) == 0)
    assert 0.3 < float((np.asarray(ref) == 0).mean()) < 0.5
    np.testing.assert_allclose(got, ref, atol=2e-6)


BLOCK_CASES = [
    # id, q shape, kv shape, bias shape (or None), mask, causal, block
    ("divisible", (2, 16, 4, 8), (2, 16, 4, 8), None, False, False, (8, 8)),
    ("padded", (2, 9, 4, 8), (2, 13, 4, 8), (1, 4, 9, 13), True, False, (4, 8)),
    ("causal+padding", (2, 12, 2, 8), (2, 12, 2, 8), None, True, True, (5, 3)),
    ("gqa+bias-row", (1, 10, 4, 8), (1, 10, 2, 8), (1, 1, 1, 10), False, True, (4, 4)),
    ("block-longer-than-T", (2, 6, 2, 4), (2, 6, 2, 4), (2, 2, 6, 6), True, False, 512),
]


@pytest.mark.parametrize(
    ("case", "rate"),
    [(c, 0.25) for c in BLOCK_CASES] + [(BLOCK_CASES[1], 0.0)],
    ids=[c[0] for c in BLOCK_CASES] + ["padded-rate0"],
)
def test_blockwise_matches_dense_forward_and_gradients(case, rate):
    _, sq, skv, bias_shape, with_mask, causal, block = case
    q, k, v = _qkv(sq, skv)
    bias = None if bias_shape is None else _normal(bias_shape, 5)
    mask = _padding_mask(sq[0], sq[1], skv[1]) if with_mask else None
    kw = dict(mask=mask, dropout_rng=KEY, dropout_rate=rate, broadcast_dropout=False, is_causal=causal)
    dense = functools.partial(jda.dot_product_attention, implementation="dense", **kw)
    blk = _blockwise(block, **kw)
    ct = _normal((*sq[:-1], skv[-1]), 9)

    def loss(fn, q, k, v, bias):
        return (fn(q, k, v, bias=bias) * ct).sum()

    np.testing.assert_allclose(jax.jit(blk)(q, k, v, bias=bias), jax.jit(dense)(q, k, v, bias=bias), atol=2e-6)
    argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    g_d = jax.jit(jax.grad(functools.partial(loss, dense), argnums))(q, k, v, bias)
    g_b = jax.jit(jax.grad(functools.partial(loss, blk), argnums))(q, k, v, bias)
    for name, a, b in zip("qkvb", g_b, g_d, strict=False):
        scale = float(jnp.abs(b).max())
        assert float(jnp.abs(a - b).max()) <= 1e-5 * scale, f"d{name}"


def test_blockwise_bfloat16_within_tolerance():
    q, k, v = _qkv((2, 32, 4, 16), (2, 32, 4, 16), jnp.bfloat16)
    kw = dict(dropout_rng=KEY, dropout_rate=0.1, broadcast_dropout=False, is_causal=True)
    ref = jda.dot_product_attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), **kw)
    dense = jda.dot_product_attention(q, k, v, implementation="dense", **kw)
    blk = _blockwise((8, 16), **kw)(q, k, v)
    assert blk.dtype == jnp.bfloat16
    # Blockwise accumulates in float32: at least as close to the float32 result as Flax's bf16 path.
    err_blk = float(jnp.abs(blk.astype(jnp.float32) - ref).max())
    err_dense = float(jnp.abs(dense.astype(jnp.float32) - ref).max())
    assert err_blk <= 2e-2 and err_blk <= err_dense + 1e-2
    g = [jax.grad(lambda q, f=f: (f(q, k, v).astype(jnp.float32) ** 2).sum())(q) for f in
         (functools.partial(jda.dot_product_attention, implementation="dense", **kw), _blockwise((8, 16), **kw))]  # fmt: skip
    scale = float(jnp.abs(g[0].astype(jnp.float32)).max())
    assert float(jnp.abs(g[0].astype(jnp.float32) - g[1].astype(jnp.float32)).max()) <= 5e-2 * scale


def test_blockwise_check_grads():
    """Numerical derivatives (float64) of the custom_vjp, dropout on, through bias too."""
    with jax.enable_x64(True):
        q, k, v = (x.astype(jnp.float64) for x in _qkv((1, 5, 2, 3), (1, 6, 2, 3)))
        bias = _normal((1, 2, 5, 6), 2).astype(jnp.float64)
        mask = _padding_mask(1, 5, 6, seed=4)
        f = _blockwise((2, 4), mask=mask, dropout_rng=KEY, dropout_rate=0.3, broadcast_dropout=False)
        check_grads(lambda q, k, v, b: f(q, k, v, bias=b), (q, k, v, bias), order=1,
                                  modes=("rev",), atol=1e-6, rtol=1e-6)  # fmt: skip


def test_fully_masked_rows_match_flax_not_nan():
    q, k, v = _qkv((2, 6, 2, 4), (2, 7, 2, 4))
    mask = jnp.ones((2, 1, 6, 7), bool).at[0, 0, 2].set(False).at[1, 0, :].set(False)
    kw = dict(mask=mask, dropout_rng=KEY, dropout_rate=0.2)
    ref = nn.dot_product_attention(q, k, v, **kw)
    assert np.isfinite(np.asarray(ref)).all()
    _bitwise_equal(ref, jda.dot_product_attention(q, k, v, implementation="dense", **kw))
    np.testing.assert_allclose(_blockwise((4, 4), **kw)(q, k, v), ref, atol=2e-6)
    np.testing.assert_allclose(
        jda.dot_product_attention(q, k, v, mask=mask), nn.dot_product_attention(q, k, v, mask=mask), atol=1e-6
    )
    g = jax.grad(lambda q: _blockwise((4, 4), **kw)(q, k, v).sum())(q)
    assert np.isfinite(np.asarray(g)).all()


def test_fast_mode_changes_bits_not_statistics():
    q, k, v = _qkv((1, 64, 1, 4), (1, 64, 1, 4))
    v = jnp.broadcast_to(jnp.eye(64)[None, :, None, :], (1, 64, 1, 64))
    w = {m: _blockwise(16, dropout_rng=KEY, dropout_rate=0.5, mode=m)(q, k, v) for m in ("exact", "fast")}
    dropped = {m: float((np.asarray(w[m]) == 0).mean()) for m in w}
    assert not np.array_equal(np.asarray(w["exact"]) == 0, np.asarray(w["fast"]) == 0)
    # 4096 Bernoulli(0.5) draws: 4 sigma = 4 * 0.5 / 64 = 0.031.
    assert abs(dropped["fast"] - 0.5) < 4 * 0.5 / 64


# ------------------------------------------------------------------ transformations


def test_traced_rate_compiles_once_and_matches_concrete():
    q, k, v = _qkv((2, 8, 2, 4), (2, 8, 2, 4))
    traces = []

    @jax.jit
    def f(rate):
        traces.append(1)
        return jda.dot_product_attention(q, k, v, dropout_rng=KEY, dropout_rate=rate, implementation="blockwise",
                                         block_size=4)  # fmt: skip

    for r in (0.1, 0.3):
        np.testing.assert_allclose(f(jnp.float32(r)), jda.dot_product_attention(
            q, k, v, dropout_rng=KEY, dropout_rate=r, implementation="dense"), atol=2e-6)  # fmt: skip
    assert len(traces) == 1
    err, _ = jax.jit(jaxdrop.checked(lambda r: jda.dot_product_attention(q, k, v, dropout_rng=KEY, dropout_rate=r)))(1.5)
    assert "dropout_rate" in str(err.get())


@pytest.mark.parametrize("impl", ["dense", "blockwise"])
def test_vmap_over_keys_and_scan_over_layers(impl):
    q, k, v = _qkv((2, 8, 2, 4), (2, 8, 2, 4))
    f = functools.partial(jda.dot_product_attention, dropout_rate=0.3, implementation=impl, block_size=4)
    keys = jax.random.split(KEY, 3)
    one = jax.jit(lambda key: f(q, k, v, dropout_rng=key))
    batched = jax.jit(jax.vmap(one))(keys)
    for i in range(3):
        np.testing.assert_allclose(batched[i], one(keys[i]), atol=1e-6)
    assert not np.allclose(batched[0], batched[1])

    def layer(x, key):
        return x + f(x, x, x, dropout_rng=key), None

    def model(x):
        return lax.scan(layer, x, keys)[0].sum()

    def unrolled(x):
        for i in range(len(keys)):
            x = x + f(x, x, x, dropout_rng=keys[i])
        return x.sum()

    g = jax.jit(jax.grad(model))(q)
    np.testing.assert_allclose(jax.jit(model)(q), jax.jit(unrolled)(q), rtol=1e-5)
    assert np.isfinite(np.asarray(g)).all()


def test_blockwise_memory_is_linear_in_length():
    """Compiled temp memory of forward+backward (nothing runs): blockwise ~linear, Flax quadratic."""

    def temp(fn, t):
        x = jax.ShapeDtypeStruct((1, t, 2, 16), jnp.float32)

        def loss(q, k, v):
            return fn(q, k, v, dropout_rng=KEY, dropout_rate=0.1, broadcast_dropout=False).sum()

        return jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, x, x).compile().memory_analysis().temp_size_in_bytes

    blk = functools.partial(jda.dot_product_attention, implementation="blockwise", block_size=128)
    small, large = temp(blk, 512), temp(blk, 2048)
    flax_large = temp(nn.dot_product_attention, 2048)
    assert large <= 4 * small * 1.5, (small, large)  # 4x the length: about 4x the memory, not 16x
    assert flax_large >= 2 * 2048 * 2048 * 4  # Flax keeps at least the float32 weights and their cotangent
    assert large * 10 < flax_large, (large, flax_large)


# ------------------------------------------------------------------ layers


def test_linen_layer_swap_keeps_params_and_output():
    x = _normal((2, 7, 16), 1)
    cfg = dict(num_heads=4, dropout_rate=0.2, deterministic=False)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    from jaxdrop import linen as jdl

    ref_layer, layer = nn.MultiHeadDotProductAttention(**cfg), jdl.MultiHeadDotProductAttention(**cfg)
    params = ref_layer.init(rngs, x)
    assert jax.tree.structure(layer.init(rngs, x)) == jax.tree.structure(params)
    _bitwise_equal(ref_layer.apply(params, x, rngs={"dropout": KEY}), layer.apply(params, x, rngs={"dropout": KEY}))
    blk = jdl.MultiHeadDotProductAttention(**cfg, implementation="blockwise", block_size=4)
    np.testing.assert_allclose(blk.apply(params, x, rngs={"dropout": KEY}),
                               ref_layer.apply(params, x, rngs={"dropout": KEY}), atol=2e-6)  # fmt: skip
    assert blk.clone(implementation="dense").attention_fn.keywords["implementation"] == "dense"


def test_nnx_layer_swap_keeps_state_and_output():
    x = _normal((2, 7, 16), 1)
    from jaxdrop import nnx as jdn

    kw = dict(num_heads=4, in_features=16, num_kv_heads=2, dropout_rate=0.2, decode=False)
    ref, ours = nnx.MultiHeadAttention(**kw, rngs=nnx.Rngs(0)), jdn.MultiHeadAttention(**kw, rngs=nnx.Rngs(0))
    assert isinstance(ours, nnx.MultiHeadAttention)
    s_ref, s_ours = nnx.state(ref, nnx.Param), nnx.state(ours, nnx.Param)
    assert jax.tree.structure(s_ref) == jax.tree.structure(s_ours)
    for _ in range(2):  # the streams advance alike
        _bitwise_equal(ref(x, deterministic=False), ours(x, deterministic=False))
    np.testing.assert_allclose(ours(x, deterministic=True), ref(x, deterministic=True), atol=1e-6)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "shapes", "error", "match"),
    [
        ({}, ((2, 5, 2, 4), (2, 5, 2, 3), (2, 5, 2, 3)), ValueError, "depths must match"),
        ({}, ((2, 5, 2, 4), (2, 6, 2, 4), (2, 5, 2, 4)), ValueError, "k, v lengths must match"),
        ({}, ((2, 5, 3, 4), (2, 5, 2, 4), (2, 5, 2, 4)), ValueError, "multiple of Key heads"),
        ({}, ((2, 5, 2, 4), (3, 5, 2, 4), (3, 5, 2, 4)), ValueError, "batch dims must match"),
        ({}, ((2, 5, 2, 4), (5, 2, 4), (5, 2, 4)), ValueError, "same rank"),
        ({"dropout_rate": 1.5, "dropout_rng": KEY}, None, ValueError, r"in \[0, 1\]"),
        ({"dropout_rate": -0.1, "dropout_rng": KEY}, None, ValueError, r"in \[0, 1\]"),
        ({"dropout_rate": 0.1}, None, TypeError, "`dropout_rng` is None"),
        ({"dropout_rate": 0.1, "dropout_rng": 3}, None, TypeError, "PRNG key"),
        ({"implementation": "flash"}, None, ValueError, "unknown implementation"),
        ({"implementation": "blockwise", "block_size": 0}, None, ValueError, "block_size"),
        ({"implementation": "blockwise", "block_size": (4, 4, 4)}, None, ValueError, "block_size"),
        ({"mask": jnp.ones((3, 1, 5, 5), bool)}, None, ValueError, "does not broadcast"),
        ({"bias": jnp.ones((5, 4))}, None, ValueError, "does not broadcast"),
        ({"deterministic": "yes"}, None, TypeError, "deterministic"),
        ({"broadcast_dropout": None}, None, TypeError, "broadcast_dropout"),
        ({"is_causal": 1}, None, TypeError, "is_causal"),
        ({"mode": "quick", "dropout_rng": KEY, "dropout_rate": 0.1}, None, ValueError, "mode"),
    ],
)
def test_bad_input_raises_clear_error(kwargs, shapes, error, match):
    shapes = shapes or ((2, 5, 2, 4),) * 3
    q, k, v = (jnp.ones(s) for s in shapes)
    with pytest.raises(error, match=match):
        jda.dot_product_attention(q, k, v, **kwargs)


def test_traced_flags_get_a_clear_error():
    q = jnp.ones((2, 5, 2, 4))
    f = jax.jit(lambda bd: jda.dot_product_attention(q, q, q, dropout_rng=KEY, dropout_rate=0.1, broadcast_dropout=bd))
    with pytest.raises(TypeError, match=r"broadcast_dropout.*static"):
        f(True)


def test_blockwise_refuses_custom_einsums():
    q = jnp.ones((2, 5, 2, 4))
    with pytest.raises(ValueError, match="implementation='dense'"):
        jda.dot_product_attention(q, q, q, implementation="blockwise", einsum_dot_general=lax.dot_general)
