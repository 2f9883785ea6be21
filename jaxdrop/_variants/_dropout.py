"""Standard (inverted) dropout and its keep-mask."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxdrop import _checks, prng
from jaxdrop._core import keep_prob, mask_dtype, mask_shape, masked_scale, short_circuit
from jaxdrop.prng import Mode

__all__ = ["dropout", "keep_mask"]


def dropout(
    key: ArrayLike,
    x: ArrayLike,
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

    **Traced rates** are clamped to ``[0, 1]`` (a NaN rate drops everything); use
    :func:`jaxdrop.checked` to turn an out-of-range traced rate into an error.

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> x = jnp.ones((2, 4))
    >>> jaxdrop.dropout(jax.random.key(0), x, 0.5)
    Array([[0., 0., 2., 2.],
           [0., 2., 2., 0.]], dtype=float32)
    >>> jaxdrop.dropout(jax.random.key(0), x, 0.5, deterministic=True) is x
    True
    """
    fn = "dropout"
    key = prng.as_key(key, fn=fn)
    x = _checks.float_array(x, fn)
    rate = _checks.probability(rate, fn)
    dims = _checks.axes(broadcast_dims, x.ndim, fn)
    mode = _checks.mode(mode, fn)
    trivial = short_circuit(x, rate, _checks.flag(deterministic, fn))
    if trivial is not None:
        return trivial
    return masked_scale(key, x, rate, mask_shape(x.shape, dims), mode)


def keep_mask(
    key: ArrayLike,
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
    fn = "keep_mask"
    key = prng.as_key(key, fn=fn, signature="key, shape, rate")
    shape = _checks.shape(shape, fn)
    rate = _checks.probability(rate, fn)
    dims = _checks.axes(broadcast_dims, len(shape), fn)
    mode = _checks.mode(mode, fn)
    keep = keep_prob(rate)
    p = np.asarray(keep, mask_dtype()) if isinstance(keep, float) else keep
    mask = prng.bernoulli(key, p, mask_shape(shape, dims), mode=mode)
    return jnp.broadcast_to(mask, shape)
