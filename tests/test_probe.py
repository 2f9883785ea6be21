"""A table-driven probe: every public function and layer, called with the same families of bad input.

Each entry names a public callable, a valid call (positional and keyword arguments) and
the kind of each argument worth probing. For every kind, every bad value of its family
is substituted into the valid call, one argument at a time, and the outcome must be:

* an error of the documented class (``TypeError``/``ValueError``) whose message names
  ``jaxdrop.<fn>`` and the argument, or
* for the few edge values that are valid (a bfloat16 scalar rate, NumPy and JAX integer
  scalars), a result of the valid call's shape, with no NaN.

Never a silent result for bad input, and never a raw error from NumPy, JAX or Python
that names neither jaxdrop nor the argument. Traced parameters are probed separately:
under ``jaxdrop.checked`` a traced NaN, infinity or out-of-range value is reported, and
without it the result is finite (the documented replacement rule).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import jaxdrop
import jaxdrop.linen as jdl
import jaxdrop.nnx as jdn
from jaxdrop import attention, mc, prng

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)


def arr(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


# ------------------------------------------------------------------------ families of bad input

BAD: dict[str, list[tuple[str, Any]]] = {
    # a drop (or other) probability
    "rate": [
        ("1.5", 1.5),
        ("-0.1", -0.1),
        ("nan", float("nan")),
        ("inf", float("inf")),
        ("bool", True),
        ("str", "0.5"),
        ("None", None),
        ("vector", np.array([0.5, 0.5])),
        ("complex", 0.5j),
    ],
    "nonnegative": [("-1", -1.0), ("nan", float("nan")), ("inf", float("inf")), ("bool", True), ("str", "1")],
    "positive": [("0", 0.0), ("-1", -1.0), ("nan", float("nan")), ("inf", float("inf")), ("bool", False)],
    "key": [
        ("int", 0),
        ("None", None),
        ("float-array", np.ones(2, np.float32)),
        ("key-array", jax.random.split(KEY, 2)),
        ("str", "key"),
    ],
    "array": [
        ("None", None),
        ("int-array", np.arange(4)),
        ("bool-array", np.ones(4, bool)),
        ("str", "x"),
        ("key", KEY),
    ],
    "shape": [("float-dim", (2.9, 3)), ("negative", (-1, 3)), ("int", 5), ("array", np.ones((2, 3)))],
    "axes": [("out-of-range", (7,)), ("repeated", (0, 0)), ("float", (1.5,)), ("None", None), ("str", "0")],
    "axis": [("out-of-range", 7), ("float", 1.5), ("str", "0"), ("bool", True)],
    "int": [("negative", -1), ("float", 2.5), ("bool", True), ("str", "3"), ("None", None)],
    "flag": [("int", 1), ("str", "yes"), ("None-like", [])],
    "mode": [("unknown", "turbo"), ("None", None), ("int", 1)],
    "function": [("int", 3), ("None", None)],
}

# Edge values that are valid and must give the valid call's result shape, finite.
GOOD: dict[str, list[tuple[str, Any]]] = {
    "rate": [("bfloat16", jnp.bfloat16(0.5)), ("float16", np.float16(0.25)), ("jax-f32", jnp.float32(0.3))],
    "int": [("np.int64", np.int64(2)), ("jax-int", jnp.int32(2))],
    "flag": [("np.bool_", np.True_), ("jax-bool", jnp.array(True))],
}


@dataclasses.dataclass
class Entry:
    name: str  # the public name errors must carry, e.g. "dropout" or "mc.regression"
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    kinds: dict[str | int, tuple[str, str]]  # argument (position or keyword) -> (family, public name)
    # Arguments whose traced value is probed: position -> (family, public name).
    traced: dict[int, tuple[str, str]] = dataclasses.field(default_factory=dict)


def _f_dropout(k: jax.Array, x: Any) -> jax.Array:
    return jaxdrop.dropout(k, x, 0.5)


X = arr(4, 5)
X4 = arr(2, 6, 6, 3)
X3 = arr(2, 5, 3)
H = arr(3, 4)
SAMPLES = arr(6, 4, 3)
PROBS = jax.nn.softmax(jnp.asarray(arr(4, 3)))
LABELS = np.array([0, 1, 2, 1])
Q = arr(1, 4, 2, 8)

ENTRIES = [
    Entry(
        "dropout",
        jaxdrop.dropout,
        (KEY, X, 0.5),
        {},
        {0: ("key", "key"), 1: ("array", "x"), 2: ("rate", "rate"), "broadcast_dims": ("axes", "broadcast_dims"),
         "deterministic": ("flag", "deterministic"), "mode": ("mode", "mode")},
        {2: ("rate", "rate")},
    ),
    Entry(
        "activation_dropout",
        jaxdrop.activation_dropout,
        (KEY, X, 0.5, "tanh"),
        {},
        {0: ("key", "key"), 1: ("array", "x"), 2: ("rate", "rate"), 3: ("mode", "activation"),
         "broadcast_dims": ("axes", "broadcast_dims"), "mode": ("mode", "mode")},
        {2: ("rate", "rate")},
    ),
    Entry(
        "keep_mask",
        jaxdrop.keep_mask,
        (KEY, (4, 5), 0.5),
        {},
        {0: ("key", "key"), 1: ("shape", "shape"), 2: ("rate", "rate"), "broadcast_dims": ("axes", "broadcast_dims"),
         "mode": ("mode", "mode")},
    ),
    Entry(
        "channel_dropout",
        jaxdrop.channel_dropout,
        (KEY, X4, 0.5),
        {},
        {0: ("key", "key"), 1: ("array", "x"), 2: ("rate", "rate"), "channel_axis": ("axis", "channel_axis"),
         "deterministic": ("flag", "deterministic"), "mode": ("mode", "mode")},
        {2: ("rate", "rate")},
    ),
    Entry(
        "alpha_dropout",
        jaxdrop.alpha_dropout,
        (KEY, X, 0.5),
        {},
        {0: ("key", "key"), 1: ("array", "x"), 2: ("rate", "rate"), "broadcast_dims": ("axes", "broadcast_dims"),
         "mode": ("mode", "mode")},
        {2: ("rate", "rate")},
    ),
    Entry(
        "feature_alpha_dropout",
        jaxdrop.feature_alpha_dropout,
        (KEY, X4, 0.5),
        {},
        {0: ("key", "key"), 1: ("array", "x"), 2: ("rate", "rate"), "channel_axis": ("axis", "channel_axis")},
        {2: ("rate", "rate")},
    ),
    Entry(
        "gaussian_dropout",
        jaxdrop.gaussian_dropout,
        (KEY, X, 0.5),
        {},
        {0: ("key", "key"), 1: ("array", "x"), 2: ("rate", "rate"), "broadcast_dims": ("axes", "broadcast_dims")},
        {2: ("rate", "rate")},
    ),
    Entry(
        "gaussian_noise",
        jaxdrop.gaussian_noise,
        (KEY, X, 0.5),
        {},
        {0: ("key", "key"), 1: ("array", "x"), 2: ("nonnegative", "stddev"), "mode": ("mode", "mode")},
        {2: ("nonnegative", "stddev")},
    ),
    Entry(
        "dropblock",
        jaxdrop.dropblock,
        (KEY, X4, 0.3),
        {"block_size": 3},
        {0: ("key", "key"), 1: ("array", "x"), 2: ("rate", "rate"), "block_size": ("int", "block_size"),
         "channel_axis": ("axis", "channel_axis"), "eps": ("nonnegative", "eps")},
        {2: ("rate", "rate")},
    ),
    Entry(
        "dropblock_mask",
        jaxdrop.dropblock_mask,
        (KEY, (2, 6, 6, 3), 0.3),
        {"block_size": 3},
        {0: ("key", "key"), 1: ("shape", "shape"), 2: ("rate", "rate"), "block_size": ("int", "block_size")},
    ),
    Entry(
        "dropblock_gamma",
        jaxdrop.dropblock_gamma,
        (0.3, (6, 6), 3),
        {},
        {0: ("rate", "rate"), 1: ("shape", "spatial_shape"), 2: ("int", "block_size")},
    ),
    Entry(
        "drop_path",
        jaxdrop.drop_path,
        (KEY, X, 0.5),
        {},
        {0: ("key", "key"), 1: ("array", "x"), 2: ("rate", "rate"), "batch_axis": ("axis", "batch_axis"),
         "scale_by_keep": ("flag", "scale_by_keep")},
        {2: ("rate", "rate")},
    ),
    Entry(
        "stochastic_depth_rates",
        jaxdrop.stochastic_depth_rates,
        (0.2, 4),
        {},
        {0: ("rate", "rate"), 1: ("int", "depth")},
    ),
    Entry(
        "dropconnect",
        jaxdrop.dropconnect,
        (KEY, X, 0.5),
        {},
        {0: ("key", "key"), 1: ("array", "w"), 2: ("rate", "rate")},
        {2: ("rate", "rate")},
    ),
    Entry(
        "dropconnect_dense",
        jaxdrop.dropconnect_dense,
        (KEY, arr(2, 4), arr(4, 3), 0.5),
        {},
        {0: ("key", "key"), 1: ("array", "x"), 2: ("array", "kernel"), 3: ("rate", "rate"),
         "deterministic": ("flag", "deterministic")},
        {3: ("rate", "rate")},
    ),
    Entry(
        "locked_dropout",
        jaxdrop.locked_dropout,
        (KEY, X3, 0.5),
        {},
        {0: ("key", "key"), 1: ("array", "x"), 2: ("rate", "rate"), "time_axis": ("axis", "time_axis")},
        {2: ("rate", "rate")},
    ),
    Entry(
        "embedding_dropout",
        jaxdrop.embedding_dropout,
        (KEY, X, 0.5),
        {},
        {0: ("key", "key"), 1: ("array", "embedding"), 2: ("rate", "rate")},
        {2: ("rate", "rate")},
    ),
    Entry(
        "zoneout",
        jaxdrop.zoneout,
        (KEY, H, H + 1, 0.5),
        {},
        {0: ("key", "key"), 1: ("array", "h_prev"), 2: ("array", "h_new"), 3: ("rate", "rate"),
         "deterministic": ("flag", "deterministic")},
        {3: ("rate", "rate")},
    ),
    Entry(
        "concrete_dropout",
        jaxdrop.concrete_dropout,
        (KEY, X, -2.0),
        {},
        {0: ("key", "key"), 1: ("array", "x"), "temperature": ("positive", "temperature"),
         "eps": ("nonnegative", "eps")},
        {2: ("logit", "p_logit")},
    ),
    Entry(
        "curriculum_schedule",
        jaxdrop.curriculum_schedule,
        (0.5, 0.01),
        {},
        {0: ("rate", "target_rate"), 1: ("nonnegative", "gamma")},
    ),
    Entry(
        "early_dropout_schedule",
        jaxdrop.early_dropout_schedule,
        (0.1, 10),
        {},
        {0: ("rate", "rate"), 1: ("int", "cutoff_steps")},
    ),
    Entry(
        "late_dropout_schedule",
        jaxdrop.late_dropout_schedule,
        (0.1, 10),
        {},
        {0: ("rate", "rate"), 1: ("int", "cutoff_steps")},
    ),
    Entry(
        "attention.dot_product_attention",
        attention.dot_product_attention,
        (Q, Q, Q),
        {"dropout_rate": 0.5, "dropout_rng": KEY},
        {0: ("array", "query"), "dropout_rate": ("rate", "dropout_rate"), "dropout_rng": ("key", "dropout_rng"),
         "broadcast_dropout": ("flag", "broadcast_dropout"), "is_causal": ("flag", "is_causal"),
         "mode": ("mode", "mode")},
    ),
    Entry("prng.bits", prng.bits, (KEY, (3, 4)), {}, {0: ("key", "key"), 1: ("shape", "shape"), "mode": ("mode", "mode")}),
    Entry("prng.uniform", prng.uniform, (KEY, (3, 4)), {}, {0: ("key", "key"), 1: ("shape", "shape")}),
    Entry("prng.normal", prng.normal, (KEY, (3, 4)), {}, {0: ("key", "key"), 1: ("shape", "shape")}),
    Entry("prng.bernoulli", prng.bernoulli, (KEY, 0.5, (3, 4)), {}, {1: ("rate-like-p", "p"), 2: ("shape", "shape")}),
    Entry(
        "mc.sample",
        mc.sample,
        (_f_dropout, KEY, X, 4),
        {},
        {0: ("function", "f"), 1: ("key", "key"), 3: ("int+", "num_samples"), "chunk_size": ("chunk", "chunk_size")},
    ),
    Entry(
        "mc.predict_regression",
        mc.predict_regression,
        (_f_dropout, KEY, X, 4),
        {"tau": 2.0},
        {0: ("function", "f"), 1: ("key", "key"), 3: ("int+", "num_samples"), "tau": ("positive", "tau")},
    ),
    Entry("mc.regression", mc.regression, (SAMPLES,), {"tau": 2.0}, {0: ("array", "samples"), "tau": ("positive", "tau")}),
    Entry("mc.classification", mc.classification, (SAMPLES,), {}, {0: ("array", "samples"),
                                                                    "from_logits": ("flag", "from_logits")}),
    Entry(
        "mc.log_likelihood",
        mc.log_likelihood,
        (SAMPLES, arr(4, 3), 2.0),
        {},
        {0: ("array", "samples"), 1: ("array", "y"), 2: ("positive", "tau"), "event_ndims": ("int", "event_ndims")},
    ),
    Entry(
        "mc.expected_calibration_error",
        mc.expected_calibration_error,
        (PROBS, LABELS),
        {},
        {0: ("array", "probs"), "num_bins": ("int+", "num_bins")},
    ),
    Entry(
        "mc.model_precision",
        mc.model_precision,
        (1e-2, 0.1, 100, 1e-4),
        {},
        {0: ("positive", "length_scale"), 1: ("rate", "rate"), 2: ("positive", "n_data"), 3: ("positive", "weight_decay")},
        {0: ("positive", "length_scale"), 1: ("rate", "rate"), 2: ("positive", "n_data"), 3: ("positive", "weight_decay")},
    ),
]

# Families that reuse another's bad values (a positive count is an int >= 1; `p` is a probability).
BAD["int+"] = [*BAD["int"], ("zero", 0)]
BAD["chunk"] = [v for v in BAD["int+"] if v[0] != "None"]  # None is valid: all passes at once
GOOD["chunk"] = GOOD["int"]
GOOD["int+"] = GOOD["int"]
BAD["rate-like-p"] = [v for v in BAD["rate"] if v[0] not in ("1.5", "-0.1", "nan", "inf", "vector")]


def _call(entry: Entry, where: str | int, value: Any) -> Any:
    args, kwargs = list(entry.args), dict(entry.kwargs)
    if isinstance(where, int):
        args[where] = value
    else:
        kwargs[where] = value
    return entry.fn(*args, **kwargs)


def _clear(entry: Entry, arg: str, err: BaseException) -> bool:
    msg = str(err)
    return isinstance(err, (TypeError, ValueError)) and msg.startswith(f"jaxdrop.{entry.name}") and (
        f"`{arg}`" in msg or (arg in ("key", "dropout_rng") and "PRNG key" in msg) or f"({arg}" in msg
    )


def _finite_leaves(out: Any) -> bool:
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(out) if hasattr(leaf, "dtype") or isinstance(leaf, float)]
    return all(
        np.isfinite(leaf).all() for leaf in leaves if np.issubdtype(leaf.dtype, np.inexact) or leaf.dtype == object
    )


def _shapes(out: Any) -> Any:
    return jax.tree.map(lambda a: np.shape(a), out)


CASES = [
    (entry, where, family, arg, label, value)
    for entry in ENTRIES
    for where, (family, arg) in entry.kinds.items()
    for label, value in BAD[family]
]
GOOD_CASES = [
    (entry, where, family, arg, label, value)
    for entry in ENTRIES
    for where, (family, arg) in entry.kinds.items()
    for label, value in GOOD.get(family, [])
]


def _id(case: tuple[Any, ...]) -> str:
    entry, _where, _, arg, label, _ = case
    return f"{entry.name}-{arg}-{label}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_bad_input_raises_a_clear_error(case):
    entry, where, _family, arg, label, value = case
    try:
        out = _call(entry, where, value)
    except (TypeError, ValueError) as err:
        assert _clear(entry, arg, err), f"unclear error for {arg}={label}: {type(err).__name__}: {err}"
        return
    except Exception as err:
        pytest.fail(f"raw {type(err).__name__} for {arg}={label}: {err}")
    pytest.fail(f"silent result for {arg}={label}: {_shapes(out)}")


@pytest.mark.parametrize("case", GOOD_CASES, ids=[_id(c) for c in GOOD_CASES])
def test_valid_edge_input_gives_the_valid_result(case):
    entry, where, family, _arg, _label, value = case
    expected = _call(entry, where, {"rate": 0.5, "int": 2, "int+": 2, "chunk": 2, "flag": True}[family])
    out = _call(entry, where, value)
    assert _shapes(out) == _shapes(expected)
    assert _finite_leaves(out)


# ------------------------------------------------------------------------- traced parameters

TRACED_BAD = {
    "rate": [1.5, -0.5, float("nan"), float("inf")],
    "nonnegative": [-1.0, float("nan"), float("inf")],
    "positive": [0.0, -1.0, float("nan"), float("inf")],
    "logit": [float("nan"), float("inf"), -float("inf")],
}
TRACED = [(entry, pos, fam, arg) for entry in ENTRIES for pos, (fam, arg) in entry.traced.items()]


@pytest.mark.parametrize("case", TRACED, ids=[f"{c[0].name}-{c[3]}" for c in TRACED])
def test_traced_bad_parameter_is_reported_under_checked_and_finite_without(case):
    entry, pos, family, arg = case

    def f(v: jax.Array) -> Any:
        args = list(entry.args)
        args[pos] = v
        return entry.fn(*args, **entry.kwargs)

    checked = jax.jit(jaxdrop.checked(f))
    for value in TRACED_BAD[family]:
        err, out = checked(jnp.float32(value))
        message = err.get()
        assert message is not None and message.startswith(f"jaxdrop.{entry.name}") and f"`{arg}`" in message, (
            value,
            message,
        )
        # The same computation without `checked`: the documented replacement, never NaN or inf.
        assert _finite_leaves(out), (arg, value)
    # The negative control: a valid traced value reports nothing.
    err, _ = checked(jnp.float32(entry.args[pos]))
    assert err.get() is None


# --------------------------------------------------------------------------------- layers

LINEN = [
    (jdl.Dropout, {}), (jdl.ChannelDropout, {}), (jdl.AlphaDropout, {}), (jdl.FeatureAlphaDropout, {}),
    (jdl.GaussianDropout, {}), (jdl.DropBlock, {"block_size": 3}), (jdl.DropPath, {}), (jdl.LockedDropout, {}),
    (jdl.EmbeddingDropout, {"num_embeddings": 5, "features": 3}), (jdl.Zoneout, {}),
    (jdl.DropConnectDense, {"features": 3}), (jdl.ActivationDropout, {}),
]
NNX = [
    (jdn.Dropout, {}), (jdn.ChannelDropout, {}), (jdn.AlphaDropout, {}), (jdn.FeatureAlphaDropout, {}),
    (jdn.GaussianDropout, {}), (jdn.DropBlock, {"block_size": 3}), (jdn.DropPath, {}), (jdn.LockedDropout, {}),
    (jdn.EmbeddingDropout, {"num_embeddings": 5, "features": 3, "rngs": nnx.Rngs(0)}), (jdn.Zoneout, {}),
    (jdn.DropConnectDense, {"in_features": 4, "out_features": 3, "rngs": nnx.Rngs(0)}), (jdn.ActivationDropout, {}),
]


def _layer_name(cls: type) -> str:
    return f"{cls.__module__.split('.')[-1]}.{cls.__name__}"


def _build(cls: type, kwargs: dict[str, Any], **override: Any) -> Any:
    if cls.__module__ == "jaxdrop.linen" and cls is jdl.DropConnectDense:
        return cls(kwargs["features"], **{"rate": 0.5, **override})
    if cls is jdl.EmbeddingDropout:
        return cls(kwargs["num_embeddings"], kwargs["features"], **{"rate": 0.5, **override})
    if cls is jdn.EmbeddingDropout:
        return cls(kwargs["num_embeddings"], kwargs["features"], **{"rate": 0.5, "rngs": kwargs["rngs"], **override})
    if cls is jdn.DropConnectDense:
        return cls(kwargs["in_features"], kwargs["out_features"], **{"rate": 0.5, "rngs": kwargs["rngs"], **override})
    rest = {k: v for k, v in kwargs.items()}
    return cls(**{"rate": 0.5, **rest, **override})


LAYER_CASES = [
    (cls, kwargs, field, label, value)
    for cls, kwargs in LINEN + NNX
    for field, family in (("rate", "rate"), ("mode", "mode"))
    for label, value in BAD[family]
    if not (field == "rate" and label in ("vector",))  # an array rate is data for nnx, traced-attr for linen
]


@pytest.mark.parametrize(
    "case", LAYER_CASES, ids=[f"{_layer_name(c[0])}-{c[2]}-{c[3]}" for c in LAYER_CASES]
)
def test_layer_validates_when_built(case):
    cls, kwargs, field, _label, value = case
    name = _layer_name(cls)
    with pytest.raises((TypeError, ValueError)) as info:
        _build(cls, kwargs, **{field: value})
    assert str(info.value).startswith(f"jaxdrop.{name}:") and f"`{field}`" in str(info.value), str(info.value)


def test_gaussian_noise_layers_validate_stddev_when_built():
    for cls in (jdl.GaussianNoise, jdn.GaussianNoise):
        for value in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match=rf"^jaxdrop\.{_layer_name(cls)}: `stddev`"):
                cls(value)


def test_linen_dropconnect_dense_scalar_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^jaxdrop\.linen\.DropConnectDense: `inputs`"):
        jdl.DropConnectDense(3, 0.5).init(KEY, jnp.float32(1.0))


def test_traced_deterministic_error_names_the_situation_not_an_argument_name():
    layer = jdn.Dropout(0.5, rngs=nnx.Rngs(0))

    @jax.jit
    def f(x: jax.Array, det: jax.Array) -> jax.Array:
        return jaxdrop.dropout(KEY, x, 0.5, deterministic=det)

    with pytest.raises(TypeError) as info:
        f(jnp.ones(3), True)
    msg = str(info.value)
    assert msg.startswith("jaxdrop.dropout: `deterministic` is a traced value") and "static_argnames='" not in msg
    assert "static" in msg and layer.rate == 0.5


def test_rate_zero_zoneout_layers_draw_no_key():
    h0, h1 = jnp.zeros(3), jnp.ones(3)
    for rate, draws in ((0.0, 0), (0.5, 1)):  # rate 0.5 is the control: it draws one key
        layer = jdn.Zoneout(rate, rngs=nnx.Rngs(dropout=0))
        before = int(layer.rngs.count[...])
        out = layer(h0, h1)
        assert int(layer.rngs.count[...]) == before + draws
    assert (jdn.Zoneout(0.0, rngs=nnx.Rngs(dropout=0))(h0, h1) == h1).all() and out.shape == h1.shape
    # linen: no 'dropout' rng needed at all (a missing rng would raise otherwise)
    assert (jdl.Zoneout(0.0).apply({}, h0, h1, deterministic=False) == h1).all()
    with pytest.raises(Exception, match="dropout"):  # the control: rate > 0 needs the rng
        jdl.Zoneout(0.5).apply({}, h0, h1, deterministic=False)


def test_probe_covers_every_public_function():
    """Every public callable of the core, prng, schedules and mc either has an entry or is not key/rate-taking."""
    probed = {e.name for e in ENTRIES}
    skip = {"checked", "mc.is_dropout", "mc.from_linen", "mc.from_nnx", "prng.is_fused", "prng.as_key",
            "prng.threefry2x32", "mc.negative_log_likelihood", "mc.predict_classification", "mc.weight_decay",
            "concrete_dropout_regularizer"}
    names = {n for n in jaxdrop.__all__ if callable(getattr(jaxdrop, n)) and not isinstance(getattr(jaxdrop, n), type(jaxdrop))}
    names |= {f"prng.{n}" for n in prng.__all__ if callable(getattr(prng, n)) and n != "Mode"}
    names |= {f"mc.{n}" for n in mc.__all__ if n[0].islower()}
    missing = names - probed - skip
    assert not missing, f"public functions without a probe entry: {sorted(missing)}"


def test_raw_error_regressions():
    """Inputs that once gave raw NumPy/Python errors, now clear ones."""
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: prng.threefry2x32(0, 0, 0, 1.5), "jaxdrop.prng.threefry2x32: `c1`"),
        (lambda: prng.as_key(3), "jaxdrop.prng.as_key(key)"),
        (lambda: mc.from_linen(nn.Dense(2), {}, rng_collection=3), "jaxdrop.mc.from_linen: `rng_collection`"),
        (lambda: prng.bernoulli(KEY, jnp.full((2, 3), 0.5), (3,)), "jaxdrop.prng.bernoulli: `p`"),
        (lambda: jaxdrop.dropconnect_dense(KEY, arr(2, 4), arr(4, 3), 1.5), "jaxdrop.dropconnect_dense: `rate`"),
    ]
    for call, prefix in cases:
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        assert str(info.value).startswith(prefix), str(info.value)
    # threefry2x32 takes Python ints as words now (and equals the documented test vector).
    assert [hex(int(w)) for w in prng.threefry2x32(0, 0, 0, 0)] == ["0x6b200159", "0x99ba4efe"]
    assert math.isfinite(float(jaxdrop.curriculum_schedule(0.5, 0.01)(2**31)))
