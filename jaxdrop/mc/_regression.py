"""MC-dropout regression: predictive moments, model precision and log-likelihood."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxdrop import _checks
from jaxdrop.mc._inputs import float_samples
from jaxdrop.mc._sampling import stream

__all__ = ["Regression", "log_likelihood", "model_precision", "predict_regression", "regression", "weight_decay"]


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
    return _inverse_pair("model_precision", length_scale, rate, n_data, weight_decay, "weight_decay")


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
    return _inverse_pair("weight_decay", length_scale, rate, n_data, tau, "tau")


def _inverse_pair(fn: str, length_scale: Any, rate: Any, n_data: Any, other: Any, name: str) -> float | jax.Array:
    """``p l^2 / (2 N other)``: tau from lambda and lambda from tau are the same formula."""
    length_scale = _checks.positive(length_scale, f"mc.{fn}", "length_scale")
    n_data = _checks.positive(n_data, f"mc.{fn}", "n_data")
    other = _checks.positive(other, f"mc.{fn}", name)
    keep = 1.0 - _drop_rate(rate, fn)
    return keep * length_scale**2 / (2.0 * n_data * other)


def _drop_rate(rate: Any, fn: str) -> float | jax.Array:
    r = _checks.probability(rate, f"mc.{fn}", "rate")
    return _checks.below_one(r, f"mc.{fn}", "it is the DROP probability; the keep probability 1 - rate must be > 0")


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
    return 1.0 / jnp.asarray(_checks.positive(tau, f"mc.{fn}", "tau"), dtype)


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
    s = float_samples(samples, fn)
    mean = s.mean(0)
    epistemic = jnp.square(s - mean).mean(0)
    noise = _noise_variance(tau, fn, s.dtype)
    return Regression(mean, epistemic + noise, epistemic, noise)


@dataclasses.dataclass(frozen=True)
class _Moments:
    """Count, mean and sum of squared deviations of chunks, merged by Chan et al.'s update."""

    fn: str

    def stats(self, y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        y = float_samples(y, self.fn)
        m = y.mean(0)
        return jnp.asarray(y.shape[0], m.dtype), m, jnp.square(y - m).sum(0)

    def combine(self, a: Any, b: Any) -> Any:
        na, ma, qa = a
        nb, mb, qb = b
        n = na + nb
        d = mb - ma
        return n, ma + d * (nb / n), qa + qb + jnp.square(d) * (na * nb / n)

    def identity(self, shapes: Any) -> Any:
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


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
    n, mean, m2 = stream(f, key, x, num_samples, chunk_size, _Moments(fn), fn)
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
    s = float_samples(samples, fn)
    yy = _checks.float_array(y, f"mc.{fn}", "y")
    if s.shape[1:] != yy.shape:
        raise ValueError(
            f"jaxdrop.mc.{fn}: `samples` must have shape (T,) + y.shape = (T,) + {yy.shape}, "
            f"got {s.shape}."
        )
    event_ndims = _checks.integer(event_ndims, f"mc.{fn}", "event_ndims")
    if event_ndims > yy.ndim:
        raise ValueError(f"jaxdrop.mc.{fn}: `event_ndims` must be an int in [0, y.ndim={yy.ndim}], got {event_ndims}.")
    t = jnp.asarray(_checks.positive(tau, f"mc.{fn}", "tau"), s.dtype)
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
