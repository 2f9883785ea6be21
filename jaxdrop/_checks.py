"""Argument validation: the one place jaxdrop checks what it is given.

Every validator takes the calling function's public name ``fn`` (``"dropout"``,
``"mc.regression"``...) and the argument's name, so every error reads
``jaxdrop.<fn>: `<name>` ...`` and says how to fix it.

**Concrete values** (Python numbers, NumPy and JAX scalars of any float or int dtype,
bfloat16 included) are checked at once and come back as Python numbers.

**Traced values** cannot be inspected while tracing. Each validator stages a
:func:`jax.experimental.checkify.debug_check` (a no-op unless the computation runs
under :func:`checked`, which turns it into an error) and replaces a value outside its
domain by a documented valid one, so the result stays finite:

* a probability is clamped to ``[0, 1]``; NaN counts as 1 (drop everything);
* a non-negative parameter (a standard deviation, a temperature...) that is negative,
  infinite or NaN becomes 0 (no noise);
* a positive parameter (a precision, a length scale...) that is not a finite number
  ``> 0`` becomes the dtype's smallest normal number.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

if TYPE_CHECKING:
    from jaxdrop.prng import Mode

__all__ = [
    "axes",
    "axis",
    "below_one",
    "checked",
    "count",
    "flag",
    "float_array",
    "function",
    "integer",
    "is_concrete",
    "mode",
    "nonnegative",
    "optional_axis",
    "positive",
    "probability",
    "shape",
]

T = TypeVar("T")


def is_concrete(value: Any) -> bool:
    """Whether ``value`` is known now (not a tracer under ``jit``, ``grad``, ``vmap``...)."""
    return not isinstance(value, jax.core.Tracer)


def float_array(x: Any, fn: str, name: str = "x") -> jax.Array:
    """``x`` as a JAX array, which must be floating point."""
    dtype = getattr(x, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        raise TypeError(
            f"jaxdrop.{fn}: `{name}` is a PRNG key; the key comes first: jaxdrop.{fn}(key, {name}, ...)."
        )
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be a floating-point array, got {x!r}.")
    try:
        arr = x if isinstance(x, jax.Array) else jnp.asarray(x)
    except TypeError as e:
        raise TypeError(
            f"jaxdrop.{fn}: `{name}` must be a floating-point array, got {type(x).__name__} ({e})."
        ) from None
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(
            f"jaxdrop.{fn}: `{name}` must be a floating-point array, got dtype {arr.dtype}; "
            f"cast first, e.g. {name}.astype(jnp.float32)."
        )
    return arr


def _is_number_dtype(dtype: Any) -> bool:
    # jnp.issubdtype knows bfloat16 and the float8 types, which NumPy's own check does not.
    return bool(jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer))


def _concrete_scalar(value: Any, fn: str, name: str, what: str) -> float:
    """A concrete real scalar as a Python float, or a ``TypeError`` naming ``what`` was expected."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be {what}, got the bool {value}.")
    try:
        arr = np.asarray(value)
    except Exception:  # e.g. a deleted or non-addressable array
        arr = None
    if arr is None or arr.ndim != 0 or not _is_number_dtype(arr.dtype):
        desc = (
            f"{type(value).__name__} {value!r}"
            if arr is None or arr.dtype == object
            else f"{type(value).__name__} of shape {arr.shape} and dtype {arr.dtype}"
        )
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be {what} (a scalar), got {desc}.")
    return float(arr)


def _traced_scalar(value: Any, fn: str, name: str) -> jax.Array:
    """A traced scalar as a floating-point array (ints promoted to float32)."""
    if jnp.ndim(value) != 0:
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be a scalar, got shape {jnp.shape(value)}.")
    if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
        return jnp.asarray(value, jnp.float32)
    return jnp.asarray(value)


def _require(ok: jax.Array, fn: str, name: str, domain: str, value: jax.Array) -> None:
    # Staged unconditionally: a no-op outside checkify, an error under `checked`, also
    # inside jitted functions traced before or after the `checked` call.
    checkify.debug_check(ok, f"jaxdrop.{fn}: `{name}` must be {domain}, got {{v}}.", v=value)


def probability(value: Any, fn: str, name: str = "rate", meaning: str | None = None) -> float | jax.Array:
    """A probability in ``[0, 1]``: a Python float if concrete, else a clamped array.

    ``meaning`` says in the error what the probability is of; a ``rate`` is by default
    the probability of dropping an element.
    """
    if meaning is None and name == "rate":
        meaning = "the probability of dropping an element"
    meaning = f" ({meaning})" if meaning else ""
    if is_concrete(value):
        v = _concrete_scalar(value, fn, name, "a number in [0, 1]")
        if not math.isfinite(v) or not 0.0 <= v <= 1.0:
            raise ValueError(f"jaxdrop.{fn}: `{name}` must be in [0, 1]{meaning}, got {v}.")
        return v
    value = _traced_scalar(value, fn, name)
    _require((value >= 0) & (value <= 1), fn, name, "in [0, 1]", value)
    return jnp.where(jnp.isnan(value), jnp.ones_like(value), jnp.clip(value, 0.0, 1.0))


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
    _require(rate < 1, fn, name, f"< 1 ({reason})", rate)
    dtype = jnp.result_type(rate)
    cap = np.nextafter(np.array(1.0, dtype), np.array(0.0, dtype))
    return jnp.minimum(rate, cap)


def nonnegative(value: Any, fn: str, name: str) -> float | jax.Array:
    """A finite, non-negative scalar (a standard deviation, a temperature...).

    Concrete values come back as a Python float (``ValueError`` if negative, NaN or
    infinite). A traced scalar comes back as an array with negative, infinite or NaN
    values replaced by 0, reported under :func:`checked`.
    """
    if is_concrete(value):
        v = _concrete_scalar(value, fn, name, "a non-negative number")
        if not math.isfinite(v) or v < 0.0:
            raise ValueError(f"jaxdrop.{fn}: `{name}` must be finite and >= 0, got {v}.")
        return v
    value = _traced_scalar(value, fn, name)
    ok = (value >= 0) & jnp.isfinite(value)
    _require(ok, fn, name, "finite and >= 0", value)
    return jnp.where(ok, value, jnp.zeros_like(value))


def positive(value: Any, fn: str, name: str) -> float | jax.Array:
    """A finite scalar ``> 0`` (a precision, a length scale, a dataset size...).

    Concrete values come back as a Python float (``ValueError`` otherwise). A traced
    scalar that is not finite and ``> 0`` becomes the dtype's smallest normal number,
    reported under :func:`checked`.
    """
    if is_concrete(value):
        v = _concrete_scalar(value, fn, name, "a positive number")
        if not (math.isfinite(v) and v > 0.0):
            raise ValueError(f"jaxdrop.{fn}: `{name}` must be a finite, positive number (> 0), got {v}.")
        return v
    value = _traced_scalar(value, fn, name)
    ok = (value > 0) & jnp.isfinite(value)
    _require(ok, fn, name, "a finite, positive number (> 0)", value)
    return jnp.where(ok, value, jnp.asarray(jnp.finfo(value.dtype).tiny, value.dtype))


def _concrete_int(value: Any) -> int | None:
    """``value`` as a Python int if it is a concrete integer scalar (Python, NumPy or JAX), else None."""
    if isinstance(value, (bool, np.bool_)) or not is_concrete(value):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    dtype = getattr(value, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.integer) and jnp.ndim(value) == 0:
        return operator.index(np.asarray(value).item())
    return None


def integer(value: Any, fn: str, name: str, minimum: int = 0) -> int:
    """A Python int ``>= minimum`` (block sizes, depths, step counts, sample counts)."""
    v = _concrete_int(value)
    if v is None:
        if isinstance(value, jax.core.Tracer):
            raise TypeError(
                f"jaxdrop.{fn}: `{name}` must be an int known at trace time (it sets a shape "
                f"or a constant), got a traced value; pass a Python int, not a jitted argument."
            )
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be an int, got {value!r}.")
    if v < minimum:
        raise ValueError(f"jaxdrop.{fn}: `{name}` must be >= {minimum}, got {v}.")
    return v


def count(value: Any, fn: str, name: str) -> int:
    """A positive Python int (a number of samples, a chunk size, a batch size)."""
    return integer(value, fn, name, minimum=1)


def shape(value: Any, fn: str, name: str = "shape") -> tuple[int, ...]:
    """A shape: a sequence of non-negative ints (NumPy and JAX integer scalars allowed)."""
    if isinstance(value, (int, np.integer)) or not isinstance(value, Sequence):
        hint = " (an array was given; pass its .shape)" if hasattr(value, "shape") else ""
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be a tuple of ints, got {value!r}{hint}.")
    dims = []
    for d in value:
        v = _concrete_int(d)
        if v is None:
            raise TypeError(f"jaxdrop.{fn}: `{name}` must contain ints, got {d!r} in {tuple(value)!r}.")
        if v < 0:
            raise ValueError(f"jaxdrop.{fn}: `{name}` must not have negative dimensions, got {tuple(value)!r}.")
        dims.append(v)
    return tuple(dims)


def axes(axes_: Sequence[int] | int, ndim: int, fn: str, name: str = "broadcast_dims") -> tuple[int, ...]:
    """Normalise a sequence of axes (negative allowed) for an array of rank ``ndim``."""
    single = _concrete_int(axes_)
    if single is not None:
        axes_ = (single,)
    elif not isinstance(axes_, Sequence) or isinstance(axes_, str):
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be a tuple of int axes, got {axes_!r}.")
    out = []
    for a in axes_:
        v = _concrete_int(a)
        if v is None:
            raise TypeError(f"jaxdrop.{fn}: `{name}` must contain integers, got {a!r}.")
        if not -ndim <= v < ndim:
            raise ValueError(
                f"jaxdrop.{fn}: axis {v} in `{name}` is out of range for an array of rank {ndim} "
                f"(valid axes are {-ndim}..{ndim - 1})."
            )
        out.append(v % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"jaxdrop.{fn}: `{name}`={tuple(axes_)} repeats an axis.")
    return tuple(out)


def axis(value: Any, ndim: int, fn: str, name: str) -> int:
    """One required axis (negative allowed) normalised for rank ``ndim``."""
    if value is None:
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be an int axis, got None.")
    normalised = optional_axis(value, ndim, fn, name)
    assert normalised is not None
    return normalised


def optional_axis(axis: Any, ndim: int, fn: str, name: str) -> int | None:
    """One axis (negative allowed) normalised for rank ``ndim``, or ``None``."""
    if axis is None:
        return None
    if _concrete_int(axis) is None:
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be an int axis or None, got {axis!r}.")
    return axes((axis,), ndim, fn, name)[0]


def flag(value: Any, fn: str, name: str = "deterministic") -> bool:
    """A bool known at trace time (``deterministic``, ``training``...)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"jaxdrop.{fn}: `{name}` is a traced value, but it chooses between two computations and "
            "must be a Python bool known at trace time. If it comes from an argument of a jitted "
            "function, mark that argument static (jax.jit's static_argnums / static_argnames, "
            "nnx.jit's too) or call a separate jitted function per mode."
        )
    if isinstance(value, jax.Array) and value.shape == () and value.dtype == jnp.bool_:
        return bool(value)
    raise TypeError(f"jaxdrop.{fn}: `{name}` must be True or False, got {value!r}.")


def mode(value: Any, fn: str) -> Mode:
    """The mask generator: ``"exact"`` or ``"fast"``."""
    if not isinstance(value, str) or value not in ("exact", "fast"):
        raise ValueError(
            f"jaxdrop.{fn}: `mode` must be 'exact' (bit-identical to jax.random) or 'fast', got {value!r}."
        )
    return cast(Literal["exact", "fast"], value)


def function(f: Any, fn: str, signature: str) -> Callable[..., Any]:
    """A callable first argument; the error shows the call's expected ``signature``."""
    if not callable(f):
        raise TypeError(
            f"jaxdrop.{fn}: the first argument must be the function to call, got "
            f"{type(f).__name__}; call it as jaxdrop.{fn}({signature}, ...)."
        )
    return cast(Callable[..., Any], f)


def checked(fn: Callable[..., T]) -> Callable[..., tuple[checkify.Error, T]]:
    """Check traced arguments at run time: ``checked(f)(*args) -> (err, out)``.

    Under ``jit`` a rate (or any other parameter) that is a traced value cannot be
    validated while tracing. Without ``checked``, jaxdrop replaces a traced value
    outside its domain by a valid one, one rule for every function, so the result is
    always finite:

    * a probability (``rate``...) is clamped to ``[0, 1]``, and NaN counts as 1
      (drop everything; for :func:`jaxdrop.zoneout`, keep ``h_prev``); where 1 is
      undefined (alpha and Gaussian dropout, MC-dropout precisions) it is capped
      just below 1;
    * a non-negative parameter (``stddev``, ``eps``...) that is
      negative, infinite or NaN becomes 0;
    * a positive parameter (``temperature``, ``tau``, ``length_scale``, ``n_data``...) that is not a
      finite number ``> 0`` becomes the dtype's smallest normal number;
    * a NaN or infinite ``p_logit`` of :func:`jaxdrop.concrete_dropout` is clipped
      to ``[-100, 100]`` (NaN to 100).

    Wrap the function, jitted or not, with ``checked`` (and jit the result) to get a
    :mod:`jax.experimental.checkify` error instead; ``err.throw()`` raises it.
    Functions jitted elsewhere and called inside are checked too.

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> f = jax.jit(checked(lambda k, x, r: jaxdrop.dropout(k, x, r)))
    >>> err, y = f(jax.random.key(0), jnp.ones(3), 1.5)
    >>> print(err.get())  # doctest: +ELLIPSIS
    jaxdrop.dropout: `rate` must be in [0, 1], got 1.5...

    Flax nnx models that draw keys from an ``nnx.Rngs`` stream cannot run under
    ``checkify`` (a Flax limitation: ``TraceContextError: Cannot mutate RngCount``,
    the stream's counter cannot be advanced inside the checkify trace; Flax's own
    ``nnx.Dropout`` fails the same way). Pass the key at call time instead, e.g.
    ``run = jax.jit(jaxdrop.checked(lambda model, key, x: jaxdrop.mc.from_nnx(model)(key, x)))``
    then ``err, y = run(model, key, x)``: each key gives a fresh mask, and a bad
    traced rate held by the model is reported. (``nnx.merge(graphdef, state,
    copy=True)`` inside the checked function also runs, but the copy's stream never
    advances: every call draws the same mask.)
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> tuple[checkify.Error, T]:
        return checkify.checkify(fn, errors=checkify.user_checks)(*args, **kwargs)

    return wrapper
