"""Channel (spatial) dropout: whole feature maps dropped at once."""

from __future__ import annotations

import jax
from jax.typing import ArrayLike

from jaxdrop import _checks, prng
from jaxdrop._core import feature_axes, feature_mask_shape, masked_scale, short_circuit
from jaxdrop.prng import Mode

__all__ = ["channel_dropout"]


def channel_dropout(
    key: ArrayLike,
    x: ArrayLike,
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
    mode = _checks.mode(mode, fn)
    trivial = short_circuit(x, rate, _checks.flag(deterministic, fn))
    if trivial is not None:
        return trivial
    return masked_scale(key, x, rate, feature_mask_shape(x.shape, ch, batch), mode)
