"""Losses and parameter constraints: cross-entropy, max-norm and its kernel filter, finiteness."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdrop import _checks
from jaxdrop.training._state import PyTree

__all__ = ["cross_entropy_loss", "is_kernel", "max_norm", "path_names", "tree_all_finite"]


def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Mean softmax cross-entropy with integer labels: :math:`-\frac1B\sum_b \log \mathrm{softmax}(z_b)_{y_b}`.

    >>> import jax.numpy as jnp
    >>> float(cross_entropy_loss(jnp.zeros((2, 4)), jnp.array([0, 3])))  # log 4
    1.3862943649291992
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def path_names(path: Sequence[Any]) -> list[str]:
    out = []
    for p in path:
        for attr in ("key", "name", "idx"):
            if hasattr(p, attr):
                out.append(str(getattr(p, attr)))
                break
    return out


def is_kernel(path: Sequence[Any], leaf: Any) -> bool:
    """Default filter for max-norm and weight decay: leaves named ``kernel`` with ``ndim >= 2``.

    That is every ``Dense``/``Linear`` kernel ``(in, out)`` and ``Conv`` kernel
    ``(..., in, out)`` in Flax (linen and NNX); biases and normalisation
    scales are excluded.

    >>> import jax, jax.numpy as jnp
    >>> p = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
    >>> [is_kernel(path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(p)[0]]
    [False, True]
    """
    names = path_names(path)
    return bool(names) and names[-1] == "kernel" and jnp.ndim(leaf) >= 2


def max_norm(
    params: PyTree,
    c: float,
    *,
    filter: Callable[[Sequence[Any], Any], bool] = is_kernel,
) -> PyTree:
    r"""Project every unit's incoming weight vector onto the L2 ball of radius ``c``.

    The max-norm constraint of Srivastava et al. (2014, sec. 5.1), used with
    dropout: for a kernel :math:`W` of shape ``(..., in, out)`` (Flax's layout,
    ``y = x @ W``), column :math:`w_j = W[..., j]` holds the weights *into* unit
    :math:`j`, and

    .. math::

        w_j \leftarrow \begin{cases} c\, w_j / \lVert w_j \rVert_2 & \lVert w_j \rVert_2 > c \\
        w_j & \text{otherwise,} \end{cases}

    with the norm over all axes but the last (the whole receptive field of a
    conv filter). A projection applied after each update, not a penalty; the
    paper's typical ``c`` is 3 to 4. Leaves for which ``filter(path, leaf)`` is
    False (default :func:`is_kernel`: biases...) are returned unchanged, and so
    are columns already inside the ball, bit for bit.

    >>> import jax.numpy as jnp
    >>> p = {"kernel": jnp.array([[3.0, 0.1], [4.0, 0.0]]), "bias": jnp.array([10.0, 10.0])}
    >>> q = max_norm(p, 2.0)
    >>> q["kernel"].tolist(), q["bias"].tolist()
    ([[1.2000000476837158, 0.10000000149011612], [1.600000023841858, 0.0]], [10.0, 10.0])
    """
    if not _checks.is_concrete(c):
        raise TypeError("jaxdrop.training.max_norm: the radius `c` must be a number known now, got a traced value.")
    c = float(_checks.positive(c, "training.max_norm", "c"))

    def project(path: Sequence[Any], w: Any) -> Any:
        if not filter(path, w):
            return w
        axes = tuple(range(w.ndim - 1))
        norm = jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)), axis=axes, keepdims=True))
        scale = (c / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny)).astype(w.dtype)
        return jnp.where(norm > c, w * scale, w)

    return jax.tree_util.tree_map_with_path(project, params)


def tree_all_finite(tree: PyTree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.stack(leaves).all() if leaves else jnp.array(True)
