"""Gaussian multiplicative dropout and additive Gaussian noise."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxdrop import _checks, prng
from jaxdrop._core import compute_dtype, mask_shape, short_circuit
from jaxdrop.prng import Mode

__all__ = ["gaussian_dropout", "gaussian_noise"]


def _noise(key: jax.Array, shape: tuple[int, ...], dtype: Any, mode: Mode) -> jax.Array:
    return prng.normal(key, shape, dtype, mode=mode)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _apply_gaussian(
    key: jax.Array, x: jax.Array, sigma: jax.Array, shape: tuple[int, ...], mode: Mode
) -> jax.Array:
    """``x * (1 + sigma * eps)``, eps ~ N(0, 1) of ``shape``; the noise is regenerated, not stored."""
    return _gaussian_mul(key, x, sigma, shape, mode)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _gaussian_mul(
    key: jax.Array, x: jax.Array, sigma: jax.Array, shape: tuple[int, ...], mode: Mode
) -> jax.Array:
    dtype = compute_dtype(x.dtype)
    noise = 1 + sigma.astype(dtype) * _noise(key, shape, dtype, mode)
    return (x.astype(dtype) * noise).astype(x.dtype)


def _times_eps(key: jax.Array, x: jax.Array, shape: tuple[int, ...], mode: Mode) -> jax.Array:
    dtype = compute_dtype(x.dtype)
    return (x.astype(dtype) * _noise(key, shape, dtype, mode)).astype(x.dtype)


def _apply_gaussian_jvp(
    shape: tuple[int, ...], mode: Mode, primals: tuple[Any, ...], tangents: tuple[Any, ...]
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
    key: ArrayLike,
    x: ArrayLike,
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
    mode = _checks.mode(mode, fn)
    trivial = short_circuit(x, rate, _checks.flag(deterministic, fn), at_one=False)
    if trivial is not None:
        return trivial
    dtype = compute_dtype(x.dtype)
    if isinstance(rate, float):
        sigma: Any = np.asarray(math.sqrt(rate / (1.0 - rate)), dtype)
    else:
        # Double where: the derivative of sqrt at rate 0 is infinite; use 0 there.
        positive = rate > 0
        safe = jnp.where(positive, rate, 0.5)
        sigma = jnp.where(positive, jnp.sqrt(safe / (1 - safe)), 0.0).astype(dtype)
    return _apply_gaussian(key, x, sigma, mask_shape(x.shape, dims), mode)


def gaussian_noise(
    key: ArrayLike,
    x: ArrayLike,
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
    mode = _checks.mode(mode, fn)
    trivial = short_circuit(x, stddev, _checks.flag(deterministic, fn), at_one=False)
    if trivial is not None:
        return trivial
    dtype = compute_dtype(x.dtype)
    s = np.asarray(stddev, dtype) if isinstance(stddev, float) else stddev.astype(dtype)
    return _add_noise(key, x, s, mode)


@functools.partial(jax.jit, static_argnums=(3,))
def _add_noise(key: jax.Array, x: jax.Array, stddev: jax.Array, mode: Mode) -> jax.Array:
    dtype = compute_dtype(x.dtype)
    return (x.astype(dtype) + stddev * _noise(key, x.shape, dtype, mode)).astype(x.dtype)
