"""Keys to random bits: the only place in jaxdrop where randomness is made.

Every jaxdrop function draws its randomness through this module. The bits are a
pure function of the key and of each element's *global* row-major index, computed
by elementwise integer arithmetic, so XLA fuses them into whatever consumes them
(a dropout mask, a noise sample) and never materialises the bits themselves.

**The generator.** For keys of JAX's default implementation (``threefry2x32``)
with ``jax_threefry_partitionable`` on (JAX's default), element ``i`` of an array
of shape ``shape`` gets the 32 bits::

    (b1, b2) = threefry2x32(key_data(key), counter=(i >> 32, i & 0xFFFFFFFF))
    bits[i]  = b1 ^ b2

which is exactly what :func:`jax.random.bits` produces, so :func:`uniform`,
:func:`normal` and :func:`bernoulli` are bit-for-bit equal to their
``jax.random`` namesakes (``mode="exact"``). ``mode="fast"`` runs the same
Threefry-2x32 with 13 rounds instead of 20: 13 is the smallest number of rounds
for which Threefry-2x32 passes the complete TestU01 BigCrush battery according to
its authors (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC 2011, Table 2); the 7 extra rounds of the default are a safety margin. Its bits
differ from ``jax.random``'s but have the same resolution.

Keys of other implementations (``rbg``, ``unsafe_rbg``, ...), or JAX configured
with ``jax_threefry_partitionable=False``, fall back to :func:`jax.random.bits`:
still correct, but not fused.

Because element ``i``'s bits depend only on ``(key, i)``, a sharded array gets the
same values however it is split across devices, and each device computes its own
slice without communication.

**Blocks of a larger array.** Inside :func:`jax.shard_map` a function sees only
its device's block, and index 0 of the block is not index 0 of the array. Every
sampler here takes ``global_shape`` and ``index_offset`` (the block's starting
index along each axis) and then returns exactly that block of the global
array's values, e.g. ``bits(key, (2, 3), global_shape=(8, 6), index_offset=(4, 3))
== bits(key, (8, 6))[4:6, 3:6]``, computing only the block. The offsets may be
traced (``lax.axis_index(name) * block_size``). See ``docs/sharding.md``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdrop import _checks

__all__ = [
    "Mode",
    "as_key",
    "bernoulli",
    "bits",
    "is_fused",
    "normal",
    "threefry2x32",
    "uniform",
]

Mode = Literal["exact", "fast"]
"""``"exact"``: Threefry-2x32-20, bit-identical to ``jax.random``.
``"fast"``: Threefry-2x32-13, same resolution, different bits."""

_ROUNDS: dict[str, int] = {"exact": 20, "fast": 13}
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_U32 = np.uint32
_KEY_HOWTO = "Make one with `key = jax.random.key(0)` and split it with `jax.random.split`."


def _rounds(mode: str) -> int:
    try:
        return _ROUNDS[mode]
    except KeyError:
        raise ValueError(f"mode must be 'exact' or 'fast', got {mode!r}.") from None


def _float_dtype(dtype: Any, fn: str) -> Any:
    try:
        dtype = jax.dtypes.canonicalize_dtype(dtype)
    except TypeError:
        raise TypeError(f"jaxdrop.{fn}: `dtype` must be a floating-point dtype, got {dtype!r}.") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"jaxdrop.{fn}: `dtype` must be a floating-point dtype, got {dtype}.")
    return dtype


def _broadcasts_to(src: tuple[int, ...], dst: tuple[int, ...]) -> bool:
    return len(src) <= len(dst) and all(a in (1, b) for a, b in zip(src[::-1], dst[::-1], strict=False))


def _is_key_dtype(dtype: Any) -> bool:
    return bool(jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key))


def _default_key_shape() -> tuple[int, ...]:
    return _key_shape_of(str(jax.config.jax_default_prng_impl))  # type: ignore[attr-defined]


@functools.cache
def _key_shape_of(impl: str) -> tuple[int, ...]:
    return tuple(jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape)


def as_key(key: Any, *, fn: str = "prng.as_key", signature: str | None = None) -> jax.Array:
    """Validate ``key`` and return it as a typed, scalar PRNG key.

    Accepts a new-style key (``jax.random.key(0)``, any implementation) or a
    legacy raw ``uint32`` key (``jax.random.PRNGKey(0)``) of JAX's default
    implementation. Raises ``TypeError`` for anything else, explaining how to make
    a key and the expected argument order ``fn(signature)``.
    """
    if signature is None:
        signature = "key" if fn == "prng.as_key" else "key, x, rate"
    order = f"jaxdrop.{fn}({signature})"
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", ()))
    if dtype is not None and _is_key_dtype(dtype):
        if shape != ():
            raise TypeError(
                f"{order} takes a single PRNG key, got an array of keys of shape {shape}. "
                "Map over several keys with jax.vmap, or pick one with keys[i]."
            )
        return key
    if dtype is not None and np.dtype(dtype) == np.uint32 and shape == _default_key_shape():
        return jax.random.wrap_key_data(key)
    if isinstance(key, (bool, int, float, complex)) or key is None:
        got = f"{type(key).__name__} {key!r}"
    elif dtype is not None:
        got = f"an array of dtype {np.dtype(dtype) if not _is_key_dtype(dtype) else dtype} and shape {shape}"
    else:
        got = f"an object of type {type(key).__name__}"
    hint = ""
    if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
        hint = " A floating-point array in the key position usually means the arguments are in the wrong order."
    raise TypeError(
        f"{order}: the first argument must be a JAX PRNG key, got {got}.{hint} "
        f"{_KEY_HOWTO} Legacy uint32 keys from jax.random.PRNGKey(seed) of shape "
        f"{_default_key_shape()} are accepted too."
    )


def is_fused(key: jax.Array) -> bool:
    """Whether ``key``'s bits are generated by jaxdrop's fused Threefry.

    True for ``threefry2x32`` keys when ``jax_threefry_partitionable`` is on (the
    default); other implementations fall back to :func:`jax.random.bits`.
    """
    return str(jax.random.key_impl(key)) == "threefry2x32" and bool(
        jax.config.jax_threefry_partitionable  # type: ignore[attr-defined]
    )


def _words(x: Any, name: str) -> Any:
    """``x`` as uint32 words: a uint32 array, or Python ints in ``[0, 2**32)``."""
    if isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32:
        return np.uint32(x)
    if getattr(x, "dtype", None) != np.uint32:
        raise TypeError(
            f"jaxdrop.prng.threefry2x32: `{name}` must be a uint32 array (or an int in [0, 2**32)), got {x!r}."
        )
    return x


def _rotl(x: jax.Array, r: int) -> jax.Array:
    return lax.shift_left(x, _U32(r)) | lax.shift_right_logical(x, _U32(32 - r))


def threefry2x32(
    k0: jax.Array, k1: jax.Array, c0: jax.Array, c1: jax.Array, rounds: int = 20
) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 block cipher (Salmon et al. 2011), elementwise.

    Encrypts the counter ``(c0, c1)`` under the key ``(k0, k1)``; all arguments
    are ``uint32`` arrays that broadcast together. With ``rounds=20`` this is the
    function behind :func:`jax.random.bits`; a key injection follows every fourth
    round, as in Random123.

    >>> import numpy as np
    >>> u = np.uint32
    >>> [hex(int(w)) for w in threefry2x32(u(0), u(0), u(0), u(0))]
    ['0x6b200159', '0x99ba4efe']
    """
    k0, k1, c0, c1 = (_words(w, name) for w, name in ((k0, "k0"), (k1, "k1"), (c0, "c0"), (c1, "c1")))
    ks = (k0, k1, k0 ^ k1 ^ _U32(0x1BD11BDA))
    x0 = c0 + ks[0]
    x1 = c1 + ks[1]
    for r in range(rounds):
        x0 = x0 + x1
        x1 = _rotl(x1, _ROTATIONS[(r // 4) % 2][r % 4])
        x1 = x1 ^ x0
        if r % 4 == 3:
            g = r // 4
            x0 = x0 + ks[(g + 1) % 3]
            x1 = x1 + ks[(g + 2) % 3] + _U32(g + 1)
    return x0, x1


def _mul_wide(a: jax.Array, b: int) -> tuple[jax.Array, jax.Array]:
    """(hi, lo) words of the 64-bit product of uint32 ``a`` and a constant < 2**32."""
    a0, a1 = a & _U32(0xFFFF), a >> _U32(16)
    b0, b1 = _U32(b & 0xFFFF), _U32(b >> 16)
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> _U32(16)) + (p01 & _U32(0xFFFF)) + (p10 & _U32(0xFFFF))
    lo = (p00 & _U32(0xFFFF)) | (mid << _U32(16))
    hi = p11 + (p01 >> _U32(16)) + (p10 >> _U32(16)) + (mid >> _U32(16))
    return hi, lo


Block = tuple[tuple[int, ...], jax.Array] | None
"""``(global_shape, offsets)`` of a block of a larger array (offsets: uint32, one per axis), or None."""


def _block(shape: tuple[int, ...], global_shape: Any, index_offset: Any, fn: str) -> Block:
    """Validate ``global_shape``/``index_offset`` for a block of ``shape``; None when both are None."""
    if global_shape is None and index_offset is None:
        return None
    if global_shape is None or index_offset is None:
        raise ValueError(
            f"jaxdrop.prng.{fn}: pass both `global_shape` (the shape of the whole array) and "
            "`index_offset` (where this block starts along each axis), or neither."
        )
    gshape = tuple(int(d) for d in global_shape)
    ndim = len(shape)
    if len(gshape) != ndim or any(s > g for s, g in zip(shape, gshape, strict=True)):
        raise ValueError(
            f"jaxdrop.prng.{fn}: a block of shape {shape} does not fit in global_shape={gshape}: "
            "it needs one entry per axis, each at least the block's size."
        )
    if hasattr(index_offset, "ndim") and index_offset.ndim == 1:
        parts = [index_offset[d] for d in range(index_offset.shape[0])]
    else:
        parts = list(index_offset)
    if len(parts) != ndim:
        raise ValueError(
            f"jaxdrop.prng.{fn}: index_offset needs one start index per axis ({ndim}), got {len(parts)}."
        )
    concrete: list[int] = []
    for d, o in enumerate(parts):
        dtype = getattr(o, "dtype", None)
        if isinstance(o, bool) or (
            not isinstance(o, (int, np.integer)) and (dtype is None or not jnp.issubdtype(dtype, jnp.integer))
        ):
            raise TypeError(f"jaxdrop.prng.{fn}: index_offset[{d}] must be an integer, got {o!r}.")
        if isinstance(o, jax.core.Tracer):
            continue
        o = int(o)
        if not 0 <= o <= gshape[d] - shape[d]:
            raise ValueError(
                f"jaxdrop.prng.{fn}: index_offset[{d}]={o} puts the block (size {shape[d]}) outside "
                f"the global axis of size {gshape[d]}; it must be in [0, {gshape[d] - shape[d]}]."
            )
        concrete.append(o)
    if len(concrete) == ndim:
        return gshape, jnp.asarray(np.asarray(concrete, _U32).reshape(ndim))
    return gshape, jnp.stack([jnp.asarray(o).astype(_U32) for o in parts])


def counters(
    shape: tuple[int, ...], *, global_shape: Any = None, index_offset: Any = None
) -> tuple[jax.Array, jax.Array]:
    """Row-major flat index of every element of ``shape``, as (hi, lo) uint32 words.

    Built from per-axis iotas (no reshape), so it partitions under SPMD sharding:
    each device computes the global indices of its own shard. With
    ``global_shape`` and ``index_offset``, the indices are those of the block of
    ``shape`` starting at ``index_offset`` in an array of ``global_shape``.

    >>> [int(i) for i in counters((2, 2), global_shape=(4, 5), index_offset=(1, 3))[1].ravel()]
    [8, 9, 13, 14]
    """
    shape = tuple(int(d) for d in shape)
    return _counters(shape, _block(shape, global_shape, index_offset, "counters"))


def _counters(shape: tuple[int, ...], block: Block = None) -> tuple[jax.Array, jax.Array]:
    if not shape:
        return jnp.zeros((), _U32), jnp.zeros((), _U32)
    gshape, offsets = block if block is not None else (shape, None)
    strides = [math.prod(gshape[d + 1 :]) for d in range(len(shape))]
    hi = jnp.zeros(shape, _U32)
    lo = jnp.zeros(shape, _U32)
    big = math.prod(gshape) > 2**32
    for d, stride in enumerate(strides):
        if gshape[d] == 1:
            continue
        if gshape[d] > 2**32 and offsets is not None:
            raise ValueError(
                f"jaxdrop.prng: a block of an array whose axis {d} is longer than 2**32 "
                f"({gshape[d]}) is not supported: block offsets are 32-bit. Split that axis."
            )
        idx = lax.broadcasted_iota(_U32, shape, d)
        if offsets is not None:
            idx = idx + offsets[d]
        if not big:
            lo = lo + idx * _U32(stride)
            continue
        # 64-bit accumulate: idx * stride, stride = s_hi * 2**32 + s_lo.
        p_hi, p_lo = _mul_wide(idx, stride & 0xFFFFFFFF)
        p_hi = p_hi + idx * _U32(stride >> 32)
        if shape[d] > 2**32:
            # The uint32 iota holds the index mod 2**32; its high word comes from a float32
            # iota, exact after rounding: |float32(i) - i| <= i * 2**-24 << 2**31 for i < 2**48.
            approx = lax.broadcasted_iota(jnp.float32, shape, d)
            idx_hi = jnp.round((approx - idx.astype(jnp.float32)) * np.float32(2.0**-32)).astype(_U32)
            p_hi = p_hi + idx_hi * _U32(stride & 0xFFFFFFFF)
        new_lo = lo + p_lo
        hi = hi + p_hi + (new_lo < lo).astype(_U32)
        lo = new_lo
    return hi, lo


def _key_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    data = jax.random.key_data(key)
    return data[..., 0], data[..., 1]


def bits(
    key: jax.Array,
    shape: tuple[int, ...],
    *,
    mode: Mode = "exact",
    global_shape: Any = None,
    index_offset: Any = None,
) -> jax.Array:
    """32 random bits per element of ``shape``, as ``uint32``.

    ``mode="exact"`` equals ``jax.random.bits(key, shape, jnp.uint32)``.

    ``global_shape`` and ``index_offset`` (both or neither) make ``shape`` a block
    of a larger array: the result is the block of ``bits(key, global_shape)``
    that starts at ``index_offset`` (one start index per axis, Python ints or
    integer scalars, which may be traced, e.g. ``lax.axis_index("x") * n``
    inside ``shard_map``), computed without the rest of the array. Concrete
    offsets are range-checked; traced ones are not.

    >>> import jax
    >>> k = jax.random.key(0)
    >>> bool((bits(k, (3, 4)) == jax.random.bits(k, (3, 4), jax.numpy.uint32)).all())
    True
    >>> block = bits(k, (2, 3), global_shape=(8, 6), index_offset=(4, 3))
    >>> bool((block == bits(k, (8, 6))[4:6, 3:6]).all())
    True
    """
    shape = _checks.shape(shape, "prng.bits")
    rounds = _rounds(_checks.mode(mode, "prng.bits"))
    key = as_key(key, fn="prng.bits", signature="key, shape")
    block = _block(shape, global_shape, index_offset, "bits")
    if not is_fused(key):
        return _fallback_bits(key, shape, jnp.uint32, block)
    if block is None:
        return _fused_bits(key, shape, rounds)
    return _fused_block_bits(key, block[1], shape, block[0], rounds)


def _fallback_bits(key: jax.Array, shape: tuple[int, ...], dtype: Any, block: Block) -> jax.Array:
    # Keys jaxdrop cannot fuse: jax.random's bits (of the whole array for a block, then sliced).
    if block is None:
        return jax.random.bits(key, shape, dtype)
    gshape, offsets = block
    start = [offsets[d].astype(jnp.int32) for d in range(len(shape))]
    return lax.dynamic_slice(jax.random.bits(key, gshape, dtype), start, shape)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _fused_bits(key: jax.Array, shape: tuple[int, ...], rounds: int) -> jax.Array:
    # Jitted so that eager calls run as one compiled kernel instead of hundreds of
    # dispatched integer ops; under an outer jit it is inlined and fused.
    k0, k1 = _key_words(key)
    hi, lo = counters(shape)
    b1, b2 = threefry2x32(k0, k1, hi, lo, rounds)
    return b1 ^ b2


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _fused_block_bits(
    key: jax.Array, offsets: jax.Array, shape: tuple[int, ...], gshape: tuple[int, ...], rounds: int
) -> jax.Array:
    k0, k1 = _key_words(key)
    hi, lo = _counters(shape, (gshape, offsets))
    b1, b2 = threefry2x32(k0, k1, hi, lo, rounds)
    return b1 ^ b2


def _bits_wide(
    key: jax.Array, shape: tuple[int, ...], nbits: int, mode: Mode, block: Block = None
) -> jax.Array:
    """``nbits`` random bits per element, as jax.random's internal ``_random_bits``."""
    where: dict[str, Any] = {} if block is None else {"global_shape": block[0], "index_offset": block[1]}
    if nbits == 32:
        return bits(key, shape, mode=mode, **where)
    if nbits in (8, 16):
        dtype = {8: np.uint8, 16: np.uint16}[nbits]
        return lax.convert_element_type(bits(key, shape, mode=mode, **where), dtype)
    if nbits == 64:
        if not is_fused(key):
            return _fallback_bits(key, shape, jnp.uint64, block)
        k0, k1 = _key_words(key)
        hi, lo = _counters(shape, block)
        b1, b2 = threefry2x32(k0, k1, hi, lo, _rounds(mode))
        return (b1.astype(np.uint64) << np.uint64(32)) | b2.astype(np.uint64)
    raise ValueError(f"unsupported bit width {nbits}")


def uniform(
    key: jax.Array,
    shape: tuple[int, ...],
    dtype: Any = jnp.float32,
    minval: Any = 0.0,
    maxval: Any = 1.0,
    *,
    mode: Mode = "exact",
    global_shape: Any = None,
    index_offset: Any = None,
) -> jax.Array:
    """Uniform floats in ``[minval, maxval)``; ``mode="exact"`` equals :func:`jax.random.uniform`.

    The mantissa of a float in ``[1, 2)`` is filled with the top random bits and 1
    is subtracted, so float32 values lie on a grid of ``2**-23``.
    ``global_shape``/``index_offset``: a block of a larger array, as in :func:`bits`.

    >>> import jax
    >>> k = jax.random.key(1)
    >>> bool((uniform(k, (5,)) == jax.random.uniform(k, (5,))).all())
    True
    """
    key = as_key(key, fn="prng.uniform", signature="key, shape")
    dtype = _float_dtype(dtype, "prng.uniform")
    _checks.mode(mode, "prng.uniform")
    shape = _checks.shape(shape, "prng.uniform")
    block = _block(shape, global_shape, index_offset, "uniform")
    if block is None:
        return _uniform(key, shape, dtype, minval, maxval, mode)
    return _uniform_block(key, shape, dtype, minval, maxval, mode, block[0], block[1])


def _uniform_impl(
    key: jax.Array, shape: tuple[int, ...], dtype: Any, minval: Any, maxval: Any, mode: Mode, block: Block
) -> jax.Array:
    finfo = jnp.finfo(dtype)
    nbits, nmant = finfo.bits, finfo.nmant
    rng_bits = 8 if nmant < 8 else nbits
    uint: Any = {16: np.uint16, 32: np.uint32, 64: np.uint64}[nbits]
    raw = _bits_wide(key, shape, rng_bits, mode, block)
    if rng_bits != nbits:
        raw = lax.convert_element_type(raw, uint)
    one = np.array(1.0, dtype).view(uint)
    fbits = lax.shift_right_logical(raw, uint(rng_bits - nmant)) | one
    floats = lax.bitcast_convert_type(fbits, dtype) - np.array(1.0, dtype)
    minval = lax.convert_element_type(minval, dtype)
    maxval = lax.convert_element_type(maxval, dtype)
    return lax.max(minval, floats * (maxval - minval) + minval)


@functools.partial(jax.jit, static_argnums=(1, 2, 5))
def _uniform(
    key: jax.Array, shape: tuple[int, ...], dtype: Any, minval: Any, maxval: Any, mode: Mode
) -> jax.Array:
    return _uniform_impl(key, shape, dtype, minval, maxval, mode, None)


@functools.partial(jax.jit, static_argnums=(1, 2, 5, 6))
def _uniform_block(
    key: jax.Array,
    shape: tuple[int, ...],
    dtype: Any,
    minval: Any,
    maxval: Any,
    mode: Mode,
    gshape: tuple[int, ...],
    offsets: jax.Array,
) -> jax.Array:
    return _uniform_impl(key, shape, dtype, minval, maxval, mode, (gshape, offsets))


def normal(
    key: jax.Array,
    shape: tuple[int, ...],
    dtype: Any = jnp.float32,
    *,
    mode: Mode = "exact",
    global_shape: Any = None,
    index_offset: Any = None,
) -> jax.Array:
    """Standard normal samples; ``mode="exact"`` equals :func:`jax.random.normal`.

    Computed as ``sqrt(2) * erfinv(u)`` with ``u`` uniform on ``(-1, 1)``.
    ``global_shape``/``index_offset``: a block of a larger array, as in :func:`bits`.

    >>> import jax
    >>> k = jax.random.key(2)
    >>> bool((normal(k, (4,)) == jax.random.normal(k, (4,))).all())
    True
    """
    key = as_key(key, fn="prng.normal", signature="key, shape")
    shape = _checks.shape(shape, "prng.normal")
    _checks.mode(mode, "prng.normal")
    dtype = _float_dtype(dtype, "prng.normal")
    lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype)
    u = uniform(key, shape, dtype, lo, 1.0, mode=mode, global_shape=global_shape, index_offset=index_offset)
    return lax.mul(np.array(np.sqrt(2), dtype), lax.erf_inv(u))


def bernoulli(
    key: jax.Array,
    p: Any,
    shape: tuple[int, ...],
    *,
    mode: Mode = "exact",
    global_shape: Any = None,
    index_offset: Any = None,
) -> jax.Array:
    """Boolean samples that are ``True`` with probability ``p``.

    ``keep = uniform(key, shape, dtype(p)) < p``, which with ``mode="exact"`` is
    :func:`jax.random.bernoulli` (its default ``mode='low'``). A Python float ``p``
    is drawn in float32 (float64 under ``jax_enable_x64``), exactly as
    ``jax.random`` does; its resolution is that of the dtype (``2**-23`` for
    float32). ``global_shape``/``index_offset``: a block of a larger array, as
    in :func:`bits`.

    >>> import jax
    >>> k = jax.random.key(3)
    >>> bool((bernoulli(k, 0.3, (6,)) == jax.random.bernoulli(k, 0.3, (6,))).all())
    True
    """
    key = as_key(key, fn="prng.bernoulli", signature="key, p, shape")
    shape = _checks.shape(shape, "prng.bernoulli")
    _checks.mode(mode, "prng.bernoulli")
    p_dtype = getattr(p, "dtype", None)
    if (
        isinstance(p, (bool, np.bool_, str, bytes, complex))
        or p is None
        or (p_dtype is not None and not (jnp.issubdtype(p_dtype, jnp.floating) or jnp.issubdtype(p_dtype, jnp.integer)))
    ):
        raise TypeError(f"jaxdrop.prng.bernoulli: `p` must be a real probability (scalar or array), got {p!r}.")
    p = jnp.asarray(p)
    if not jnp.issubdtype(p.dtype, jnp.floating):
        p = p.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    if p.ndim and _broadcasts_to(p.shape, shape) is False:
        raise ValueError(
            f"jaxdrop.prng.bernoulli: `p` of shape {p.shape} does not broadcast to `shape` {shape} "
            "(as in jax.random.bernoulli, one probability or one per element)."
        )
    return uniform(key, shape, p.dtype, mode=mode, global_shape=global_shape, index_offset=index_offset) < p
