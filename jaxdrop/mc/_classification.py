"""MC-dropout classification: predictive probabilities, entropy, mutual information (BALD)."""

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

__all__ = ["Classification", "classification", "predict_classification"]


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
    z = float_samples(z, fn, min_ndim=2)
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
    s = float_samples(samples, fn, min_ndim=2)
    return _class_finalize(_class_stats(s, from_logits, fn), s.shape[0])


@dataclasses.dataclass(frozen=True)
class _ClassStats:
    """Log-sum-exp of log-probabilities, summed entropies and argmax votes of chunks."""

    from_logits: bool
    fn: str

    def stats(self, z: jax.Array) -> Any:
        return _class_stats(z, self.from_logits, self.fn)

    def combine(self, a: Any, b: Any) -> Any:
        return jnp.logaddexp(a[0], b[0]), a[1] + b[1], a[2] + b[2]

    def identity(self, shapes: Any) -> Any:
        lse, ent, votes = shapes
        return (
            jnp.full(lse.shape, -jnp.inf, lse.dtype),
            jnp.zeros(ent.shape, ent.dtype),
            jnp.zeros(votes.shape, votes.dtype),
        )


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
    num_samples = _checks.count(num_samples, f"mc.{fn}", "num_samples")
    acc = stream(f, key, x, num_samples, chunk_size, _ClassStats(from_logits, fn), fn)
    return _class_finalize(acc, num_samples)
