"""Helpers shared by the Flax layers of :mod:`jaxdrop.linen` and :mod:`jaxdrop.nnx` (no math)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _checks

__all__ = ["bind_attention", "check_layer", "concrete_value", "flax_broadcast_dims", "is_one", "is_zero"]


def concrete_value(rate: Any) -> float | None:
    """The value of a concrete real scalar rate (Python, NumPy or JAX), else ``None``.

    ``None`` for a traced rate (never known while tracing), a bool (rejected later by
    :func:`jaxdrop.dropout`) or anything that is not a real scalar.
    """
    if isinstance(rate, (bool, np.bool_, jax.core.Tracer)):
        return None
    if isinstance(rate, (int, float)):
        return float(rate)
    dtype = getattr(rate, "dtype", None)
    if dtype is None or getattr(rate, "ndim", None) != 0:
        return None
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        return None
    return float(rate)


def is_zero(rate: Any) -> bool:
    """A concrete rate of exactly 0, as Flax's ``rate == 0.0`` test (a traced rate is never known to be 0)."""
    return concrete_value(rate) == 0.0


def flax_broadcast_dims(dims: Any, ndim: int) -> Any:
    """``broadcast_dims`` without repeats: Flax sets each listed axis of the mask shape
    to 1, so a repeated axis (``(1, -1)`` of a matrix) is harmless there. Anything
    out of range or not an integer is passed on, for :func:`jaxdrop.dropout` to reject.
    """
    if isinstance(dims, (int, np.integer)):
        return dims
    out: list[Any] = []
    for d in dims:
        if isinstance(d, (int, np.integer)) and not isinstance(d, bool) and -ndim <= d < ndim:
            d = int(d) % ndim
        if d not in out:
            out.append(d)
    return tuple(out)


def is_one(rate: Any) -> bool:
    """A concrete rate of exactly 1, as Flax's ``rate == 1.0`` test."""
    return concrete_value(rate) == 1.0



def bind_attention(fn: Any, implementation: Any, block_size: Any, mode: Any) -> Any:
    """``fn`` with a layer's attention options bound, if ``fn`` is jaxdrop's attention.

    A Flax attention layer calls ``attention_fn(query, key, value, **kwargs)`` and looks
    at its signature to choose the keywords; a :func:`functools.partial` keeps that
    signature. Any other ``attention_fn`` is returned unchanged, and keywords a user
    bound in a partial of their own win over the layer's fields. A partial made here
    is rebuilt from the current fields (linen clones modules with their attributes).
    """
    from jaxdrop import attention

    base = fn.func if isinstance(fn, functools.partial) else fn
    if base is not attention.dot_product_attention:
        return fn
    options = {"implementation": implementation, "block_size": block_size, "mode": mode}
    if isinstance(fn, functools.partial) and not getattr(fn, "_jaxdrop_layer_options", False):
        options.update(fn.keywords)
    bound = functools.partial(attention.dot_product_attention, **options)
    bound._jaxdrop_layer_options = True  # type: ignore[attr-defined]
    return bound


def check_layer(layer: Any, api: str) -> None:
    """Validate a dropout layer's concrete ``rate`` (or ``stddev``) and ``mode`` when it is built.

    A layer that would fail when called in training mode fails when constructed instead
    (in evaluation mode it would otherwise return its input without complaint). A traced
    or array rate is checked at call time as usual.
    """
    fn = f"{api}.{type(layer).__name__}"
    _checks.mode(getattr(layer, "mode", "exact"), fn)
    rate = getattr(layer, "rate", 0.0)
    if _checks.is_concrete(rate):
        meaning = "the probability of keeping h_prev" if type(layer).__name__ == "Zoneout" else None
        _checks.probability(rate, fn, meaning=meaning)
    activation = getattr(layer, "activation", None)
    if activation is not None and activation not in ("tanh", "sigmoid"):
        raise ValueError(f"jaxdrop.{fn}: `activation` must be 'sigmoid' or 'tanh', got {activation!r}.")
    stddev = getattr(layer, "stddev", 0.0)
    if _checks.is_concrete(stddev):
        _checks.nonnegative(stddev, fn, "stddev")
