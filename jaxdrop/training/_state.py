"""The training state: a pytree of arrays that holds everything a run needs to continue."""

from __future__ import annotations

from typing import Any

import jax
from flax import struct

__all__ = ["PyTree", "TrainState"]


PyTree = Any


class TrainState(struct.PyTreeNode):
    """Everything a run needs to continue: a pytree of arrays (jit- and orbax-friendly).

    Attributes:
      step: int32 scalar, the number of updates applied so far.
      params: trainable parameters (a nested dict of arrays).
      model_state: non-trainable model variables (batch statistics...), ``{}`` if none.
      opt_state: the optax optimizer state.
      key: raw key data (``jax.random.key_data``) of the base dropout key; step
        ``s`` uses ``fold_in(key, s)`` (:meth:`dropout_key`).
      data_key: raw key data of the key that orders the training examples.
      key_impl: the PRNG implementation of both keys (static).

    >>> import jax, jax.numpy as jnp
    >>> base = jax.random.key(7)
    >>> s = TrainState(step=jnp.array(3), params={}, model_state={}, opt_state=(),
    ...                key=jax.random.key_data(base), data_key=jax.random.key_data(base))
    >>> bool(jnp.all(jax.random.key_data(s.dropout_key()) == jax.random.key_data(jax.random.fold_in(base, 3))))
    True
    """

    step: jax.Array
    params: PyTree
    model_state: PyTree
    opt_state: PyTree
    key: jax.Array
    data_key: jax.Array
    key_impl: str = struct.field(pytree_node=False, default="threefry2x32")

    def base_key(self) -> jax.Array:
        """The base dropout key as a typed key."""
        return jax.random.wrap_key_data(self.key, impl=self.key_impl)

    def shuffle_key(self) -> jax.Array:
        """The data-order key as a typed key."""
        return jax.random.wrap_key_data(self.data_key, impl=self.key_impl)

    def dropout_key(self, step: Any = None) -> jax.Array:
        """The dropout key of ``step`` (default: the current step): ``fold_in(base_key, step)``."""
        return jax.random.fold_in(self.base_key(), self.step if step is None else step)
