"""Drop-rate schedules: ``step -> rate`` callables, as optax schedules are.

jaxdrop functions accept a traced rate without recompiling, so a schedule is
used by evaluating it on the (traced) training step inside the jitted step::

    rate_fn = jaxdrop.curriculum_schedule(0.5, gamma=1e-3)

    @jax.jit
    def train_step(state, batch, key, step):
        rate = rate_fn(step)                     # a traced float32 scalar
        y = jaxdrop.dropout(key, batch, rate)    # compiled once for every step
        ...

Any optax schedule works the same way, e.g. the DropBlock paper's linear ramp
of the drop rate from 0 to its target, ``optax.linear_schedule(0.0, 0.1, total_steps)``.
Every schedule here returns a float32 scalar array and works under ``jit`` and
``vmap`` with a traced step; a negative step counts as step 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _checks

__all__ = ["curriculum_schedule", "early_dropout_schedule", "late_dropout_schedule"]

Schedule = Callable[[Any], jax.Array]


def _rate(value: Any, fn: str, name: str = "rate") -> float:
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be a Python number, not a traced value.")
    v = _checks.probability(value, fn, name)
    assert isinstance(v, float)
    return v


_MAX_STEP = int(np.iinfo(np.int32).max)
"""The largest step (JAX's default integers are int32); larger Python steps count as this one."""


def _cutoff(value: Any, fn: str) -> int:
    cutoff = _checks.integer(value, fn, "cutoff_steps", minimum=0)
    if cutoff > _MAX_STEP:
        raise ValueError(
            f"jaxdrop.{fn}: `cutoff_steps` must be at most 2**31 - 1 = {_MAX_STEP} (steps are int32 "
            f"scalars under JAX's default 32-bit mode), got {cutoff}."
        )
    return cutoff


def _step(step: Any, fn: str) -> jax.Array:
    dtype = getattr(step, "dtype", None)
    if isinstance(step, bool) or (dtype is not None and jnp.issubdtype(dtype, jnp.bool_)):
        raise TypeError(f"jaxdrop.{fn}: the step must be a number, got {step!r}.")
    if jnp.ndim(step) != 0:
        raise TypeError(f"jaxdrop.{fn}: the step must be a scalar, got shape {jnp.shape(step)}.")
    if isinstance(step, (int, np.integer)) and step > _MAX_STEP:
        # Every cutoff is at most _MAX_STEP, so a later step behaves exactly like it.
        step = _MAX_STEP
    t = jnp.asarray(step)
    if not (jnp.issubdtype(t.dtype, jnp.integer) or jnp.issubdtype(t.dtype, jnp.floating)):
        raise TypeError(f"jaxdrop.{fn}: the step must be a number, got dtype {t.dtype}.")
    # Integer steps stay integers, so `step < cutoff` is exact beyond float32's 2**24.
    return jnp.maximum(t, jnp.zeros((), t.dtype))


def curriculum_schedule(target_rate: float, gamma: float) -> Schedule:
    r"""Curriculum dropout (Morerio et al., 2017): the drop rate rises from 0 to its target.

    .. math::

        \mathrm{rate}(t) = \mathrm{target\_rate}\,\bigl(1 - e^{-\gamma t}\bigr),

    i.e. the paper's retain probability :math:`\theta(t) = (1-\bar\theta)e^{-\gamma t} + \bar\theta`
    with :math:`\bar\theta = 1 - \mathrm{target\_rate}`. Training starts without
    dropout (easy examples first) and approaches ``target_rate``; half of it is
    reached after :math:`\ln 2/\gamma` steps.

    Args:
      target_rate: the final **drop** rate :math:`1 - \bar\theta`, in ``[0, 1]``.
      gamma: the decay constant per step, finite and ``>= 0`` (the paper: 1e-3
        per iteration on MNIST).

    Returns:
      ``schedule(step) -> rate`` (float32 scalar array; ``step`` may be traced).

    Reference: P. Morerio, J. Cavazza, R. Volpi, R. Vidal, V. Murino, "Curriculum
    Dropout", ICCV 2017 (arXiv:1703.06229).

    >>> import jaxdrop
    >>> f = jaxdrop.curriculum_schedule(0.5, gamma=0.01)
    >>> [round(float(f(t)), 4) for t in (0, 100, 1000)]
    [0.0, 0.3161, 0.5]
    """
    fn = "curriculum_schedule"
    target = _rate(target_rate, fn, "target_rate")
    if isinstance(gamma, jax.core.Tracer):
        raise TypeError(f"jaxdrop.{fn}: `gamma` must be a Python number, not a traced value.")
    g = _checks.nonnegative(gamma, fn, "gamma")

    def schedule(step: Any) -> jax.Array:
        t = _step(step, fn)
        return jnp.float32(target) * -jnp.expm1(-jnp.float32(g) * t.astype(jnp.float32))

    return schedule


def early_dropout_schedule(
    rate: float, cutoff_steps: int, *, kind: Literal["constant", "linear"] = "constant"
) -> Schedule:
    r"""Early dropout (Liu et al., 2023): dropout only at the start of training.

    .. math::

        \mathrm{constant:}\ \mathrm{rate}(t) = \begin{cases}\mathrm{rate} & t < T\\ 0 & t \ge T\end{cases}
        \qquad
        \mathrm{linear:}\ \mathrm{rate}(t) = \mathrm{rate}\cdot\max(0,\ 1 - t/T),

    with :math:`T` = ``cutoff_steps``. Early dropout counters *underfitting*
    (small models, large data): it lowers the final training loss. The paper's
    recipes: ``rate=0.1``, ``kind="linear"``, cutoff after 50 of 300 epochs.

    Args:
      rate: the **drop** rate at step 0, in ``[0, 1]``.
      cutoff_steps: :math:`T`, the first step without dropout, an int >= 0
        (``0`` disables dropout from the start).
      kind: ``"constant"`` or ``"linear"`` (decreasing to 0 at :math:`T`).

    Returns:
      ``schedule(step) -> rate`` (float32 scalar array; ``step`` may be traced).

    Reference: Z. Liu, Z. Xu, J. Jin, Z. Shen, T. Darrell, "Dropout Reduces
    Underfitting", ICML 2023 (arXiv:2303.01500).

    >>> import jaxdrop
    >>> f = jaxdrop.early_dropout_schedule(0.1, 100, kind="linear")
    >>> [round(float(f(t)), 4) for t in (0, 50, 100, 200)]
    [0.1, 0.05, 0.0, 0.0]
    """
    fn = "early_dropout_schedule"
    r = _rate(rate, fn)
    cutoff = _cutoff(cutoff_steps, fn)
    if kind not in ("constant", "linear"):
        raise ValueError(f"jaxdrop.{fn}: `kind` must be 'constant' or 'linear', got {kind!r}.")

    def schedule(step: Any) -> jax.Array:
        t = _step(step, fn)
        if kind == "constant" or cutoff == 0:
            return jnp.where(t < cutoff, jnp.float32(r), jnp.float32(0.0))
        frac = t.astype(jnp.float32) / jnp.float32(cutoff)
        return jnp.where(t < cutoff, jnp.float32(r) * (1 - frac), jnp.float32(0.0))

    return schedule


def late_dropout_schedule(rate: float, cutoff_steps: int) -> Schedule:
    r"""Late dropout (Liu et al., 2023): no dropout at first, then a constant rate.

    .. math::

        \mathrm{rate}(t) = \begin{cases}0 & t < T\\ \mathrm{rate} & t \ge T\end{cases}

    with :math:`T` = ``cutoff_steps``. Late dropout (or late stochastic depth)
    counters *overfitting* in large models: the paper's recipe turns stochastic
    depth 0.4 on after 50 epochs.

    Args:
      rate: the **drop** rate from step :math:`T` on, in ``[0, 1]``.
      cutoff_steps: :math:`T`, the first step with dropout, an int >= 0.

    Returns:
      ``schedule(step) -> rate`` (float32 scalar array; ``step`` may be traced).

    Reference: Z. Liu, Z. Xu, J. Jin, Z. Shen, T. Darrell, "Dropout Reduces
    Underfitting", ICML 2023 (arXiv:2303.01500).

    >>> import jaxdrop
    >>> f = jaxdrop.late_dropout_schedule(0.4, 50)
    >>> [round(float(f(t)), 4) for t in (0, 49, 50, 1000)]
    [0.0, 0.0, 0.4, 0.4]
    """
    fn = "late_dropout_schedule"
    r = _rate(rate, fn)
    cutoff = _cutoff(cutoff_steps, fn)

    def schedule(step: Any) -> jax.Array:
        t = _step(step, fn)
        return jnp.where(t < cutoff, jnp.float32(0.0), jnp.float32(r))

    return schedule
