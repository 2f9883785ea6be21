"""Monte Carlo passes: ``T`` stochastic forward passes, stacked or reduced chunk by chunk."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, Protocol

import jax
from jax import lax
from jax.typing import ArrayLike

from jaxdrop import _checks, prng
from jaxdrop.mc._inputs import SAMPLE_SIGNATURE

__all__ = ["Reducer", "sample", "stream"]

Model = Callable[[jax.Array, Any], Any]


class Reducer(Protocol):
    """Statistics of a chunk of passes and how two chunks' statistics merge.

    Implementations are frozen dataclasses, so equal reducers share compilations.
    """

    def stats(self, y: jax.Array) -> Any: ...

    def combine(self, a: Any, b: Any) -> Any: ...

    def identity(self, shapes: Any) -> Any: ...


def _keys(key: ArrayLike, num_samples: int, fn: str) -> jax.Array:
    return jax.random.split(prng.as_key(key, fn=f"mc.{fn}", signature=SAMPLE_SIGNATURE), num_samples)


def _stack(f: Model, keys: jax.Array, x: Any, chunk: int | None) -> Any:
    if chunk is None or chunk >= keys.shape[0]:
        return jax.vmap(f, in_axes=(0, None))(keys, x)
    return lax.map(lambda k: f(k, x), keys, batch_size=chunk)


def _reduce(f: Model, keys: jax.Array, x: Any, chunk: int | None, reducer: Reducer, fn: str) -> Any:
    """Reduce ``reducer.stats`` of chunks of passes with ``reducer.combine`` (a scan over chunks)."""

    def chunk_stats(ks: jax.Array) -> Any:
        y = jax.vmap(f, in_axes=(0, None))(ks, x)
        if not isinstance(y, jax.Array):
            raise TypeError(
                f"jaxdrop.mc.{fn}: f must return a single array (the model output), got {type(y).__name__}."
            )
        return reducer.stats(y)

    num_samples = keys.shape[0]
    if chunk is None or chunk >= num_samples:
        return chunk_stats(keys)
    n_full, rem = divmod(num_samples, chunk)
    full = keys[: n_full * chunk].reshape(n_full, chunk)
    acc0 = reducer.identity(jax.eval_shape(chunk_stats, full[0]))

    def body(acc: Any, ks: jax.Array) -> tuple[Any, None]:
        return reducer.combine(acc, chunk_stats(ks)), None

    acc, _ = lax.scan(body, acc0, full)
    if rem:
        acc = reducer.combine(acc, chunk_stats(keys[n_full * chunk :]))
    return acc


_COMPILED: collections.OrderedDict[Any, Callable[..., Any]] = collections.OrderedDict()
_MAX_COMPILED = 64


def _staged(run: Callable[..., Any], f: Model, keys: jax.Array, x: Any, static: tuple[Any, ...]) -> Any:
    """``run(f, keys, x, *static)``, compiled once per program of ``f``, shapes and ``static``.

    Eagerly, ``lax.map``/``lax.scan`` over a new closure would compile at every call.
    Instead ``f`` is traced to a jaxpr: its text (with the shapes) and ``static`` key a
    cache of jitted runs, and the arrays ``f`` closes over go in as arguments, so a
    cached run never sees stale values. Under an outer trace, ``run`` is simply inlined.
    """
    leaves = jax.tree.leaves((keys, x))
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return run(f, keys, x, *static)
    # A fresh wrapper: make_jaxpr caches by function, and would hand back the values `f`
    # closed over when it was first traced.
    closed, out_shape = jax.make_jaxpr(lambda k, xx: f(k, xx), return_shape=True)(keys[0], x)
    in_tree = jax.tree.structure((keys[0], x))
    out_tree = jax.tree.structure(out_shape)
    consts = closed.consts
    cache_key = (
        str(closed.jaxpr),
        in_tree,
        out_tree,
        tuple((jax.numpy.shape(c), jax.numpy.result_type(c)) for c in consts),
        keys.shape[0],
        static,
    )
    compiled = _COMPILED.get(cache_key)
    if compiled is None:
        jaxpr = closed.jaxpr

        def staged(consts_: list[Any], keys_: jax.Array, x_: Any) -> Any:
            def f_(k: jax.Array, xx: Any) -> Any:
                out = jax.core.eval_jaxpr(jaxpr, consts_, *jax.tree.leaves((k, xx)))
                return jax.tree.unflatten(out_tree, out)

            return run(f_, keys_, x_, *static)

        compiled = jax.jit(staged)
        _COMPILED[cache_key] = compiled
        if len(_COMPILED) > _MAX_COMPILED:
            _COMPILED.popitem(last=False)
    else:
        _COMPILED.move_to_end(cache_key)
    return compiled(list(consts), keys, x)


def sample(
    f: Model,
    key: ArrayLike,
    x: Any,
    num_samples: int,
    *,
    chunk_size: int | None = None,
) -> Any:
    r"""Run ``T = num_samples`` stochastic forward passes ``f(key_t, x)``; stack them.

    .. math::

        \text{out}[t] = f(k_t, x), \qquad (k_1, \dots, k_T) = \texttt{jax.random.split}(key, T)

    so ``out[t]`` is exactly what ``f(jax.random.split(key, T)[t], x)`` returns
    (up to floating-point reassociation of batched matrix products).

    Args:
        f: the stochastic model, ``f(key, x) -> y`` with ``y`` an array or pytree of
            arrays. Dropout must be *on* inside ``f`` and drawn from ``key``: e.g.
            ``lambda k, x: jaxdrop.dropout(k, h(x), 0.1)``, or build ``f`` from a
            Flax model with :func:`from_linen` / :func:`from_nnx`.
        key: a JAX PRNG key (new-style or legacy ``uint32``).
        x: the input, an array or pytree, shared by all passes (not batched over).
        num_samples: ``T``, the number of passes (static Python int).
        chunk_size: run at most this many passes at once (a :func:`jax.lax.map` over
            chunks of ``vmap``-ed passes) to bound the memory of intermediate
            activations; ``None`` (default) vectorises all ``T`` passes at once.
            The keys, and hence the samples, do not depend on ``chunk_size``.

    Returns:
        ``f``'s output with a new leading axis of size ``T`` (on every leaf).

    This stores all ``T`` outputs; to bound memory completely use the streaming
    :func:`predict_regression` / :func:`predict_classification`. Called eagerly,
    the passes run as one compiled program, compiled once per program of ``f``
    (what ``f`` computes, not the values it closes over, which are passed in
    fresh at every call), input shapes, ``num_samples`` and ``chunk_size``.
    Under ``jit`` mark ``f``, ``num_samples`` and ``chunk_size`` static, e.g.
    ``jax.jit(functools.partial(mc.sample, f, num_samples=100))``.

    Reference: Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016.

    Example::

        >>> import jax, jax.numpy as jnp, jaxdrop
        >>> from jaxdrop import mc
        >>> f = lambda key, x: jaxdrop.dropout(key, x, 0.5)
        >>> x = jnp.ones(4)
        >>> ys = mc.sample(f, jax.random.key(0), x, 6, chunk_size=4)
        >>> ys.shape
        (6, 4)
        >>> bool((ys == mc.sample(f, jax.random.key(0), x, 6)).all())
        True
        >>> k3 = jax.random.split(jax.random.key(0), 6)[3]
        >>> bool((ys[3] == f(k3, x)).all())
        True
    """
    fn = "sample"
    _checks.function(f, f"mc.{fn}", SAMPLE_SIGNATURE)
    num_samples = _checks.count(num_samples, f"mc.{fn}", "num_samples")
    chunk = None if chunk_size is None else _checks.count(chunk_size, f"mc.{fn}", "chunk_size")
    keys = _keys(key, num_samples, fn)
    return _staged(_stack, f, keys, x, (chunk,))


def stream(
    f: Model, key: ArrayLike, x: Any, num_samples: int, chunk_size: int | None, reducer: Reducer, fn: str
) -> Any:
    """The reduced statistics of ``num_samples`` passes, ``chunk_size`` passes at a time."""
    _checks.function(f, f"mc.{fn}", SAMPLE_SIGNATURE)
    num_samples = _checks.count(num_samples, f"mc.{fn}", "num_samples")
    chunk = None if chunk_size is None else _checks.count(chunk_size, f"mc.{fn}", "chunk_size")
    keys = _keys(key, num_samples, fn)
    return _staged(_reduce, f, keys, x, (chunk, reducer, fn))
