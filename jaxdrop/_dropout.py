"""Standard (inverted) dropout and its mask."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdrop import _checks, prng
from jaxdrop.prng import Mode

__all__ = ["dropout", "keep_mask", "apply_mask"]


def _keep_prob(rate: float | jax.Array) -> float | jax.Array:
    """Keep probability ``1 - rate``; a Python float stays a Python (double) float."""
    return 1.0 - rate


def _mask_dtype() -> Any:
    # A Python float probability is drawn in float32 (float64 under x64), as jax.random does.
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def mask_shape(shape: tuple[int, ...], broadcast_dims: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if d in broadcast_dims else s for d, s in enumerate(shape))


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5))
def apply_mask(
    key: jax.Array, x: jax.Array, keep: jax.Array, divisor: jax.Array, shape: tuple[int, ...], mode: str
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
    key: jax.Array, x: jax.Array, keep: jax.Array, divisor: jax.Array, shape: tuple[int, ...], mode: str
) -> jax.Array:
    # One compiled, fused kernel for eager calls; inlined under an outer jit.
    mask = prng.bernoulli(key, keep, shape, mode=mode)  # type: ignore[arg-type]
    return lax.select(jnp.broadcast_to(mask, x.shape), x / divisor, jnp.zeros_like(x))


def _apply_mask_jvp(
    shape: tuple[int, ...], mode: str, primals: tuple[Any, ...], tangents: tuple[Any, ...]
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
    scalar. Callers handle ``rate == 0`` and ``rate == 1`` for concrete rates.
    """
    keep = _keep_prob(rate)
    p: Any
    divisor: Any
    if isinstance(keep, float):
        # Mask probability rounded once from the double 1 - rate, divisor rounded to
        # x's dtype: exactly flax.linen.Dropout's `bernoulli(key, 1.0 - rate)` and
        # `x / (1.0 - rate)` with a weakly typed Python float.
        p = np.asarray(keep, _mask_dtype())
        divisor = np.asarray(keep, x.dtype)
    else:
        p = keep
        divisor = jnp.where(keep > 0, keep, 1).astype(x.dtype)
    return apply_mask(key, x, p, divisor, shape, mode)


def dropout(
    key: Any,
    x: Any,
    rate: float | jax.Array,
    *,
    broadcast_dims: Sequence[int] = (),
    deterministic: bool = False,
    mode: Mode = "exact",
) -> jax.Array:
    r"""Inverted dropout (Srivastava et al., 2014).

    Each element is kept with probability :math:`q = 1 - \mathrm{rate}` and
    rescaled so that the expectation is unchanged:

    .. math::

        m_i \sim \mathrm{Bernoulli}(1 - \mathrm{rate}), \qquad
        y_i = \begin{cases} x_i / (1 - \mathrm{rate}) & m_i = 1 \\ 0 & m_i = 0 \end{cases},
        \qquad \mathbb{E}[y] = x,\quad \mathrm{Var}[y_i] = x_i^2\,\frac{\mathrm{rate}}{1-\mathrm{rate}}.

    Dropped elements are exactly ``+0.0`` (a select, not a multiply, as in Flax), so
    a dropped ``nan`` or ``inf`` does not leak into the output.

    Args:
      key: a PRNG key, ``jax.random.key(seed)`` or legacy ``jax.random.PRNGKey(seed)``
        (any implementation; ``threefry2x32`` keys take the fused path).
      x: floating-point array of any shape (float16, bfloat16, float32, float64).
      rate: the probability of **dropping** an element (not the keep
        probability), in ``[0, 1]``. A Python float or a JAX scalar; a traced rate
        under ``jit`` does not trigger recompilation when its value changes.
        ``rate == 0`` returns ``x`` itself, ``rate == 1`` returns zeros (and zero,
        finite gradients).
      broadcast_dims: axes along which one mask value is shared, as in
        ``flax.linen.Dropout`` (e.g. ``(1, 2)`` drops whole channels of an NHWC
        map). Negative axes allowed.
      deterministic: if True, return ``x`` unchanged (evaluation mode).
      mode: ``"exact"`` (default) draws the mask
        ``jax.random.bernoulli(key, 1 - rate, mask_shape)`` bit for bit, so the
        output equals ``flax.linen.Dropout``'s for the same key; ``"fast"`` uses a
        13-round Threefry (see :mod:`jaxdrop.prng`), same statistics, other bits.

    Returns:
      An array of ``x``'s shape and dtype.

    **Key to mask.** The mask has shape ``x.shape`` with 1 on ``broadcast_dims``;
    its element with row-major index ``i`` is kept iff
    ``(threefry2x32(key, i) >> 9) * 2**-23 < float32(1 - rate)``, where
    ``threefry2x32(key, i)`` is ``jax.random.bits(key, mask_shape)[i]``. The mask
    is generated inside the fused elementwise computation and regenerated, not
    stored, for the backward pass.

    **Traced rates** are clamped to ``[0, 1]``; use :func:`jaxdrop.checked` to
    turn an out-of-range traced rate into an error.

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> x = jnp.ones((2, 4))
    >>> jaxdrop.dropout(jax.random.key(0), x, 0.5)
    Array([[0., 0., 2., 2.],
           [0., 2., 2., 0.]], dtype=float32)
    >>> jaxdrop.dropout(jax.random.key(0), x, 0.5, deterministic=True) is x
    True
    """
    key = prng.as_key(key)
    x = _checks.float_array(x, "dropout")
    rate = _checks.probability(rate, "dropout")
    dims = _checks.axes(broadcast_dims, x.ndim, "dropout")
    prng._rounds(mode)
    if _checks.flag(deterministic, "dropout") or (isinstance(rate, float) and rate == 0.0):
        return x
    if isinstance(rate, float) and rate == 1.0:
        return jnp.zeros_like(x)
    return masked_scale(key, x, rate, mask_shape(x.shape, dims), mode)


def keep_mask(
    key: Any,
    shape: Sequence[int],
    rate: float | jax.Array,
    *,
    broadcast_dims: Sequence[int] = (),
    mode: Mode = "exact",
) -> jax.Array:
    """The boolean keep-mask that :func:`dropout` uses for an input of ``shape``.

    ``True`` marks kept elements (probability ``1 - rate``), broadcast to the full
    ``shape`` along ``broadcast_dims``. So
    ``jnp.where(keep_mask(key, x.shape, rate), x / (1 - rate), 0)`` equals
    ``dropout(key, x, rate)`` for ``0 < rate < 1``.

    >>> import jax, jaxdrop
    >>> jaxdrop.keep_mask(jax.random.key(0), (2, 4), 0.5)
    Array([[False, False,  True,  True],
           [False,  True,  True, False]], dtype=bool)
    """
    key = prng.as_key(key, fn="keep_mask", signature="key, shape, rate")
    shape = tuple(int(s) for s in shape)
    rate = _checks.probability(rate, "keep_mask")
    dims = _checks.axes(broadcast_dims, len(shape), "keep_mask")
    keep = _keep_prob(rate)
    p = np.asarray(keep, _mask_dtype()) if isinstance(keep, float) else keep
    mask = prng.bernoulli(key, p, mask_shape(shape, dims), mode=mode)
    return jnp.broadcast_to(mask, shape)
