"""Alpha dropout: dropout that keeps SELU networks self-normalising."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxdrop import _checks, prng
from jaxdrop._core import (
    apply_mask,
    compute_dtype,
    feature_axes,
    feature_mask_shape,
    mask_dtype,
    mask_shape,
    short_circuit,
)
from jaxdrop.prng import Mode

__all__ = ["alpha_coefficients", "alpha_dropout", "feature_alpha_dropout"]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA = 1.0507009873554804934193349852946
ALPHA_PRIME = -SELU_LAMBDA * SELU_ALPHA
"""The value SELU saturates to for large negative inputs, -1.7580993408473766."""


def alpha_coefficients(rate: float | jax.Array) -> tuple[Any, Any]:
    r"""The affine correction ``(a, b)`` of alpha dropout for drop probability ``rate < 1``.

    :math:`a = ((1-\mathrm{rate})(1 + \mathrm{rate}\,\alpha'^2))^{-1/2}`,
    :math:`b = -a\,\mathrm{rate}\,\alpha'`. A Python float gives Python floats (computed in
    double precision), a traced rate gives arrays.

    >>> [round(c, 10) for c in alpha_coefficients(0.1)]
    [0.9212845161, 0.1619709701]
    """
    if isinstance(rate, float):
        a = ((1.0 - rate) * (1.0 + rate * ALPHA_PRIME**2)) ** -0.5
        return a, -a * rate * ALPHA_PRIME
    a = lax.rsqrt((1.0 - rate) * (1.0 + rate * ALPHA_PRIME**2))
    return a, -a * rate * ALPHA_PRIME


@functools.partial(jax.custom_jvp, nondiff_argnums=(5, 6))
def _apply_alpha(
    key: jax.Array, x: jax.Array, keep: jax.Array, a: jax.Array, b: jax.Array, shape: tuple[int, ...], mode: Mode
) -> jax.Array:
    """``where(bernoulli(key, keep, shape), a * x + b, a * alpha' + b)``; the mask is
    regenerated from ``key`` for the backward pass instead of stored."""
    return _alpha_select(key, x, keep, a, b, shape, mode)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _alpha_select(
    key: jax.Array, x: jax.Array, keep: jax.Array, a: jax.Array, b: jax.Array, shape: tuple[int, ...], mode: Mode
) -> jax.Array:
    # One compiled kernel for eager calls; inlined under an outer jit.
    mask = jnp.broadcast_to(prng.bernoulli(key, keep, shape, mode=mode), x.shape)
    dropped = jnp.broadcast_to(a * np.asarray(ALPHA_PRIME, x.dtype) + b, x.shape)
    return lax.select(mask, a * x + b, dropped)


def _apply_alpha_jvp(
    shape: tuple[int, ...], mode: Mode, primals: tuple[Any, ...], tangents: tuple[Any, ...]
) -> tuple[jax.Array, jax.Array]:
    key, x, keep, a, b = primals
    _, dx, _, da, db = tangents
    y = _apply_alpha(key, x, keep, a, b, shape, mode)
    zero = jax.custom_derivatives.SymbolicZero
    # d/dx is a * mask: the masking core of inverted dropout (divisor 1), which keeps
    # only the key as a residual and regenerates the mask in reverse mode.
    regen = jax.checkpoint(apply_mask, static_argnums=(4, 5))
    dy = jnp.zeros_like(y) if type(dx) is zero else a * regen(key, dx, keep, np.ones((), x.dtype), shape, mode)
    if type(da) is not zero or type(db) is not zero:
        # Through a traced rate: d(a x~ + b) = da * x~ + db with x~ = where(mask, x, alpha').
        mask = jnp.broadcast_to(prng.bernoulli(key, keep, shape, mode=mode), x.shape)
        x_tilde = jnp.where(mask, x, np.asarray(ALPHA_PRIME, x.dtype))
        if type(da) is not zero:
            dy = dy + da * x_tilde
        if type(db) is not zero:
            dy = dy + db
    return y, dy


_apply_alpha.defjvp(_apply_alpha_jvp, symbolic_zeros=True)


def _alpha(
    key: jax.Array, x: jax.Array, rate: float | jax.Array, shape: tuple[int, ...], mode: Mode
) -> jax.Array:
    dtype = compute_dtype(x.dtype)
    a, b = alpha_coefficients(rate)
    keep: Any
    if isinstance(rate, float):
        keep = np.asarray(1.0 - rate, mask_dtype())
        a_, b_ = np.asarray(a, dtype), np.asarray(b, dtype)
    else:
        keep = 1.0 - rate
        a_, b_ = a.astype(dtype), b.astype(dtype)
    return _apply_alpha(key, x.astype(dtype), keep, a_, b_, shape, mode).astype(x.dtype)


def _alpha_common(
    fn: str, key: ArrayLike, x: ArrayLike, rate: float | jax.Array, deterministic: bool, mode: Mode
) -> tuple[jax.Array, jax.Array, float | jax.Array, Mode, bool]:
    key = prng.as_key(key, fn=fn)
    x = _checks.float_array(x, fn)
    rate = _checks.probability(rate, fn)
    rate = _checks.below_one(rate, fn, "the affine correction a = ((1-rate)(1+rate*alpha'^2))^-1/2 is infinite")
    mode = _checks.mode(mode, fn)
    identity = short_circuit(x, rate, _checks.flag(deterministic, fn), at_one=False) is not None
    return key, x, rate, mode, identity


def alpha_dropout(
    key: ArrayLike,
    x: ArrayLike,
    rate: float | jax.Array,
    *,
    broadcast_dims: Sequence[int] = (),
    deterministic: bool = False,
    mode: Mode = "exact",
) -> jax.Array:
    r"""Alpha dropout (Klambauer et al., 2017): dropout that keeps SELU activations normalised.

    Dropped units are set to SELU's negative saturation value
    :math:`\alpha' = -\lambda\alpha \approx -1.7581` instead of 0, then an affine map
    restores zero mean and unit variance for standard-normal inputs:

    .. math::

        m \sim \mathrm{Bernoulli}(1 - \mathrm{rate}),\quad
        \tilde x = m\,x + (1 - m)\,\alpha',\quad y = a\,\tilde x + b,

        a = \bigl((1-\mathrm{rate})(1 + \mathrm{rate}\,\alpha'^2)\bigr)^{-1/2},\qquad
        b = -a\,\mathrm{rate}\,\alpha'.

    If :math:`x` has mean 0 and variance 1, so has :math:`y`. Use it with SELU
    activations and LeCun-normal initialisation; small rates such as 0.05 or 0.1
    are typical.

    Args:
      key: a PRNG key.
      x: floating-point array of any shape.
      rate: probability of **dropping** a unit, in ``[0, 1)``. A concrete
        ``rate == 1`` raises ``ValueError`` (``a`` is infinite); a traced rate is
        capped just below 1 (reported under :func:`jaxdrop.checked`). ``0``
        returns ``x`` itself.
      broadcast_dims: axes along which one mask value is shared (as in
        :func:`jaxdrop.dropout`).
      deterministic: if True, return ``x`` unchanged.
      mode: ``"exact"`` (the mask is ``jax.random.bernoulli(key, 1 - rate)``, the
        same as :func:`jaxdrop.keep_mask`) or ``"fast"``.

    Returns:
      An array of ``x``'s shape and dtype (half-precision inputs are computed in
      float32 and rounded once).

    Reference: G. Klambauer, T. Unterthiner, A. Mayr, S. Hochreiter,
    "Self-Normalizing Neural Networks", NeurIPS 2017.

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> y = jaxdrop.alpha_dropout(jax.random.key(0), jnp.zeros(4), 0.5)
    >>> y  # dropped: a * alpha' + b = -0.7792; kept: a * 0 + b = 0.7792
    Array([-0.7791939 , -0.7791939 ,  0.77919394,  0.77919394], dtype=float32)
    """
    fn = "alpha_dropout"
    key, x, rate, mode, identity = _alpha_common(fn, key, x, rate, deterministic, mode)
    dims = _checks.axes(broadcast_dims, x.ndim, fn)
    if identity:
        return x
    return _alpha(key, x, rate, mask_shape(x.shape, dims), mode)


def feature_alpha_dropout(
    key: ArrayLike,
    x: ArrayLike,
    rate: float | jax.Array,
    *,
    channel_axis: int = -1,
    batch_axis: int | None = 0,
    deterministic: bool = False,
    mode: Mode = "exact",
) -> jax.Array:
    r"""Alpha dropout of whole channels: :func:`alpha_dropout` with one mask value per (sample, channel).

    The same formula as :func:`alpha_dropout`,
    :math:`y = a\,(m\,x + (1-m)\,\alpha') + b`, with
    :math:`m_{n,c} \sim \mathrm{Bernoulli}(1 - \mathrm{rate})` shared over every axis
    except ``batch_axis`` and ``channel_axis`` (as in :func:`jaxdrop.channel_dropout`;
    PyTorch's ``FeatureAlphaDropout`` is the channel-first case ``channel_axis=1``).

    Args:
      key: a PRNG key.
      x: floating-point array of rank >= 2, channel-last by default.
      rate: probability of **dropping** a channel, in ``[0, 1)`` (``1`` raises).
      channel_axis: the channel axis.
      batch_axis: the batch axis, or ``None`` for unbatched input.
      deterministic: if True, return ``x`` unchanged.
      mode: ``"exact"`` or ``"fast"``.

    Returns:
      An array of ``x``'s shape and dtype.

    Reference: G. Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017.

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> y = jaxdrop.feature_alpha_dropout(jax.random.key(0), jnp.zeros((2, 5, 3)), 0.5)
    >>> bool((y == y[:, :1, :]).all())  # one value per (sample, channel)
    True
    """
    fn = "feature_alpha_dropout"
    key, x, rate, mode, identity = _alpha_common(fn, key, x, rate, deterministic, mode)
    ch, batch = feature_axes(x.ndim, channel_axis, batch_axis, fn)
    if identity:
        return x
    return _alpha(key, x, rate, feature_mask_shape(x.shape, ch, batch), mode)
