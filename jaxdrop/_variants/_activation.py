"""Dropout fused with the activation before it, differentiated from its output alone.

Why this exists (measured with ``benchmarks/bench_train_memory.py``): an activation
whose derivative is computed from its *output* (tanh: ``1 - h**2``; sigmoid:
``h * (1 - h)``) lets a network without dropout keep one array per layer for the
backward pass, ``h = tanh(z)``, which serves both the activation's derivative and the
next dense layer's weight gradient. With dropout in between, the next layer's weight
gradient needs the *dropped* ``y = dropout(h)``, so any dropout, ``jaxdrop.dropout``
included, keeps two arrays per layer: ``h`` (saved by tanh) and ``y`` (saved by the
matmul, outside jaxdrop's control). Recomputing ``y`` in the backward pass does not help
on XLA's CPU backend: optimisation barriers are removed before common-subexpression
elimination, which merges the recomputation back into the forward pass's ``y``, and a
recomputation made data-dependent on the cotangent is still scheduled while ``h`` and
the cotangents are alive (measured: 96 MiB instead of 80 MiB on the tanh MLP).

Here the activation and the dropout are one differentiable function whose backward
pass needs only its output ``y`` and the key: where an element was kept,
``h = y * (1 - rate)`` and the activation's derivative is computed from it; where it was
dropped the gradient is 0 whatever ``h`` was. So ``y`` is the only activation-sized
array kept, as without dropout. The forward output is bit-identical to
``dropout(key, tanh(x), rate)``; the gradient equals that of the unfused composition up
to the rounding of ``y * (1 - rate)`` (an ulp or so of ``h``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxdrop import _checks, prng
from jaxdrop._core import keep_and_divisor, mask_shape
from jaxdrop.prng import Mode

__all__ = ["Activation", "activation_dropout", "apply_activation"]

Activation = Literal["tanh", "sigmoid"]

# name -> (activation, its derivative as a function of its output)
_ACTIVATIONS: dict[str, tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array], jax.Array]]] = {
    "tanh": (jnp.tanh, lambda h: 1 - h * h),
    "sigmoid": (jax.nn.sigmoid, lambda h: h * (1 - h)),
}


def _activation_name(activation: object) -> str:
    if not isinstance(activation, str) or activation not in _ACTIVATIONS:
        raise ValueError(
            f"jaxdrop.activation_dropout: `activation` must be one of {sorted(_ACTIVATIONS)}, got {activation!r}."
        )
    return activation


def apply_activation(x: jax.Array, activation: str) -> jax.Array:
    """The activation alone (the deterministic path of the layers)."""
    return _ACTIVATIONS[_activation_name(activation)][0](x)


def _mask(key: jax.Array, keep: Any, shape: tuple[int, ...], full: tuple[int, ...], mode: Mode) -> jax.Array:
    return jnp.broadcast_to(prng.bernoulli(key, keep, shape, mode=mode), full)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _act_dropout(
    key: jax.Array, x: jax.Array, keep: Any, divisor: Any, shape: tuple[int, ...], mode: Mode, act: str
) -> jax.Array:
    h = _ACTIVATIONS[act][0](x)
    return lax.select(_mask(key, keep, shape, x.shape, mode), h / divisor, jnp.zeros_like(h))


def _act_dropout_fwd(
    key: jax.Array, x: jax.Array, keep: Any, divisor: Any, shape: tuple[int, ...], mode: Mode, act: str
) -> tuple[jax.Array, tuple[Any, ...]]:
    y = _act_dropout(key, x, keep, divisor, shape, mode, act)
    return y, (key, y, keep, divisor)  # the output and scalars: no other activation-sized residual


def _act_dropout_bwd(
    shape: tuple[int, ...], mode: Mode, act: str, res: tuple[Any, ...], g: jax.Array
) -> tuple[Any, ...]:
    key, y, keep, divisor = res
    h = y * divisor  # the activation's output where kept (up to rounding); unused where dropped
    dx = lax.select(_mask(key, keep, shape, y.shape, mode), g / divisor * _ACTIVATIONS[act][1](h), jnp.zeros_like(g))
    # No gradient flows to the key or the rate.
    return None, dx, jnp.zeros_like(keep), jnp.zeros_like(divisor)


_act_dropout.defvjp(_act_dropout_fwd, _act_dropout_bwd)


def activation_dropout(
    key: ArrayLike,
    x: ArrayLike,
    rate: float | jax.Array,
    activation: Activation,
    *,
    broadcast_dims: Sequence[int] = (),
    deterministic: bool = False,
    mode: Mode = "exact",
) -> jax.Array:
    """``dropout(key, activation(x), rate)`` whose backward pass keeps only the output.

    The forward output is bit-identical to ``jaxdrop.dropout(key, tanh(x), rate, ...)``
    (so to ``flax.linen.Dropout`` after ``tanh`` for the same key). In a training
    step it keeps one activation-sized array per layer, as the same network without
    dropout does, where ``dropout(key, tanh(x), rate)`` keeps two (the activation's
    output for its derivative, and the dropped output for the next layer's weight
    gradient). The gradient with respect to ``x`` equals the unfused one up to an ulp
    or so of the activation's output (it is recomputed as ``y * (1 - rate)``); no
    gradient flows to a traced ``rate``.

    Only activations whose derivative is a function of their output qualify:
    ``activation`` is ``"tanh"`` or ``"sigmoid"``. (For ReLU, GELU and the like, plain
    :func:`jaxdrop.dropout` after the activation already costs no memory over no
    dropout: their derivative needs the pre-activation, which is kept either way.)

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> x, key = jnp.linspace(-2, 2, 8), jax.random.key(0)
    >>> bool((jaxdrop.activation_dropout(key, x, 0.5, "tanh")
    ...       == jaxdrop.dropout(key, jnp.tanh(x), 0.5)).all())
    True
    """
    fn = "activation_dropout"
    act = _ACTIVATIONS[_activation_name(activation)][0]
    key = prng.as_key(key, fn=fn, signature="key, x, rate, activation")
    x = _checks.float_array(x, fn)
    rate = _checks.probability(rate, fn)
    dims = _checks.axes(broadcast_dims, x.ndim, fn)
    mode = _checks.mode(mode, fn)
    if _checks.flag(deterministic, fn) or (isinstance(rate, float) and rate == 0.0):
        return act(x)
    if isinstance(rate, float) and rate == 1.0:
        return jnp.zeros_like(x)
    # The same probability and divisor as jaxdrop.dropout (bit-identity).
    p, divisor = keep_and_divisor(rate, x.dtype)
    return _act_dropout(key, x, p, divisor, mask_shape(x.shape, dims), mode, activation)
