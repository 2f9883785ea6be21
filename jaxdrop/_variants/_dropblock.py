"""DropBlock: contiguous square (cubic) regions of a feature map dropped together."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxdrop import _checks, prng
from jaxdrop._core import feature_axes, mask_dtype, short_circuit
from jaxdrop.prng import Mode

__all__ = ["dropblock", "dropblock_gamma", "dropblock_mask"]

_LAYOUT_HINT = (
    "DropBlock works on 2-D maps (N, H, W, C) or 3-D maps (N, D, H, W, C): every axis except "
    "`batch_axis` and `channel_axis` is spatial, and there must be 2 or 3 of them"
)


def _spatial_axes(
    shape: tuple[int, ...], channel_axis: Any, batch_axis: Any, fn: str
) -> tuple[int, int | None, tuple[int, ...]]:
    ndim = len(shape)
    if ndim < 3:
        raise ValueError(f"jaxdrop.{fn}: {_LAYOUT_HINT}; got an array of shape {shape}.")
    ch, batch = feature_axes(ndim, channel_axis, batch_axis, fn)
    spatial = tuple(d for d in range(ndim) if d not in (ch, batch))
    if len(spatial) not in (2, 3):
        raise ValueError(
            f"jaxdrop.{fn}: {_LAYOUT_HINT}; got shape {shape} with channel_axis={channel_axis}, "
            f"batch_axis={batch_axis}, which leaves {len(spatial)} spatial axes. "
            "For unbatched input pass batch_axis=None; for 1-D sequences use channel_dropout or dropout."
        )
    return ch, batch, spatial


def dropblock_gamma(
    rate: float | jax.Array, spatial_shape: Sequence[int], block_size: int
) -> float | jax.Array:
    r"""The seed probability :math:`\gamma` of DropBlock (Ghiasi et al. 2018, eq. 1).

    .. math::

        \gamma = \mathrm{rate}\;\frac{\prod_d S_d}{\prod_d b_d\;\prod_d (S_d - b_d + 1)},
        \qquad b_d = \min(\mathrm{block\_size}, S_d),

    for a map of spatial extents :math:`S_d` (2 or 3 of them). Seeds are drawn only
    where a whole block fits, and every element is covered by at most
    :math:`\prod_d b_d` of them, so :math:`\gamma \le \mathrm{rate}`. Overlapping
    blocks make the realised drop fraction :math:`1 - (1-\gamma)^{n}` averaged over
    positions (``n`` = number of block positions covering each element), a little
    below ``rate`` (about 0.094 for rate 0.1, ``block_size`` 7, a 56x56 map).

    >>> round(dropblock_gamma(0.1, (56, 56), 7), 8)  # 0.1 * 56**2 / (7**2 * 50**2)
    0.00256
    >>> dropblock_gamma(0.3, (5, 5), 7)  # block clipped to the map: whole-map drop
    0.3
    """
    fn = "dropblock_gamma"
    rate = _checks.probability(rate, fn)
    spatial_shape = _checks.shape(spatial_shape, fn, "spatial_shape")
    if len(spatial_shape) not in (2, 3) or 0 in spatial_shape:
        raise ValueError(
            f"jaxdrop.{fn}: `spatial_shape` must hold 2 or 3 positive extents (H, W) or (D, H, W), "
            f"got {spatial_shape}."
        )
    block_size = _checks.integer(block_size, fn, "block_size", minimum=1)
    return _gamma(rate, spatial_shape, block_size)


def _gamma(rate: float | jax.Array, spatial_shape: Sequence[int], block_size: int) -> float | jax.Array:
    """:func:`dropblock_gamma` for arguments already validated by the caller."""
    blocks = [min(block_size, s) for s in spatial_shape]
    area = math.prod(spatial_shape)
    valid = math.prod(s - b + 1 for s, b in zip(spatial_shape, blocks, strict=True))
    return rate * (area / (math.prod(blocks) * valid))


def _keep_mask(
    key: jax.Array,
    shape: tuple[int, ...],
    p: jax.Array,
    block_size: int,
    spatial: tuple[int, ...],
    mode: Mode,
) -> jax.Array:
    """Boolean keep mask of ``shape``: False on the union of blocks seeded with probability ``p``."""
    ndim = len(shape)
    blocks = {d: min(block_size, shape[d]) for d in spatial}
    # One seed per (sample, channel, top-left corner of a block that fits in the map).
    seed_shape = tuple(s - blocks[d] + 1 if d in spatial else s for d, s in enumerate(shape))
    seeds = prng.bernoulli(key, p, seed_shape, mode=mode).astype(jnp.uint8)
    # Element i is dropped iff a seed sits at a corner s with s <= i < s + b on every
    # spatial axis: a max-pool of the zero-padded seed grid, window b, stride 1.
    window = tuple(blocks.get(d, 1) for d in range(ndim))
    padding = tuple((blocks[d] - 1, blocks[d] - 1) if d in spatial else (0, 0) for d in range(ndim))
    dropped = lax.reduce_window(seeds, np.uint8(0), lax.max, window, (1,) * ndim, padding)
    return dropped == 0


def dropblock_mask(
    key: ArrayLike,
    shape: Sequence[int],
    rate: float | jax.Array,
    *,
    block_size: int = 7,
    channel_axis: int = -1,
    batch_axis: int | None = 0,
    mode: Mode = "exact",
) -> jax.Array:
    """The boolean keep mask :func:`dropblock` uses for an input of ``shape``.

    ``True`` marks kept elements; the dropped elements are a union of
    ``block_size``-sized squares (cubes), independently per (sample, channel).
    ``dropblock(key, x, rate, ...)`` equals ``where(mask, x * scale, 0)`` with
    ``scale`` the per-sample count ratio (see :func:`dropblock`), for ``0 < rate < 1``.

    >>> import jax, jaxdrop
    >>> m = jaxdrop.dropblock_mask(jax.random.key(3), (1, 6, 6, 1), 0.5, block_size=3)
    >>> print(m[0, :, :, 0].astype(int))
    [[0 0 0 1 1 1]
     [0 0 0 0 0 1]
     [0 0 0 0 0 1]
     [1 1 0 0 0 0]
     [1 1 1 0 0 0]
     [1 1 1 0 0 0]]
    """
    fn = "dropblock_mask"
    key = prng.as_key(key, fn=fn, signature="key, shape, rate")
    shape = _checks.shape(shape, fn)
    rate = _checks.probability(rate, fn)
    bs = _checks.integer(block_size, fn, "block_size", minimum=1)
    _, _, spatial = _spatial_axes(shape, channel_axis, batch_axis, fn)
    mode = _checks.mode(mode, fn)
    if math.prod(shape) == 0:
        return jnp.ones(shape, bool)
    gamma = _gamma(rate, [shape[d] for d in spatial], bs)
    p = np.asarray(gamma, mask_dtype()) if isinstance(gamma, float) else gamma
    return _jit_keep_mask(key, shape, p, bs, spatial, mode)


_jit_keep_mask = jax.jit(_keep_mask, static_argnums=(1, 3, 4, 5))


def dropblock(
    key: ArrayLike,
    x: ArrayLike,
    rate: float | jax.Array,
    *,
    block_size: int = 7,
    channel_axis: int = -1,
    batch_axis: int | None = 0,
    deterministic: bool = False,
    eps: float = 1e-6,
    mode: Mode = "exact",
) -> jax.Array:
    r"""DropBlock (Ghiasi et al., 2018): drop contiguous ``block_size`` squares of each feature map.

    Dropout of single activations barely regularises convolutional features,
    whose neighbours carry the same information; DropBlock drops whole regions.
    For every (sample, channel) independently (the paper's Algorithm 1):

    1. Draw seeds :math:`s \sim \mathrm{Bernoulli}(\gamma)` at each position where a
       whole block fits in the map (the paper's *valid centres*), with

       .. math::

           \gamma = \mathrm{rate}\,\frac{\prod_d S_d}{\prod_d b_d\,\prod_d (S_d - b_d + 1)},
           \qquad b_d = \min(\mathrm{block\_size}, S_d)

       (see :func:`jaxdrop.dropblock_gamma`).
    2. Zero the :math:`b_1 \times b_2\,(\times b_3)` block of every seed:
       mask :math:`M = 1 - \mathrm{maxpool}_b(s)`.
    3. Rescale by the kept count: :math:`y = x \odot M \cdot \frac{|M|}{\epsilon + \sum M}`.

    **Choices, documented.**

    - *Block placement and even sizes.* A seed marks the top-left corner of its
      block, drawn uniformly over the :math:`S_d - b_d + 1` positions where the
      block fits. For odd ``block_size`` this is exactly the paper's rule of
      centres in ``[b//2, S - b//2)``. Even sizes are accepted (torchvision
      raises): the block has no centre cell, and the corner rule keeps every
      statistic above unchanged.
    - *Small maps.* A block larger than the map is clipped to it, per axis; if it
      covers the whole map, :math:`\gamma = \mathrm{rate}` and each (sample,
      channel) map is dropped whole with probability ``rate`` (the mask of
      :func:`jaxdrop.channel_dropout`, with the count-ratio rescaling below).
    - *Normalisation scope.* :math:`|M|` and :math:`\sum M` are counted **per
      sample** (over its spatial axes and channels), not over the whole batch as in
      the TF reference and torchvision. Samples stay independent of each other, the
      result is the same under ``vmap`` over samples, and a batch sharded across
      devices needs no cross-device reduction. With ``batch_axis=None`` the scope
      is the whole array.
    - *Realised rate.* Blocks overlap, so less than ``rate`` of the elements are
      dropped: element :math:`i`, covered by :math:`n_i` seed positions, is dropped
      with probability :math:`1 - (1-\gamma)^{n_i}`. That is 0.094 for
      ``rate=0.1``, ``block_size=7`` on a 56x56 map, but 0.39 for ``rate=0.5``,
      ``block_size=3`` on 16x16. The paper's formula for :math:`\gamma` is kept as is.
    - *Expectation.* The count-ratio rescaling keeps each sample's total (for a
      constant input, a sample that keeps anything keeps its sum), not each
      element's expectation: a sample whose every element is dropped gives zeros.
      When the block covers the map, a sample with ``C`` channels is dropped whole
      with probability :math:`\mathrm{rate}^C`, so for a constant ``x``,
      :math:`\mathbb{E}[y] = (1 - \mathrm{rate}^C)\,x` (0.5 x for one channel
      at ``rate=0.5``); with many channels or small blocks it is ``x`` to within
      that probability.
    - ``rate == 1`` returns zeros (as every jaxdrop function does), also for a
      traced rate.
    - The mask is not stored for the backward pass: it is regenerated from ``key``
      (``jax.checkpoint``), so reverse mode keeps no per-element residual.

    Args:
      key: a PRNG key.
      x: floating-point array with 2 or 3 spatial axes: ``(N, H, W, C)`` or
        ``(N, D, H, W, C)`` by default, ``(N, C, H, W)`` with ``channel_axis=1``,
        ``(H, W, C)`` with ``batch_axis=None``.
      rate: the target **drop** probability (the paper's ``1 - keep_prob``), in
        ``[0, 1]``; Python float or traced scalar. ``0`` returns ``x`` itself. The
        paper recommends ramping it up linearly from 0 during training
        (see :mod:`jaxdrop.schedules`); 0.1 with ``block_size=7`` for ResNet-50.
      block_size: side of the square (cubic) block, an int >= 1 (``1`` is
        ordinary dropout with a count-ratio rescaling).
      channel_axis: the channel axis.
      batch_axis: the batch axis, or ``None`` for one unbatched sample.
      deterministic: if True, return ``x`` unchanged.
      eps: added to the kept count before dividing (a fully dropped sample gives
        zeros, not NaN); finite, ``>= 0``.
      mode: ``"exact"`` (seeds are ``jax.random.bernoulli(key, gamma, seed_shape)``)
        or ``"fast"``.

    Returns:
      An array of ``x``'s shape and dtype.

    Reference: G. Ghiasi, T.-Y. Lin, Q. V. Le, "DropBlock: A regularization method
    for convolutional networks", NeurIPS 2018 (arXiv:1810.12890).

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> y = jaxdrop.dropblock(jax.random.key(0), jnp.ones((2, 32, 32, 4)), 0.1, block_size=5)
    >>> y.shape, y.dtype
    ((2, 32, 32, 4), dtype('float32'))
    >>> bool(jnp.allclose(y.mean(axis=(1, 2, 3)), 1.0))  # per-sample count-ratio rescaling
    True
    """
    fn = "dropblock"
    key = prng.as_key(key, fn=fn)
    x = _checks.float_array(x, fn)
    rate = _checks.probability(rate, fn)
    bs = _checks.integer(block_size, fn, "block_size", minimum=1)
    _, batch, spatial = _spatial_axes(x.shape, channel_axis, batch_axis, fn)
    eps_ = _checks.nonnegative(eps, fn, "eps")
    mode = _checks.mode(mode, fn)
    trivial = short_circuit(x, rate, _checks.flag(deterministic, fn))
    if trivial is not None:
        return trivial
    if x.size == 0:
        return x
    gamma = _gamma(rate, [x.shape[d] for d in spatial], bs)
    p = np.asarray(gamma, mask_dtype()) if isinstance(gamma, float) else gamma
    e = np.asarray(eps_, np.float32) if isinstance(eps_, float) else eps_.astype(jnp.float32)
    # Checkpointed: the backward pass regenerates the mask from the key instead of storing it.
    y = jax.checkpoint(_dropblock, static_argnums=(4, 5, 6, 7))(key, x, p, e, bs, spatial, batch, mode)
    if not isinstance(rate, float):
        y = jnp.where(rate < 1, y, jnp.zeros_like(y))
    return y


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _dropblock(
    key: jax.Array,
    x: jax.Array,
    gamma: jax.Array,
    eps: jax.Array,
    block_size: int,
    spatial: tuple[int, ...],
    batch: int | None,
    mode: Mode,
) -> jax.Array:
    # One compiled kernel for eager calls; inlined under an outer jit.
    keep = _keep_mask(key, x.shape, gamma, block_size, spatial, mode)
    per_sample = tuple(d for d in range(x.ndim) if d != batch)
    numel = math.prod(x.shape[d] for d in per_sample)
    # Rescale in float32 (float64 for float64 input), round once to x's dtype.
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    count = jnp.sum(keep, axis=per_sample, keepdims=True, dtype=jnp.int32).astype(dtype)
    scaled = (x.astype(dtype) * (numel / (eps.astype(dtype) + count))).astype(x.dtype)
    return lax.select(keep, scaled, jnp.zeros_like(x))
