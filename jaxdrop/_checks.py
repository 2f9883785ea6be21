"""Argument validation shared by every jaxdrop function.

Concrete bad input raises at once with a message that says what was wrong and
how to fix it. A *traced* rate cannot be inspected while tracing; it is clamped to
``[0, 1]`` (a NaN rate drops everything), and wrapping the computation in
:func:`checked` turns an out-of-range traced rate into a runtime error instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

__all__ = ["checked"]

_TRACED_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "jaxdrop_traced_checks", default=False
)

T = TypeVar("T")


def float_array(x: Any, fn: str, name: str = "x") -> jax.Array:
    """``x`` as a JAX array, which must be floating point."""
    dtype = getattr(x, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        raise TypeError(
            f"jaxdrop.{fn}: `{name}` is a PRNG key; the key comes first: jaxdrop.{fn}(key, {name}, ...)."
        )
    arr = x if isinstance(x, jax.Array) else jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(
            f"jaxdrop.{fn}: `{name}` must be a floating-point array, got dtype {arr.dtype}. "
            f"Dropout rescales by 1/(1 - rate), which an integer or boolean array cannot hold; "
            f"cast first, e.g. {name}.astype(jnp.float32)."
        )
    return arr


def is_concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer)


def probability(value: Any, fn: str, name: str = "rate") -> float | jax.Array:
    """Validate a probability-like argument.

    A concrete value (Python number, NumPy or JAX scalar) must be a finite scalar
    in ``[0, 1]`` and comes back as a Python float. A traced scalar comes back as
    an array clamped to ``[0, 1]``, checked at run time only under :func:`checked`.
    """
    if isinstance(value, bool):
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be a number in [0, 1], got the bool {value}.")
    if is_concrete(value):
        arr = np.asarray(value)
        if arr.ndim != 0 or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
        ):
            raise TypeError(
                f"jaxdrop.{fn}: `{name}` must be a scalar number, got {type(value).__name__} "
                f"of shape {arr.shape} and dtype {arr.dtype}."
            )
        v = float(arr)
        if not math.isfinite(v) or not 0.0 <= v <= 1.0:
            raise ValueError(
                f"jaxdrop.{fn}: `{name}` must be in [0, 1] (the probability of dropping an element), got {v}."
            )
        return v
    if jnp.ndim(value) != 0:
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be a scalar, got shape {jnp.shape(value)}.")
    if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
        value = jnp.asarray(value, jnp.float32)
    if _TRACED_CHECKS.get():
        checkify.check(
            (value >= 0) & (value <= 1),
            f"jaxdrop.{fn}: `{name}` must be in [0, 1], got {{v}}.",
            v=value,
        )
    return jnp.clip(value, 0.0, 1.0)


def axes(axes_: Sequence[int] | int, ndim: int, fn: str, name: str = "broadcast_dims") -> tuple[int, ...]:
    """Normalise a sequence of axes (negative allowed) for an array of rank ``ndim``."""
    if isinstance(axes_, (int, np.integer)):
        axes_ = (int(axes_),)
    out = []
    for a in axes_:
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
            raise TypeError(f"jaxdrop.{fn}: `{name}` must contain integers, got {a!r}.")
        if not -ndim <= a < ndim:
            raise ValueError(
                f"jaxdrop.{fn}: axis {a} in `{name}` is out of range for an array of rank {ndim} "
                f"(valid axes are {-ndim}..{ndim - 1})."
            )
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"jaxdrop.{fn}: `{name}`={tuple(axes_)} repeats an axis.")
    return tuple(out)


def flag(value: Any, fn: str, name: str = "deterministic") -> bool:
    """A Python bool flag (``deterministic``, ``training``...)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"jaxdrop.{fn}: `{name}` must be a Python bool known at trace time; mark it static "
            f"(jax.jit(..., static_argnames='{name}')) or choose it outside the jitted function."
        )
    raise TypeError(f"jaxdrop.{fn}: `{name}` must be True or False, got {value!r}.")


@contextlib.contextmanager
def _traced_checks() -> Iterator[None]:
    token = _TRACED_CHECKS.set(True)
    try:
        yield
    finally:
        _TRACED_CHECKS.reset(token)


def checked(fn: Callable[..., T]) -> Callable[..., tuple[checkify.Error, T]]:
    """Check traced rates at run time: ``checked(f)(*args) -> (err, out)``.

    Under ``jit`` a rate that is a traced value cannot be validated while tracing,
    so jaxdrop clamps it to ``[0, 1]``. Wrap the *un-jitted* function with
    ``checked`` (and jit the result) to get a :mod:`jax.experimental.checkify`
    error instead; ``err.throw()`` raises it.

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> f = jax.jit(checked(lambda k, x, r: jaxdrop.dropout(k, x, r)))
    >>> err, y = f(jax.random.key(0), jnp.ones(3), 1.5)
    >>> print(err.get())  # doctest: +ELLIPSIS
    jaxdrop.dropout: `rate` must be in [0, 1], got 1.5...
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> tuple[checkify.Error, T]:
        with _traced_checks():
            return checkify.checkify(fn, errors=checkify.user_checks)(*args, **kwargs)

    return wrapper


# -- helpers for the dropout variants --


def below_one(rate: float | jax.Array, fn: str, reason: str, name: str = "rate") -> float | jax.Array:
    """A probability already validated by :func:`probability` that must also be ``< 1``.

    A concrete ``1.0`` raises ``ValueError`` (``reason`` says why the method is
    undefined there). A traced value is capped at the largest float below 1 of
    its dtype, so the result stays finite; under :func:`checked` a traced value of
    1 is reported instead.
    """
    if isinstance(rate, float):
        if rate >= 1.0:
            raise ValueError(f"jaxdrop.{fn}: `{name}` must be < 1 ({reason}), got {rate}.")
        return rate
    if _TRACED_CHECKS.get():
        checkify.check(rate < 1, f"jaxdrop.{fn}: `{name}` must be < 1 ({reason}), got {{v}}.", v=rate)
    dtype = jnp.result_type(rate)
    cap = np.nextafter(np.array(1.0, dtype), np.array(0.0, dtype))
    return jnp.minimum(rate, cap)


def nonnegative(value: Any, fn: str, name: str) -> float | jax.Array:
    """A finite, non-negative scalar (a standard deviation, a temperature...).

    Concrete values come back as a Python float (``ValueError`` if negative, NaN or
    infinite). A traced scalar comes back as an array with negative or NaN values
    replaced by 0, checked at run time only under :func:`checked`.
    """
    if isinstance(value, bool):
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be a non-negative number, got the bool {value}.")
    if is_concrete(value):
        arr = np.asarray(value)
        if arr.ndim != 0 or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
        ):
            raise TypeError(
                f"jaxdrop.{fn}: `{name}` must be a scalar number, got {type(value).__name__} "
                f"of shape {arr.shape} and dtype {arr.dtype}."
            )
        v = float(arr)
        if not math.isfinite(v) or v < 0.0:
            raise ValueError(f"jaxdrop.{fn}: `{name}` must be finite and >= 0, got {v}.")
        return v
    if jnp.ndim(value) != 0:
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be a scalar, got shape {jnp.shape(value)}.")
    if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
        value = jnp.asarray(value, jnp.float32)
    if _TRACED_CHECKS.get():
        checkify.check(
            (value >= 0) & jnp.isfinite(value),
            f"jaxdrop.{fn}: `{name}` must be finite and >= 0, got {{v}}.",
            v=value,
        )
    return jnp.where(value >= 0, value, jnp.zeros_like(value))


def integer(value: Any, fn: str, name: str, minimum: int = 0) -> int:
    """A Python int ``>= minimum`` (block sizes, depths, step counts)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if isinstance(value, jax.core.Tracer):
            raise TypeError(
                f"jaxdrop.{fn}: `{name}` must be a Python int known at trace time (it sets a shape "
                f"or a constant), got a traced value; mark it static."
            )
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"jaxdrop.{fn}: `{name}` must be >= {minimum}, got {value}.")
    return int(value)


def optional_axis(axis: Any, ndim: int, fn: str, name: str) -> int | None:
    """One axis (negative allowed) normalised for rank ``ndim``, or ``None``."""
    if axis is None:
        return None
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be an int axis or None, got {axis!r}.")
    return axes((int(axis),), ndim, fn, name)[0]
