"""What a Flax user meets first: the README's models in the Trainer, the trained model back out,
layer rates scheduled without recompiling, eager MC dropout compiled once, resumed histories,
errors at construction, and ``jaxdrop.checked`` on an nnx model.

Every model is tiny and every run a few steps: the cost is the jit compilations.
"""

from __future__ import annotations

import contextlib
import os
import re

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import within_binomial

import jaxdrop
import jaxdrop.linen as jdl
import jaxdrop.nnx as jdn
from jaxdrop import mc
from jaxdrop.data import Dataset
from jaxdrop.training import Trainer, cross_entropy_loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, D, C, BATCH = 32, 16, 4, 8  # every hidden layer is D wide, so eager ops share compilations


def toy(n: int = N, d: int = D, c: int = C, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    x = rng.normal(0.0, 1.0, (n, d)) + np.eye(c, d)[y] * 2.0
    return Dataset(x.astype(np.float32), y.astype(np.int32), c, "toy")


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True))


def run_steps(trainer: Trainer, state, data: Dataset, steps: int):
    """``steps`` jitted train steps on the first batches (in order); the states after each."""
    states = [state]
    for s in range(steps):
        lo = (s * BATCH) % len(data)
        state, _ = trainer.train_step(state, data.x[lo : lo + BATCH], data.y[lo : lo + BATCH])
        states.append(state)
    return states


@contextlib.contextmanager
def count_compiles():
    """Counts XLA backend compilations (one per new program, cache hits excluded)."""
    counter = {"n": 0}

    def listener(name: str, secs: float, **kwargs) -> None:
        if name == "/jax/core/compile/backend_compile_duration":
            counter["n"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


# --------------------------------------------------------------------------- the README's models


def readme_namespace() -> dict:
    """The README's Flax-layers section run as written: its code blocks in order, in one namespace."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## Flax layers", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert [("class LinenMLP" in b, "class NnxMLP" in b, "Trainer(" in b) for b in blocks] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
    ], blocks
    ns: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), ns)
    return ns


@pytest.fixture(scope="module")
def readme():
    return readme_namespace()


@pytest.fixture(scope="module")
def mnist_like():
    return toy(16, 784, 10)


def test_readme_linen_model_trains_with_its_train_flag_and_comes_back(readme, mnist_like):
    """`train: bool` is found: True with the step's dropout key in training, False in evaluation."""
    model = readme["LinenMLP"]()
    trainer = Trainer(model, optax.sgd(0.1))
    state0 = trainer.init(jax.random.key(0), sample_input=mnist_like.x[:1])
    x, y = jnp.asarray(mnist_like.x[:BATCH]), jnp.asarray(mnist_like.y[:BATCH])
    state1, metrics = trainer.train_step(state0, x, y)
    by_hand = model.apply({"params": state0.params}, x, train=True, rngs={"dropout": state0.dropout_key()})
    np.testing.assert_allclose(float(metrics["loss"]), float(cross_entropy_loss(by_hand, y)), rtol=1e-5)
    off = model.apply({"params": state0.params}, x, train=False)
    assert abs(float(cross_entropy_loss(off, y)) - float(metrics["loss"])) > 1e-3  # dropout was on
    state, history = trainer.fit(state1, mnist_like, batch_size=BATCH, steps=3, progress=False)
    assert int(state.step) == 3 and history[-1]["step"] == 3
    bound = trainer.model_from(state)
    assert isinstance(bound, nn.Module) and leaves_equal(bound.variables["params"], state.params)
    np.testing.assert_allclose(bound(x, train=False), trainer.predict(state, x), rtol=1e-6, atol=1e-6)
    assert not leaves_equal(trainer.model_from(state0).variables, bound.variables)


def test_readme_nnx_model_trains_and_comes_back(readme):
    """The README's Trainer block on its NnxMLP (no flag keyword, left in eval mode): dropout on in
    training through nnx.view, the trained model back, the model given untouched."""
    model, trainer, state, history, trained = (readme[k] for k in ("model", "trainer", "state", "history", "trained"))
    x, y = readme["x"], readme["y"]
    assert int(state.step) == 4 and [r["epoch"] for r in history] == [1, 2]
    assert isinstance(trained, readme["NnxMLP"]) and trained is not model
    assert leaves_equal(nnx.to_pure_dict(nnx.state(trained, nnx.Param)), state.params)
    initial = trainer.init(jax.random.key(0)).params
    assert leaves_equal(nnx.to_pure_dict(nnx.state(model, nnx.Param)), initial)  # not trained in place
    assert not leaves_equal(state.params, initial)
    _, metrics = trainer.train_step(state, x[:16], y[:16])
    off = float(cross_entropy_loss(trainer.predict(state, x[:16]), y[:16]))
    assert abs(float(metrics["loss"]) - off) > 1e-3  # dropout was on in training, off in evaluation
    trained.eval()
    np.testing.assert_allclose(trained(x), trainer.predict(state, x), rtol=1e-5, atol=1e-6)
    trained.train()
    assert not np.allclose(trained(x), trainer.predict(state, x), atol=1e-3)  # its dropout works again


# --------------------------------------------------------------------------- model state and transforms


class LinenBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(D)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        x = jdl.Dropout(0.3, deterministic=not train)(nn.relu(x))
        return nn.Dense(C)(x)


def test_linen_batchnorm_statistics_are_trained_and_come_back():
    data = toy()
    model = LinenBN()
    trainer = Trainer(model, optax.adam(1e-2))
    state0 = trainer.init(jax.random.key(0), sample_input=data.x[:1])
    assert set(state0.model_state) == {"batch_stats"}
    state, _ = trainer.fit(state0, data, batch_size=BATCH, steps=4, progress=False)
    assert not leaves_equal(state.model_state, state0.model_state)  # the statistics moved
    bound = trainer.model_from(state)
    assert leaves_equal(bound.variables["batch_stats"], state.model_state["batch_stats"])
    x = jnp.asarray(data.x)
    np.testing.assert_allclose(bound(x, train=False), trainer.predict(state, x), rtol=1e-5, atol=1e-5)
    stale = model.apply({"params": state.params, **state0.model_state}, x, train=False)
    assert not np.allclose(stale, trainer.predict(state, x), atol=1e-3)  # the statistics matter


class ScanBlock(nn.Module):
    @nn.compact
    def __call__(self, h, _, train: bool):
        h = nn.relu(nn.Dense(D)(h))
        return jdl.Dropout(0.5, deterministic=not train)(h), None


class ScanMLP(nn.Module):
    layers: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        stack = nn.scan(
            ScanBlock,
            variable_axes={"params": 0},
            variable_broadcast=False,
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast, nn.broadcast),
            length=self.layers,
        )
        h, _ = stack(name="blocks")(x, None, train)
        return nn.Dense(C)(h)


def test_linen_scan_over_layers_with_dropout_inside():
    data = toy()
    model = ScanMLP()
    trainer = Trainer(model, optax.adam(1e-2))
    state0 = trainer.init(jax.random.key(0), sample_input=data.x[:1])
    assert state0.params["blocks"]["Dense_0"]["kernel"].shape == (3, D, D)  # one kernel per layer
    x, y = jnp.asarray(data.x[:BATCH]), jnp.asarray(data.y[:BATCH])
    state1, metrics = trainer.train_step(state0, x, y)
    by_hand = model.apply({"params": state0.params}, x, True, rngs={"dropout": state0.dropout_key()})
    np.testing.assert_allclose(float(metrics["loss"]), float(cross_entropy_loss(by_hand, y)), rtol=1e-5)
    off = float(cross_entropy_loss(trainer.predict(state0, x), y))
    assert abs(float(metrics["loss"]) - off) > 1e-3  # dropout is on inside the scan in training only
    state, _ = trainer.fit(state1, data, batch_size=BATCH, steps=3, progress=False)
    kernels = np.asarray(state.params["blocks"]["Dense_0"]["kernel"])
    assert not np.array_equal(kernels, np.asarray(state0.params["blocks"]["Dense_0"]["kernel"]))
    np.testing.assert_allclose(trainer.model_from(state)(x), trainer.predict(state, x), rtol=1e-5, atol=1e-6)


class NnxBN(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(D, D, rngs=rngs)
        self.bn = nnx.BatchNorm(D, momentum=0.5, rngs=rngs)
        self.drop = jdn.Dropout(0.3, rngs=rngs)
        self.out = nnx.Linear(D, C, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.bn(self.lin(x)))))


def test_nnx_batchnorm_statistics_come_back_with_model_from():
    data = toy()
    model = NnxBN(nnx.Rngs(0))
    mean0 = np.asarray(model.bn.mean[...])
    trainer = Trainer(model, optax.adam(1e-2))
    state, _ = trainer.fit(trainer.init(jax.random.key(0)), data, batch_size=BATCH, steps=4, progress=False)
    trained = trainer.model_from(state)
    assert not np.array_equal(np.asarray(trained.bn.mean[...]), mean0)  # trained statistics...
    np.testing.assert_array_equal(np.asarray(trained.bn.mean[...]), np.asarray(state.model_state["bn"]["mean"]))
    np.testing.assert_array_equal(np.asarray(model.bn.mean[...]), mean0)  # ...in a new model
    x = jnp.asarray(data.x)
    trained.eval()
    np.testing.assert_allclose(trained(x), trainer.predict(state, x), rtol=1e-5, atol=1e-5)
    stale = nnx.clone(trained)
    stale.bn.mean[...] = jnp.asarray(mean0)
    assert not np.allclose(stale(x), trained(x), atol=1e-3)  # the statistics matter


# --------------------------------------------------------------------------- train_flag


class UseDropout(nn.Module):
    @nn.compact
    def __call__(self, x, use_dropout: bool = False):
        return nn.Dense(C)(jdl.Dropout(0.5, deterministic=not use_dropout)(x))


class Inference(nn.Module):
    @nn.compact
    def __call__(self, x, inference: bool = True):
        return nn.Dense(C)(jdl.Dropout(0.5, deterministic=inference)(x))


class OptionalFlag(nn.Module):
    @nn.compact
    def __call__(self, x, dropout_on: bool | None = None):
        return nn.Dense(C)(jdl.Dropout(0.5, deterministic=not dropout_on)(x))


def test_unrecognised_bool_flag_says_to_pass_train_flag():
    with pytest.raises(TypeError, match=r"use_dropout.*train_flag="):
        Trainer(UseDropout(), optax.sgd(0.1))
    # An optional bool (default None) is a flag too: never switched, dropout would stay off.
    with pytest.raises(TypeError, match=r"dropout_on.*train_flag="):
        Trainer(OptionalFlag(), optax.sgd(0.1))
    with pytest.raises(TypeError, match="takes no `nope` keyword"):
        Trainer(UseDropout(), optax.sgd(0.1), train_flag="nope")


@pytest.mark.parametrize(
    ("module", "flag", "in_training"), [(UseDropout(), "use_dropout", True), (Inference(), "inference", False)]
)
def test_explicit_train_flag_and_its_polarity(module, flag, in_training):
    data = toy()
    trainer = Trainer(module, optax.sgd(0.1), train_flag=flag)
    state = trainer.init(jax.random.key(0), sample_input=data.x[:1])
    x, y = jnp.asarray(data.x[:BATCH]), jnp.asarray(data.y[:BATCH])
    _, metrics = trainer.train_step(state, x, y)
    variables = {"params": state.params}

    def loss(value):
        logits = module.apply(variables, x, **{flag: value}, rngs={"dropout": state.dropout_key()})
        return float(cross_entropy_loss(logits, y))

    np.testing.assert_allclose(float(metrics["loss"]), loss(in_training), rtol=1e-5)
    assert abs(float(metrics["loss"]) - loss(not in_training)) > 1e-3
    np.testing.assert_allclose(trainer.predict(state, x), module.apply(variables, x, **{flag: not in_training}), rtol=1e-6)


# --------------------------------------------------------------------------- rate schedules


class NnxDrops(nnx.Module):
    def __init__(self, rate, rngs):
        self.lin = nnx.Linear(D, D, rngs=rngs)
        self.drop = jdn.Dropout(rate, rngs=rngs)
        self.out = nnx.Linear(D, C, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.lin(x))))


class LinenDrops(nn.Module):
    rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.relu(nn.Dense(D)(x))
        return nn.Dense(C)(jdl.Dropout(self.rate, deterministic=not train)(h))


ZERO_STEPS, STEPS = 2, 4


def zero_then_half(step):
    return jnp.where(step < ZERO_STEPS, 0.0, 0.5)


@pytest.mark.parametrize("api", ["nnx", "linen"])
def test_rate_schedule_drives_layers_without_a_rate_keyword(api):
    """Layers built with rate 0.2, scheduled 0 then 0.5: each step is the step of a model built with
    that rate (bit for bit), the layers keep their own 0.2, and the step compiles once."""
    data = toy()
    if api == "nnx":

        def trainer(rate, **kw):
            return Trainer(NnxDrops(rate, nnx.Rngs(0)), optax.sgd(0.1), **kw)

        init = {}
    else:

        def trainer(rate, **kw):
            return Trainer(LinenDrops(rate), optax.sgd(0.1), **kw)

        init = {"sample_input": data.x[:1]}
    scheduled = trainer(0.2, rate_schedule=zero_then_half)
    off, half = trainer(0.0), trainer(0.5)
    a = run_steps(scheduled, scheduled.init(jax.random.key(0), **init), data, STEPS)
    b = run_steps(off, off.init(jax.random.key(0), **init), data, ZERO_STEPS + 1)
    assert leaves_equal(a[0].params, b[0].params)
    for s in range(1, ZERO_STEPS + 1):
        assert leaves_equal(a[s].params, b[s].params), f"step {s}: rate 0 is not the run without dropout"
    assert not leaves_equal(a[ZERO_STEPS + 1].params, b[ZERO_STEPS + 1].params)
    for s in range(ZERO_STEPS, STEPS):  # then the run with rate 0.5 (from the same state and batch)
        lo = (s * BATCH) % len(data)
        expected, _ = half.train_step(a[s], data.x[lo : lo + BATCH], data.y[lo : lo + BATCH])
        assert leaves_equal(a[s + 1].params, expected.params), f"step {s + 1}: not the rate-0.5 step"
    assert scheduled.train_step._cache_size() == 1
    if api == "nnx":  # the schedule drove a private copy: the layer keeps its own rate
        assert scheduled.model.drop.rate == 0.2 and scheduled.model_from(a[-1]).drop.rate == 0.2


class TwoKinds(nnx.Module):
    """A jaxdrop Dropout and a GaussianDropout, both off (rate 0), keys given at call time."""

    def __init__(self, rngs):
        self.lin = nnx.Linear(D, D, rngs=rngs)
        self.drop = jdn.Dropout(0.0)
        self.noise = jdn.GaussianDropout(0.0)
        self.out = nnx.Linear(D, C, rngs=rngs)

    def __call__(self, x, rngs=None):
        return self.out(self.noise(self.drop(nnx.relu(self.lin(x)), rngs=rngs), rngs=rngs))


def test_rate_filter_selects_the_layers_a_schedule_drives():
    data = toy()
    x, y = jnp.asarray(data.x[:BATCH]), jnp.asarray(data.y[:BATCH])
    trainer = Trainer(
        TwoKinds(nnx.Rngs(0)),
        optax.sgd(0.1),
        rate_schedule=lambda step: 0.5,
        rate_filter=lambda layer: isinstance(layer, jdn.GaussianDropout),
    )
    state = trainer.init(jax.random.key(0))
    _, metrics = trainer.train_step(state, x, y)

    def loss(drop_rate, noise_rate):
        m = trainer.model_from(state)
        m.drop.rate, m.noise.rate = drop_rate, noise_rate
        return float(cross_entropy_loss(m(x, rngs=nnx.Rngs(dropout=state.dropout_key())), y))

    np.testing.assert_allclose(float(metrics["loss"]), loss(0.0, 0.5), rtol=1e-5)
    for other in [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5)]:
        assert abs(float(metrics["loss"]) - loss(*other)) > 1e-4, other


def test_nnx_array_rate_changes_under_nnx_jit_without_recompiling():
    traces = []

    @nnx.jit
    def forward(layer, x):
        traces.append(1)
        return layer(x)

    @nnx.jit
    def forward_at(layer, x, rate):  # the rate assigned inside, traced
        traces.append(1)
        layer.rate = rate
        return layer(x)

    x = jnp.ones((100, 128))
    layer = jdn.Dropout(jnp.asarray(0.1), rngs=nnx.Rngs(0))
    for rate in (0.1, 0.5, 0.9):
        layer.rate = jnp.asarray(rate)
        dropped = float(jnp.mean(forward(layer, x) == 0))
        assert within_binomial(dropped, rate, x.size), (rate, dropped)
    for rate in (0.3, 0.7):
        dropped = float(jnp.mean(forward_at(layer, x, jnp.asarray(rate)) == 0))
        assert within_binomial(dropped, rate, x.size), (rate, dropped)
        assert float(layer.rate) == pytest.approx(rate)  # nnx.jit hands the new rate back
    assert len(traces) == 2  # one trace of each function
    # Negative control: a Python float rate is static, and a new one retraces.
    static = jdn.Dropout(0.1, rngs=nnx.Rngs(0))
    forward(static, x)
    static.rate = 0.5
    forward(static, x)
    assert len(traces) == 4


def test_linen_traced_rate_field_under_jit_compiles_once():
    class Net(nn.Module):
        rate: float

        @nn.compact
        def __call__(self, x):
            return jdl.Dropout(self.rate, deterministic=False)(x)

    forward = jax.jit(lambda key, x, rate: Net(rate).apply({}, x, rngs={"dropout": key}))
    x = jnp.ones((100, 128))
    for rate in (0.1, 0.5, 0.9):
        dropped = float(jnp.mean(forward(jax.random.key(0), x, rate) == 0))
        assert within_binomial(dropped, rate, x.size), (rate, dropped)
    assert forward._cache_size() == 1


# --------------------------------------------------------------------------- MC dropout, eagerly


def test_mc_chunked_calls_compile_once_and_never_see_stale_closures():
    # Odd sizes (13 passes in chunks of 5, 7 features), so no other test compiled these programs.
    T, CHUNK = 13, 5
    x = jnp.linspace(-1.0, 1.0, 21).reshape(3, 7)
    w = jnp.linspace(-1.0, 1.0, 35).reshape(7, 5)

    def f(key, x):
        return jaxdrop.dropout(key, x, 0.5) @ w  # closes over `w`, rebound below

    calls = {
        "sample": lambda k, xx: mc.sample(f, k, xx, T, chunk_size=CHUNK),
        "regression": lambda k, xx: mc.predict_regression(f, k, xx, T, tau=4.0, chunk_size=CHUNK).mean,
        "classification": lambda k, xx: mc.predict_classification(f, k, xx, T, chunk_size=CHUNK).probs,
    }
    for name, call in calls.items():
        with count_compiles() as first:
            call(jax.random.key(0), x)
        with count_compiles() as again:
            for i in range(1, 4):
                call(jax.random.key(i), x)
        assert first["n"] >= 1 and again["n"] == 0, (name, first, again)
    with count_compiles() as other_shape:  # negative control: the counter sees a new program
        calls["sample"](jax.random.key(0), x[:2])
    assert other_shape["n"] >= 1
    # Rebinding the array `f` closes over: the next call uses the new values, without compiling.
    old = mc.sample(f, jax.random.key(5), x, T, chunk_size=CHUNK)
    w = -2.0 * w
    with count_compiles() as rebound:
        new = mc.sample(f, jax.random.key(5), x, T, chunk_size=CHUNK)
        reg = mc.predict_regression(f, jax.random.key(5), x, T, tau=4.0, chunk_size=CHUNK)
    assert rebound["n"] == 0
    np.testing.assert_allclose(new, -2.0 * old, rtol=1e-6)
    keys = jax.random.split(jax.random.key(5), T)
    np.testing.assert_allclose(new[3], f(keys[3], x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(reg.mean, new.mean(0), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- resume keeps the history


@pytest.fixture(scope="module")
def resumable():
    """A trainer, 96 examples in batches of 12 (8 steps per epoch), and the uninterrupted run to step 12."""
    data = toy(96)
    trainer = Trainer(NnxDrops(0.5, nnx.Rngs(0)), optax.sgd(0.1))
    fresh = trainer.init(jax.random.key(0))
    whole, ref = trainer.fit(fresh, data, steps=12, batch_size=12, progress=False)
    assert [(r["epoch"], r["step"]) for r in ref] == [(1, 8), (1.5, 12)]
    return trainer, data, fresh, whole, ref


def test_resume_after_steps_gives_the_uninterrupted_history(tmp_path, resumable):
    """Stopped by steps=6 (mid-epoch), resumed to 12: the records of one run to 12, not a partial one more."""
    trainer, data, fresh, whole, ref = resumable
    ckpt = str(tmp_path / "ck")
    _, first = trainer.fit(fresh, data, steps=6, batch_size=12, checkpoint_dir=ckpt, progress=False)
    assert [r["epoch"] for r in first] == [0.75]  # the partial record closing the stopped call
    resumed, hist = trainer.fit(fresh, data, steps=12, batch_size=12, checkpoint_dir=ckpt, progress=False)
    assert hist == ref
    assert leaves_equal(resumed, whole)


class Crash(Exception):
    pass


def test_resume_after_a_crash_gives_the_uninterrupted_history(tmp_path, resumable):
    """The process dies right after the save of step 10 (mid-epoch 2): resumed, the history of one run.

    (A SIGKILL at random moments, mid-save included, is tests/test_checkpoint_kill.py's.)
    """
    trainer, data, fresh, whole, ref = resumable
    ckpt = str(tmp_path / "ck")

    def die_at_10(step):
        if step == 10:
            raise Crash

    with pytest.raises(Crash):
        trainer.fit(fresh, data, steps=12, batch_size=12, checkpoint_dir=ckpt, save_every=1, on_save=die_at_10,
                    progress=False)
    resumed, hist = trainer.fit(fresh, data, steps=12, batch_size=12, checkpoint_dir=ckpt, progress=False)
    assert hist == ref
    assert leaves_equal(resumed, whole)


# --------------------------------------------------------------------------- errors at construction


@pytest.mark.parametrize(
    ("build", "prefix", "words"),
    [
        (lambda: jdn.Dropout(1.5), "jaxdrop.nnx.Dropout:", "`rate` must be in [0, 1]"),
        (lambda: jdn.Dropout(0.5, mode="turbo"), "jaxdrop.nnx.Dropout:", "`mode` must be 'exact'"),
        (lambda: jdn.GaussianNoise(-1.0), "jaxdrop.nnx.GaussianNoise:", "`stddev` must be finite and >= 0"),
        (lambda: jdl.Dropout(-3.0), "jaxdrop.linen.Dropout:", "`rate` must be in [0, 1]"),
        (lambda: jdl.Dropout(0.5, mode="turbo"), "jaxdrop.linen.Dropout:", "`mode` must be 'exact'"),
    ],
)
def test_layers_validate_rate_and_mode_when_built(build, prefix, words):
    with pytest.raises(ValueError) as info:
        build()
    assert str(info.value).startswith(prefix) and words in str(info.value), str(info.value)


def test_bad_rate_fails_in_evaluation_mode_too_and_good_ones_build():
    class Net(nn.Module):
        rate: float

        @nn.compact
        def __call__(self, x):
            return jdl.Dropout(self.rate, deterministic=True)(x)

    with pytest.raises(ValueError, match=r"^jaxdrop\.linen\.Dropout: `rate`"):
        Net(1.5).init(jax.random.key(0), jnp.ones(3))
    with pytest.raises(ValueError, match=r"^jaxdrop\.nnx\.Dropout: `rate`"):
        jdn.Dropout(1.5, deterministic=True)
    # the edges of the domain and both modes are accepted
    x = jnp.ones(3)
    for rate in (0.0, 1.0):
        np.testing.assert_array_equal(Net(rate).apply({}, x), x)
        np.testing.assert_array_equal(jdn.Dropout(rate, mode="fast", deterministic=True)(x), x)
    jdl.Dropout(0.5, mode="fast")
    jdn.GaussianNoise(0.0)


def test_traced_deterministic_names_the_situation():
    with pytest.raises(TypeError) as info:
        jax.jit(lambda x, d: jaxdrop.dropout(jax.random.key(0), x, 0.5, deterministic=d))(jnp.ones(3), True)
    msg = str(info.value)
    assert msg.startswith("jaxdrop.dropout: `deterministic`") and "traced value" in msg and "static" in msg
    assert "static_argnames='deterministic'" not in msg  # no guess at the caller's argument name


# --------------------------------------------------------------------------- jaxdrop.checked and nnx streams


class StreamNet(nnx.Module):
    """Draws its dropout keys from an nnx.Rngs stream it holds; its rate is an array."""

    def __init__(self, rngs):
        self.lin = nnx.Linear(D, D, rngs=rngs)
        self.drop = jdn.Dropout(jnp.asarray(0.5), rngs=rngs)
        self.out = nnx.Linear(D, C, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.lin(x))))


def test_checked_reports_a_bad_traced_rate_of_an_nnx_model_with_a_stream():
    """The patterns jaxdrop.checked's docstring gives: call-time keys (mc.from_nnx), split/merge inside."""
    model = StreamNet(nnx.Rngs(0))
    x = jnp.ones((3, D))
    # The limitation the docstring documents (Flax's: a stream's counter cannot be updated from
    # inside checkify's trace). If Flax lifts it, this fails: update jaxdrop.checked's docstring.
    with pytest.raises(flax.errors.TraceContextError):
        jaxdrop.checked(lambda m, x: m(x))(model, x)

    # 1. Call-time keys: the model goes in as an argument (a pytree), so its array rate is traced.
    sample = jax.jit(jaxdrop.checked(lambda m, key, x: mc.from_nnx(m)(key, x)))
    # 2. nnx.split outside, nnx.merge inside; copy=True makes Variables of the checked trace.
    graphdef, state = nnx.split(model)

    def merged(state, x, rate):
        m = nnx.merge(graphdef, state, copy=True)
        m.drop.rate = rate
        return m(x)

    merged = jax.jit(jaxdrop.checked(merged))
    for rate, bad in ((1.5, True), (0.3, False)):
        model.drop.rate = jnp.asarray(rate)
        for name, (err, y) in {
            "from_nnx": sample(model, jax.random.key(1), x),
            "merge": merged(state, x, jnp.asarray(rate)),
        }.items():
            if bad:
                assert "jaxdrop.dropout: `rate` must be in [0, 1], got 1.5" in str(err.get()), name
            else:
                assert err.get() is None, name
            assert y.shape == (3, C) and bool(jnp.isfinite(y).all()), name
    assert int(model.drop.rngs.count[...]) == 0  # the model's own stream was never advanced
