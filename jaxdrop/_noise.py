"""Alpha dropout (SELU networks), Gaussian multiplicative dropout and additive Gaussian noise."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdrop import _checks, prng
from jaxdrop._channel import feature_axes, feature_mask_shape
from jaxdrop._dropout import _mask_dtype, apply_mask, mask_shape
from jaxdrop.prng import Mode

__all__ = ["alpha_dropout", "feature_alpha_dropout", "gaussian_dropout", "gaussian_noise"]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA = 1.0507009873554804934193349852946
ALPHA_PRIME = -SELU_LAMBDA * SELU_ALPHA
"""The value SELU saturates to for large negative inputs, -1.7580993408473766."""


def _compute_dtype(dtype: Any) -> Any:
    """float32 for half-precision inputs (noise and affine maps are computed there), else dtype."""
    return jnp.promote_types(dtype, jnp.float32)


# --------------------------------------------------------------------------- alpha dropout


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
    key: jax.Array, x: jax.Array, keep: jax.Array, a: jax.Array, b: jax.Array, shape: tuple[int, ...], mode: str
) -> jax.Array:
    """``where(bernoulli(key, keep, shape), a * x + b, a * alpha' + b)``; the mask is
    regenerated from ``key`` for the backward pass instead of stored."""
    return _alpha_select(key, x, keep, a, b, shape, mode)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _alpha_select(
    key: jax.Array, x: jax.Array, keep: jax.Array, a: jax.Array, b: jax.Array, shape: tuple[int, ...], mode: str
) -> jax.Array:
    # One compiled kernel for eager calls; inlined under an outer jit.
    mask = jnp.broadcast_to(prng.bernoulli(key, keep, shape, mode=mode), x.shape)  # type: ignore[arg-type]
    dropped = jnp.broadcast_to(a * np.asarray(ALPHA_PRIME, x.dtype) + b, x.shape)
    return lax.select(mask, a * x + b, dropped)


def _apply_alpha_jvp(
    shape: tuple[int, ...], mode: str, primals: tuple[Any, ...], tangents: tuple[Any, ...]
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
        mask = jnp.broadcast_to(prng.bernoulli(key, keep, shape, mode=mode), x.shape)  # type: ignore[arg-type]
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
    dtype = _compute_dtype(x.dtype)
    a, b = alpha_coefficients(rate)
    keep: Any
    if isinstance(rate, float):
        keep = np.asarray(1.0 - rate, _mask_dtype())
        a_, b_ = np.asarray(a, dtype), np.asarray(b, dtype)
    else:
        keep = 1.0 - rate
        a_, b_ = a.astype(dtype), b.astype(dtype)
    return _apply_alpha(key, x.astype(dtype), keep, a_, b_, shape, mode).astype(x.dtype)


def _alpha_common(
    fn: str, key: Any, x: Any, rate: Any, deterministic: Any, mode: Mode
) -> tuple[jax.Array, jax.Array, float | jax.Array, bool]:
    key = prng.as_key(key, fn=fn)
    x = _checks.float_array(x, fn)
    rate = _checks.probability(rate, fn)
    rate = _checks.below_one(rate, fn, "the affine correction a = ((1-rate)(1+rate*alpha'^2))^-1/2 is infinite")
    prng._rounds(mode)
    identity = _checks.flag(deterministic, fn) or (isinstance(rate, float) and rate == 0.0)
    return key, x, rate, identity


def alpha_dropout(
    key: Any,
    x: Any,
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
    key, x, rate, identity = _alpha_common(fn, key, x, rate, deterministic, mode)
    dims = _checks.axes(broadcast_dims, x.ndim, fn)
    if identity:
        return x
    return _alpha(key, x, rate, mask_shape(x.shape, dims), mode)


def feature_alpha_dropout(
    key: Any,
    x: Any,
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
    key, x, rate, identity = _alpha_common(fn, key, x, rate, deterministic, mode)
    ch, batch = feature_axes(x.ndim, channel_axis, batch_axis, fn)
    if identity:
        return x
    return _alpha(key, x, rate, feature_mask_shape(x.shape, ch, batch), mode)


# --------------------------------------------------------------------------- Gaussian dropout


def _noise(key: jax.Array, shape: tuple[int, ...], dtype: Any, mode: str) -> jax.Array:
    return prng.normal(key, shape, dtype, mode=mode)  # type: ignore[arg-type]


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _apply_gaussian(
    key: jax.Array, x: jax.Array, sigma: jax.Array, shape: tuple[int, ...], mode: str
) -> jax.Array:
    """``x * (1 + sigma * eps)``, eps ~ N(0, 1) of ``shape``; the noise is regenerated, not stored."""
    return _gaussian_mul(key, x, sigma, shape, mode)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _gaussian_mul(
    key: jax.Array, x: jax.Array, sigma: jax.Array, shape: tuple[int, ...], mode: str
) -> jax.Array:
    dtype = _compute_dtype(x.dtype)
    noise = 1 + sigma.astype(dtype) * _noise(key, shape, dtype, mode)
    return (x.astype(dtype) * noise).astype(x.dtype)


def _times_eps(key: jax.Array, x: jax.Array, shape: tuple[int, ...], mode: str) -> jax.Array:
    dtype = _compute_dtype(x.dtype)
    return (x.astype(dtype) * _noise(key, shape, dtype, mode)).astype(x.dtype)


def _apply_gaussian_jvp(
    shape: tuple[int, ...], mode: str, primals: tuple[Any, ...], tangents: tuple[Any, ...]
) -> tuple[jax.Array, jax.Array]:
    key, x, sigma = primals
    _, dx, dsigma = tangents
    y = _apply_gaussian(key, x, sigma, shape, mode)
    # Linear in dx: reverse mode keeps (key, sigma) and regenerates the noise.
    regen = jax.checkpoint(_apply_gaussian, static_argnums=(3, 4))
    dy = (
        jnp.zeros_like(y)
        if type(dx) is jax.custom_derivatives.SymbolicZero
        else regen(key, dx, sigma, shape, mode)
    )
    if type(dsigma) is not jax.custom_derivatives.SymbolicZero:
        dy = dy + _times_eps(key, x, shape, mode) * dsigma.astype(x.dtype)
    return y, dy


_apply_gaussian.defjvp(_apply_gaussian_jvp, symbolic_zeros=True)


def gaussian_dropout(
    key: Any,
    x: Any,
    rate: float | jax.Array,
    *,
    broadcast_dims: Sequence[int] = (),
    deterministic: bool = False,
    mode: Mode = "exact",
) -> jax.Array:
    r"""Gaussian (multiplicative) dropout (Srivastava et al., 2014, section 10).

    Each unit is multiplied by mean-one Gaussian noise whose variance matches
    inverted Bernoulli dropout of the same ``rate``:

    .. math::

        y = x \odot (1 + \sigma\,\varepsilon),\qquad \varepsilon \sim \mathcal N(0, 1),
        \qquad \sigma^2 = \frac{\mathrm{rate}}{1 - \mathrm{rate}},

    so :math:`\mathbb E[y] = x` and :math:`\mathrm{Var}[y_i] = x_i^2\,\mathrm{rate}/(1-\mathrm{rate})`,
    as for :func:`jaxdrop.dropout`. ``rate = 0.5`` gives the paper's N(1, 1)
    noise. Kingma et al. (2015) write the variance as alpha = rate/(1 - rate).

    Args:
      key: a PRNG key.
      x: floating-point array of any shape.
      rate: the **drop** probability whose variance is matched, in ``[0, 1)``;
        the noise variance is ``rate / (1 - rate)``. A concrete ``rate == 1``
        raises ``ValueError`` (infinite variance); a traced rate is capped just
        below 1. ``0`` returns ``x`` itself.
      broadcast_dims: axes along which one noise value is shared.
      deterministic: if True, return ``x`` unchanged.
      mode: ``"exact"`` (noise equals ``jax.random.normal(key, noise_shape)`` in
        float32, float64 for float64 inputs) or ``"fast"``.

    Returns:
      An array of ``x``'s shape and dtype. The noise is regenerated from ``key``
      in the backward pass instead of being stored.

    Reference: N. Srivastava, G. Hinton, A. Krizhevsky, I. Sutskever,
    R. Salakhutdinov, "Dropout: A Simple Way to Prevent Neural Networks from
    Overfitting", JMLR 15, 2014 (section 10).

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> y = jaxdrop.gaussian_dropout(jax.random.key(0), jnp.ones((1000,)), 0.5)
    >>> bool(abs(y.mean() - 1) < 0.2), bool(abs(y.std() - 1) < 0.2)
    (True, True)
    """
    fn = "gaussian_dropout"
    key = prng.as_key(key, fn=fn)
    x = _checks.float_array(x, fn)
    rate = _checks.probability(rate, fn)
    rate = _checks.below_one(rate, fn, "the noise variance rate/(1-rate) is infinite")
    dims = _checks.axes(broadcast_dims, x.ndim, fn)
    prng._rounds(mode)
    if _checks.flag(deterministic, fn) or (isinstance(rate, float) and rate == 0.0):
        return x
    dtype = _compute_dtype(x.dtype)
    if isinstance(rate, float):
        sigma: Any = np.asarray(math.sqrt(rate / (1.0 - rate)), dtype)
    else:
        # Double where: the derivative of sqrt at rate 0 is infinite; use 0 there.
        positive = rate > 0
        safe = jnp.where(positive, rate, 0.5)
        sigma = jnp.where(positive, jnp.sqrt(safe / (1 - safe)), 0.0).astype(dtype)
    return _apply_gaussian(key, x, sigma, mask_shape(x.shape, dims), mode)


def gaussian_noise(
    key: Any,
    x: Any,
    stddev: float | jax.Array,
    *,
    deterministic: bool = False,
    mode: Mode = "exact",
) -> jax.Array:
    r"""Additive Gaussian noise: :math:`y = x + \mathrm{stddev}\cdot\varepsilon`, :math:`\varepsilon \sim \mathcal N(0, 1)`.

    A simple regulariser and data augmentation (Keras' ``GaussianNoise``), active
    only in training.

    Args:
      key: a PRNG key.
      x: floating-point array of any shape.
      stddev: the noise's standard deviation, a finite number ``>= 0`` (not a
        probability; values above 1 are allowed). Python float or traced scalar;
        a concrete ``0`` returns ``x`` itself. A traced negative or NaN value is
        treated as 0 (reported under :func:`jaxdrop.checked`).
      deterministic: if True, return ``x`` unchanged.
      mode: ``"exact"`` (noise equals ``jax.random.normal(key, x.shape)`` in
        float32, float64 for float64 inputs) or ``"fast"``.

    Returns:
      An array of ``x``'s shape and dtype.

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> y = jaxdrop.gaussian_noise(jax.random.key(0), jnp.zeros((1000,)), 2.0)
    >>> bool(abs(y.std() - 2) < 0.2)
    True
    """
    fn = "gaussian_noise"
    key = prng.as_key(key, fn=fn, signature="key, x, stddev")
    x = _checks.float_array(x, fn)
    stddev = _checks.nonnegative(stddev, fn, "stddev")
    prng._rounds(mode)
    if _checks.flag(deterministic, fn) or (isinstance(stddev, float) and stddev == 0.0):
        return x
    dtype = _compute_dtype(x.dtype)
    s = np.asarray(stddev, dtype) if isinstance(stddev, float) else stddev.astype(dtype)
    return _add_noise(key, x, s, mode)


@functools.partial(jax.jit, static_argnums=(3,))
def _add_noise(key: jax.Array, x: jax.Array, stddev: jax.Array, mode: str) -> jax.Array:
    dtype = _compute_dtype(x.dtype)
    return (x.astype(dtype) + stddev * _noise(key, x.shape, dtype, mode)).astype(x.dtype)
