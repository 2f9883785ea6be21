"""Model adapters: run a Flax nnx or linen model functionally on ``(params, model_state)``.

An adapter hides the two APIs' differences from the training loop: how a model is
initialised, how it takes its train/eval switch, where its dropout keys come from,
how a scheduled dropout rate reaches its layers, and how the trained model is put
back together from a :class:`~jaxdrop.training.TrainState`.
"""

from __future__ import annotations

import inspect
import typing
import zlib
from collections.abc import Callable, Iterator
from typing import Any, Literal, cast

import jax
import jax.numpy as jnp
from flax import linen, nnx

from jaxdrop.training._state import PyTree

__all__ = ["LinenAdapter", "NnxAdapter", "RateFilter", "accepts", "make_adapter", "schedulable"]

RateFilter = Callable[[Any], bool]
"""Selects the layers a rate schedule drives: ``filter(layer) -> bool``."""

# The keyword a model's __call__ takes for its train/eval switch, and whether it is
# True in training ("train", "training"...) or in evaluation ("deterministic").
_FLAG_NAMES = ("deterministic", "train", "training", "is_training")
_EVAL_WORDS = ("deterministic", "eval", "inference", "evaluation", "is_eval", "frozen")


def accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes a keyword ``name`` (or any keyword, through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def schedulable(layer: Any) -> bool:
    """The default :data:`RateFilter`: every jaxdrop dropout layer with a ``rate``.

    jaxdrop's layers take a traced rate without recompiling; Flax's own
    ``Dropout`` tests ``rate == 0`` in Python and cannot, so it is not selected.
    """
    mod = type(layer).__module__.split(".")[:2]
    return mod in (["jaxdrop", "linen"], ["jaxdrop", "nnx"]) and hasattr(layer, "rate") and hasattr(
        layer, "deterministic"
    )


def _flag(call: Callable[..., Any], flag: str | Literal["auto"] | None, owner: str) -> tuple[str | None, bool]:
    """``(keyword, value_in_training)`` of the model's train/eval switch."""
    if flag is None:
        return None, True
    if flag != "auto":
        if not accepts(call, flag):
            raise TypeError(
                f"jaxdrop.training.Trainer: train_flag={flag!r}, but {owner}.__call__ takes no `{flag}` keyword."
            )
        return flag, not (flag in _EVAL_WORDS or flag.startswith("deterministic"))
    try:
        params = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return None, True
    for name in _FLAG_NAMES:
        if name in params:
            return name, name != "deterministic"
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return "deterministic", False
    bools = [n for n, p in params.items() if isinstance(p.default, bool) or _is_bool_annotation(p.annotation)]
    if bools:
        raise TypeError(
            f"jaxdrop.training.Trainer: cannot tell how {owner}.__call__ switches between training and "
            f"evaluation: it takes none of {', '.join(_FLAG_NAMES)}, but takes the bool {bools}. Pass "
            f"train_flag='<name>' (True in training, or in evaluation for names like 'deterministic'), "
            "or train_flag=None if the model has no such switch."
        )
    return None, True


def _is_bool_annotation(annotation: Any) -> bool:
    """``bool``, ``bool | None``, ``Optional[bool]`` (objects or, under postponed evaluation, strings)."""
    if isinstance(annotation, str):
        parts = {p.strip() for p in annotation.replace("Optional[", "").rstrip("]").split("|")}
        return "bool" in parts and parts <= {"bool", "None"}
    args = typing.get_args(annotation)
    return annotation is bool or (bool in args and set(args) <= {bool, type(None)})


def _stream_keys(key: jax.Array, tags: list[str]) -> dict[str, jax.Array]:
    """'dropout' takes the step key itself; any other stream a key derived from it and its tag."""
    return {t: key if t == "dropout" else jax.random.fold_in(key, zlib.crc32(t.encode()) & 0x7FFFFFFF) for t in tags}


class NnxAdapter:
    """Runs an ``nnx.Module`` functionally on ``(params, model_state)`` pure dicts.

    Each call merges the model from its graph definition, reseeds the RNG streams its
    layers hold from the step key (so no step replays another's masks), switches every
    layer with ``nnx.view`` (``deterministic``, ``use_running_average``) and passes the
    switch keyword, ``rngs`` and a call-time ``rate`` where ``__call__`` takes them.
    """

    def __init__(
        self,
        model: nnx.Module,
        scheduled: bool,
        train_flag: str | Literal["auto"] | None = "auto",
        rate_filter: RateFilter | None = None,
    ):
        graphdef, *states = nnx.split(model, nnx.Param, nnx.RngState, ...)
        params, rng_state, rest = states
        self.graphdef = graphdef
        self.params = nnx.to_pure_dict(params)
        self.rng_state = nnx.to_pure_dict(rng_state)
        self.model_state = nnx.to_pure_dict(rest)
        call = type(model).__call__
        self.flag, self.flag_in_training = _flag(call, train_flag, type(model).__name__)
        self.pass_rngs = accepts(call, "rngs")
        self.stream_tags = sorted(
            {
                node.tag
                for _, node in nnx.iter_graph(model)
                if isinstance(node, nnx.RngStream) and getattr(node, "tag", "params") != "params"
            }
        )
        # A schedule reaches the model through a call-time `rate` if it takes one, else
        # by setting the (traced) rate of the layers the filter selects.
        self.rate_kwarg = scheduled and rate_filter is None and accepts(call, "rate")
        self.rate_filter = rate_filter or schedulable
        if scheduled and not self.rate_kwarg and not any(self._rate_layers(model)):
            raise TypeError(
                f"jaxdrop.training.Trainer: rate_schedule has nothing to drive: {type(model).__name__}.__call__ "
                "takes no `rate` keyword and the model holds no layer the rate filter selects (by default "
                "jaxdrop's own dropout layers). Use jaxdrop.nnx layers, add a `rate` keyword, or pass rate_filter=."
            )

    def _rate_layers(self, model: nnx.Module) -> Iterator[Any]:
        return (node for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Module) and self.rate_filter(node))

    def init(self, key: jax.Array, sample_input: Any) -> tuple[PyTree, PyTree]:
        del key, sample_input  # an NNX model is already initialised
        return self.params, self.model_state

    def model(self, params: PyTree, model_state: PyTree) -> nnx.Module:
        """The model holding ``params`` and ``model_state``."""
        return nnx.merge(self.graphdef, params, self.rng_state, model_state)

    def apply(
        self, params: PyTree, model_state: PyTree, x: Any, key: jax.Array | None, train: bool, rate: Any
    ) -> tuple[jax.Array, PyTree]:
        model = self.model(params, model_state)
        if train and key is not None and self.stream_tags:
            reseed: Callable[..., None] = nnx.reseed  # stream names are keywords of its **kwargs
            reseed(model, **_stream_keys(key, self.stream_tags))
        model = nnx.view(model, raise_if_not_found=False, deterministic=not train, use_running_average=not train)
        kwargs: dict[str, Any] = {}
        if self.flag is not None:
            kwargs[self.flag] = train == self.flag_in_training
        if self.pass_rngs and train and key is not None:
            kwargs["rngs"] = nnx.Rngs(dropout=key)
        if rate is not None:
            if self.rate_kwarg:
                kwargs["rate"] = rate
            else:
                # A traced attribute of this trace's private copy; never split back out.
                for layer in self._rate_layers(model):
                    layer.rate = rate
        logits = model(x, **kwargs)
        rest = nnx.state(model, nnx.Not(nnx.Any(nnx.Param, nnx.RngState)))
        return logits, nnx.to_pure_dict(rest)


class LinenAdapter:
    """Runs a ``linen.Module`` with its train/eval switch and the ``'dropout'`` RNG collection.

    A scheduled rate goes in as a call-time ``rate`` if ``__call__`` takes one, else it
    replaces, for the duration of the call, the ``rate`` field of the layers the filter
    selects (by a :func:`flax.linen.intercept_methods` interceptor).
    """

    def __init__(
        self,
        module: linen.Module,
        scheduled: bool,
        train_flag: str | Literal["auto"] | None = "auto",
        rate_filter: RateFilter | None = None,
    ):
        self.module = module
        self.flag, self.flag_in_training = _flag(type(module).__call__, train_flag, type(module).__name__)
        self.rate_kwarg = scheduled and rate_filter is None and accepts(type(module).__call__, "rate")
        self.rate_filter = rate_filter or schedulable

    def _flags(self, train: bool) -> dict[str, Any]:
        return {} if self.flag is None else {self.flag: train == self.flag_in_training}

    def init(self, key: jax.Array, sample_input: Any) -> tuple[PyTree, PyTree]:
        if sample_input is None:
            raise ValueError(
                "jaxdrop.training.Trainer.init: a linen module needs `sample_input` (e.g. x[:1]) to initialise."
            )
        kwargs: dict[str, Any] = {"rate": 0.0} if self.rate_kwarg else {}
        k_params, k_drop = jax.random.split(key)
        variables = self.module.init(
            {"params": k_params, "dropout": k_drop}, jnp.asarray(sample_input), **self._flags(False), **kwargs
        )
        variables = dict(variables)
        params = variables.pop("params", {})
        return params, variables

    def model(self, params: PyTree, model_state: PyTree) -> linen.Module:
        """The module bound to ``{"params": params, **model_state}``."""
        return self.module.bind({"params": params, **model_state})

    def _set_rate(self, rate: Any) -> Callable[..., Any]:
        def interceptor(next_fun: Callable[..., Any], args: Any, kwargs: Any, context: Any) -> Any:
            mod = context.module
            if context.method_name != "__call__" or not self.rate_filter(mod):
                return next_fun(*args, **kwargs)
            old = mod.rate
            # Linen modules are frozen dataclasses; the instance is private to this apply,
            # and the field is restored right after the call.
            object.__setattr__(mod, "rate", rate)
            try:
                return next_fun(*args, **kwargs)
            finally:
                object.__setattr__(mod, "rate", old)

        return interceptor

    def apply(
        self, params: PyTree, model_state: PyTree, x: Any, key: jax.Array | None, train: bool, rate: Any
    ) -> tuple[jax.Array, PyTree]:
        kwargs: dict[str, Any] = {**self._flags(train)}
        if rate is not None and self.rate_kwarg:
            kwargs["rate"] = rate
        rngs = {"dropout": key} if (train and key is not None) else {}
        variables = {"params": params, **model_state}

        def run() -> tuple[jax.Array, PyTree]:
            if train and model_state:
                logits, updates = self.module.apply(variables, x, rngs=rngs, mutable=list(model_state), **kwargs)
                return cast(jax.Array, logits), {**model_state, **updates}
            return cast(jax.Array, self.module.apply(variables, x, rngs=rngs, **kwargs)), model_state

        if rate is None or self.rate_kwarg:
            return run()
        with linen.intercept_methods(self._set_rate(rate)):
            return run()


def make_adapter(
    model: Any, scheduled: bool, train_flag: str | Literal["auto"] | None, rate_filter: RateFilter | None
) -> NnxAdapter | LinenAdapter:
    """The adapter for ``model``, or a ``TypeError`` if it is neither an nnx nor a linen module."""
    if isinstance(model, nnx.Module):
        return NnxAdapter(model, scheduled, train_flag, rate_filter)
    if isinstance(model, linen.Module):
        return LinenAdapter(model, scheduled, train_flag, rate_filter)
    raise TypeError(
        f"jaxdrop.training.Trainer: model must be a flax.nnx.Module or flax.linen.Module, got {type(model).__name__}."
    )
