"""DropConnect: dropout on the weights of a layer instead of its activations."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxdrop import _checks, prng
from jaxdrop._core import masked_scale, short_circuit
from jaxdrop.prng import Mode

__all__ = ["dropconnect", "dropconnect_dense"]


def dropconnect(
    key: ArrayLike,
    w: ArrayLike,
    rate: float | jax.Array,
    *,
    deterministic: bool = False,
    mode: Mode = "exact",
) -> jax.Array:
    r"""DropConnect (Wan et al., 2013): drop individual weights, inverted scaling.

    .. math::

        M_{ij} \sim \mathrm{Bernoulli}(1 - \mathrm{rate}),\qquad
        \tilde W = \frac{M \odot W}{1 - \mathrm{rate}},

    one mask per call, shared by everything the returned weights are applied to
    (the whole batch, every time step: AWD-LSTM's ``WeightDrop``). For a
    different mask per example, ``jax.vmap`` over keys (it costs a mask per
    example). The paper's inference uses a Gaussian moment-matching
    approximation; with inverted scaling, evaluation simply uses ``W``
    (``deterministic=True``).

    Args:
      key: a PRNG key.
      w: floating-point weight array of any shape (a kernel, a recurrent matrix).
      rate: probability of **dropping** a weight (the paper's ``p`` is the keep
        probability, 0.5 there), in ``[0, 1]``; ``0`` returns ``w`` itself, ``1``
        returns zeros.
      deterministic: if True, return ``w`` unchanged.
      mode: ``"exact"`` (the mask is :func:`jaxdrop.keep_mask`'s) or ``"fast"``.

    Returns:
      An array of ``w``'s shape and dtype; equal to ``jaxdrop.dropout(key, w, rate)``.

    Reference: L. Wan, M. Zeiler, S. Zhang, Y. LeCun, R. Fergus, "Regularization of
    Neural Networks using DropConnect", ICML 2013.

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> jaxdrop.dropconnect(jax.random.key(0), jnp.ones((2, 4)), 0.5)
    Array([[0., 0., 2., 2.],
           [0., 2., 2., 0.]], dtype=float32)
    """
    fn = "dropconnect"
    key = prng.as_key(key, fn=fn, signature="key, w, rate")
    w = _checks.float_array(w, fn, "w")
    rate = _checks.probability(rate, fn)
    mode = _checks.mode(mode, fn)
    trivial = short_circuit(w, rate, _checks.flag(deterministic, fn))
    if trivial is not None:
        return trivial
    return masked_scale(key, w, rate, w.shape, mode)


def dropconnect_dense(
    key: ArrayLike,
    x: ArrayLike,
    kernel: ArrayLike,
    rate: float | jax.Array,
    bias: Any = None,
    *,
    deterministic: bool = False,
    mode: Mode = "exact",
) -> jax.Array:
    r"""A dense layer with DropConnect on its kernel: :math:`y = x\,\tilde W + b`.

    :math:`\tilde W` = ``dropconnect(key, kernel, rate)``, one mask for the whole
    batch. The bias is **not** dropped (the common practice; the paper also masks
    biases, which you can do with :func:`dropconnect` on ``bias`` with another key).

    Args:
      key: a PRNG key.
      x: floating-point input of shape ``(..., in)``.
      kernel: floating-point weights of shape ``(in, out)``.
      rate: probability of **dropping** each weight, in ``[0, 1]``.
      bias: optional floating-point ``(out,)`` bias, added after the product.
      deterministic: if True, use ``kernel`` unchanged.
      mode: ``"exact"`` or ``"fast"``.

    Returns:
      ``(..., out)``, of the promoted dtype of ``x``, ``kernel`` and ``bias``.

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> y = jaxdrop.dropconnect_dense(jax.random.key(0), jnp.ones((8, 3)), jnp.ones((3, 5)), 0.5)
    >>> y.shape
    (8, 5)
    >>> bool((y == y[0]).all())  # one weight mask for the whole batch
    True
    """
    fn = "dropconnect_dense"
    key = prng.as_key(key, fn=fn, signature="key, x, kernel, rate")
    x = _checks.float_array(x, fn)
    kernel = _checks.float_array(kernel, fn, "kernel")
    if kernel.ndim != 2:
        raise ValueError(f"jaxdrop.{fn}: `kernel` must have shape (in, out), got shape {kernel.shape}.")
    if x.ndim < 1 or x.shape[-1] != kernel.shape[0]:
        raise ValueError(
            f"jaxdrop.{fn}: `x` must have shape (..., in) with in = kernel.shape[0] = {kernel.shape[0]}, "
            f"got x of shape {x.shape}."
        )
    if bias is not None:
        bias = _checks.float_array(bias, fn, "bias")
        if bias.shape != (kernel.shape[1],):
            raise ValueError(
                f"jaxdrop.{fn}: `bias` must have shape (out,) = ({kernel.shape[1]},), got {bias.shape}."
            )
    rate = _checks.probability(rate, fn)
    deterministic = _checks.flag(deterministic, fn)
    mode = _checks.mode(mode, fn)
    w = dropconnect(key, kernel, rate, deterministic=deterministic, mode=mode)
    y = jnp.matmul(x, w)
    return y if bias is None else y + bias
