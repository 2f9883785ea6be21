"""Concrete dropout: a continuous relaxation of dropout whose rate is learned by gradient descent."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify
from jax.typing import ArrayLike

from jaxdrop import _checks, prng
from jaxdrop._core import mask_shape
from jaxdrop.prng import Mode

__all__ = ["concrete_dropout", "concrete_dropout_regularizer"]


_LOGIT_LIMIT = 100.0
"""``|p_logit|`` beyond this is clipped: p is then within 4e-44 of 0 or 1, past float32's resolution."""


def _logit_array(p_logit: Any, fn: str) -> jax.Array:
    """A finite logit array. A traced NaN or infinity is reported under :func:`jaxdrop.checked`
    and replaced (NaN by ``+limit``: drop everything, as a NaN rate does); values are clipped
    to ``[-limit, limit]``."""
    logit = _checks.float_array(p_logit, fn, "p_logit")
    if _checks.is_concrete(logit):
        if not np.isfinite(np.asarray(logit)).all():
            raise ValueError(
                f"jaxdrop.{fn}: `p_logit` must be finite (p = sigmoid(p_logit) strictly between 0 and 1), "
                f"got {logit}."
            )
    else:
        checkify.debug_check(
            jnp.isfinite(logit).all(), f"jaxdrop.{fn}: `p_logit` must be finite, got {{v}}.", v=logit
        )
    logit = jnp.where(jnp.isnan(logit), _LOGIT_LIMIT, logit)
    return jnp.clip(logit, -_LOGIT_LIMIT, _LOGIT_LIMIT)


def rate_logit(rate: Any, fn: str) -> float:
    """``log(rate / (1 - rate))``: the ``p_logit`` whose sigmoid is the drop rate ``rate``."""
    r = _checks.probability(rate, fn, "init_rate")
    if not isinstance(r, float):
        raise TypeError(f"jaxdrop.{fn}: `init_rate` must be a number known now, got a traced value.")
    if not 0.0 < r < 1.0:
        raise ValueError(f"jaxdrop.{fn}: `init_rate` must be in (0, 1) (0 and 1 have no logit), got {r}.")
    return math.log(r) - math.log1p(-r)


def concrete_dropout(
    key: ArrayLike,
    x: ArrayLike,
    p_logit: ArrayLike,
    *,
    temperature: float = 0.1,
    broadcast_dims: Sequence[int] = (),
    deterministic: bool = False,
    eps: float = 1e-7,
    mode: Mode = "exact",
) -> jax.Array:
    r"""Concrete dropout (Gal, Hron & Kendall, 2017): dropout with a learnable rate.

    The Bernoulli drop indicator is replaced by its Concrete (Gumbel-softmax)
    relaxation, which is differentiable in the drop probability
    :math:`p = \sigma(\texttt{p\_logit})`:

    .. math::

        u \sim \mathcal U(0, 1),\qquad
        \tilde z = \sigma\!\Bigl(\tfrac{1}{t}\bigl[\log(p+\epsilon) - \log(1-p+\epsilon)
        + \log(u+\epsilon) - \log(1-u+\epsilon)\bigr]\Bigr),\qquad
        y = x \odot \frac{1 - \tilde z}{1 - p}.

    :math:`\tilde z \approx 1` means dropped; as the temperature :math:`t \to 0`,
    :math:`\tilde z` tends to a Bernoulli(:math:`p`) indicator and this to inverted
    dropout with rate ``p``. Train ``p_logit`` together with the weights and add
    :func:`concrete_dropout_regularizer` to the loss (without it, ``p`` collapses
    to 0). The authors keep the relaxed dropout on at test time and average
    predictions over samples (MC dropout); ``deterministic=True`` returns ``x``.

    Args:
      key: a PRNG key.
      x: floating-point input of any shape.
      p_logit: the **drop** probability's logit, a finite floating-point scalar
        (usual) or array broadcastable to the noise shape (e.g. one per feature).
        It is differentiable; the authors initialise ``p = 0.1``
        (``p_logit = log(0.1 / 0.9)``).
      temperature: :math:`t > 0`; the authors use 0.1 for dense layers and 2/3
        for the spatial (per-channel) version.
      broadcast_dims: axes along which one noise value is shared (e.g. the
        spatial axes ``(1, 2)`` of an NHWC map for the spatial variant).
      deterministic: if True, return ``x`` unchanged.
      eps: the :math:`\epsilon` inside the logarithms, finite, ``>= 0``.
      mode: ``"exact"`` (``u`` equals ``jax.random.uniform(key, noise_shape)`` in
        float32, or float64 if ``x`` or ``p_logit`` is) or ``"fast"``.

    Returns:
      An array of ``x``'s shape and dtype.

    Reference: Y. Gal, J. Hron, A. Kendall, "Concrete Dropout", NeurIPS 2017
    (arXiv:1705.07832).

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> x = jnp.ones((4, 8))
    >>> loss = lambda l: jaxdrop.concrete_dropout(jax.random.key(0), x, l).sum() ** 2
    >>> g = jax.grad(loss)(jnp.log(0.1 / 0.9))
    >>> bool(jnp.isfinite(g) & (g != 0))
    True
    """
    fn = "concrete_dropout"
    key = prng.as_key(key, fn=fn, signature="key, x, p_logit")
    x = _checks.float_array(x, fn)
    logit = _logit_array(p_logit, fn)
    t = _checks.positive(temperature, fn, "temperature")
    eps_ = _checks.nonnegative(eps, fn, "eps")
    dims = _checks.axes(broadcast_dims, x.ndim, fn)
    mode = _checks.mode(mode, fn)
    shape = mask_shape(x.shape, dims)
    try:
        bshape = jnp.broadcast_shapes(logit.shape, shape)
    except ValueError:
        bshape = None
    if bshape != shape:
        raise ValueError(
            f"jaxdrop.{fn}: `p_logit` of shape {logit.shape} must broadcast to the noise shape {shape} "
            f"(x.shape {x.shape} with broadcast_dims={tuple(broadcast_dims)} set to 1)."
        )
    if _checks.flag(deterministic, fn):
        return x
    dtype = jnp.promote_types(jnp.promote_types(x.dtype, jnp.float32), logit.dtype)
    e = np.asarray(eps_, dtype) if isinstance(eps_, float) else eps_.astype(dtype)
    t_ = np.asarray(t, dtype) if isinstance(t, float) else t.astype(dtype)
    return _relaxed(key, x, logit.astype(dtype), t_, e, shape, mode)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _relaxed(
    key: jax.Array, x: jax.Array, logit: jax.Array, t: jax.Array, e: jax.Array, shape: tuple[int, ...], mode: Mode
) -> jax.Array:
    # One compiled kernel for eager calls; inlined under an outer jit.
    dtype = logit.dtype
    p, q = jax.nn.sigmoid(logit), jax.nn.sigmoid(-logit)  # q = 1 - p, without cancellation
    u = prng.uniform(key, shape, dtype, mode=mode)
    a = (jnp.log(p + e) - jnp.log(q + e) + jnp.log(u + e) - jnp.log(1 - u + e)) / t
    # (1 - z) / q with z = sigmoid(a), in log space: log_sigmoid(-a) - log_sigmoid(-logit).
    # Finite, with finite gradients, even where q underflows (p_logit large).
    scale = jnp.exp(jax.nn.log_sigmoid(-a) - jax.nn.log_sigmoid(-logit))
    return (x.astype(dtype) * scale).astype(x.dtype)


def concrete_dropout_regularizer(
    p_logit: ArrayLike,
    kernel: ArrayLike,
    input_dim: int,
    *,
    weight_regularizer: float,
    dropout_regularizer: float,
) -> jax.Array:
    r"""The per-layer regulariser that goes with :func:`concrete_dropout`.

    .. math::

        \mathcal R = \lambda_w \frac{\lVert W\rVert_2^2}{1 - p}
        + \lambda_p\, K\,\bigl(p\log p + (1-p)\log(1-p)\bigr),
        \qquad p = \sigma(\texttt{p\_logit}),

    the KL term of the variational objective: weight decay on the pre-dropout
    weights :math:`W/(1-p)` scaled by the keep probability, minus ``K`` times the
    entropy of Bernoulli(:math:`p`) (which stops ``p`` from collapsing to 0).
    Add it to the loss of every concrete-dropout layer.

    Args:
      p_logit: the layer's drop-probability logit, a floating-point scalar.
      kernel: the weights applied to the dropped input (the layer's kernel).
      input_dim: ``K``, the number of dropped input features (the input's last
        dimension for a dense layer, channels for the spatial variant); int >= 1.
      weight_regularizer: :math:`\lambda_w = l^2/(\tau N)` (prior length-scale
        ``l``, model precision ``tau``, dataset size ``N``); the authors' notebooks
        use ``l**2 / N`` with ``l = 1e-4``. Finite, ``>= 0``.
      dropout_regularizer: :math:`\lambda_p = 2/(\tau N)`; ``1/N`` for
        classification with cross-entropy. Finite, ``>= 0``.

    Returns:
      A scalar (float32, or float64 if ``p_logit`` or ``kernel`` is).

    Reference: Y. Gal, J. Hron, A. Kendall, "Concrete Dropout", NeurIPS 2017.

    >>> import jax.numpy as jnp, jaxdrop
    >>> r = jaxdrop.concrete_dropout_regularizer(
    ...     jnp.log(0.1 / 0.9), jnp.ones((3, 2)), 3, weight_regularizer=1e-2, dropout_regularizer=0.1)
    >>> bool(jnp.isclose(r, 1e-2 * 6 / 0.9 + 0.1 * 3 * (0.1 * jnp.log(0.1) + 0.9 * jnp.log(0.9))))
    True
    """
    fn = "concrete_dropout_regularizer"
    logit = _logit_array(p_logit, fn)
    if logit.ndim != 0:
        raise ValueError(f"jaxdrop.{fn}: `p_logit` must be a scalar, got shape {logit.shape}.")
    w = _checks.float_array(kernel, fn, "kernel")
    k = _checks.integer(input_dim, fn, "input_dim", minimum=1)
    lw = _checks.nonnegative(weight_regularizer, fn, "weight_regularizer")
    lp = _checks.nonnegative(dropout_regularizer, fn, "dropout_regularizer")
    dtype = jnp.promote_types(jnp.promote_types(logit.dtype, jnp.float32), w.dtype)
    logit = logit.astype(dtype)
    p, q = jax.nn.sigmoid(logit), jax.nn.sigmoid(-logit)
    # p log p + q log q with log p = log_sigmoid(l), log q = log_sigmoid(-l): finite for any l.
    neg_entropy = p * jax.nn.log_sigmoid(logit) + q * jax.nn.log_sigmoid(-logit)
    sq = jnp.sum(jnp.square(w.astype(dtype)))
    return lw * sq / q + lp * k * neg_entropy
