"""The masking core every Bernoulli-mask method is built on.

Data flows one way: a key and each element's index give bits (:mod:`jaxdrop.prng`),
bits give a mask, the mask gives the output. This module holds the last two steps,
shared by every variant: the keep probability and its dtype, mask shapes, the
differentiable masked select whose backward pass regenerates the mask from the key
instead of storing it, and the short-circuits for ``rate == 0``, ``rate == 1`` and
evaluation mode.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import DTypeLike

from jaxdrop import _checks, prng
from jaxdrop.prng import Mode

__all__ = [
    "apply_mask",
    "compute_dtype",
    "feature_axes",
    "feature_mask_shape",
    "keep_and_divisor",
    "keep_prob",
    "mask_dtype",
    "mask_shape",
    "masked_scale",
    "short_circuit",
]


def keep_prob(rate: float | jax.Array) -> float | jax.Array:
    """Keep probability ``1 - rate``; a Python float stays a Python (double) float."""
    return 1.0 - rate


def mask_dtype() -> DTypeLike:
    """The dtype a Python-float probability is drawn in: float32 (float64 under x64), as jax.random."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def compute_dtype(dtype: DTypeLike) -> DTypeLike:
    """float32 for half-precision inputs (noise and affine maps are computed there), else ``dtype``."""
    return jnp.promote_types(dtype, jnp.float32)


def mask_shape(shape: tuple[int, ...], broadcast_dims: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with 1 on every axis in ``broadcast_dims`` (one mask value shared along it)."""
    return tuple(1 if d in broadcast_dims else s for d, s in enumerate(shape))


def feature_axes(
    ndim: int, channel_axis: Any, batch_axis: Any, fn: str, *, min_rank: int = 2
) -> tuple[int, int | None]:
    """Validate and normalise ``(channel_axis, batch_axis)`` for an array of rank ``ndim``."""
    if ndim < min_rank:
        raise ValueError(
            f"jaxdrop.{fn}: `x` must have rank >= {min_rank} (a channel axis plus at least one "
            f"other axis, e.g. (N, L, C) or (N, H, W, C)), got rank {ndim}."
        )
    ch = _checks.axis(channel_axis, ndim, fn, "channel_axis")
    batch = _checks.optional_axis(batch_axis, ndim, fn, "batch_axis")
    if batch == ch:
        raise ValueError(
            f"jaxdrop.{fn}: `channel_axis`={channel_axis} and `batch_axis`={batch_axis} are the same "
            f"axis of a rank-{ndim} array; pass batch_axis=None for unbatched input."
        )
    return ch, batch


def feature_mask_shape(shape: tuple[int, ...], channel_axis: int, batch_axis: int | None) -> tuple[int, ...]:
    """``shape`` with 1 on every axis except the channel and batch axes."""
    return tuple(s if d in (channel_axis, batch_axis) else 1 for d, s in enumerate(shape))


def short_circuit(
    x: jax.Array, rate: float | jax.Array, deterministic: bool, *, at_one: bool = True
) -> jax.Array | None:
    """The output that needs no mask, or ``None`` when a mask must be drawn.

    ``x`` itself in evaluation mode or at a concrete ``rate == 0``; zeros at a concrete
    ``rate == 1`` when ``at_one`` (methods whose rate-1 output is not zeros pass False).
    A traced rate always draws a mask: its value is unknown while tracing.
    """
    if deterministic or (isinstance(rate, float) and rate == 0.0):
        return x
    if at_one and isinstance(rate, float) and rate == 1.0:
        return jnp.zeros_like(x)
    return None


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5))
def apply_mask(
    key: jax.Array, x: jax.Array, keep: jax.Array, divisor: jax.Array, shape: tuple[int, ...], mode: Mode
) -> jax.Array:
    """``where(bernoulli(key, keep, shape), x / divisor, 0)``, with the mask regenerated
    from ``key`` in the backward pass instead of stored.

    ``keep`` is the probability of keeping (mask dtype), ``divisor`` the rescaling
    (x's dtype, 1 where ``keep`` is 0), ``shape`` the mask shape (broadcast to
    ``x.shape``). This is the differentiable core of every Bernoulli-mask method.
    """
    return _select(key, x, keep, divisor, shape, mode)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _select(
    key: jax.Array, x: jax.Array, keep: jax.Array, divisor: jax.Array, shape: tuple[int, ...], mode: Mode
) -> jax.Array:
    # One compiled, fused kernel for eager calls; inlined under an outer jit.
    mask = prng.bernoulli(key, keep, shape, mode=mode)
    return lax.select(jnp.broadcast_to(mask, x.shape), x / divisor, jnp.zeros_like(x))


def _apply_mask_jvp(
    shape: tuple[int, ...], mode: Mode, primals: tuple[Any, ...], tangents: tuple[Any, ...]
) -> tuple[jax.Array, jax.Array]:
    key, x, keep, divisor = primals
    _, dx, _, ddivisor = tangents
    y = apply_mask(key, x, keep, divisor, shape, mode)
    # The tangent map is the same masking applied to dx. Under jax.checkpoint, reverse
    # mode keeps only (key, keep, divisor) as residuals and regenerates the mask,
    # instead of storing it (a byte per element) or the scaled x.
    regen = jax.checkpoint(apply_mask, static_argnums=(4, 5))
    dy = (
        jnp.zeros_like(y)
        if type(dx) is jax.custom_derivatives.SymbolicZero
        else regen(key, dx, keep, divisor, shape, mode)
    )
    if type(ddivisor) is not jax.custom_derivatives.SymbolicZero:
        dy = dy - y * (ddivisor / divisor)
    return y, dy


apply_mask.defjvp(_apply_mask_jvp, symbolic_zeros=True)


def masked_scale(
    key: jax.Array,
    x: jax.Array,
    rate: float | jax.Array,
    shape: tuple[int, ...],
    mode: Mode,
) -> jax.Array:
    """Inverted dropout of ``x`` with a mask of ``shape`` (broadcast to ``x.shape``).

    ``rate`` has been validated: a Python float in ``[0, 1]`` or a clamped traced
    scalar. Callers handle ``rate == 0`` and ``rate == 1`` for concrete rates
    (:func:`short_circuit`).
    """
    p, divisor = keep_and_divisor(rate, x.dtype)
    return apply_mask(key, x, p, divisor, shape, mode)


def keep_and_divisor(rate: float | jax.Array, dtype: DTypeLike) -> tuple[Any, Any]:
    """The mask's keep probability (mask dtype) and the rescaling divisor (``dtype``) of inverted dropout.

    For a Python-float rate: the probability rounded once from the double ``1 - rate``
    and the divisor rounded to ``dtype``, exactly flax.linen.Dropout's
    ``bernoulli(key, 1.0 - rate)`` and ``x / (1.0 - rate)`` with a weakly typed float.
    For a traced rate, the divisor is 1 where the keep probability is 0.
    """
    keep = keep_prob(rate)
    if isinstance(keep, float):
        return np.asarray(keep, mask_dtype()), np.asarray(keep, dtype)
    return keep, jnp.where(keep > 0, keep, 1).astype(dtype)
