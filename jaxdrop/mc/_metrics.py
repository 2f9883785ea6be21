"""Metrics of predictive distributions: negative log-likelihood and expected calibration error."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxdrop import _checks
from jaxdrop.mc._inputs import all_in_range, labels_array

__all__ = ["expected_calibration_error", "negative_log_likelihood"]


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
    lab = labels_array(labels, lp.shape[:-1], lp.shape[-1], fn)
    k = lp.shape[-1]
    picked = jnp.take_along_axis(lp, jnp.clip(lab, 0, k - 1)[..., None], axis=-1)
    return jnp.where(all_in_range(lab, k), -picked.mean(), jnp.nan)


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
    num_bins = _checks.count(num_bins, f"mc.{fn}", "num_bins")
    lab = labels_array(labels, p.shape[:-1], p.shape[-1], fn).reshape(-1)
    p = p.reshape(-1, p.shape[-1]).astype(jnp.promote_types(p.dtype, jnp.float32))
    conf = p.max(-1)
    correct = (jnp.argmax(p, -1) == lab).astype(p.dtype)
    bins = jnp.clip(jnp.ceil(conf * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    gap = jax.ops.segment_sum(correct - conf, bins, num_segments=num_bins)
    return jnp.where(all_in_range(lab, p.shape[-1]), jnp.abs(gap).sum() / max(p.shape[0], 1), jnp.nan)
