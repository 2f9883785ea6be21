"""Flax models as MC-dropout samplers: dropout layers switched on, keys at call time."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxdrop import prng

__all__ = ["from_linen", "from_nnx", "is_dropout"]


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

    from flax import linen

    predicate = _default_is_dropout() if is_dropout is None else is_dropout
    names = (
        (rng_collection,)
        if isinstance(rng_collection, str)
        else tuple(rng_collection)
        if isinstance(rng_collection, Sequence)
        else ()
    )
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
