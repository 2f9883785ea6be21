"""Channel (spatial) dropout: whole feature maps dropped at once."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxdrop import _checks, prng
from jaxdrop._dropout import masked_scale
from jaxdrop.prng import Mode

__all__ = ["channel_dropout"]


def feature_axes(
    ndim: int, channel_axis: Any, batch_axis: Any, fn: str, *, min_rank: int = 2
) -> tuple[int, int | None]:
    """Validate and normalise ``(channel_axis, batch_axis)`` for an array of rank ``ndim``."""
    if ndim < min_rank:
        raise ValueError(
            f"jaxdrop.{fn}: `x` must have rank >= {min_rank} (a channel axis plus at least one "
            f"other axis, e.g. (N, L, C) or (N, H, W, C)), got rank {ndim}."
        )
    ch = _checks.optional_axis(channel_axis, ndim, fn, "channel_axis")
    if ch is None:
        raise TypeError(f"jaxdrop.{fn}: `channel_axis` must be an int axis, got None.")
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


def channel_dropout(
    key: Any,
    x: Any,
    rate: float | jax.Array,
    *,
    channel_axis: int = -1,
    batch_axis: int | None = 0,
    deterministic: bool = False,
    mode: Mode = "exact",
) -> jax.Array:
    r"""Channel (spatial) dropout (Tompson et al., 2015): drop whole feature maps.

    One Bernoulli variable per (sample, channel), shared over every other axis,
    with inverted scaling:

    .. math::

        m_{n,c} \sim \mathrm{Bernoulli}(1 - \mathrm{rate}), \qquad
        y_{n,\dots,c} = \frac{m_{n,c}}{1 - \mathrm{rate}}\; x_{n,\dots,c}.

    Neighbouring pixels of a feature map are strongly correlated, so dropping
    single activations barely regularises a convolutional network; dropping the
    whole map does. This equals :func:`jaxdrop.dropout` with ``broadcast_dims`` set
    to every axis except ``batch_axis`` and ``channel_axis`` (PyTorch's
    ``Dropout1d/2d/3d``, Keras' ``SpatialDropout1D/2D/3D``), bit for bit.

    Args:
      key: a PRNG key (``jax.random.key(seed)`` or legacy ``PRNGKey``).
      x: floating-point feature map of rank >= 2, e.g. ``(N, L, C)``,
        ``(N, H, W, C)``, ``(N, D, H, W, C)`` (channel-last by default) or
        ``(N, C, H, W)`` with ``channel_axis=1``. With ``batch_axis=None`` the
        input is one unbatched sample, e.g. ``(H, W, C)``. A rank-2 batched input
        ``(N, C)`` has no spatial axis and reduces to ordinary dropout.
      rate: probability of **dropping** a channel, in ``[0, 1]`` (Python float or
        traced scalar; ``0`` returns ``x`` itself, ``1`` returns zeros).
      channel_axis: the channel axis (negative allowed).
      batch_axis: the batch axis, or ``None`` for unbatched input (one mask
        value per channel).
      deterministic: if True, return ``x`` unchanged.
      mode: ``"exact"`` (``jax.random``-identical mask) or ``"fast"``.

    Returns:
      An array of ``x``'s shape and dtype.

    Reference: J. Tompson, R. Goroshin, A. Jain, Y. LeCun, C. Bregler, "Efficient
    Object Localization Using Convolutional Networks", CVPR 2015.

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> y = jaxdrop.channel_dropout(jax.random.key(0), jnp.ones((2, 3, 3, 4)), 0.5)
    >>> y.shape
    (2, 3, 3, 4)
    >>> bool(((y == y[:, :1, :1, :]).all()))  # constant over each feature map
    True
    """
    fn = "channel_dropout"
    key = prng.as_key(key, fn=fn)
    x = _checks.float_array(x, fn)
    rate = _checks.probability(rate, fn)
    ch, batch = feature_axes(x.ndim, channel_axis, batch_axis, fn)
    prng._rounds(mode)
    if _checks.flag(deterministic, fn) or (isinstance(rate, float) and rate == 0.0):
        return x
    if isinstance(rate, float) and rate == 1.0:
        return jnp.zeros_like(x)
    return masked_scale(key, x, rate, feature_mask_shape(x.shape, ch, batch), mode)
