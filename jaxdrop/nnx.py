"""``flax.nnx`` layers: a drop-in :class:`Dropout` and a layer for every variant.

Swap one import and keep everything else::

    from jaxdrop.nnx import Dropout        # instead of: from flax.nnx import Dropout

:class:`Dropout` *is* a :class:`flax.nnx.Dropout` (a subclass) with the same
constructor (``rate, *, broadcast_dims, deterministic, rng_collection, rngs``), the
same call (``inputs, *, deterministic=None, rngs=None``), the same errors, the same
handling of ``model.train()`` / ``model.eval()`` / ``nnx.view`` /
``set_attributes``, and by default the same output as Flax's for the same
``Rngs``: it forks the stream at construction and draws one key per call, as
Flax does. Only the mask generation differs (fused, and regenerated rather than
stored in the backward pass).

Every other layer follows the same conventions: ``deterministic`` defaults to
``False`` and is overridden by a call-time ``deterministic``; ``rngs`` may be
given at construction (the ``rng_collection`` stream is forked) and/or at call
time (an ``nnx.Rngs``, an ``nnx.RngStream`` or a key array), the call's taking
precedence. The layers hold no math: they fetch the key and call the functional
form in :mod:`jaxdrop` (see the table in :mod:`jaxdrop.linen`). A layer that would
not use randomness (deterministic, or a rate of 0) draws no key. A concrete ``rate``
(or ``stddev``) and ``mode`` are validated when the layer is built.

**Scheduling a rate.** A Python-float ``rate`` is a static attribute: a new value
recompiles an ``nnx.jit``-ed step. Build the layer with a JAX scalar instead,
``Dropout(jnp.asarray(0.1))``: the rate is then data, and assigning a new array
(``model.dropout.rate = jnp.asarray(0.2)``, outside or inside ``nnx.jit``) changes it
without recompiling. :class:`jaxdrop.training.Trainer` with a ``rate_schedule``
drives every jaxdrop layer's rate this way by itself.

Example::

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import jaxdrop.nnx as jdn
    >>> class MLP(nnx.Module):
    ...     def __init__(self, rngs: nnx.Rngs):
    ...         self.linear = nnx.Linear(3, 16, rngs=rngs)
    ...         self.dropout = jdn.Dropout(0.5, rngs=rngs)
    ...         self.out = nnx.Linear(16, 2, rngs=rngs)
    ...     def __call__(self, x):
    ...         return self.out(self.dropout(nnx.relu(self.linear(x))))
    >>> model = MLP(nnx.Rngs(0))
    >>> model.train()                      # dropout on
    >>> model(jnp.ones((4, 3))).shape
    (4, 2)
    >>> model.eval()                       # dropout off
    >>> bool((model(jnp.ones((1, 3))) == model(jnp.ones((1, 3)))).all())
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import rnglib
from flax.nnx.module import first_from
from flax.nnx.nn.linear import default_embed_init, default_kernel_init

import jaxdrop
from jaxdrop import attention
from jaxdrop._flax import bind_attention, check_layer, flax_broadcast_dims, is_one, is_zero
from jaxdrop._variants._activation import Activation, apply_activation
from jaxdrop._variants._concrete import rate_logit
from jaxdrop.attention import Implementation
from jaxdrop.prng import Mode

__all__ = [
    "ActivationDropout",
    "AlphaDropout",
    "ChannelDropout",
    "ConcreteDropout",
    "DropBlock",
    "DropConnectDense",
    "DropPath",
    "Dropout",
    "EmbeddingDropout",
    "FeatureAlphaDropout",
    "GaussianDropout",
    "GaussianNoise",
    "LockedDropout",
    "MultiHeadAttention",
    "Zoneout",
    "regularization_loss",
]

_ZEROS = nnx.initializers.zeros_init()
RngsArg = rnglib.Rngs | rnglib.RngStream | jax.Array | None


def _fork(rngs: Any, rng_collection: str) -> Any:
    """The stream a layer keeps, as ``flax.nnx.Dropout.__init__`` does."""
    if isinstance(rngs, rnglib.Rngs):
        return rngs[rng_collection].fork()
    if isinstance(rngs, rnglib.RngStream):
        return rngs.fork()
    if rngs is None:
        return nnx.data(None)
    raise TypeError(f"rngs must be a Rngs, RngStream or None, but got {type(rngs)}.")


def _deterministic(layer: Any, deterministic: bool | None) -> bool:
    name = type(layer).__name__
    return first_from(
        deterministic,
        layer.deterministic,
        error_msg=(
            f"No `deterministic` argument was provided to {name}."
            " Consider one of the following options:\n\n"
            f"1. Pass `deterministic` to the {name} constructor:\n\n"
            f"  self.dropout = nnx.{name}(..., deterministic=True/False)\n\n"
            f"2. Pass `deterministic` to the {name} __call__:\n\n"
            "  self.dropout(x, deterministic=True/False)\n\n"
            "3. Use `nnx.view` to create a view of the model with a"
            " specific `deterministic` value:\n\n"
            "  model_view = nnx.view(model, deterministic=True/False)\n"
        ),
    )


def _draw_key(layer: Any, rngs: RngsArg) -> jax.Array:
    """One key from the call's ``rngs`` or else the layer's stream, as Flax does."""
    source = first_from(
        rngs,
        layer.rngs,
        error_msg=f"""`deterministic` is False, but no `rngs` argument was provided to {type(layer).__name__}
          as either a __call__ argument or class attribute.""",
    )
    if isinstance(source, rnglib.Rngs):
        return source[layer.rng_collection]()
    if isinstance(source, rnglib.RngStream):
        return source()
    if isinstance(source, jax.Array):
        return source
    raise TypeError(f"rngs must be a Rngs, RngStream or jax.Array, but got {type(source)}.")


def _key(layer: Any, deterministic: bool | None, rngs: RngsArg, *, noop: bool = False) -> jax.Array | None:
    """The key for one stochastic call, or ``None`` if the layer is the identity."""
    if _deterministic(layer, deterministic) or noop:
        return None
    return _draw_key(layer, rngs)


class Dropout(nnx.Dropout):
    """Drop-in :class:`flax.nnx.Dropout` computed by :func:`jaxdrop.dropout`.

    Each element is kept with probability ``1 - rate`` and scaled by
    ``1 / (1 - rate)`` (inverted dropout, Srivastava et al., 2014).

    Args:
      rate: the probability of **dropping** an element (not the keep rate), in
        ``[0, 1]``; a rate outside it raises ``ValueError`` when the layer is built
        (Flax does not check). A Python float, or a JAX scalar to change it without
        recompiling (see the module docs).
      broadcast_dims: axes that share one mask value.
      deterministic: if true the inputs are returned as they are (evaluation
        mode); a call-time ``deterministic`` takes precedence. Set by
        ``model.train()`` / ``model.eval()`` / ``nnx.view``.
      rng_collection: the ``Rngs`` stream to draw keys from.
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` whose ``rng_collection`` stream is
        forked and kept, or ``None`` to pass ``rngs`` at call time.
      mode: ``"exact"`` (default, Flax's bits) or ``"fast"`` (see :mod:`jaxdrop.prng`).

    **Bit-identity** holds for JAX-array inputs, eagerly and under ``jit``. Two
    cases round the rescaling ``x / (1 - rate)`` differently in Flax, so kept
    values may differ in the last bit (never the mask): NumPy-array inputs (Flax
    divides with NumPy) and the primal of an un-jitted ``jax.grad``/``vjp`` (JAX
    runs Flax's division as a separate op there). Both are tested to one ulp.

    Example::

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxdrop.nnx import Dropout
        >>> x = jnp.ones((2, 4))
        >>> ours, flax_ = Dropout(0.5, rngs=nnx.Rngs(0)), nnx.Dropout(0.5, rngs=nnx.Rngs(0))
        >>> bool((ours(x) == flax_(x)).all()), bool((ours(x) == flax_(x)).all())
        (True, True)
        >>> Dropout(0.5)(x, rngs=nnx.Rngs(dropout=1)).shape
        (2, 4)
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        mode: Mode = "exact",
    ):
        # Flax annotates `rate: float`; an array rate works the same (it becomes pytree data).
        flax_rate = cast(float, rate)
        super().__init__(
            flax_rate, broadcast_dims=broadcast_dims, deterministic=deterministic, rng_collection=rng_collection, rngs=rngs
        )
        self.mode = mode
        check_layer(self, "nnx")

    def __call__(
        self,
        inputs: Any,
        *,
        deterministic: bool | None = None,
        rngs: RngsArg = None,
    ) -> jax.Array:
        """Applies a random dropout mask to ``inputs``.

        Args:
          inputs: the floating-point array to mask.
          deterministic: overrides the attribute for this call.
          rngs: an optional key, ``RngStream`` or ``Rngs``; takes precedence over
            the stream given to the constructor.

        Returns:
          The masked inputs, rescaled to preserve the mean.
        """
        if _deterministic(self, deterministic) or is_zero(self.rate):
            return inputs
        if is_one(self.rate):
            # As Flax: zeros, without drawing a key.
            return jnp.zeros_like(inputs)
        key = _draw_key(self, rngs)
        dims = flax_broadcast_dims(self.broadcast_dims, jnp.ndim(inputs))
        return jaxdrop.dropout(key, inputs, self.rate, broadcast_dims=dims, mode=self.mode)


class _Stochastic(nnx.Module):
    """Key and mode handling shared by the variant layers (no math)."""

    def __init__(
        self,
        *,
        deterministic: bool | None,
        rng_collection: str,
        rngs: rnglib.Rngs | rnglib.RngStream | None,
        mode: Mode,
    ):
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.mode = mode
        self.rngs = _fork(rngs, rng_collection)

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view``: ``deterministic=True`` turns the layer off."""
        if deterministic is not None:
            self.deterministic = deterministic


class ChannelDropout(_Stochastic):
    """Channel (spatial) dropout, :func:`jaxdrop.channel_dropout` (Tompson et al., 2015).

    Args:
      rate: the probability of **dropping** a channel (per sample).
      channel_axis: the channel axis (default ``-1``, channel-last).
      batch_axis: the batch axis, or ``None`` for one mask for the whole batch.
      deterministic, rng_collection, rngs, mode: as in :class:`Dropout`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop.nnx import ChannelDropout
    >>> y = ChannelDropout(0.5, rngs=nnx.Rngs(0))(jnp.ones((2, 4, 4, 3)))
    >>> bool(((y == 0).all(axis=(1, 2)) | (y == 2).all(axis=(1, 2))).all())
    True
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        channel_axis: int = -1,
        batch_axis: int | None = 0,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        mode: Mode = "exact",
    ):
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, mode=mode)
        self.rate, self.channel_axis, self.batch_axis = rate, channel_axis, batch_axis
        check_layer(self, "nnx")

    def __call__(self, inputs: Any, *, deterministic: bool | None = None, rngs: RngsArg = None) -> jax.Array:
        key = _key(self, deterministic, rngs, noop=is_zero(self.rate))
        if key is None:
            return inputs
        return jaxdrop.channel_dropout(
            key, inputs, self.rate, channel_axis=self.channel_axis, batch_axis=self.batch_axis, mode=self.mode
        )


class ActivationDropout(_Stochastic):
    """``activation`` then dropout, :func:`jaxdrop.activation_dropout`: the backward pass
    keeps only the output (one activation-sized array, as without dropout).

    ``ActivationDropout(0.1, "tanh", rngs=rngs)(x)`` outputs exactly
    ``Dropout(0.1, rngs=rngs)(nnx.tanh(x))`` for the same key stream.

    Args:
      rate: the probability of **dropping** an element.
      activation: ``"tanh"`` or ``"sigmoid"``; applied without dropout when deterministic.
      broadcast_dims, deterministic, rng_collection, rngs, mode: as in :class:`Dropout`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop.nnx import ActivationDropout
    >>> ActivationDropout(0.5, "tanh", deterministic=True)(jnp.zeros(3))
    Array([0., 0., 0.], dtype=float32)
    """

    def __init__(
        self,
        rate: float | jax.Array,
        activation: Activation = "tanh",
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        mode: Mode = "exact",
    ):
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, mode=mode)
        self.rate, self.activation, self.broadcast_dims = rate, activation, tuple(broadcast_dims)
        check_layer(self, "nnx")

    def __call__(self, inputs: Any, *, deterministic: bool | None = None, rngs: RngsArg = None) -> jax.Array:
        key = _key(self, deterministic, rngs, noop=is_zero(self.rate))
        if key is None:  # deterministic (or rate 0): the activation alone
            return apply_activation(jnp.asarray(inputs), self.activation)
        return jaxdrop.activation_dropout(
            key, inputs, self.rate, self.activation, broadcast_dims=self.broadcast_dims, mode=self.mode
        )


class AlphaDropout(_Stochastic):
    """Alpha dropout for SELU networks, :func:`jaxdrop.alpha_dropout` (Klambauer et al., 2017).

    Args:
      rate: the probability of **dropping** a unit.
      broadcast_dims: axes that share one mask value.
      deterministic, rng_collection, rngs, mode: as in :class:`Dropout`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop.nnx import AlphaDropout
    >>> AlphaDropout(0.1, rngs=nnx.Rngs(0))(jnp.zeros(3)).shape
    (3,)
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        mode: Mode = "exact",
    ):
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, mode=mode)
        self.rate, self.broadcast_dims = rate, broadcast_dims
        check_layer(self, "nnx")

    def __call__(self, inputs: Any, *, deterministic: bool | None = None, rngs: RngsArg = None) -> jax.Array:
        key = _key(self, deterministic, rngs, noop=is_zero(self.rate))
        if key is None:
            return inputs
        return jaxdrop.alpha_dropout(key, inputs, self.rate, broadcast_dims=self.broadcast_dims, mode=self.mode)


class FeatureAlphaDropout(_Stochastic):
    """Alpha dropout of whole channels, :func:`jaxdrop.feature_alpha_dropout`.

    Args:
      rate: the probability of **dropping** a channel.
      channel_axis, batch_axis: as in :class:`ChannelDropout`.
      deterministic, rng_collection, rngs, mode: as in :class:`Dropout`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop.nnx import FeatureAlphaDropout
    >>> FeatureAlphaDropout(0.2, rngs=nnx.Rngs(0))(jnp.zeros((2, 5, 3))).shape
    (2, 5, 3)
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        channel_axis: int = -1,
        batch_axis: int | None = 0,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        mode: Mode = "exact",
    ):
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, mode=mode)
        self.rate, self.channel_axis, self.batch_axis = rate, channel_axis, batch_axis
        check_layer(self, "nnx")

    def __call__(self, inputs: Any, *, deterministic: bool | None = None, rngs: RngsArg = None) -> jax.Array:
        key = _key(self, deterministic, rngs, noop=is_zero(self.rate))
        if key is None:
            return inputs
        return jaxdrop.feature_alpha_dropout(
            key, inputs, self.rate, channel_axis=self.channel_axis, batch_axis=self.batch_axis, mode=self.mode
        )


class GaussianDropout(_Stochastic):
    """Multiplicative Gaussian noise, :func:`jaxdrop.gaussian_dropout` (Srivastava et al., 2014, §10).

    Args:
      rate: the equivalent **drop** probability (noise variance ``rate / (1 - rate)``).
      broadcast_dims: axes that share one noise value.
      deterministic, rng_collection, rngs, mode: as in :class:`Dropout`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop.nnx import GaussianDropout
    >>> GaussianDropout(0.5, rngs=nnx.Rngs(0))(jnp.ones(3)).shape
    (3,)
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        mode: Mode = "exact",
    ):
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, mode=mode)
        self.rate, self.broadcast_dims = rate, broadcast_dims
        check_layer(self, "nnx")

    def __call__(self, inputs: Any, *, deterministic: bool | None = None, rngs: RngsArg = None) -> jax.Array:
        key = _key(self, deterministic, rngs, noop=is_zero(self.rate))
        if key is None:
            return inputs
        return jaxdrop.gaussian_dropout(
            key, inputs, self.rate, broadcast_dims=self.broadcast_dims, mode=self.mode
        )


class GaussianNoise(_Stochastic):
    """Additive Gaussian noise, :func:`jaxdrop.gaussian_noise`: ``y = x + stddev * N(0, 1)``.

    Args:
      stddev: the noise's standard deviation, ``>= 0``.
      deterministic, rng_collection, rngs, mode: as in :class:`Dropout`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop.nnx import GaussianNoise
    >>> GaussianNoise(0.1, rngs=nnx.Rngs(0))(jnp.ones(3), deterministic=True)
    Array([1., 1., 1.], dtype=float32)
    """

    def __init__(
        self,
        stddev: float | jax.Array,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        mode: Mode = "exact",
    ):
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, mode=mode)
        self.stddev = stddev
        check_layer(self, "nnx")

    def __call__(self, inputs: Any, *, deterministic: bool | None = None, rngs: RngsArg = None) -> jax.Array:
        key = _key(self, deterministic, rngs, noop=is_zero(self.stddev))
        if key is None:
            return inputs
        return jaxdrop.gaussian_noise(key, inputs, self.stddev, mode=self.mode)


class DropBlock(_Stochastic):
    """DropBlock, :func:`jaxdrop.dropblock` (Ghiasi et al., 2018): contiguous square blocks.

    Args:
      rate: the expected fraction of **dropped** elements.
      block_size: the side of each dropped block.
      channel_axis, batch_axis: as in :class:`ChannelDropout` (2-D or 3-D maps).
      deterministic, rng_collection, rngs, mode: as in :class:`Dropout`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop.nnx import DropBlock
    >>> DropBlock(0.1, block_size=3, rngs=nnx.Rngs(0))(jnp.ones((2, 8, 8, 4))).shape
    (2, 8, 8, 4)
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        block_size: int = 7,
        channel_axis: int = -1,
        batch_axis: int | None = 0,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        mode: Mode = "exact",
    ):
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, mode=mode)
        self.rate, self.block_size = rate, block_size
        self.channel_axis, self.batch_axis = channel_axis, batch_axis
        check_layer(self, "nnx")

    def __call__(self, inputs: Any, *, deterministic: bool | None = None, rngs: RngsArg = None) -> jax.Array:
        key = _key(self, deterministic, rngs, noop=is_zero(self.rate))
        if key is None:
            return inputs
        return jaxdrop.dropblock(
            key,
            inputs,
            self.rate,
            block_size=self.block_size,
            channel_axis=self.channel_axis,
            batch_axis=self.batch_axis,
            mode=self.mode,
        )


class DropPath(_Stochastic):
    """Stochastic depth, :func:`jaxdrop.drop_path` (Huang et al., 2016): whole samples of a branch.

    Args:
      rate: the probability of **dropping** the branch for a sample.
      batch_axis: the sample axis.
      scale_by_keep: divide kept samples by ``1 - rate``.
      batch_wise: one draw for the whole batch.
      deterministic, rng_collection, rngs, mode: as in :class:`Dropout`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop.nnx import DropPath
    >>> y = DropPath(0.5, rngs=nnx.Rngs(0))(jnp.ones((4, 3)))
    >>> bool(((y == 0).all(axis=1) | (y == 2).all(axis=1)).all())
    True
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        batch_axis: int = 0,
        scale_by_keep: bool = True,
        batch_wise: bool = False,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        mode: Mode = "exact",
    ):
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, mode=mode)
        self.rate, self.batch_axis = rate, batch_axis
        self.scale_by_keep, self.batch_wise = scale_by_keep, batch_wise
        check_layer(self, "nnx")

    def __call__(self, inputs: Any, *, deterministic: bool | None = None, rngs: RngsArg = None) -> jax.Array:
        key = _key(self, deterministic, rngs, noop=is_zero(self.rate))
        if key is None:
            return inputs
        return jaxdrop.drop_path(
            key,
            inputs,
            self.rate,
            batch_axis=self.batch_axis,
            scale_by_keep=self.scale_by_keep,
            batch_wise=self.batch_wise,
            mode=self.mode,
        )


class LockedDropout(_Stochastic):
    """Locked (variational) dropout, :func:`jaxdrop.locked_dropout`: one mask for all time steps.

    Args:
      rate: the probability of **dropping** a feature for the whole sequence.
      time_axis: the time axis (default 1 of ``(batch, time, features)``).
      deterministic, rng_collection, rngs, mode: as in :class:`Dropout`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop.nnx import LockedDropout
    >>> y = LockedDropout(0.5, rngs=nnx.Rngs(0))(jnp.ones((2, 5, 3)))
    >>> bool((y == y[:, :1]).all())
    True
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        time_axis: int = 1,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        mode: Mode = "exact",
    ):
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, mode=mode)
        self.rate, self.time_axis = rate, time_axis
        check_layer(self, "nnx")

    def __call__(self, inputs: Any, *, deterministic: bool | None = None, rngs: RngsArg = None) -> jax.Array:
        key = _key(self, deterministic, rngs, noop=is_zero(self.rate))
        if key is None:
            return inputs
        return jaxdrop.locked_dropout(key, inputs, self.rate, time_axis=self.time_axis, mode=self.mode)


def _integer_ids(ids: Any, cls: str) -> jax.Array:
    ids = jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"jaxdrop.nnx.{cls}: token ids must be an integer array, got dtype {ids.dtype}.")
    return ids


class EmbeddingDropout(_Stochastic):
    """An embedding lookup with embedding dropout, :func:`jaxdrop.embedding_dropout`.

    Like :class:`flax.nnx.Embed` (an ``embedding`` ``Param`` of shape
    ``(num_embeddings, features)``), but in training whole rows of the table
    (words) are dropped before the lookup, one mask per call (Gal & Ghahramani,
    2016; AWD-LSTM).

    Args:
      num_embeddings: the vocabulary size ``V``.
      features: the embedding size ``D``.
      rate: the probability of **dropping** a word.
      embedding_init: initializer of the table (as ``nnx.Embed``'s default).
      rngs: ``nnx.Rngs`` for the table's initialisation (its ``params`` stream)
        and, forked, for dropout.
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop.nnx import EmbeddingDropout
    >>> EmbeddingDropout(10, 4, 0.1, rngs=nnx.Rngs(0))(jnp.array([[1, 2, 3]])).shape
    (1, 3, 4)
    """

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        rate: float | jax.Array,
        *,
        embedding_init: Any = default_embed_init,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs,
        mode: Mode = "exact",
    ):
        self.embedding = nnx.Param(embedding_init(rngs.params(), (num_embeddings, features), jnp.float32))
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, mode=mode)
        self.num_embeddings, self.features, self.rate = num_embeddings, features, rate
        check_layer(self, "nnx")

    def __call__(self, inputs: Any, *, deterministic: bool | None = None, rngs: RngsArg = None) -> jax.Array:
        """Looks up integer ``inputs`` (any shape) in the (dropped) table: ``(*inputs.shape, D)``."""
        ids = _integer_ids(inputs, "EmbeddingDropout")
        table = self.embedding[...]
        key = _key(self, deterministic, rngs, noop=is_zero(self.rate))
        if key is not None:
            table = jaxdrop.embedding_dropout(key, table, self.rate, mode=self.mode)
        return jnp.take(table, ids, axis=0)


class Zoneout(_Stochastic):
    """Zoneout, :func:`jaxdrop.zoneout` (Krueger et al., 2017): units keep their previous state.

    Called as ``layer(h_prev, h_new)``; in evaluation it returns the expectation
    ``rate * h_prev + (1 - rate) * h_new``.

    Args:
      rate: the probability that a unit keeps ``h_prev``.
      deterministic, rng_collection, rngs, mode: as in :class:`Dropout`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop.nnx import Zoneout
    >>> Zoneout(0.5)(jnp.zeros(2), jnp.ones(2), deterministic=True)
    Array([0.5, 0.5], dtype=float32)
    """

    def __init__(
        self,
        rate: float | jax.Array,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        mode: Mode = "exact",
    ):
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, mode=mode)
        self.rate = rate
        check_layer(self, "nnx")

    def __call__(
        self, h_prev: Any, h_new: Any, *, deterministic: bool | None = None, rngs: RngsArg = None
    ) -> jax.Array:
        if is_zero(self.rate) and not _deterministic(self, deterministic):
            # Rate 0 keeps every new state: no key drawn, the stream is not advanced.
            return jaxdrop.zoneout(jax.random.key(0), h_prev, h_new, 0.0)
        key = _key(self, deterministic, rngs)
        if key is None:
            # zoneout's own evaluation rule (the expectation); it needs no key.
            return jaxdrop.zoneout(jax.random.key(0), h_prev, h_new, self.rate, deterministic=True)
        return jaxdrop.zoneout(key, h_prev, h_new, self.rate, mode=self.mode)


class DropConnectDense(_Stochastic):
    """A linear layer with DropConnect on its kernel, :func:`jaxdrop.dropconnect_dense` (Wan et al., 2013).

    Parameters are named like :class:`flax.nnx.Linear`'s (``kernel`` of shape
    ``(in_features, out_features)``, ``bias``).

    Args:
      in_features, out_features: the layer's sizes.
      rate: the probability of **dropping** each weight.
      use_bias: whether to add a (never dropped) bias.
      kernel_init, bias_init: initializers, as ``nnx.Linear``'s defaults.
      rngs: ``nnx.Rngs`` for initialisation (``params``) and, forked, for dropout.
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop.nnx import DropConnectDense
    >>> DropConnectDense(3, 5, 0.5, rngs=nnx.Rngs(0))(jnp.ones((8, 3))).shape
    (8, 5)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rate: float | jax.Array,
        *,
        use_bias: bool = True,
        kernel_init: Any = default_kernel_init,
        bias_init: Any = _ZEROS,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs,
        mode: Mode = "exact",
    ):
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), jnp.float32))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), jnp.float32)) if use_bias else nnx.data(None)
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, mode=mode)
        self.in_features, self.out_features, self.rate = in_features, out_features, rate
        check_layer(self, "nnx")

    def __call__(self, inputs: Any, *, deterministic: bool | None = None, rngs: RngsArg = None) -> jax.Array:
        bias = None if self.bias is None else self.bias[...]
        key = _key(self, deterministic, rngs, noop=is_zero(self.rate))
        if key is None:
            return jaxdrop.dropconnect_dense(jax.random.key(0), inputs, self.kernel[...], self.rate, bias,
                                             deterministic=True)
        return jaxdrop.dropconnect_dense(key, inputs, self.kernel[...], self.rate, bias, mode=self.mode)


class ConcreteDropout(_Stochastic):
    """Concrete dropout with a learned rate, wrapping a layer (Gal, Hron & Kendall, 2017).

    ``ConcreteDropout(nnx.Linear(3, 64, rngs=rngs), rngs=rngs)(x)`` applies
    :func:`jaxdrop.concrete_dropout` to ``x`` with the trainable drop-probability
    logit ``self.p_logit`` (an ``nnx.Param``, initialised from ``init_rate``),
    then the wrapped ``layer``. The regulariser
    (:func:`jaxdrop.concrete_dropout_regularizer`, ``K`` = ``kernel.shape[-2]``)
    is a function of the parameters alone: :meth:`regularizer` returns it and
    :func:`regularization_loss` sums it over every concrete layer of a model, to be
    added to the loss inside the function you differentiate.

    Args:
      layer: an ``nnx`` layer with a ``kernel`` parameter (``nnx.Linear``, ``nnx.Conv``, ...).
      init_rate: the initial drop probability, in ``(0, 1)``.
      temperature: the relaxation's temperature (0.1 in the paper).
      weight_regularizer: ``lambda_w = l**2 / (tau N)``.
      dropout_regularizer: ``lambda_p = 2 / (tau N)`` (``1/N`` for classification).
      broadcast_dims: axes that share one relaxed mask value.
      deterministic, rng_collection, rngs, mode: as in :class:`Dropout`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop.nnx import ConcreteDropout, regularization_loss
    >>> rngs = nnx.Rngs(0)
    >>> layer = ConcreteDropout(nnx.Linear(3, 2, rngs=rngs), rngs=rngs)
    >>> round(float(layer.rate), 6)
    0.1
    >>> layer(jnp.ones((4, 3))).shape
    (4, 2)
    >>> bool(regularization_loss(layer) == layer.regularizer())
    True
    """

    def __init__(
        self,
        layer: nnx.Module,
        *,
        init_rate: float = 0.1,
        temperature: float = 0.1,
        weight_regularizer: float = 1e-6,
        dropout_regularizer: float = 1e-5,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
        mode: Mode = "exact",
    ):
        if not hasattr(layer, "kernel"):
            raise TypeError(
                f"jaxdrop.nnx.ConcreteDropout: the wrapped layer must have a `kernel` parameter "
                f"(e.g. nnx.Linear, nnx.Conv), got {type(layer).__name__}."
            )
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, mode=mode)
        self.layer = layer
        self.p_logit = nnx.Param(jnp.asarray(rate_logit(init_rate, "nnx.ConcreteDropout"), jnp.float32))
        self.temperature = temperature
        self.weight_regularizer, self.dropout_regularizer = weight_regularizer, dropout_regularizer
        self.broadcast_dims = broadcast_dims
        check_layer(self, "nnx")

    @property
    def rate(self) -> jax.Array:
        """The current drop probability ``sigmoid(p_logit)``."""
        return jax.nn.sigmoid(self.p_logit[...])

    def regularizer(self) -> jax.Array:
        """This layer's term of the concrete-dropout objective (a scalar)."""
        kernel = self.layer.kernel[...]
        return jaxdrop.concrete_dropout_regularizer(
            self.p_logit[...],
            kernel,
            kernel.shape[-2],
            weight_regularizer=self.weight_regularizer,
            dropout_regularizer=self.dropout_regularizer,
        )

    def __call__(self, inputs: Any, *, deterministic: bool | None = None, rngs: RngsArg = None) -> Any:
        key = _key(self, deterministic, rngs)
        if key is None:
            return self.layer(inputs)
        dropped = jaxdrop.concrete_dropout(
            key,
            inputs,
            self.p_logit[...],
            temperature=self.temperature,
            broadcast_dims=self.broadcast_dims,
            mode=self.mode,
        )
        return self.layer(dropped)


class MultiHeadAttention(nnx.MultiHeadAttention):
    """Drop-in :class:`flax.nnx.MultiHeadAttention` with jaxdrop's attention.

    Flax's layer with :func:`jaxdrop.attention.dot_product_attention` as the default
    ``attention_fn``: the same constructor and call (``decode``, ``sow_weights``,
    ``is_causal``, grouped-query ``num_kv_heads``), the same parameters (a Flax
    checkpoint loads unchanged) and rng stream, and by default the same output bit
    for bit while attention dropout is applied. Without dropout (``deterministic``,
    or rate 0) the fused :func:`jax.nn.dot_product_attention` runs, whatever the
    configured rate (Flax fuses only when the rate itself is 0).

    Extra keyword arguments:
      implementation: ``None`` (default), ``"dense"`` or ``"blockwise"`` (memory
        linear in the sequence length, same dropout mask); see :mod:`jaxdrop.attention`.
      block_size: blockwise only, the query/key block length (an int or a pair).
      mode: ``"exact"`` (Flax's mask) or ``"fast"`` (13-round Threefry).

    They are bound to jaxdrop's ``attention_fn`` only; another ``attention_fn`` runs
    as given.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import jaxdrop.nnx as jdn
    >>> layer = jdn.MultiHeadAttention(num_heads=2, in_features=8, dropout_rate=0.1,
    ...                                decode=False, implementation="blockwise", rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((1, 5, 8)), deterministic=False).shape
    (1, 5, 8)
    """

    def __init__(
        self,
        *args: Any,
        attention_fn: Any = attention.dot_product_attention,
        implementation: Implementation = None,
        block_size: int | tuple[int, int] = 256,
        mode: Mode = "exact",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            *args, attention_fn=bind_attention(attention_fn, implementation, block_size, mode), **kwargs
        )


def regularization_loss(model: nnx.Module) -> jax.Array:
    """The sum of :meth:`ConcreteDropout.regularizer` over every concrete layer in ``model``.

    0 for a model without one. Call it inside the loss you differentiate, so the
    rates and kernels get its gradient.
    """
    total = jnp.zeros((), jnp.float32)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, ConcreteDropout):
            total = total + module.regularizer()
    return total
