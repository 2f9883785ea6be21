r"""Attention with fused, regenerated dropout: a drop-in ``attention_fn`` for Flax.

Scaled dot-product attention (Vaswani et al. 2017, "Attention is all you need")
with dropout on the attention weights:

.. math::

    P = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d}} + B\right), \qquad
    \tilde P_{qk} = P_{qk}\,\frac{m_{qk}}{1 - \mathrm{rate}}, \quad
    m_{qk} \sim \mathrm{Bernoulli}(1 - \mathrm{rate}), \qquad
    \mathrm{out} = \tilde P V .

:func:`dot_product_attention` has the signature and semantics of
:func:`flax.linen.dot_product_attention` and :func:`flax.nnx.dot_product_attention`
(every keyword either passes), so it works as ``attention_fn=`` of Flax's attention
layers. Three implementations:

``"dense"``
    Flax's computation, operation for operation, with the dropout mask drawn inside
    the fused elementwise computation by :mod:`jaxdrop.prng` and regenerated in the
    backward pass instead of stored. The mask is
    ``jax.random.bernoulli(dropout_rng, 1 - rate, dropout_shape)`` bit for bit, so
    the output is bit-identical to Flax's for the same ``dropout_rng``.
``"blockwise"``
    Memory-efficient attention in pure JAX (online softmax over blocks of queries and
    keys, a ``custom_vjp`` that recomputes the weights): temporary memory linear in
    the sequence length. Its dropout is drawn block by block from the same global
    indices, so it applies **the same mask** as ``"dense"`` and Flax; outputs agree
    to float rounding (the blocks are summed in another order, in float32).
``None`` (default)
    ``"dense"`` while dropout is applied. Without dropout (``deterministic`` or a
    rate of 0, whatever the configured rate) the fused
    :func:`jax.nn.dot_product_attention` (XLA; cuDNN on GPU through JAX where it
    applies), with Flax's masking semantics and float32 softmax; it falls back to
    ``"dense"`` where that function cannot express the call (``module`` given to sow
    weights, ``precision``, custom einsums, complex inputs).

Shapes: ``query [batch..., q_length, num_heads, depth]``, ``key [batch..., kv_length,
num_kv_heads, depth]``, ``value [batch..., kv_length, num_kv_heads, v_depth]``; output
``[batch..., q_length, num_heads, v_depth]``. ``num_kv_heads`` may divide ``num_heads``
(grouped-query attention, as in :mod:`flax.nnx`).

>>> import jax, jax.numpy as jnp
>>> import jaxdrop.attention as jda
>>> q = k = v = jnp.ones((2, 16, 4, 8))                     # [batch, length, heads, depth]
>>> out = jda.dot_product_attention(q, k, v, dropout_rate=0.1, dropout_rng=jax.random.key(0))
>>> out.shape
(2, 16, 4, 8)
>>> blk = jda.dot_product_attention(q, k, v, dropout_rate=0.1, dropout_rng=jax.random.key(0),
...                                 implementation="blockwise", block_size=8)
>>> bool(jnp.allclose(out, blk, atol=1e-6))
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _blockwise, _checks, prng
from jaxdrop._core import apply_mask, mask_dtype
from jaxdrop.prng import Mode

__all__ = ["Implementation", "dot_product_attention", "dot_product_attention_weights"]

Implementation = Literal["dense", "blockwise"] | None
"""``"dense"``, ``"blockwise"`` or ``None`` (dense with dropout, fused without)."""

_IMPLEMENTATIONS = (None, "dense", "blockwise")
_FN = "attention.dot_product_attention"


# -- arguments ---------------------------------------------------------------------


def _promote(arrays: tuple[Any, ...], dtype: Any, promote_dtype: Callable[..., Any] | None) -> list[Any]:
    """Flax's dtype promotion: nnx's ``promote_dtype(tuple, dtype=)`` if given, else linen's rule."""
    if promote_dtype is not None:
        return list(promote_dtype(arrays, dtype=dtype))
    if dtype is None:
        dtype = jnp.result_type(*[jnp.asarray(a) for a in arrays])
        if not jnp.issubdtype(dtype, jnp.inexact):
            dtype = jnp.promote_types(jnp.float32, dtype)
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise ValueError(f"jaxdrop.{_FN}: dtype must be inexact (floating point), got {dtype}.")
    return [jnp.asarray(a, dtype) for a in arrays]


def _check_shapes(query: jax.Array, key: jax.Array, value: jax.Array | None = None) -> None:
    """Flax nnx's shape checks, with the message saying which shapes disagree."""
    arrays = (query, key) if value is None else (query, key, value)
    names = "q, k" if value is None else "q, k, v"
    if any(a.ndim < 3 for a in arrays):
        shapes = ", ".join(str(a.shape) for a in arrays)
        given = "`query`, `key`" + ("" if value is None else ", `value`")
        raise ValueError(
            f"jaxdrop.{_FN}: {given} need at least 3 axes [batch..., length, heads, depth], got shapes {shapes}."
        )
    if not all(a.ndim == arrays[0].ndim for a in arrays[1:]):
        ndims = ", ".join(str(a.ndim) for a in arrays)
        raise ValueError(f"{names} must have same rank, but got {ndims}.")
    if not all(a.shape[:-3] == arrays[0].shape[:-3] for a in arrays[1:]):
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ValueError(f"{names} batch dims must match, but got shapes {shapes}.")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"q, k depths must match, but got {query.shape[-1]} and {key.shape[-1]}.")
    if query.shape[-2] % key.shape[-2]:
        hq, hk = query.shape[-2], key.shape[-2]
        # Both of Flax's phrasings (its dense path's and jax.nn's, which nnx calls at rate 0).
        raise ValueError(
            f"Query heads ({hq}) must be multiple of Key heads ({hk}) for Grouped Query Attention: "
            f"the number of query heads must be a multiple of key/value heads, but got {hq} vs {hk}."
        )
    if value is not None:
        if key.shape[-3] != value.shape[-3]:
            raise ValueError(f"k, v lengths must match, but got {key.shape[-3]} and {value.shape[-3]}.")
        if key.shape[-2] != value.shape[-2]:
            raise ValueError(f"k, v heads must match, but got {key.shape[-2]} and {value.shape[-2]}.")


def _check_broadcast(x: Any, name: str, target: tuple[int, ...]) -> jax.Array:
    x = jnp.asarray(x)
    ok = x.ndim <= len(target) and all(
        a in (1, t) for a, t in zip(x.shape[::-1], target[::-1], strict=False)
    )
    if not ok:
        raise ValueError(
            f"jaxdrop.{_FN}: `{name}` of shape {x.shape} does not broadcast to the attention "
            f"weights' shape [batch..., num_heads, q_length, kv_length] = {target}."
        )
    return x


class _Arguments(NamedTuple):
    arrays: list[jax.Array]  # query, key[, value], promoted to one dtype
    bias: jax.Array | None
    mask: jax.Array | None
    rate: float | jax.Array
    apply_dropout: bool
    dropout_key: jax.Array | None
    broadcast_dropout: bool
    is_causal: bool


def _arguments(
    fn: str,
    arrays: dict[str, Any],
    bias: Any,
    mask: Any,
    rate: Any,
    deterministic: Any,
    broadcast_dropout: Any,
    is_causal: Any,
    dropout_rng: Any,
    dtype: Any,
    promote_dtype: Callable[..., Any] | None,
    mode: Any,
) -> _Arguments:
    """Validate the arguments both public functions share; raise what was wrong and how to fix it."""
    rate = _checks.probability(rate, fn, "dropout_rate")
    apply_dropout = _dropout_active(rate, _checks.flag(deterministic, fn))
    broadcast_dropout = _checks.flag(broadcast_dropout, fn, "broadcast_dropout")
    is_causal = _checks.flag(is_causal, fn, "is_causal")
    _checks.mode(mode, fn)
    for name, arr in arrays.items():
        dtype_ = getattr(arr, "dtype", None)
        if (
            arr is None
            or isinstance(arr, (str, bytes))
            or (dtype_ is not None and not (jnp.issubdtype(dtype_, jnp.number) or jnp.issubdtype(dtype_, jnp.bool_)))
        ):
            raise TypeError(f"jaxdrop.{fn}: `{name}` must be a floating-point array, got {arr!r}.")
    promoted = _promote(tuple(arrays.values()), dtype, promote_dtype)
    _check_shapes(*promoted)
    query, key = promoted[:2]
    target = (*query.shape[:-3], query.shape[-2], query.shape[-3], key.shape[-3])
    if bias is not None:
        bias = _check_broadcast(bias, "bias", target)
    if mask is not None:
        mask = _check_broadcast(mask, "mask", target)
    dropout_key = _dropout_key(dropout_rng) if apply_dropout else None
    return _Arguments(promoted, bias, mask, rate, apply_dropout, dropout_key, broadcast_dropout, is_causal)


def _dropout_active(rate: Any, deterministic: bool) -> bool:
    if deterministic:
        return False
    return not (isinstance(rate, float) and rate == 0.0)


def _dropout_key(dropout_rng: Any) -> jax.Array:
    if dropout_rng is None:
        raise TypeError(
            f"jaxdrop.{_FN}: dropout is applied (dropout_rate > 0 and deterministic=False) but "
            "`dropout_rng` is None. Pass dropout_rng=jax.random.key(...) (Flax layers draw it from the "
            "'dropout' stream), or deterministic=True for evaluation."
        )
    return prng.as_key(dropout_rng, fn=_FN, signature="query, key, value, ..., dropout_rng=key")


def _keep_and_multiplier(rate: float | jax.Array, dtype: Any) -> tuple[Any, Any]:
    """Keep probability (mask dtype) and Flax's multiplier ``1 / (1 - rate)`` rounded to ``dtype``."""
    keep = 1.0 - rate
    if isinstance(keep, float):
        # Flax: bernoulli(rng, 1.0 - rate) with a Python float, and
        # keep.astype(dtype) / jnp.asarray(keep_prob, dtype): the reciprocal rounded in dtype.
        # At rate 1 Flax's multiplier is 0/0 (NaN weights); every weight is dropped, so 0.
        mult = np.asarray(1, dtype) / np.asarray(keep, dtype) if keep > 0 else np.zeros((), dtype)
        return np.asarray(keep, mask_dtype()), mult
    mult = jnp.where(keep > 0, 1 / jnp.where(keep > 0, keep, 1), 0)
    return keep, mult.astype(dtype)


# -- dense ---------------------------------------------------------------------------


def _einsum(precision: Any, dot_general: Any) -> Callable[..., jax.Array]:
    extra = {} if dot_general is None else {"_dot_general": dot_general}

    def einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.einsum(spec, a, b, precision=precision, **extra)

    return einsum


def _sow(module: Any, weights: jax.Array) -> None:
    from flax import nnx

    if isinstance(module, nnx.Module):
        module.sow(nnx.Intermediate, "attention_weights", weights)
    else:
        module.sow("intermediates", "attention_weights", weights)


def _weights(
    query: jax.Array,
    key: jax.Array,
    bias: Any,
    mask: Any,
    broadcast_dropout: bool,
    dropout_key: Any,
    rate: float | jax.Array,
    apply_dropout: bool,
    module: Any,
    force_fp32_for_softmax: bool,
    is_causal: bool,
    einsum: Callable[..., jax.Array],
    mode: Mode,
) -> jax.Array:
    """Flax's ``dot_product_attention_weights``, op for op, with jaxdrop's fused mask."""
    dtype = query.dtype
    q_heads, k_heads = query.shape[-2], key.shape[-2]
    is_gqa = q_heads != k_heads
    if is_gqa:
        query = query.reshape((*query.shape[:-2], k_heads, q_heads // k_heads, query.shape[-1]))
        key = jnp.expand_dims(key, axis=-2)
    depth = query.shape[-1]
    query = query / jnp.sqrt(depth).astype(dtype)
    if is_gqa:
        w = einsum("...qhgd,...kh1d->...hgqk", query, key)
        w = w.reshape((*w.shape[:-4], q_heads, *w.shape[-2:]))
    else:
        w = einsum("...qhd,...khd->...hqk", query, key)
    if bias is not None:
        w = w + bias
    if mask is not None or is_causal:
        big_neg = jnp.finfo(dtype).min
        if is_causal:
            causal = jnp.tril(jnp.ones(w.shape[-2:], dtype))
            mask = causal if mask is None else jnp.logical_and(mask, causal)
        w = jnp.where(mask, w, big_neg)
    if force_fp32_for_softmax and dtype != jnp.float32:
        w = jax.nn.softmax(w.astype(jnp.float32))
    else:
        w = jax.nn.softmax(w).astype(dtype)
    if module is not None:
        _sow(module, w)
    if not apply_dropout:
        return w
    dshape = (1,) * (w.ndim - 2) + w.shape[-2:] if broadcast_dropout else w.shape
    keep, mult = _keep_and_multiplier(rate, dtype)
    # Flax multiplies by `keep / (1 - rate)`; a select with divisor 1 followed by the
    # same multiplication gives the same bits, and apply_mask regenerates the mask in
    # the backward pass instead of storing it.
    one = np.ones((), w.dtype)
    return apply_mask(dropout_key, w, keep, one, dshape, mode) * mult


def _dense(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    weights_args: dict[str, Any],
    value_einsum: Callable[..., jax.Array],
) -> jax.Array:
    w = _weights(query, key, **weights_args)
    q_heads, v_heads = w.shape[-3], value.shape[-2]
    if q_heads != v_heads:
        w = w.reshape((*w.shape[:-3], v_heads, q_heads // v_heads, *w.shape[-2:]))
        out = value_einsum("...hgqk,...kh1d->...qhgd", w, jnp.expand_dims(value, axis=-2))
        return out.reshape((*out.shape[:-3], q_heads, out.shape[-1]))
    return value_einsum("...hqk,...khd->...qhd", w, value)


# -- fused (no dropout) --------------------------------------------------------------


def _to_batch(x: Any, batch: tuple[int, ...], rank: int) -> Any:
    """A bias/mask broadcastable to ``batch + (H, Tq, Tk)`` with its batch axes flattened to one."""
    if x is None:
        return None
    x = jnp.asarray(x)
    x = x.reshape((1,) * (rank - x.ndim) + x.shape)
    lead, rest = x.shape[: len(batch)], x.shape[len(batch) :]
    if all(d == 1 for d in lead):
        return x.reshape((1, *rest))
    return jnp.broadcast_to(x, batch + rest).reshape((math.prod(batch), *rest))


def _fused(query: Any, key: Any, value: Any, bias: Any, mask: Any, is_causal: bool) -> jax.Array:
    batch = query.shape[:-3]
    rank = len(batch) + 3
    q, k, v = (a.reshape((math.prod(batch), *a.shape[-3:])) for a in (query, key, value))
    mask = _to_batch(mask, batch, rank)
    out = jax.nn.dot_product_attention(
        q,
        k,
        v,
        _to_batch(bias, batch, rank),
        None if mask is None else mask.astype(jnp.bool_),
        is_causal=is_causal,
    )
    return out.reshape(batch + out.shape[1:])


# -- blockwise -----------------------------------------------------------------------


def _to_groups(x: Any, batch: tuple[int, ...], rank: int, k_heads: int, groups: int) -> Any:
    """A bias/mask as ``[Bb, Hkb, Gb, Tqb, Tkb]`` (each axis 1 or full) for :mod:`jaxdrop._blockwise`."""
    x = _to_batch(x, batch, rank)
    if x is None:
        return None
    h = x.shape[1]
    return x.reshape((x.shape[0], *((1, 1) if h == 1 else (k_heads, groups)), *x.shape[2:]))


def _blockwise_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: Any,
    mask: Any,
    broadcast_dropout: bool,
    dropout_key: Any,
    rate: float | jax.Array,
    apply_dropout: bool,
    is_causal: bool,
    precision: Any,
    block_size: int | tuple[int, int],
    mode: Mode,
) -> jax.Array:
    dtype = query.dtype
    batch = query.shape[:-3]
    rank = len(batch) + 3
    b = math.prod(batch)
    tq, hq, depth = query.shape[-3:]
    tk, hk, dv = value.shape[-3:]
    groups = hq // hk
    bq, bk = (block_size, block_size) if isinstance(block_size, int) else block_size
    bq, bk = min(bq, tq), min(bk, tk)
    tq_pad, tk_pad = -(-tq // bq) * bq, -(-tk // bk) * bk

    query = query / jnp.sqrt(depth).astype(dtype)
    q = query.reshape(b, tq, hk, groups, depth).transpose(0, 2, 3, 1, 4)
    k = key.reshape(b, tk, hk, depth).transpose(0, 2, 1, 3)
    v = value.reshape(b, tk, hk, dv).transpose(0, 2, 1, 3)
    q = _blockwise.pad_to(q, 3, tq_pad)
    k, v = _blockwise.pad_to(k, 2, tk_pad), _blockwise.pad_to(v, 2, tk_pad)
    bias = _to_groups(bias, batch, rank, hk, groups)
    mask = _to_groups(mask, batch, rank, hk, groups)
    if bias is not None:
        bias = _blockwise.pad_to(_blockwise.pad_to(bias, 3, tq_pad), 4, tk_pad)
    if mask is not None:
        mask = _blockwise.pad_to(_blockwise.pad_to(mask.astype(jnp.bool_), 3, tq_pad), 4, tk_pad)

    cfg = _blockwise.Config(bq, bk, tq, tk, bool(is_causal), apply_dropout, broadcast_dropout, mode, precision)
    keep = mult = None
    if apply_dropout:
        # Flax's multiplier, rounded to the input dtype, applied in the accumulation dtype.
        keep, mult = _keep_and_multiplier(rate, dtype)
        keep, mult = jnp.asarray(keep), jnp.asarray(mult).astype(jnp.promote_types(dtype, jnp.float32))
    out = _blockwise.attention(cfg, q, k, v, bias, mask, dropout_key, keep, mult)
    out = out[:, :, :, :tq].transpose(0, 3, 1, 2, 4)  # [B, Tq, Hk, G, Dv]
    return out.reshape((*batch, tq, hq, dv))


# -- public --------------------------------------------------------------------------


def _block_size(block_size: Any) -> int | tuple[int, int]:
    if isinstance(block_size, tuple) and len(block_size) == 2:
        return (
            _checks.integer(block_size[0], _FN, "block_size[0]", minimum=1),
            _checks.integer(block_size[1], _FN, "block_size[1]", minimum=1),
        )
    if isinstance(block_size, tuple):
        raise ValueError(
            f"jaxdrop.{_FN}: `block_size` must be an int or a pair (query block, key block), got {block_size!r}."
        )
    return _checks.integer(block_size, _FN, "block_size", minimum=1)


def dot_product_attention(
    query: Any,
    key: Any,
    value: Any,
    bias: Any = None,
    mask: Any = None,
    broadcast_dropout: bool = True,
    dropout_rng: Any = None,
    dropout_rate: float | jax.Array = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    force_fp32_for_softmax: bool = False,
    einsum_dot_general: Callable[..., jax.Array] | None = None,
    qk_attn_weights_einsum: Callable[..., jax.Array] | None = None,
    attn_weights_value_einsum: Callable[..., jax.Array] | None = None,
    promote_dtype: Callable[..., Any] | None = None,
    is_causal: bool = False,
    *,
    implementation: Implementation = None,
    block_size: int | tuple[int, int] = 256,
    mode: Mode = "exact",
) -> jax.Array:
    r"""Dot-product attention with dropout on the weights; Flax's ``dot_product_attention``.

    .. math::

        \mathrm{out} = \left(\mathrm{softmax}\!\left(\tfrac{Q K^\top}{\sqrt{d}} + B\right)
        \odot \tfrac{M}{1 - \mathrm{rate}}\right) V,
        \qquad M \sim \mathrm{Bernoulli}(1 - \mathrm{rate})^{\text{dropout\_shape}}

    Masked positions (``mask`` False, or above the diagonal with ``is_causal``) get the
    most negative float before the softmax, as in Flax; a query whose keys are all
    masked therefore attends uniformly to every key (Flax's result, not NaN).

    Args:
      query: ``[batch..., q_length, num_heads, depth]``.
      key: ``[batch..., kv_length, num_kv_heads, depth]``; ``num_kv_heads`` divides
        ``num_heads`` (grouped-query attention when smaller).
      value: ``[batch..., kv_length, num_kv_heads, v_depth]``.
      bias: added to the logits; broadcastable to ``[batch..., num_heads, q_length,
        kv_length]``. Differentiable.
      mask: boolean (or 0/1), broadcastable like ``bias``; False masks a weight out.
      broadcast_dropout: if True (Flax's default) one ``[q_length, kv_length]`` mask
        is shared by every batch element and head; else a mask per weight.
      dropout_rng: the PRNG key of the dropout mask; needed when dropout is applied.
      dropout_rate: the probability of **dropping** a weight, in ``[0, 1]``. A Python
        float, or a traced scalar (clamped to ``[0, 1]``; no gradient flows to it).
      deterministic: if True, no dropout (evaluation).
      dtype: the computation dtype (default: promoted from the inputs).
      precision: ``jax.lax.Precision`` of the matrix products.
      module: a Flax module (linen or nnx) into which the weights before dropout are
        sown as ``attention_weights``, as Flax does.
      force_fp32_for_softmax: linen's option: the softmax runs in float32.
      einsum_dot_general, qk_attn_weights_einsum, attn_weights_value_einsum: linen's
        hooks for custom (e.g. quantised) products; ``"dense"`` only.
      promote_dtype: nnx's dtype promotion function ``f((q, k, v), dtype=)``.
      is_causal: nnx's option: mask keys after the query (``tril`` of ones).
      implementation: ``None``, ``"dense"`` or ``"blockwise"`` (see
        :mod:`jaxdrop.attention`).
      block_size: blockwise only: the query and key block length (an int or a pair).
        A length that is not a multiple is padded (padding keys never get weight),
        and a block longer than the sequence shrinks to it.
      mode: ``"exact"`` (the mask is ``jax.random.bernoulli``'s, as Flax) or ``"fast"``
        (13-round Threefry; same statistics, other bits).

    Returns:
      ``[batch..., q_length, num_heads, v_depth]`` in the computation dtype.

    Raises:
      ValueError: mismatched shapes, a rate outside [0, 1], an unknown
        implementation, options the implementation cannot honour.
      TypeError: dropout applied without a ``dropout_rng`` (as in Flax), or a key that
        is not a PRNG key.
    """
    if implementation not in _IMPLEMENTATIONS:
        raise ValueError(
            f"jaxdrop.{_FN}: unknown implementation {implementation!r}; "
            "use None (dense with dropout, jax.nn.dot_product_attention without), 'dense' or 'blockwise'."
        )
    if (precision is not None or einsum_dot_general is not None) and (
        qk_attn_weights_einsum is not None or attn_weights_value_einsum is not None
    ):
        raise ValueError(
            "precision/einsum_dot_general and qk_attn_weights_einsum/attn_weights_value_einsum are "
            "mutually exclusive. Please specify only one of them."
        )
    if (qk_attn_weights_einsum is None) != (attn_weights_value_einsum is None):
        raise ValueError("qk_attn_weights_einsum and attn_weights_value_einsum must be specified together.")
    args = _arguments(
        _FN, {"query": query, "key": key, "value": value}, bias, mask, dropout_rate, deterministic,
        broadcast_dropout, is_causal, dropout_rng, dtype, promote_dtype, mode,
    )  # fmt: skip
    (query, key, value), bias, mask = args.arrays, args.bias, args.mask
    rate, apply_dropout, dropout_key = args.rate, args.apply_dropout, args.dropout_key
    broadcast_dropout, is_causal = args.broadcast_dropout, args.is_causal
    custom = qk_attn_weights_einsum is not None or einsum_dot_general is not None

    real = bool(jnp.issubdtype(query.dtype, jnp.floating))
    if implementation == "blockwise":
        if not real:
            raise ValueError(
                f"jaxdrop.{_FN}: implementation='blockwise' needs real floating-point inputs, got "
                f"{query.dtype}; use implementation='dense' for complex attention."
            )
        if custom:
            raise ValueError(
                f"jaxdrop.{_FN}: implementation='blockwise' computes its own blocked products; custom "
                "einsums (einsum_dot_general, qk_attn_weights_einsum) need implementation='dense'."
            )
        block = _block_size(block_size)
        if module is not None:
            # Sowing asks for the full weights; they are computed for that alone.
            _weights(
                query, key, bias, mask, broadcast_dropout, None, rate, False, module,
                force_fp32_for_softmax, is_causal, _einsum(precision, None), mode,
            )  # fmt: skip
        return _blockwise_attention(
            query, key, value, bias, mask, broadcast_dropout, dropout_key, rate, apply_dropout,
            is_causal, precision, block, mode,
        )  # fmt: skip

    fusable = real and module is None and precision is None and not custom
    if implementation is None and not apply_dropout and fusable:
        return _fused(query, key, value, bias, mask, is_causal)

    weights_args = dict(
        bias=bias,
        mask=mask,
        broadcast_dropout=broadcast_dropout,
        dropout_key=dropout_key,
        rate=rate,
        apply_dropout=apply_dropout,
        module=module,
        force_fp32_for_softmax=force_fp32_for_softmax,
        is_causal=is_causal,
        einsum=qk_attn_weights_einsum or _einsum(precision, einsum_dot_general),
        mode=mode,
    )
    value_einsum = attn_weights_value_einsum or _einsum(precision, einsum_dot_general)
    return _dense(query, key, value, weights_args, value_einsum)


def dot_product_attention_weights(
    query: Any,
    key: Any,
    bias: Any = None,
    mask: Any = None,
    broadcast_dropout: bool = True,
    dropout_rng: Any = None,
    dropout_rate: float | jax.Array = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    force_fp32_for_softmax: bool = False,
    einsum_dot_general: Callable[..., jax.Array] | None = None,
    einsum: Callable[..., jax.Array] | None = None,
    promote_dtype: Callable[..., Any] | None = None,
    is_causal: bool = False,
    *,
    mode: Mode = "exact",
) -> jax.Array:
    r"""The attention weights ``softmax(Q Kᵀ / sqrt(d) + B)``, dropped; Flax's function.

    Same arguments and semantics as :func:`dot_product_attention` (and as
    :func:`flax.linen.dot_product_attention_weights` /
    :func:`flax.nnx.dot_product_attention_weights`, bit for bit for the same
    ``dropout_rng``); ``einsum`` is linen's custom product. The dropout mask is
    drawn inside the fused computation and regenerated in the backward pass.

    Returns:
      ``[batch..., num_heads, q_length, kv_length]``.

    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop.attention as jda
    >>> w = jda.dot_product_attention_weights(jnp.ones((3, 2, 4)), jnp.ones((5, 2, 4)))
    >>> w.shape, float(w.sum(-1).max())
    ((2, 3, 5), 1.0)
    """
    if (precision is not None or einsum_dot_general is not None) and einsum is not None:
        raise ValueError(
            "precision/einsum_dot_general and einsum are mutually exclusive. Please specify only one of them."
        )
    a = _arguments(
        _FN + "_weights", {"query": query, "key": key}, bias, mask, dropout_rate, deterministic,
        broadcast_dropout, is_causal, dropout_rng, dtype, promote_dtype, mode,
    )  # fmt: skip
    query, key = a.arrays
    return _weights(
        query, key, a.bias, a.mask, a.broadcast_dropout, a.dropout_key, a.rate, a.apply_dropout, module,
        force_fp32_for_softmax, a.is_causal, einsum or _einsum(precision, einsum_dot_general), mode,
    )  # fmt: skip
