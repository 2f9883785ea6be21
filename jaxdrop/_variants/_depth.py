"""Stochastic depth (DropPath): whole samples of a residual branch dropped."""

from __future__ import annotations

import jax
import numpy as np
from jax.typing import ArrayLike

from jaxdrop import _checks, prng
from jaxdrop._core import apply_mask, mask_dtype, masked_scale, short_circuit
from jaxdrop.prng import Mode

__all__ = ["drop_path", "stochastic_depth_rates"]


def drop_path(
    key: ArrayLike,
    x: ArrayLike,
    rate: float | jax.Array,
    *,
    batch_axis: int = 0,
    scale_by_keep: bool = True,
    batch_wise: bool = False,
    deterministic: bool = False,
    mode: Mode = "exact",
) -> jax.Array:
    r"""Stochastic depth / DropPath (Huang et al., 2016): drop a residual branch per sample.

    Apply it to the output of a residual branch, ``h + drop_path(key, f(h), rate)``,
    so that a dropped sample skips the block through the identity shortcut:

    .. math::

        b_n \sim \mathrm{Bernoulli}(1 - \mathrm{rate}),\qquad
        y_{n,\dots} = \frac{b_n}{1 - \mathrm{rate}}\, x_{n,\dots}
        \quad(\text{without the division if } \texttt{scale\_by\_keep=False}).

    One variable per sample along ``batch_axis`` (timm's ``drop_path``,
    torchvision's ``mode="row"``), or, with ``batch_wise=True``, one for the whole
    batch as in the paper (torchvision's ``mode="batch"``). The paper's
    non-inverted form (train without scaling, multiply by the survival probability
    at test) is ``scale_by_keep=False`` plus an explicit ``(1 - rate) * x`` at
    evaluation.

    Args:
      key: a PRNG key.
      x: floating-point array of rank >= 1, the residual branch's output.
      rate: probability of **dropping** the branch for a sample (the paper's
        ``1 - p_l``), in ``[0, 1]``; Python float or traced scalar. ``0`` returns
        ``x`` itself, ``1`` returns zeros. Per-block rates: see
        :func:`stochastic_depth_rates`.
      batch_axis: the axis that indexes samples (negative allowed).
      scale_by_keep: divide kept samples by ``1 - rate`` (inverted; default), so
        evaluation is the identity.
      batch_wise: one draw for the whole batch instead of one per sample.
      deterministic: if True, return ``x`` unchanged.
      mode: ``"exact"`` (mask = ``jax.random.bernoulli(key, 1 - rate, mask_shape)``
        with ``mask_shape`` = ``x.shape`` reduced to 1 except on ``batch_axis``) or
        ``"fast"``.

    Returns:
      An array of ``x``'s shape and dtype.

    Reference: G. Huang, Y. Sun, Z. Liu, D. Sedra, K. Q. Weinberger, "Deep Networks
    with Stochastic Depth", ECCV 2016 (arXiv:1603.09382).

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> y = jaxdrop.drop_path(jax.random.key(1), jnp.ones((4, 3)), 0.5)
    >>> y
    Array([[2., 2., 2.],
           [0., 0., 0.],
           [2., 2., 2.],
           [2., 2., 2.]], dtype=float32)
    """
    fn = "drop_path"
    key = prng.as_key(key, fn=fn)
    x = _checks.float_array(x, fn)
    rate = _checks.probability(rate, fn)
    if x.ndim < 1:
        raise ValueError(f"jaxdrop.{fn}: `x` must have a batch axis (rank >= 1), got a scalar.")
    batch = _checks.axis(batch_axis, x.ndim, fn, "batch_axis")
    scale = _checks.flag(scale_by_keep, fn, "scale_by_keep")
    whole = _checks.flag(batch_wise, fn, "batch_wise")
    mode = _checks.mode(mode, fn)
    trivial = short_circuit(x, rate, _checks.flag(deterministic, fn))
    if trivial is not None:
        return trivial
    shape = tuple(s if (d == batch and not whole) else 1 for d, s in enumerate(x.shape))
    if scale:
        return masked_scale(key, x, rate, shape, mode)
    keep = np.asarray(1.0 - rate, mask_dtype()) if isinstance(rate, float) else 1.0 - rate
    return apply_mask(key, x, keep, np.ones((), x.dtype), shape, mode)


def stochastic_depth_rates(rate: float, depth: int, *, first_zero: bool = True) -> tuple[float, ...]:
    r"""Per-block drop rates of the linear decay rule of stochastic depth.

    Deeper blocks are dropped more often, up to ``rate``:

    - ``first_zero=True`` (timm, ViT/DeiT/Swin/ConvNeXt recipes):
      :math:`r_l = \mathrm{rate}\cdot l/(L-1)` for :math:`l = 0..L-1`, i.e.
      ``linspace(0, rate, depth)``; the first block is never dropped.
    - ``first_zero=False`` (the paper, Huang et al. 2016):
      :math:`r_l = \mathrm{rate}\cdot l/L` for :math:`l = 1..L` (survival
      :math:`p_l = 1 - \frac{l}{L}(1 - p_L)`); the first block has ``rate / L``.

    Both end at ``rate``. The paper uses ``rate = 0.5`` (``p_L = 0.5``).

    Args:
      rate: drop rate of the deepest block, a Python number in ``[0, 1]``.
      depth: number of blocks ``L``, an int >= 1 (``first_zero=True`` with
        ``depth=1`` gives ``(0.0,)``, as ``linspace`` does).
      first_zero: which convention (see above). The ``first_zero=True`` values are
        exactly ``numpy.linspace(0, rate, depth)`` (float64).

    Returns:
      A tuple of ``depth`` Python floats, for block 1 (nearest the input) first.

    >>> from jaxdrop import stochastic_depth_rates
    >>> stochastic_depth_rates(0.2, 5)
    (0.0, 0.05, 0.1, 0.15000000000000002, 0.2)
    >>> stochastic_depth_rates(0.5, 4, first_zero=False)
    (0.125, 0.25, 0.375, 0.5)
    """
    fn = "stochastic_depth_rates"
    if isinstance(rate, jax.core.Tracer):
        raise TypeError(f"jaxdrop.{fn}: `rate` must be a Python number (the result is a tuple of floats).")
    r = _checks.probability(rate, fn)
    assert isinstance(r, float)
    n = _checks.integer(depth, fn, "depth", minimum=1)
    if _checks.flag(first_zero, fn, "first_zero"):
        return tuple(float(v) for v in np.linspace(0.0, r, n))
    return tuple(r * i / n for i in range(1, n + 1))
