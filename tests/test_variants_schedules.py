"""Drop-rate schedules: their formulas, a traced step without recompiling, and use as a dropout rate."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import binomial_bound

import jaxdrop

STEPS = np.array([0, 1, 10, 49, 50, 51, 99, 100, 101, 1000, 100_000], np.int32)


def evaluate_traced(schedule) -> tuple[np.ndarray, int]:
    """The schedule at every step of STEPS under one jit with a traced step, and how often it traced."""
    traces = []

    @jax.jit
    def f(step):
        traces.append(1)
        return schedule(step)

    values = np.array([float(f(s)) for s in STEPS])
    return values, len(traces)


def test_curriculum_schedule_formula():
    target, gamma = 0.5, 0.01
    values, traces = evaluate_traced(jaxdrop.curriculum_schedule(target, gamma))
    assert traces == 1
    np.testing.assert_allclose(values, target * (1 - np.exp(-gamma * STEPS.astype(np.float64))), rtol=1e-6, atol=1e-7)
    assert values[0] == 0.0 and (np.diff(values) >= 0).all() and values[-1] <= target
    # ... i.e. the paper's retain probability (1 - theta_bar) exp(-gamma t) + theta_bar, as a drop rate.
    theta_bar, t = 1 - target, 300
    assert math.isclose(1 - float(jaxdrop.curriculum_schedule(target, gamma)(t)),
                        (1 - theta_bar) * math.exp(-gamma * t) + theta_bar, rel_tol=1e-6)  # fmt: skip
    # Float and negative steps; vmap over steps.
    f = jaxdrop.curriculum_schedule(target, gamma)
    assert float(f(-5)) == 0.0 and math.isclose(float(f(2.5)), target * -math.expm1(-gamma * 2.5), rel_tol=1e-6)
    np.testing.assert_allclose(jax.vmap(f)(jnp.asarray(STEPS)), values, rtol=1e-6)


@pytest.mark.parametrize("kind", ["constant", "linear"])
def test_early_dropout_schedule_formula(kind):
    rate, cutoff = 0.1, 100
    values, traces = evaluate_traced(jaxdrop.early_dropout_schedule(rate, cutoff, kind=kind))
    assert traces == 1
    t = STEPS.astype(np.float64)
    expected = np.where(t < cutoff, rate, 0.0) if kind == "constant" else rate * np.maximum(0.0, 1 - t / cutoff)
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-7)  # float32 arithmetic
    assert values[STEPS.tolist().index(cutoff)] == 0.0  # no dropout from the cutoff on
    assert float(jaxdrop.early_dropout_schedule(rate, 0, kind=kind)(0)) == 0.0


def test_late_dropout_schedule_formula():
    rate, cutoff = 0.4, 50
    values, traces = evaluate_traced(jaxdrop.late_dropout_schedule(rate, cutoff))
    assert traces == 1
    np.testing.assert_allclose(values, np.where(STEPS < cutoff, 0.0, rate), rtol=1e-6)
    # Integer steps are compared exactly, also beyond float32's 2**24.
    big = 2**24 + 1
    late = jax.jit(jaxdrop.late_dropout_schedule(rate, big))
    assert float(late(jnp.int32(big - 1))) == 0.0
    assert math.isclose(float(late(jnp.int32(big))), rate, rel_tol=1e-6)


def test_schedules_drive_dropout_without_recompiling():
    traces = []
    schedules = {
        "curriculum": jaxdrop.curriculum_schedule(0.5, 0.05),
        "early": jaxdrop.early_dropout_schedule(0.5, 20, kind="linear"),
        "late": jaxdrop.late_dropout_schedule(0.5, 20),
        "optax": optax.linear_schedule(0.0, 0.5, transition_steps=20),  # any optax schedule works too
    }
    x = jnp.ones((64, 64))

    @jax.jit
    def train_step(key, x, step):
        traces.append(1)
        return {name: jaxdrop.dropout(key, x, s(step)) for name, s in schedules.items()}

    key = jax.random.key(0)
    for step in range(0, 60, 7):
        out = train_step(key, x, step)
        for name, y in out.items():
            rate = float(schedules[name](step))
            kept = float((y != 0).mean())
            assert abs(kept - (1 - rate)) <= binomial_bound(rate, x.size) + 1e-9, name
    assert len(traces) == 1, "a new step value recompiled the training step"


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        jaxdrop.curriculum_schedule(1.5, 0.01)
    with pytest.raises(ValueError, match="gamma"):
        jaxdrop.curriculum_schedule(0.5, -0.01)
    with pytest.raises(ValueError, match="cutoff_steps"):
        jaxdrop.early_dropout_schedule(0.1, -1)
    with pytest.raises(TypeError, match="cutoff_steps"):
        jaxdrop.late_dropout_schedule(0.1, 2.5)
    with pytest.raises(ValueError, match="kind"):
        jaxdrop.early_dropout_schedule(0.1, 10, kind="cosine")
    with pytest.raises(TypeError, match="step"):
        jaxdrop.late_dropout_schedule(0.1, 10)(True)
    with pytest.raises(TypeError, match="scalar"):
        jaxdrop.late_dropout_schedule(0.1, 10)(np.arange(3))
    with pytest.raises(TypeError, match="Python number"):
        jax.jit(lambda r: jaxdrop.curriculum_schedule(r, 0.1)(0))(0.5)
