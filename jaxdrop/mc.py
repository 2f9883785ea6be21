r"""Monte Carlo dropout: predictive uncertainty from a model trained with dropout.

Gal and Ghahramani (2016) showed that a network trained with dropout (and L2
weight decay) is an approximate Bayesian model: keeping dropout **on** at test
time and averaging ``T`` stochastic forward passes

.. math::

    \hat y_t = f^{\omega_t}(x^*), \qquad \omega_t \sim q(\omega), \quad t = 1..T

draws from the approximate posterior predictive distribution. This module turns
any dropout model into those draws and the usual uncertainty summaries.

**Drawing passes.** Everything is built on one core, :func:`sample`, which runs a
function ``f(key, x) -> y`` under ``T`` independent keys, vectorised with
:func:`jax.vmap` and optionally *chunked* (``chunk_size`` passes at a time, in a
:func:`jax.lax.map` loop) so memory stays bounded for large ``T``. Pass ``t`` uses
``jax.random.split(key, T)[t]``. :func:`from_linen` and :func:`from_nnx` build
``f`` from a trained Flax model, running its dropout layers (``flax`` or
``jaxdrop``) in training mode while every other layer (BatchNorm...) stays in
evaluation mode.

**Summaries.** From the stacked samples (leading axis ``T``):
:func:`regression` (predictive mean and variance, including the model-precision
term :math:`\tau^{-1}`; :func:`model_precision` derives :math:`\tau`),
:func:`log_likelihood` (MC test log-likelihood) and :func:`classification`
(predictive probabilities, predictive entropy, mutual information / BALD,
variation ratio). :func:`predict_regression` and :func:`predict_classification`
compute the same summaries in one call *streaming* over chunks of passes, so
not even the ``T`` outputs are stored. Metrics: :func:`negative_log_likelihood`
and :func:`expected_calibration_error`.

References:
    - Y. Gal, Z. Ghahramani, "Dropout as a Bayesian Approximation: Representing
      Model Uncertainty in Deep Learning", ICML 2016.
    - N. Houlsby, F. Huszár, Z. Ghahramani, M. Lengyel, "Bayesian Active Learning
      for Classification and Preference Learning", arXiv:1112.5745, 2011.
    - Y. Gal, R. Islam, Z. Ghahramani, "Deep Bayesian Active Learning with Image
      Data", ICML 2017.
    - C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern
      Neural Networks", ICML 2017.

Example::

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> from jaxdrop import mc
    >>> w = jnp.linspace(-1.0, 1.0, 16).reshape(4, 4)
    >>> f = lambda key, x: jaxdrop.dropout(key, x, 0.5) @ w   # any stochastic model
    >>> x = jnp.ones((3, 4))
    >>> ys = mc.sample(f, jax.random.key(0), x, 100, chunk_size=32)
    >>> ys.shape
    (100, 3, 4)
    >>> r = mc.regression(ys, tau=10.0)
    >>> r.mean.shape, bool((r.variance >= 0.1).all())
    ((3, 4), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdrop import _checks, prng

__all__ = [
    "Classification",
    "Regression",
    "classification",
    "expected_calibration_error",
    "from_linen",
    "from_nnx",
    "is_dropout",
    "log_likelihood",
    "model_precision",
    "negative_log_likelihood",
    "predict_classification",
    "predict_regression",
    "regression",
    "sample",
    "weight_decay",
]

_SAMPLE_SIG = "f, key, x, num_samples"


# ---------------------------------------------------------------------------- validation


def _count(value: Any, fn: str, name: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"jaxdrop.mc.{fn}: `{name}` must be a positive Python int, got {value!r}.")
    if value <= 0:
        raise ValueError(f"jaxdrop.mc.{fn}: `{name}` must be positive, got {value}.")
    return int(value)


def _callable(f: Any, fn: str) -> None:
    if not callable(f):
        raise TypeError(
            f"jaxdrop.mc.{fn}: the first argument must be the function f(key, x) -> y to sample, "
            f"got {type(f).__name__}; call it as jaxdrop.mc.{fn}({_SAMPLE_SIG}, ...)."
        )


def _positive(value: Any, fn: str, name: str) -> float | jax.Array:
    """A strictly positive, finite scalar (concrete values are checked now)."""
    if isinstance(value, bool):
        raise TypeError(f"jaxdrop.mc.{fn}: `{name}` must be a positive number, got the bool {value}.")
    if _checks.is_concrete(value):
        arr = np.asarray(value)
        if arr.ndim != 0 or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(
                f"jaxdrop.mc.{fn}: `{name}` must be a scalar number, got {type(value).__name__} "
                f"of shape {arr.shape} and dtype {arr.dtype}."
            )
        v = float(arr)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"jaxdrop.mc.{fn}: `{name}` must be a finite number > 0, got {v}.")
        return v
    if jnp.ndim(value) != 0:
        raise TypeError(f"jaxdrop.mc.{fn}: `{name}` must be a scalar, got shape {jnp.shape(value)}.")
    return value


def _float_samples(samples: Any, fn: str, min_ndim: int = 1) -> jax.Array:
    s = _checks.float_array(samples, f"mc.{fn}", "samples")
    if s.ndim < min_ndim:
        raise ValueError(
            f"jaxdrop.mc.{fn}: `samples` must have a leading axis of T Monte Carlo samples "
            f"(as returned by jaxdrop.mc.sample){' and a trailing class axis' if min_ndim > 1 else ''}; "
            f"got shape {s.shape}."
        )
    if s.shape[0] == 0:
        raise ValueError(f"jaxdrop.mc.{fn}: `samples` holds no samples (leading axis of size 0).")
    return s.astype(jnp.promote_types(s.dtype, jnp.float32))


def _all_in_range(labels: jax.Array, num_classes: int) -> jax.Array:
    """Whether every label is a valid class index (checked at run time under ``jit``)."""
    return jnp.all((labels >= 0) & (labels < num_classes))


def _labels(labels: Any, batch_shape: tuple[int, ...], num_classes: int, fn: str) -> jax.Array:
    lab = labels if isinstance(labels, jax.Array) else jnp.asarray(labels)
    if not jnp.issubdtype(lab.dtype, jnp.integer):
        raise TypeError(
            f"jaxdrop.mc.{fn}: `labels` must be integer class indices, got dtype {lab.dtype}. "
            "For one-hot labels pass labels.argmax(-1)."
        )
    if lab.shape != batch_shape:
        raise ValueError(
            f"jaxdrop.mc.{fn}: `labels` of shape {lab.shape} does not match the probabilities' batch "
            f"shape {batch_shape} (probabilities have shape batch + (num_classes,))."
        )
    if _checks.is_concrete(lab) and lab.size and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
        raise ValueError(
            f"jaxdrop.mc.{fn}: `labels` must lie in [0, {num_classes}) for {num_classes} classes, "
            f"got values in [{int(lab.min())}, {int(lab.max())}]."
        )
    return lab


# ---------------------------------------------------------------------------- sampling


def _split(key: Any, num_samples: int, fn: str) -> jax.Array:
    return jax.random.split(prng.as_key(key, fn=f"mc.{fn}", signature=_SAMPLE_SIG), num_samples)


def sample(
    f: Callable[[jax.Array, Any], Any],
    key: Any,
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
    :func:`predict_regression` / :func:`predict_classification`. Under ``jit``
    mark ``f``, ``num_samples`` and ``chunk_size`` static, e.g.
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
    _callable(f, fn)
    num_samples = _count(num_samples, fn, "num_samples")  # type: ignore[assignment]
    chunk = _count(chunk_size, fn, "chunk_size", allow_none=True)
    keys = _split(key, num_samples, fn)
    if chunk is None or chunk >= num_samples:
        return jax.vmap(f, in_axes=(0, None))(keys, x)
    return lax.map(lambda k: f(k, x), keys, batch_size=chunk)


def _streaming(
    f: Callable[[jax.Array, Any], Any],
    key: Any,
    x: Any,
    num_samples: int,
    chunk_size: int | None,
    stats: Callable[[jax.Array], Any],
    combine: Callable[[Any, Any], Any],
    identity: Callable[[Any], Any],
    fn: str,
) -> Any:
    """Reduce ``stats`` of chunks of passes with ``combine`` (a scan over chunks)."""
    _callable(f, fn)
    num_samples = _count(num_samples, fn, "num_samples")  # type: ignore[assignment]
    chunk = _count(chunk_size, fn, "chunk_size", allow_none=True)
    keys = _split(key, num_samples, fn)

    def chunk_stats(ks: jax.Array) -> Any:
        y = jax.vmap(f, in_axes=(0, None))(ks, x)
        if not isinstance(y, jax.Array):
            raise TypeError(
                f"jaxdrop.mc.{fn}: f must return a single array (the model output), got {type(y).__name__}."
            )
        return stats(y)

    if chunk is None or chunk >= num_samples:
        return chunk_stats(keys)
    n_full, rem = divmod(num_samples, chunk)
    full = keys[: n_full * chunk].reshape(n_full, chunk)
    acc0 = identity(jax.eval_shape(chunk_stats, full[0]))

    def body(acc: Any, ks: jax.Array) -> tuple[Any, None]:
        return combine(acc, chunk_stats(ks)), None

    acc, _ = lax.scan(body, acc0, full)
    if rem:
        acc = combine(acc, chunk_stats(keys[n_full * chunk :]))
    return acc


# ---------------------------------------------------------------------------- Flax models


def is_dropout(module: Any) -> bool:
    """Whether ``module`` is a dropout layer that MC dropout should switch on.

    True for :class:`flax.linen.Dropout`, :class:`flax.nnx.Dropout` (and their
    subclasses), and for jaxdrop's own Flax layers: any class defined in
    ``jaxdrop.linen`` or ``jaxdrop.nnx`` that has a ``deterministic`` attribute
    (the drop-in ``Dropout`` and its variants). Whole models are not matched,
    even if they have ``rate`` and ``deterministic`` fields (the models in
    :mod:`jaxdrop.models` take the key at call time: sample them directly with
    ``f = lambda key, x: model(x, deterministic=False, rngs=key)``). Other layers
    with a ``deterministic`` flag (e.g. the attention-weight dropout inside
    ``MultiHeadAttention``) are *not* matched either; pass your own predicate as
    ``is_dropout=`` to :func:`from_linen` / :func:`from_nnx` to include them.

    Example::

        >>> import flax.linen as nn
        >>> from flax import nnx
        >>> from jaxdrop import mc
        >>> mc.is_dropout(nn.Dropout(0.1)), mc.is_dropout(nn.BatchNorm())
        (True, False)
        >>> mc.is_dropout(nnx.Dropout(0.1)), mc.is_dropout(nnx.BatchNorm(3, rngs=nnx.Rngs(0)))
        (True, False)
    """
    from flax import linen, nnx

    if isinstance(module, (linen.Dropout, nnx.Dropout)):
        return True
    mod = type(module).__module__
    return mod.split(".")[:2] in (["jaxdrop", "linen"], ["jaxdrop", "nnx"]) and hasattr(module, "deterministic")


def from_linen(
    module: Any,
    variables: Any,
    *,
    method: Callable[..., Any] | str | None = None,
    rng_collection: str | Sequence[str] = "dropout",
    is_dropout: Callable[[Any], bool] | None = None,
    **apply_kwargs: Any,
) -> Callable[[jax.Array, Any], Any]:
    """A Flax linen model as ``f(key, x)`` for :func:`sample`, with only dropout on.

    ``f(key, x)`` runs ``module.apply(variables, x, rngs={rng_collection: key},
    method=method, **apply_kwargs)`` with every dropout layer (see
    :func:`is_dropout`) forced into training mode (``deterministic=False``),
    however its ``deterministic`` flag was set (constructor field, call argument,
    or derived from a ``train`` flag). Pass your model's evaluation flags in
    ``apply_kwargs`` (e.g. ``train=False``): BatchNorm then uses its running
    averages while dropout still samples, which a single ``train`` flag cannot
    express. Forcing works by a :func:`flax.linen.intercept_methods` interceptor
    on the dropout layers' ``__call__`` for the duration of the call.

    Each pass gets the PRNG stream ``rngs={rng_collection: key}``, so ``f(key, x)``
    equals what ``module.apply(..., rngs={"dropout": key})`` gives with dropout in
    training mode. With several collections, collection ``i`` gets
    ``jax.random.fold_in(key, i)``.

    If your model already separates the two (e.g. a ``mc_dropout`` call argument),
    you do not need this: ``f = lambda k, x: module.apply(variables, x, train=False,
    mc_dropout=True, rngs={"dropout": k})`` works with :func:`sample` directly.

    Args:
        module: the linen ``Module``.
        variables: its trained variables (``{"params": ..., "batch_stats": ...}``).
        method: forwarded to ``apply``.
        rng_collection: the PRNG collection name(s) dropout draws from.
        is_dropout: predicate selecting the layers to force on; defaults to
            :func:`jaxdrop.mc.is_dropout`.
        **apply_kwargs: forwarded to ``apply`` and on to the model (e.g. ``train=False``).

    Reference: Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016.

    Example::

        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> from jaxdrop import mc
        >>> class Net(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x, train: bool):
        ...         x = nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x))
        ...         x = nn.Dropout(0.5, deterministic=not train)(nn.relu(x))
        ...         return nn.Dense(1)(x)
        >>> net, x = Net(), jnp.ones((5, 3))
        >>> variables = net.init(jax.random.key(0), x, train=False)
        >>> f = mc.from_linen(net, variables, train=False)  # BatchNorm eval, dropout on
        >>> ys = mc.sample(f, jax.random.key(1), x, 10)
        >>> ys.shape, bool(ys.std(0).max() > 0)
        ((10, 5, 1), True)

    Under ``jit``, build ``f`` inside the jitted function from the variables passed
    as an argument, so the weights are inputs of the compiled program rather than
    constants baked into it (slow to compile for a large model)::

        @jax.jit
        def predict(variables, key, x):
            f = mc.from_linen(net, variables, train=False)
            return mc.predict_regression(f, key, x, 100, chunk_size=50)
    """
    import inspect

    from flax import linen

    predicate = _default_is_dropout() if is_dropout is None else is_dropout
    names = (rng_collection,) if isinstance(rng_collection, str) else tuple(rng_collection)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(
            f"jaxdrop.mc.from_linen: `rng_collection` must be a name or a non-empty sequence of names, "
            f"got {rng_collection!r}."
        )

    def interceptor(next_fun: Callable[..., Any], args: Any, kwargs: Any, context: Any) -> Any:
        mod = context.module
        if context.method_name != "__call__" or not predicate(mod):
            return next_fun(*args, **kwargs)
        try:
            bound = inspect.signature(next_fun).bind(*args, **kwargs)
        except TypeError:
            return next_fun(*args, **kwargs)
        if "deterministic" in bound.signature.parameters:
            bound.arguments["deterministic"] = None  # the field below decides
        had = hasattr(mod, "deterministic")
        old = getattr(mod, "deterministic", None)
        # Linen modules are frozen dataclasses; the instance is private to this apply,
        # and the field is restored right after the call.
        object.__setattr__(mod, "deterministic", False)
        try:
            return next_fun(*bound.args, **bound.kwargs)
        finally:
            if had:
                object.__setattr__(mod, "deterministic", old)
            else:
                object.__delattr__(mod, "deterministic")

    def f(key: jax.Array, x: Any) -> Any:
        key = prng.as_key(key, fn="mc.from_linen(...)", signature="key, x")
        if len(names) == 1:
            rngs = {names[0]: key}
        else:
            rngs = {n: jax.random.fold_in(key, i) for i, n in enumerate(names)}
        extra = {} if method is None else {"method": method}
        with linen.intercept_methods(interceptor):
            return module.apply(variables, x, rngs=rngs, **extra, **apply_kwargs)

    return f


def _default_is_dropout() -> Callable[[Any], bool]:
    return is_dropout


def from_nnx(
    model: Any,
    *,
    eval_mode: bool = True,
    is_dropout: Callable[[Any], bool] | None = None,
    call: Callable[[Any, Any, jax.Array], Any] | None = None,
) -> Callable[[jax.Array, Any], Any]:
    """A trained Flax nnx model as ``f(key, x)`` for :func:`sample`, with only dropout on.

    The model is not modified. A copy is made (sharing the arrays) with
    ``deterministic=True, use_running_average=True`` wherever those attributes
    exist (what ``model.eval()`` does, if ``eval_mode``), then
    ``deterministic=False`` on the dropout layers (see :func:`is_dropout`), and
    split into a graph definition and state *now*: call ``from_nnx`` after
    training. Each ``f(key, x)`` rebuilds that copy, gives the ``i``-th dropout
    layer's RNG stream the key ``jax.random.fold_in(key, i)`` (counter 0), and
    returns ``call(copy, x, key)``, by default ``copy(x)``. The model's own RNG
    counters are never advanced.

    Args:
        model: the ``nnx.Module``.
        eval_mode: put every non-dropout layer in evaluation mode as ``model.eval()``
            does. ``False`` leaves the other layers as they are.
        is_dropout: predicate selecting the layers to switch on; defaults to
            :func:`jaxdrop.mc.is_dropout`.
        call: how to run the model, ``call(model, x, key) -> y``; the default
            ``model(x)`` requires dropout layers built with ``rngs=``. For layers
            that take their randomness at call time use e.g.
            ``call=lambda m, x, key: m(x, rngs=nnx.Rngs(dropout=key))``.

    Reference: Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxdrop import mc
        >>> class Net(nnx.Module):
        ...     def __init__(self, rngs):
        ...         self.lin1, self.bn = nnx.Linear(3, 8, rngs=rngs), nnx.BatchNorm(8, rngs=rngs)
        ...         self.drop, self.lin2 = nnx.Dropout(0.5, rngs=rngs), nnx.Linear(8, 1, rngs=rngs)
        ...     def __call__(self, x):
        ...         return self.lin2(self.drop(nnx.relu(self.bn(self.lin1(x)))))
        >>> model = Net(nnx.Rngs(0))
        >>> f = mc.from_nnx(model)  # BatchNorm uses running stats, dropout samples
        >>> ys = mc.sample(f, jax.random.key(1), jnp.ones((5, 3)), 10)
        >>> ys.shape, bool(ys.std(0).max() > 0)
        ((10, 5, 1), True)
        >>> model.drop.deterministic, model.bn.use_running_average  # untouched
        (False, False)

    Under ``jit``, pass the model as an argument (nnx modules are pytrees) and
    call ``from_nnx`` inside, so the weights are inputs of the compiled program
    rather than constants baked into it (slow to compile for a large model)::

        @jax.jit
        def predict(model, key, x):
            return mc.predict_classification(mc.from_nnx(model), key, x, 100, chunk_size=50)
    """
    from flax import nnx

    predicate = _default_is_dropout() if is_dropout is None else is_dropout
    if not isinstance(model, nnx.Module):
        raise TypeError(
            f"jaxdrop.mc.from_nnx: `model` must be a flax.nnx.Module, got {type(model).__name__}. "
            "For a linen model use jaxdrop.mc.from_linen(module, variables)."
        )
    view = model
    if eval_mode:
        view = nnx.with_attributes(
            view, deterministic=True, use_running_average=True, raise_if_not_found=False
        )
    only = lambda path, node: predicate(node)  # noqa: E731
    n_drop = sum(1 for _, m in nnx.iter_modules(view) if predicate(m))
    if n_drop == 0:
        raise ValueError(
            "jaxdrop.mc.from_nnx: the model has no dropout layer (flax.nnx.Dropout or a jaxdrop.nnx "
            "layer), so every pass would be identical. Pass `is_dropout=` to select custom layers; a "
            "model that applies dropout itself from a call-time key (like jaxdrop.models.MLP) needs "
            "no adapter: mc.sample(lambda key, x: model(x, deterministic=False, rngs=key), ...)."
        )
    view = nnx.with_attributes(view, only=only, deterministic=False, raise_if_not_found=False)
    graphdef, state = nnx.split(view)

    def f(key: jax.Array, x: Any) -> Any:
        key = prng.as_key(key, fn="mc.from_nnx(...)", signature="key, x")
        m = nnx.merge(graphdef, state, copy=True)
        seen: set[int] = set()
        i = 0
        for path, mod in nnx.iter_modules(m):
            if not predicate(mod):
                continue
            streams = [s for _, s in nnx.iter_graph(mod) if isinstance(s, nnx.RngStream)]
            if not streams and call is None:
                name = "/".join(map(str, path)) or type(mod).__name__
                raise ValueError(
                    f"jaxdrop.mc.from_nnx: dropout layer {name!r} holds no RNG stream (it was built "
                    "without rngs=), so it needs a key at call time; pass e.g. "
                    "call=lambda m, x, key: m(x, rngs=nnx.Rngs(dropout=key))."
                )
            for s in streams:
                if id(s) in seen:
                    continue
                seen.add(id(s))
                s.key[...] = jnp.broadcast_to(jax.random.fold_in(key, i), s.key[...].shape)
                s.count[...] = jnp.zeros_like(s.count[...])
                i += 1
        return m(x) if call is None else call(m, x, key)

    return f


# ---------------------------------------------------------------------------- regression


def model_precision(
    length_scale: float | jax.Array,
    rate: float | jax.Array,
    n_data: int | float | jax.Array,
    weight_decay: float | jax.Array,
) -> float | jax.Array:
    r"""Model precision :math:`\tau` implied by the prior length-scale and weight decay.

    .. math::

        \tau = \frac{p\, l^2}{2 N \lambda}, \qquad p = 1 - \text{rate}

    (Gal & Ghahramani 2016, Sec. 4). Beware: :math:`p` in the paper's formula is
    the **keep** probability; this function takes the **drop** ``rate``, like
    every jaxdrop function, and uses ``p = 1 - rate``.

    Args:
        length_scale: :math:`l > 0`, the prior length-scale (the authors' UCI code
            uses ``1e-2``).
        rate: the dropout (drop) probability used in training, in ``[0, 1)``.
        n_data: :math:`N > 0`, the number of training points.
        weight_decay: :math:`\lambda > 0`, the coefficient of
            :math:`\sum_i \|W_i\|^2 + \|b_i\|^2` in the training objective
            :math:`\frac1N\sum_n E(y_n, \hat y_n) + \lambda \sum_i (\|W_i\|^2 + \|b_i\|^2)`
            (paper eq. 1). ``optax.add_decayed_weights(wd)`` adds ``wd * w`` to the
            gradient, i.e. the penalty :math:`\frac{wd}2\|w\|^2`, so
            :math:`\lambda = wd / 2` there.

    Returns:
        :math:`\tau`; :math:`\tau^{-1}` is the observation-noise variance added to
        the predictive variance by :func:`regression`. A float for concrete inputs.

    Example::

        >>> from jaxdrop import mc
        >>> round(mc.model_precision(length_scale=1e-2, rate=0.05, n_data=455, weight_decay=1e-6), 6)
        0.104396
        >>> tau = mc.model_precision(1e-2, 0.05, 455, 1e-6)
        >>> abs(mc.weight_decay(1e-2, 0.05, 455, tau) - 1e-6) < 1e-18  # the inverse
        True
    """
    fn = "model_precision"
    length_scale = _positive(length_scale, fn, "length_scale")
    n_data = _positive(n_data, fn, "n_data")
    weight_decay = _positive(weight_decay, fn, "weight_decay")
    keep = 1.0 - _drop_rate(rate, fn)
    return keep * length_scale**2 / (2.0 * n_data * weight_decay)


def weight_decay(
    length_scale: float | jax.Array,
    rate: float | jax.Array,
    n_data: int | float | jax.Array,
    tau: float | jax.Array,
) -> float | jax.Array:
    r"""The weight decay :math:`\lambda` that gives model precision ``tau``.

    .. math::

        \lambda = \frac{p\, l^2}{2 N \tau}, \qquad p = 1 - \text{rate}

    the inverse of :func:`model_precision` (how the authors' UCI code sets the L2
    coefficient from a grid-searched :math:`\tau`). ``rate`` is the **drop**
    probability; see :func:`model_precision` for the meaning of :math:`\lambda`.

    Example::

        >>> from jaxdrop import mc
        >>> lam = mc.weight_decay(length_scale=1e-2, rate=0.01, n_data=1000, tau=0.5)
        >>> abs(mc.model_precision(1e-2, 0.01, 1000, lam) - 0.5) < 1e-12
        True
    """
    fn = "weight_decay"
    length_scale = _positive(length_scale, fn, "length_scale")
    n_data = _positive(n_data, fn, "n_data")
    tau = _positive(tau, fn, "tau")
    keep = 1.0 - _drop_rate(rate, fn)
    return keep * length_scale**2 / (2.0 * n_data * tau)


def _drop_rate(rate: Any, fn: str) -> float | jax.Array:
    r = _checks.probability(rate, f"mc.{fn}", "rate")
    if isinstance(r, float) and r >= 1.0:
        raise ValueError(
            f"jaxdrop.mc.{fn}: `rate` is the DROP probability and must be < 1 (keep probability "
            f"1 - rate > 0), got {r}."
        )
    return r


class Regression(NamedTuple):
    r"""MC-dropout predictive moments for regression (all of ``y``'s shape).

    Attributes:
        mean: :math:`\bar y = \frac1T\sum_t \hat y_t`, the predictive mean.
        variance: :math:`\tau^{-1} + \frac1T\sum_t \hat y_t^2 - \bar y^2`, the total
            predictive variance (elementwise: the diagonal of the paper's covariance).
        epistemic_variance: :math:`\frac1T\sum_t \hat y_t^2 - \bar y^2`, the spread of
            the passes (model uncertainty).
        aleatoric_variance: :math:`\tau^{-1}` (a scalar; 0 when no ``tau`` was given).
    """

    mean: jax.Array
    variance: jax.Array
    epistemic_variance: jax.Array
    aleatoric_variance: jax.Array

    @property
    def std(self) -> jax.Array:
        """Predictive standard deviation, ``sqrt(variance)``."""
        return jnp.sqrt(self.variance)


def _noise_variance(tau: Any, fn: str, dtype: Any) -> jax.Array:
    if tau is None:
        return jnp.zeros((), dtype)
    return 1.0 / jnp.asarray(_positive(tau, fn, "tau"), dtype)


def regression(samples: Any, *, tau: float | jax.Array | None = None) -> Regression:
    r"""Predictive mean and variance from MC-dropout samples (Gal & Ghahramani 2016, eq. 8-9).

    .. math::

        \mathbb E[y^*] \approx \bar y = \frac1T\sum_{t=1}^T \hat y_t, \qquad
        \operatorname{Var}[y^*] \approx \tau^{-1} + \frac1T\sum_{t=1}^T \hat y_t^2 - \bar y^2

    elementwise (the diagonal of the paper's :math:`\tau^{-1}I + \frac1T\sum_t \hat
    y_t^\top\hat y_t - \bar y^\top \bar y`; the full covariance is
    ``jnp.cov`` of the samples). The empirical variance uses ``1/T`` and is computed
    in two passes (mean first), not as a difference of large squares.

    Args:
        samples: ``(T, ...)`` floating outputs of :func:`sample`.
        tau: the model precision :math:`\tau > 0` (:func:`model_precision`);
            :math:`\tau^{-1}` is the observation-noise variance. ``None`` adds no
            noise term (``variance == epistemic_variance``).

    Returns:
        :class:`Regression` with fields of shape ``samples.shape[1:]``, in at least float32.

    Example::

        >>> import jax.numpy as jnp
        >>> from jaxdrop import mc
        >>> r = mc.regression(jnp.array([[1.0], [3.0]]), tau=4.0)
        >>> r.mean.tolist(), r.epistemic_variance.tolist(), r.variance.tolist()
        ([2.0], [1.0], [1.25])
    """
    fn = "regression"
    s = _float_samples(samples, fn)
    mean = s.mean(0)
    epistemic = jnp.square(s - mean).mean(0)
    noise = _noise_variance(tau, fn, s.dtype)
    return Regression(mean, epistemic + noise, epistemic, noise)


def predict_regression(
    f: Callable[[jax.Array, Any], jax.Array],
    key: Any,
    x: Any,
    num_samples: int,
    *,
    tau: float | jax.Array | None = None,
    chunk_size: int | None = None,
) -> Regression:
    """:func:`regression` of :func:`sample`, streamed: never stores the ``T`` outputs.

    Chunks of ``chunk_size`` passes are reduced to (count, mean, sum of squared
    deviations) and merged with Chan et al.'s parallel update, so memory is
    ``O(chunk_size)`` forward passes plus one output, for any ``T``. Equal to
    ``regression(sample(f, key, x, T), tau=tau)`` up to floating-point rounding
    (exactly when ``chunk_size`` is ``None``); merging chunk means costs a relative
    error of about ``|mean| / std`` times the machine epsilon in the variance, so
    centre targets of large magnitude (as one does for training anyway).
    Arguments as in :func:`sample` and :func:`regression`; ``f`` must return one
    floating array.

    Example::

        >>> import jax, jax.numpy as jnp, jaxdrop
        >>> from jaxdrop import mc
        >>> f = lambda key, x: jaxdrop.dropout(key, x, 0.5).sum(-1)
        >>> x = jnp.ones((2, 8))
        >>> r = mc.predict_regression(f, jax.random.key(0), x, 1000, tau=100.0, chunk_size=100)
        >>> r.mean.shape, bool(jnp.allclose(r.mean, 8.0, atol=0.5))
        ((2,), True)
        >>> bool(jnp.allclose(r.epistemic_variance, 8.0, rtol=0.25))  # 8 * 4 * 0.25
        True
    """
    fn = "predict_regression"

    def stats(y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        y = _float_samples(y, fn)
        m = y.mean(0)
        return jnp.asarray(y.shape[0], m.dtype), m, jnp.square(y - m).sum(0)

    def combine(a: Any, b: Any) -> Any:
        na, ma, qa = a
        nb, mb, qb = b
        n = na + nb
        d = mb - ma
        return n, ma + d * (nb / n), qa + qb + jnp.square(d) * (na * nb / n)

    def identity(shapes: Any) -> Any:
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    n, mean, m2 = _streaming(f, key, x, num_samples, chunk_size, stats, combine, identity, fn)
    epistemic = m2 / n
    noise = _noise_variance(tau, fn, mean.dtype)
    return Regression(mean, epistemic + noise, epistemic, noise)


def log_likelihood(
    samples: Any, y: Any, tau: float | jax.Array, *, event_ndims: int = 0
) -> jax.Array:
    r"""MC estimate of the test log-likelihood :math:`\log p(y^*\mid x^*)` per observation.

    .. math::

        \log p(y^*) \approx \operatorname{logsumexp}_{t=1}^{T}\Big(-\tfrac{\tau}{2}\|y^* - \hat y_t\|^2\Big)
        - \log T - \tfrac D2 \log 2\pi + \tfrac D2 \log\tau

    the log of the Gaussian mixture :math:`\frac1T\sum_t \mathcal N(y^*; \hat y_t,
    \tau^{-1} I)` (Gal & Ghahramani 2016, Sec. 5.1), computed stably. Papers report
    its mean over the test set (on de-normalised targets).

    Args:
        samples: ``(T, *y.shape)`` outputs of :func:`sample`.
        y: the observed targets.
        tau: model precision :math:`\tau > 0`.
        event_ndims: how many trailing axes of ``y`` form one observation
            (:math:`D` = their total size). ``0`` (default): every element is a
            separate scalar observation.

    Returns:
        Log-likelihoods of shape ``y.shape[:y.ndim - event_ndims]``.

    Example::

        >>> import jax.numpy as jnp
        >>> from jaxdrop import mc
        >>> ys = jnp.zeros((5, 3))  # five identical passes predicting 0
        >>> ll = mc.log_likelihood(ys, jnp.zeros(3), tau=1.0)
        >>> bool(jnp.allclose(ll, -0.5 * jnp.log(2 * jnp.pi)))  # the N(0, 1) density at 0
        True
    """
    fn = "log_likelihood"
    s = _float_samples(samples, fn)
    yy = _checks.float_array(y, f"mc.{fn}", "y")
    if s.shape[1:] != yy.shape:
        raise ValueError(
            f"jaxdrop.mc.{fn}: `samples` must have shape (T,) + y.shape = (T,) + {yy.shape}, "
            f"got {s.shape}."
        )
    if not isinstance(event_ndims, int) or isinstance(event_ndims, bool) or not 0 <= event_ndims <= yy.ndim:
        raise ValueError(f"jaxdrop.mc.{fn}: `event_ndims` must be an int in [0, y.ndim={yy.ndim}], got {event_ndims!r}.")
    t = jnp.asarray(_positive(tau, fn, "tau"), s.dtype)
    sq = jnp.square(yy.astype(s.dtype) - s)
    axes = tuple(range(s.ndim - event_ndims, s.ndim))
    d = math.prod(yy.shape[yy.ndim - event_ndims :])
    sq = sq.sum(axes) if axes else sq
    n = s.shape[0]
    return (
        jax.nn.logsumexp(-0.5 * t * sq, axis=0)
        - math.log(n)
        - 0.5 * d * math.log(2 * math.pi)
        + 0.5 * d * jnp.log(t)
    )


# ---------------------------------------------------------------------------- classification


class Classification(NamedTuple):
    r"""MC-dropout predictive summaries for classification (batch shape ``B``, ``K`` classes).

    Attributes:
        probs: ``(*B, K)`` predictive probabilities :math:`\bar p_c = \frac1T\sum_t p^t_c`.
        log_probs: ``(*B, K)`` :math:`\log\bar p_c`, computed stably as
            :math:`\operatorname{logsumexp}_t \log p^t_c - \log T` (use it for the NLL).
        entropy: ``B`` predictive entropy :math:`H[\bar p] = -\sum_c \bar p_c\log\bar p_c`
            (total uncertainty, in nats, in :math:`[0, \log K]`).
        expected_entropy: ``B`` :math:`\frac1T\sum_t H[p^t]` (aleatoric part).
        mutual_information: ``B`` BALD score :math:`H[\bar p] - \frac1T\sum_t H[p^t]`
            (epistemic part), clipped to :math:`[0, H[\bar p]]` against rounding.
        variation_ratio: ``B`` :math:`1 - \max_c \#\{t: \arg\max p^t = c\}/T`.
    """

    probs: jax.Array
    log_probs: jax.Array
    entropy: jax.Array
    expected_entropy: jax.Array
    mutual_information: jax.Array
    variation_ratio: jax.Array


def _log_probs(z: jax.Array, from_logits: bool) -> jax.Array:
    return jax.nn.log_softmax(z, axis=-1) if from_logits else jnp.log(z)


def _entropy(logp: jax.Array) -> jax.Array:
    p = jnp.exp(logp)
    return -jnp.where(p > 0, p * logp, 0.0).sum(-1)


def _class_stats(z: jax.Array, from_logits: bool, fn: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    z = _float_samples(z, fn, min_ndim=2)
    logp = _log_probs(z, from_logits)
    votes = jax.nn.one_hot(jnp.argmax(logp, axis=-1), z.shape[-1], dtype=jnp.int32).sum(0)
    return jax.nn.logsumexp(logp, axis=0), _entropy(logp).sum(0), votes


def _class_finalize(acc: tuple[jax.Array, jax.Array, jax.Array], num_samples: int) -> Classification:
    lse, sum_ent, votes = acc
    log_probs = lse - math.log(num_samples)
    entropy = _entropy(log_probs)
    expected = sum_ent / num_samples
    mi = jnp.clip(entropy - expected, 0.0, entropy)
    vr = (num_samples - votes.max(-1)).astype(entropy.dtype) / num_samples  # exact 0 when unanimous
    return Classification(jnp.exp(log_probs), log_probs, entropy, expected, mi, vr)


def classification(samples: Any, *, from_logits: bool = True) -> Classification:
    r"""Predictive probabilities, entropy, mutual information (BALD) and variation ratio.

    With :math:`p^t = \operatorname{softmax}(z_t)` the class probabilities of pass ``t``:

    .. math::

        \bar p_c = \frac1T\sum_t p^t_c, \qquad
        H[\bar p] = -\sum_c \bar p_c \log \bar p_c, \qquad
        I = H[\bar p] - \frac1T \sum_t \Big(-\sum_c p^t_c \log p^t_c\Big) \;\ge 0

    :math:`I` is the mutual information between the prediction and the model
    weights, the BALD acquisition score (Houlsby et al. 2011; Gal, Islam &
    Ghahramani 2017): high where the passes *disagree*, as on inputs unlike the
    training data. It is non-negative by concavity of the entropy and at most
    :math:`H[\bar p] \le \log K`. Variation ratio: :math:`1 - f_m/T` with
    :math:`f_m` the count of the modal class over passes (ties: the lowest class
    index is each pass's argmax). Entropies are in nats; :math:`0\log 0 = 0`.

    Args:
        samples: ``(T, *B, K)`` per-pass logits (or probabilities with
            ``from_logits=False``) from :func:`sample`.
        from_logits: whether ``samples`` are logits (softmax is applied) or
            probabilities that already sum to 1 over the last axis.

    Returns:
        :class:`Classification`.

    Example::

        >>> import jax.numpy as jnp
        >>> from jaxdrop import mc
        >>> p = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two confident passes that disagree
        >>> c = mc.classification(p, from_logits=False)
        >>> c.probs.tolist(), bool(jnp.allclose(c.mutual_information, jnp.log(2.0)))
        ([[0.5, 0.5]], True)
        >>> c.expected_entropy.tolist(), c.variation_ratio.tolist()
        ([0.0], [0.5])
    """
    fn = "classification"
    from_logits = _checks.flag(from_logits, f"mc.{fn}", "from_logits")
    s = _float_samples(samples, fn, min_ndim=2)
    return _class_finalize(_class_stats(s, from_logits, fn), s.shape[0])


def predict_classification(
    f: Callable[[jax.Array, Any], jax.Array],
    key: Any,
    x: Any,
    num_samples: int,
    *,
    from_logits: bool = True,
    chunk_size: int | None = None,
) -> Classification:
    """:func:`classification` of :func:`sample`, streamed: never stores the ``T`` outputs.

    Each chunk of passes is reduced to :math:`\\operatorname{logsumexp}_t \\log p^t`,
    :math:`\\sum_t H[p^t]` and the argmax vote counts, which are merged across
    chunks, so memory is ``O(chunk_size)`` forward passes for any ``T``. Equal to
    ``classification(sample(f, key, x, T))`` up to floating-point rounding (exactly
    when ``chunk_size`` is ``None``). Arguments as in :func:`sample`;
    ``f(key, x)`` returns ``(*B, K)`` logits (or probabilities with
    ``from_logits=False``).

    Example::

        >>> import jax, jax.numpy as jnp, jaxdrop
        >>> from jaxdrop import mc
        >>> w = jnp.array([[2.0, -2.0], [-2.0, 2.0]])
        >>> f = lambda key, x: jaxdrop.dropout(key, x, 0.5) @ w
        >>> x = jnp.array([[1.0, 1.0], [1.0, 0.0]])
        >>> c = mc.predict_classification(f, jax.random.key(0), x, 256, chunk_size=128)
        >>> c.probs.shape, bool((c.mutual_information[0] > c.mutual_information[1]))
        ((2, 2), True)
    """
    fn = "predict_classification"
    from_logits = _checks.flag(from_logits, f"mc.{fn}", "from_logits")

    def stats(z: jax.Array) -> Any:
        return _class_stats(z, from_logits, fn)

    def combine(a: Any, b: Any) -> Any:
        return jnp.logaddexp(a[0], b[0]), a[1] + b[1], a[2] + b[2]

    def identity(shapes: Any) -> Any:
        lse, ent, votes = shapes
        return (
            jnp.full(lse.shape, -jnp.inf, lse.dtype),
            jnp.zeros(ent.shape, ent.dtype),
            jnp.zeros(votes.shape, votes.dtype),
        )

    num_samples = _count(num_samples, fn, "num_samples")  # type: ignore[assignment]
    acc = _streaming(f, key, x, num_samples, chunk_size, stats, combine, identity, fn)
    return _class_finalize(acc, num_samples)


# ---------------------------------------------------------------------------- metrics


def negative_log_likelihood(log_probs: Any, labels: Any) -> jax.Array:
    r"""Mean negative log-likelihood :math:`-\frac1N\sum_n \log \bar p_{n, y_n}` (nats).

    Args:
        log_probs: ``(*B, K)`` log predictive probabilities, e.g.
            :attr:`Classification.log_probs` (stable even where
            :math:`\bar p` underflows), or ``jnp.log(probs)``.
        labels: ``B`` integer class indices in ``[0, K)``. Out-of-range labels raise
            for concrete input and make the result NaN under ``jit``.

    Returns:
        A scalar, the average over all of ``B``.

    Example::

        >>> import jax.numpy as jnp
        >>> from jaxdrop import mc
        >>> lp = jnp.log(jnp.array([[0.5, 0.5], [0.25, 0.75]]))
        >>> bool(jnp.isclose(mc.negative_log_likelihood(lp, jnp.array([0, 1])),
        ...                  -(jnp.log(0.5) + jnp.log(0.75)) / 2))
        True
    """
    fn = "negative_log_likelihood"
    lp = _checks.float_array(log_probs, f"mc.{fn}", "log_probs")
    if lp.ndim < 1:
        raise ValueError(f"jaxdrop.mc.{fn}: `log_probs` must have a trailing class axis, got a scalar.")
    lab = _labels(labels, lp.shape[:-1], lp.shape[-1], fn)
    k = lp.shape[-1]
    picked = jnp.take_along_axis(lp, jnp.clip(lab, 0, k - 1)[..., None], axis=-1)
    return jnp.where(_all_in_range(lab, k), -picked.mean(), jnp.nan)


def expected_calibration_error(probs: Any, labels: Any, *, num_bins: int = 15) -> jax.Array:
    r"""Expected calibration error with equal-width confidence bins (Guo et al. 2017).

    With confidence :math:`c_n = \max_k \bar p_{n,k}`, prediction
    :math:`\hat y_n = \arg\max_k \bar p_{n,k}` and ``M = num_bins`` bins
    :math:`B_m = \{n : c_n \in (\tfrac{m-1}M, \tfrac mM]\}`,

    .. math::

        \mathrm{ECE} = \sum_{m=1}^{M} \frac{|B_m|}{N}\,
        \big|\operatorname{acc}(B_m) - \operatorname{conf}(B_m)\big|, \qquad
        \operatorname{acc}(B_m) = \frac{1}{|B_m|}\sum_{n\in B_m} [\hat y_n = y_n],\quad
        \operatorname{conf}(B_m) = \frac{1}{|B_m|}\sum_{n\in B_m} c_n

    Empty bins contribute 0. Guo et al. use ``M = 15`` (the default). ECE lies in
    ``[0, 1]``; 0 means confidence matches accuracy in every bin.

    Args:
        probs: ``(*B, K)`` predictive probabilities, e.g. :attr:`Classification.probs`.
        labels: ``B`` integer class indices in ``[0, K)``. Out-of-range labels raise
            for concrete input and make the result NaN under ``jit``.
        num_bins: ``M``, a positive int.

    Example::

        >>> import jax.numpy as jnp
        >>> from jaxdrop import mc
        >>> probs = jnp.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        >>> labels = jnp.array([0, 1, 0, 1])
        >>> # bins: {0.9, 0.9} acc 0.5 -> |0.5-0.9|*2/4; {0.6} acc 1 -> 0.4/4; {0.7} acc 1 -> 0.3/4
        >>> round(float(mc.expected_calibration_error(probs, labels, num_bins=10)), 4)
        0.375
    """
    fn = "expected_calibration_error"
    p = _checks.float_array(probs, f"mc.{fn}", "probs")
    if p.ndim < 1:
        raise ValueError(f"jaxdrop.mc.{fn}: `probs` must have a trailing class axis, got a scalar.")
    num_bins = _count(num_bins, fn, "num_bins")  # type: ignore[assignment]
    lab = _labels(labels, p.shape[:-1], p.shape[-1], fn).reshape(-1)
    p = p.reshape(-1, p.shape[-1]).astype(jnp.promote_types(p.dtype, jnp.float32))
    conf = p.max(-1)
    correct = (jnp.argmax(p, -1) == lab).astype(p.dtype)
    bins = jnp.clip(jnp.ceil(conf * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    gap = jax.ops.segment_sum(correct - conf, bins, num_segments=num_bins)
    return jnp.where(_all_in_range(lab, p.shape[-1]), jnp.abs(gap).sum() / max(p.shape[0], 1), jnp.nan)
