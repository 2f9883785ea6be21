"""Memory-efficient (blockwise) attention with dropout, in pure JAX.

Queries and keys/values are processed in blocks with an online softmax (Rabe &
Staats 2021, "Self-attention does not need O(n²) memory"; Dao et al. 2022,
"FlashAttention"). The attention weights of a block live only while that block
is processed; the backward pass (a ``custom_vjp``) recomputes them from the
queries, keys and the per-row log-sum-exp instead of storing them.

Dropout of the attention weights is drawn per block from :mod:`jaxdrop.prng`
with the block's *global* indices, so the mask of block ``(i, j)`` is the block
of ``bernoulli(key, 1 - rate, dropout_shape)`` that Flax draws for the whole
``[..., q_length, kv_length]`` matrix, and the same bits are drawn again in the
backward pass.

Internal layout (after :func:`jaxdrop.attention.dot_product_attention` has
flattened batch dimensions and split query heads into key/value groups)::

    q    [B, Hk, G, Tq, D]     (already divided by sqrt(D))
    k    [B, Hk, Tk, D]
    v    [B, Hk, Tk, Dv]
    bias [Bb, Hkb, Gb, Tqb, Tkb]   each axis 1 or full; same for the boolean mask

With ``m_i`` the running row maximum, ``l_i`` the softmax normaliser and ``M`` the
dropout multiplier (``1/(1 - rate)`` where kept, 0 where dropped)::

    out_i = sum_j exp(s_ij - m_i) M_ij v_j / l_i,      l_i = sum_j exp(s_ij - m_i)

(the normaliser counts dropped weights, as dropout is applied after the softmax).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdrop import prng
from jaxdrop.prng import Mode


def _acc(dtype: Any) -> Any:
    """The accumulation dtype: float32, or float64 for float64 inputs."""
    return jnp.promote_types(dtype, jnp.float32)


class Config(NamedTuple):
    """Static description of one blockwise attention call (hashable)."""

    block_q: int
    block_k: int
    q_len: int  # true lengths; the arrays are padded to whole blocks
    kv_len: int
    causal: bool
    dropout: bool
    broadcast_dropout: bool
    mode: Mode
    precision: Any


def _full(like: jax.Array, shape: tuple[int, ...], value: float, dtype: Any) -> jax.Array:
    """``full(shape, value)`` that varies over the same ``shard_map`` axes as ``like``.

    Loop carries start from it: inside ``shard_map`` a constant initial carry would not
    match the per-device values the loop body makes of it. ``like`` broadcasts to ``shape``.
    """
    return jnp.full(shape, value, dtype) + jnp.zeros_like(like, dtype)


def _blocks(x: jax.Array, axis: int, size: int) -> jax.Array:
    """Split ``axis`` of ``x`` (a multiple of ``size``) into blocks, block index first."""
    n = x.shape[axis] // size
    x = x.reshape((*x.shape[:axis], n, size, *x.shape[axis + 1:]))
    return jnp.moveaxis(x, axis, 0)


def _unblocks(x: jax.Array, axis: int) -> jax.Array:
    """Inverse of :func:`_blocks`: ``[n, ..., size, ...] -> [..., n * size, ...]``."""
    x = jnp.moveaxis(x, 0, axis)
    return x.reshape((*x.shape[:axis], x.shape[axis] * x.shape[axis + 1], *x.shape[axis + 2:]))


def _slice(x: jax.Array | None, i: Any, j: Any, cfg: Config) -> jax.Array | None:
    """Block ``(i, j)`` of a bias or mask whose last two axes are 1 or full (padded) length."""
    if x is None:
        return None
    if x.shape[3] > 1:
        x = lax.dynamic_slice_in_dim(x, i * cfg.block_q, cfg.block_q, axis=3)
    if x.shape[4] > 1:
        x = lax.dynamic_slice_in_dim(x, j * cfg.block_k, cfg.block_k, axis=4)
    return x


def _scores(
    cfg: Config, qi: jax.Array, kj: jax.Array, bias: Any, mask: Any, i: Any, j: Any
) -> tuple[jax.Array, jax.Array | None]:
    """Logits of block (i, j) in the accumulation dtype, masked as Flax masks them, and where valid.

    Masked entries (``mask`` False or above the causal diagonal) get the most negative
    float, as in Flax, so a row with every key masked becomes a uniform softmax.
    Padding keys (past ``kv_len``) get ``-inf``: they never count.
    """
    acc = _acc(qi.dtype)
    s = jnp.einsum("bhgqd,bhkd->bhgqk", qi, kj, precision=cfg.precision, preferred_element_type=acc)
    bias_ij = _slice(bias, i, j, cfg)
    if bias_ij is not None:
        s = s + bias_ij.astype(acc)
    valid = _slice(mask, i, j, cfg)
    rows = i * cfg.block_q + lax.broadcasted_iota(jnp.int32, (cfg.block_q, 1), 0)
    cols = j * cfg.block_k + lax.broadcasted_iota(jnp.int32, (1, cfg.block_k), 1)
    if cfg.causal:
        valid = rows >= cols if valid is None else valid & (rows >= cols)
    if valid is not None:
        s = jnp.where(valid, s, jnp.finfo(acc).min)
    if cfg.kv_len % cfg.block_k:
        s = jnp.where(cols < cfg.kv_len, s, -jnp.inf)
    return s, valid


def _multiplier(
    cfg: Config, key: Any, keep: Any, mult: Any, shape: tuple[int, ...], i: Any, j: Any
) -> jax.Array | None:
    """Dropout multiplier of block (i, j): ``mult`` where kept, 0 where dropped."""
    if not cfg.dropout:
        return None
    b, hk, g, bq, bk = shape
    if cfg.broadcast_dropout:
        gshape: tuple[int, ...] = (1, 1, 1, cfg.q_len, cfg.kv_len)
        bshape: tuple[int, ...] = (1, 1, 1, bq, bk)
    else:
        gshape, bshape = (b, hk, g, cfg.q_len, cfg.kv_len), shape
    # Offsets are traced (loop indices), so prng does not range-check them: the last
    # block of a padded length reaches past the global shape, and its out-of-range
    # rows and columns (discarded rows, zero-weight keys) get bits that are never used.
    offset = (0, 0, 0, i * cfg.block_q, j * cfg.block_k)
    kept = prng.bernoulli(key, keep, bshape, mode=cfg.mode, global_shape=gshape, index_offset=offset)
    return jnp.where(kept, mult, jnp.zeros((), mult.dtype))


def _forward(
    cfg: Config, q: Any, k: Any, v: Any, bias: Any, mask: Any, key: Any, keep: Any, mult: Any
) -> tuple[jax.Array, jax.Array]:
    """Blocked ``(out, stats)``: ``out`` [nq, B, Hk, G, bq, Dv] (float32 or 64) and ``stats``
    [nq, 2, B, Hk, G, bq], each row's maximum logit and inverse softmax normaliser."""
    qb = _blocks(q, 3, cfg.block_q)
    kb = _blocks(k, 2, cfg.block_k)
    vb = _blocks(v, 2, cfg.block_k)
    nk = kb.shape[0]
    b, hk, g, bq, _ = qb.shape[1:]
    dv = v.shape[-1]
    acc_t = _acc(q.dtype)

    def q_step(_: None, xs: Any) -> tuple[None, tuple[jax.Array, jax.Array]]:
        i, qi = xs

        def k_step(carry: Any, ys: Any) -> tuple[Any, None]:
            m, norm, acc = carry
            j, kj, vj = ys
            s, _ = _scores(cfg, qi, kj, bias, mask, i, j)
            m_new = jnp.maximum(m, s.max(-1))
            m_safe = jnp.where(jnp.isneginf(m_new), 0.0, m_new)
            p = jnp.exp(s - m_safe[..., None])
            corr = jnp.exp(m - m_safe)
            norm = norm * corr + p.sum(-1)
            d = _multiplier(cfg, key, keep, mult, s.shape, i, j)
            pd = p if d is None else p * d
            pv = jnp.einsum("bhgqk,bhkd->bhgqd", pd, vj.astype(acc_t), precision=cfg.precision)
            return (m_new, norm, acc * corr[..., None] + pv), None

        row = qi[..., 0]
        init = (
            _full(row, (b, hk, g, bq), -jnp.inf, acc_t),
            _full(row, (b, hk, g, bq), 0.0, acc_t),
            _full(qi[..., :1], (b, hk, g, bq, dv), 0.0, acc_t),
        )
        (m, norm, acc), _ = lax.scan(k_step, init, (jnp.arange(nk), kb, vb))
        # The softmax of row i is exp(s - m_i) / l_i; (m_i, 1 / l_i) are kept apart
        # rather than as m_i + log(l_i), which rounds back to m_i when every key of the
        # row is masked (m_i is then the most negative float).
        m_safe = jnp.where(jnp.isneginf(m), 0.0, m)
        return None, (acc / norm[..., None], jnp.stack([m_safe, 1 / norm]))

    _, (out, stats) = lax.scan(q_step, None, (jnp.arange(qb.shape[0]), qb))
    return out, stats


def _reduce_like(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sum ``x`` over the axes where ``shape`` (same rank) has size 1."""
    axes = tuple(d for d, (a, s) in enumerate(zip(x.shape, shape, strict=True)) if s == 1 and a != 1)
    return x.sum(axes, keepdims=True) if axes else x


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def attention(
    cfg: Config, q: Any, k: Any, v: Any, bias: Any, mask: Any, key: Any, keep: Any, mult: Any
) -> jax.Array:
    """Blockwise attention output ``[B, Hk, G, Tq_padded, Dv]`` in ``q``'s dtype."""
    out, _ = _forward(cfg, q, k, v, bias, mask, key, keep, mult)
    return _unblocks(out, 3).astype(q.dtype)


def _attention_fwd(
    cfg: Config, q: Any, k: Any, v: Any, bias: Any, mask: Any, key: Any, keep: Any, mult: Any
) -> tuple[jax.Array, Any]:
    out, stats = _forward(cfg, q, k, v, bias, mask, key, keep, mult)
    # Residuals are linear in the sequence length: inputs, the float32 output and
    # two numbers per query row. No attention weight is stored.
    return _unblocks(out, 3).astype(q.dtype), (q, k, v, bias, mask, key, keep, mult, out, stats)


def _attention_bwd(cfg: Config, res: Any, g_out: jax.Array) -> tuple[Any, ...]:
    q, k, v, bias, mask, key, keep, mult, out, stats = res
    qb = _blocks(q, 3, cfg.block_q)
    kb = _blocks(k, 2, cfg.block_k)
    vb = _blocks(v, 2, cfg.block_k)
    acc_t = _acc(q.dtype)
    gb = _blocks(g_out, 3, cfg.block_q).astype(acc_t)
    # D_i = sum_j P_ij dP_ij = dO_i . O_i, also with dropout (P dP is taken on dropped weights).
    delta = (gb * out).sum(-1)
    nk = kb.shape[0]
    bias_blk = 1 if bias is None or bias.shape[3] == 1 else cfg.block_q

    def q_step(carry: Any, xs: Any) -> tuple[Any, Any]:
        dk, dv = carry
        i, qi, gi, stats_i, delta_i = xs
        m_i, inv_l_i = stats_i[0][..., None], stats_i[1][..., None]
        qf = qi.astype(acc_t)

        def k_step(dq: jax.Array, ys: Any) -> tuple[jax.Array, Any]:
            j, kj, vj = ys
            s, valid = _scores(cfg, qi, kj, bias, mask, i, j)
            p = jnp.exp(s - m_i) * inv_l_i
            d = _multiplier(cfg, key, keep, mult, s.shape, i, j)
            pd = p if d is None else p * d
            dv_j = jnp.einsum("bhgqk,bhgqd->bhkd", pd, gi, precision=cfg.precision)
            dpd = jnp.einsum("bhgqd,bhkd->bhgqk", gi, vj.astype(acc_t), precision=cfg.precision)
            dp = dpd if d is None else dpd * d
            ds = p * (dp - delta_i[..., None])
            if valid is not None:
                # Masked logits are constants in Flax (a `where`): no gradient reaches them.
                ds = jnp.where(valid, ds, 0.0)
            dq = dq + jnp.einsum("bhgqk,bhkd->bhgqd", ds, kj.astype(acc_t), precision=cfg.precision)
            dk_j = jnp.einsum("bhgqk,bhgqd->bhkd", ds, qf, precision=cfg.precision)
            db_j = None
            if bias is not None:
                db_j = _reduce_like(ds, (*bias.shape[:3], bias_blk, 1 if bias.shape[4] == 1 else cfg.block_k))
            return dq, (dk_j, dv_j, db_j)

        dq0 = _full(qi, qi.shape, 0.0, acc_t)
        dq_i, (dk_i, dv_i, db_i) = lax.scan(k_step, dq0, (jnp.arange(nk), kb, vb))
        db_row = None
        if db_i is not None:
            db_row = _unblocks(db_i, 4) if bias.shape[4] > 1 else db_i.sum(0)
        return (dk + _unblocks(dk_i, 2), dv + _unblocks(dv_i, 2)), (dq_i, db_row)

    init = (_full(k, k.shape, 0.0, acc_t), _full(v, v.shape, 0.0, acc_t))
    (dk, dv), (dq, dbias) = lax.scan(q_step, init, (jnp.arange(qb.shape[0]), qb, gb, stats, delta))
    dq = _unblocks(dq, 3).astype(q.dtype)
    if dbias is not None:
        dbias = (_unblocks(dbias, 3) if bias.shape[3] > 1 else dbias.sum(0)).astype(bias.dtype)
    return dq, dk.astype(k.dtype), dv.astype(v.dtype), dbias, None, None, None, None


attention.defvjp(_attention_fwd, _attention_bwd)


def pad_to(x: jax.Array, axis: int, size: int, value: Any = 0) -> jax.Array:
    """Pad ``axis`` of ``x`` at the end to ``size`` (no-op when already that long or of size 1)."""
    n = x.shape[axis]
    if n == size or n == 1:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - n)
    return jnp.pad(x, widths, constant_values=np.asarray(value, x.dtype))
