"""Dropout for recurrent networks: locked (variational) dropout, embedding dropout, zoneout."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxdrop import _checks, prng
from jaxdrop._core import mask_dtype, masked_scale, short_circuit
from jaxdrop.prng import Mode

__all__ = ["embedding_dropout", "locked_dropout", "zoneout"]


def locked_dropout(
    key: ArrayLike,
    x: ArrayLike,
    rate: float | jax.Array,
    *,
    time_axis: int = 1,
    deterministic: bool = False,
    mode: Mode = "exact",
) -> jax.Array:
    r"""Locked (variational) dropout (Gal & Ghahramani, 2016; Merity et al., 2018).

    One inverted-dropout mask per sequence, reused at every time step:

    .. math::

        m_{b,f} \sim \mathrm{Bernoulli}(1 - \mathrm{rate}),\qquad
        y_{b,t,f} = \frac{m_{b,f}}{1 - \mathrm{rate}}\, x_{b,t,f}\quad\text{for all } t.

    Resampling the mask at every step (naive dropout on an RNN's sequence) injects
    noise that accumulates over time; a fixed mask is the variational-inference
    view and AWD-LSTM's ``LockedDropout``. Equal to
    ``jaxdrop.dropout(key, x, rate, broadcast_dims=(time_axis,))``.

    Args:
      key: a PRNG key.
      x: floating-point sequence of rank >= 2, batch-major ``(B, T, F)`` by
        default, time-major ``(T, B, F)`` with ``time_axis=0``.
      rate: probability of **dropping** a feature (for the whole sequence), in
        ``[0, 1]``; ``0`` returns ``x`` itself, ``1`` returns zeros.
      time_axis: the axis the mask is shared along (negative allowed).
      deterministic: if True, return ``x`` unchanged.
      mode: ``"exact"`` or ``"fast"``.

    Returns:
      An array of ``x``'s shape and dtype.

    References:
      - Y. Gal, Z. Ghahramani, "A Theoretically Grounded Application of Dropout in
        Recurrent Neural Networks", NeurIPS 2016.
      - S. Merity, N. S. Keskar, R. Socher, "Regularizing and Optimizing LSTM Language
        Models", ICLR 2018.

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> y = jaxdrop.locked_dropout(jax.random.key(0), jnp.ones((2, 5, 3)), 0.5)
    >>> bool((y == y[:, :1, :]).all())  # the same mask at every time step
    True
    """
    fn = "locked_dropout"
    key = prng.as_key(key, fn=fn)
    x = _checks.float_array(x, fn)
    rate = _checks.probability(rate, fn)
    if x.ndim < 2:
        raise ValueError(
            f"jaxdrop.{fn}: `x` must have a time axis and at least one other axis, e.g. (B, T, F) "
            f"(the default time_axis=1) or (T, F) with time_axis=0, got shape {x.shape}."
        )
    t = _checks.axis(time_axis, x.ndim, fn, "time_axis")
    mode = _checks.mode(mode, fn)
    trivial = short_circuit(x, rate, _checks.flag(deterministic, fn))
    if trivial is not None:
        return trivial
    shape = tuple(1 if d == t else s for d, s in enumerate(x.shape))
    return masked_scale(key, x, rate, shape, mode)


def embedding_dropout(
    key: ArrayLike,
    embedding: ArrayLike,
    rate: float | jax.Array,
    *,
    deterministic: bool = False,
    mode: Mode = "exact",
) -> jax.Array:
    r"""Embedding dropout (Gal & Ghahramani, 2016): drop whole words of the vocabulary.

    Masks rows of the ``(V, D)`` embedding matrix, then you index into the result,
    so a dropped word is zero at every position it occurs in the batch:

    .. math::

        m_v \sim \mathrm{Bernoulli}(1 - \mathrm{rate}),\qquad
        \tilde E_{v,:} = \frac{m_v}{1 - \mathrm{rate}}\, E_{v,:}.

    As AWD-LSTM's ``embedded_dropout``: one mask per call, shared by the whole
    batch and all time steps. Gradients reach only the kept rows.

    Args:
      key: a PRNG key.
      embedding: floating-point matrix of shape ``(V, D)`` (vocabulary, features).
      rate: probability of **dropping** a word (row), in ``[0, 1]``; AWD-LSTM
        uses 0.1. ``0`` returns ``embedding`` itself, ``1`` returns zeros.
      deterministic: if True, return ``embedding`` unchanged.
      mode: ``"exact"`` (row mask = ``jax.random.bernoulli(key, 1 - rate, (V, 1))``)
        or ``"fast"``.

    Returns:
      The masked ``(V, D)`` matrix, ``embedding``'s dtype; look tokens up with
      ``jnp.take(result, tokens, axis=0)``.

    Reference: Y. Gal, Z. Ghahramani, "A Theoretically Grounded Application of
    Dropout in Recurrent Neural Networks", NeurIPS 2016 (section 4.2).

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> e = jaxdrop.embedding_dropout(jax.random.key(0), jnp.ones((4, 3)), 0.5)
    >>> e
    Array([[0., 0., 0.],
           [0., 0., 0.],
           [2., 2., 2.],
           [2., 2., 2.]], dtype=float32)
    >>> jnp.take(e, jnp.array([[1, 2]]), axis=0).shape  # (batch, time, D)
    (1, 2, 3)
    """
    fn = "embedding_dropout"
    key = prng.as_key(key, fn=fn, signature="key, embedding, rate")
    emb = _checks.float_array(embedding, fn, "embedding")
    rate = _checks.probability(rate, fn)
    if emb.ndim != 2:
        raise ValueError(
            f"jaxdrop.{fn}: `embedding` must be a (vocab_size, features) matrix, got shape {emb.shape}. "
            "Apply it to the embedding table, then index the result with the token ids."
        )
    mode = _checks.mode(mode, fn)
    trivial = short_circuit(emb, rate, _checks.flag(deterministic, fn))
    if trivial is not None:
        return trivial
    return masked_scale(key, emb, rate, (emb.shape[0], 1), mode)


def zoneout(
    key: ArrayLike,
    h_prev: ArrayLike,
    h_new: ArrayLike,
    rate: float | jax.Array,
    *,
    deterministic: bool = False,
    mode: Mode = "exact",
) -> jax.Array:
    r"""Zoneout (Krueger et al., 2017): randomly keep units of a recurrent state unchanged.

    Per unit (and, called once per step with a fresh key, per time step):

    .. math::

        d \sim \mathrm{Bernoulli}(\mathrm{rate}),\qquad
        h_t = d \odot h_{t-1} + (1 - d) \odot \tilde h_t .

    Unlike dropout nothing is zeroed or rescaled: a "zoned-out" unit carries its
    previous value forward, which also lets gradients flow through time. At
    evaluation (``deterministic=True``) the expectation
    :math:`\mathrm{rate}\cdot h_{t-1} + (1 - \mathrm{rate})\cdot \tilde h_t`
    is returned (as in the paper). ``rate == 0`` returns ``h_new`` itself, in
    both modes. The backward pass regenerates the mask from ``key`` rather than
    storing it. Use separate rates for an LSTM's cell and hidden state (the paper:
    0.5 and 0.05 on PTB).

    Args:
      key: a PRNG key (split it per time step).
      h_prev: the previous state :math:`h_{t-1}`, floating point.
      h_new: the candidate state :math:`\tilde h_t`, the same shape and a floating dtype.
      rate: the probability of **keeping the previous value** of a unit (the
        zoneout probability ``z``), in ``[0, 1]``; ``1`` returns ``h_prev``.
        Python float or traced scalar.
      deterministic: if True, return the expectation above.
      mode: ``"exact"`` (``d = jax.random.bernoulli(key, rate, shape)``) or ``"fast"``.

    Returns:
      An array of the common shape, of the promoted dtype of ``h_prev`` and ``h_new``.

    Reference: D. Krueger, T. Maharaj, J. Kramár, M. Pezeshki, N. Ballas, N. R. Ke,
    A. Goyal, Y. Bengio, A. Courville, C. Pal, "Zoneout: Regularizing RNNs by
    Randomly Preserving Hidden Activations", ICLR 2017.

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> h = jaxdrop.zoneout(jax.random.key(0), jnp.zeros(6), jnp.ones(6), 0.5)
    >>> bool(((h == 0) | (h == 1)).all())
    True
    >>> jaxdrop.zoneout(jax.random.key(0), jnp.zeros(3), jnp.ones(3), 0.25, deterministic=True)
    Array([0.75, 0.75, 0.75], dtype=float32)
    """
    fn = "zoneout"
    key = prng.as_key(key, fn=fn, signature="key, h_prev, h_new, rate")
    prev = _checks.float_array(h_prev, fn, "h_prev")
    new = _checks.float_array(h_new, fn, "h_new")
    if prev.shape != new.shape:
        raise ValueError(
            f"jaxdrop.{fn}: `h_prev` and `h_new` must have the same shape, got {prev.shape} and {new.shape}."
        )
    rate = _checks.probability(rate, fn, meaning="the probability of keeping h_prev")
    det = _checks.flag(deterministic, fn)
    mode = _checks.mode(mode, fn)
    dtype = jnp.result_type(prev, new)
    if prev.dtype != dtype:
        prev = prev.astype(dtype)
    if new.dtype != dtype:
        new = new.astype(dtype)
    if isinstance(rate, float) and rate == 0.0:
        return new
    if isinstance(rate, float) and rate == 1.0:
        return prev
    if det:
        r = jnp.asarray(rate, dtype)
        return r * prev + (1 - r) * new
    p = np.asarray(rate, mask_dtype()) if isinstance(rate, float) else rate
    # Checkpointed: the backward pass regenerates the mask from the key instead of storing it.
    return jax.checkpoint(_zone, static_argnums=(4,))(key, prev, new, p, mode)


@functools.partial(jax.jit, static_argnums=(4,))
def _zone(key: jax.Array, h_prev: jax.Array, h_new: jax.Array, p: jax.Array, mode: Mode) -> jax.Array:
    # One compiled kernel for eager calls; inlined under an outer jit.
    return lax.select(prng.bernoulli(key, p, h_new.shape, mode=mode), h_prev, h_new)
