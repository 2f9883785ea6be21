"""``flax.linen`` layers: a drop-in :class:`Dropout` and a layer for every variant.

Swap one import and keep everything else::

    from jaxdrop.linen import Dropout      # instead of: from flax.linen import Dropout

:class:`Dropout` has Flax's fields (``rate``, ``broadcast_dims``, ``deterministic``,
``rng_collection``), its call (``inputs, deterministic=None, rng=None``), its errors
and, by default, its output bit for bit for the same key; it *is* a
``flax.linen.Dropout`` (a subclass), so code that looks for Flax's layer finds it.
What changes is the cost: the mask comes from jaxdrop's fused generator and is
regenerated, not stored, for the backward pass.

The layers hold no math. Each one settles ``deterministic`` the way Flax does
(:func:`flax.linen.merge_param`: given to the constructor *or* at call time, not
both), draws its key with ``self.make_rng(self.rng_collection)`` unless an ``rng``
is passed, and calls the functional form in :mod:`jaxdrop`. A layer that would
not use randomness (``deterministic``, or a rate of 0) draws no key, exactly as
Flax's does, so swapping layers never shifts the keys of later layers. A concrete
``rate`` (or ``stddev``) and ``mode`` are validated when the layer is built.

**Scheduling a rate.** ``rate`` may be a traced value: pass the rate into your
model's ``__call__`` and build the layer with it (``jdl.Dropout(rate)(x)`` inside an
``@nn.compact`` method); the jitted step then compiles once for every rate.
:class:`jaxdrop.training.Trainer` with a ``rate_schedule`` drives the rate of every
jaxdrop layer of a model that takes no ``rate`` argument by itself.

==========================  =============================================
layer                       functional form
==========================  =============================================
:class:`Dropout`            :func:`jaxdrop.dropout`
:class:`ChannelDropout`     :func:`jaxdrop.channel_dropout`
:class:`AlphaDropout`       :func:`jaxdrop.alpha_dropout`
:class:`FeatureAlphaDropout` :func:`jaxdrop.feature_alpha_dropout`
:class:`GaussianDropout`    :func:`jaxdrop.gaussian_dropout`
:class:`GaussianNoise`      :func:`jaxdrop.gaussian_noise`
:class:`DropBlock`          :func:`jaxdrop.dropblock`
:class:`DropPath`           :func:`jaxdrop.drop_path`
:class:`LockedDropout`      :func:`jaxdrop.locked_dropout`
:class:`EmbeddingDropout`   :func:`jaxdrop.embedding_dropout` (an ``Embed`` whose rows drop)
:class:`Zoneout`            :func:`jaxdrop.zoneout`
:class:`DropConnectDense`   :func:`jaxdrop.dropconnect_dense` (a ``Dense`` whose weights drop)
:class:`ConcreteDropout`    :func:`jaxdrop.concrete_dropout` (a learned rate, wrapping a layer)
:class:`MultiHeadDotProductAttention`, :class:`SelfAttention`, :class:`MultiHeadAttention`
                            :func:`jaxdrop.attention.dot_product_attention`
==========================  =============================================

Example::

    >>> import jax, jax.numpy as jnp
    >>> import flax.linen as nn
    >>> import jaxdrop.linen as jdl
    >>> class MLP(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x, train: bool):
    ...         x = nn.relu(nn.Dense(16)(x))
    ...         x = jdl.Dropout(0.5, deterministic=not train)(x)
    ...         return nn.Dense(2)(x)
    >>> model, x = MLP(), jnp.ones((4, 3))
    >>> variables = model.init(jax.random.key(0), x, train=False)
    >>> y = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    >>> y.shape
    (4, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen.linear import default_embed_init, default_kernel_init
from flax.linen.module import merge_param

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
    "MultiHeadDotProductAttention",
    "SelfAttention",
    "Zoneout",
    "regularization_loss",
]

Initializer = Callable[..., Any]


def _key(module: Any, deterministic: bool | None, rng: Any, *, noop: bool = False) -> Any:
    """The key for one stochastic call, or ``None`` if the layer is the identity.

    ``deterministic`` is merged with the field as Flax does; no key is drawn when the
    layer is deterministic or ``noop`` (rate 0), so the rng stream is not advanced.
    """
    if merge_param("deterministic", module.deterministic, deterministic) or noop:
        return None
    return rng if rng is not None else module.make_rng(module.rng_collection)


class Dropout(nn.Dropout):
    """Drop-in :class:`flax.linen.Dropout` computed by :func:`jaxdrop.dropout`.

    Each element is kept with probability ``1 - rate`` and scaled by
    ``1 / (1 - rate)`` (inverted dropout, Srivastava et al., 2014).

    Attributes:
      rate: the probability of **dropping** an element (not the keep rate), in
        ``[0, 1]``; a rate outside it raises ``ValueError`` when the layer is built
        (Flax does not check). May be a traced value (see the module docs).
      broadcast_dims: axes that share one mask value (e.g. ``(1, 2)`` drops whole
        channels of an NHWC map).
      deterministic: if true the inputs are returned as they are; may be given here
        or at call time, not both (:func:`flax.linen.merge_param`).
      rng_collection: the rng collection the key is drawn from.
      mode: ``"exact"`` (default): the output equals ``flax.linen.Dropout``'s for the
        same key bit for bit; ``"fast"``: a 13-round Threefry, same statistics,
        other bits (see :mod:`jaxdrop.prng`).

    **Bit-identity** holds for JAX-array inputs, eagerly and under ``jit``. Two
    cases round the rescaling ``x / (1 - rate)`` differently in Flax, so kept
    values may differ in the last bit (never the mask): NumPy-array inputs (Flax
    divides with NumPy) and the primal of an un-jitted ``jax.grad``/``vjp`` (JAX
    runs Flax's division as a separate op there). Both are tested to one ulp.

    Example::

        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> from jaxdrop.linen import Dropout
        >>> x, key = jnp.ones((2, 4)), jax.random.key(0)
        >>> Dropout(0.5).apply({}, x, deterministic=False, rng=key)
        Array([[0., 0., 2., 2.],
               [0., 2., 2., 0.]], dtype=float32)
        >>> bool((nn.Dropout(0.5).apply({}, x, deterministic=False, rngs={"dropout": key})
        ...       == Dropout(0.5).apply({}, x, deterministic=False, rngs={"dropout": key})).all())
        True
    """

    mode: Mode = "exact"

    def __post_init__(self) -> None:
        check_layer(self, "linen")
        super().__post_init__()

    @nn.compact
    def __call__(self, inputs: Any, deterministic: bool | None = None, rng: Any = None) -> jax.Array:
        """Applies a random dropout mask to ``inputs``.

        Args:
          inputs: the floating-point array to mask.
          deterministic: if true, return ``inputs`` unchanged; overrides nothing:
            it must be given here exactly when the field is ``None``.
          rng: an optional key; if not given one is drawn with
            ``make_rng(self.rng_collection)``.

        Returns:
          The masked inputs, rescaled to preserve the mean.
        """
        if is_one(self.rate) and not merge_param("deterministic", self.deterministic, deterministic):
            # As Flax: zeros, without drawing a key.
            return jnp.zeros_like(inputs)
        key = _key(self, deterministic, rng, noop=is_zero(self.rate))
        if key is None:
            return inputs
        dims = flax_broadcast_dims(self.broadcast_dims, jnp.ndim(inputs))
        return jaxdrop.dropout(key, inputs, self.rate, broadcast_dims=dims, mode=self.mode)


class _Layer(nn.Module):
    """Validates a layer's concrete rate (or stddev), activation and mode when it is built."""

    def __post_init__(self) -> None:
        check_layer(self, "linen")
        super().__post_init__()


class ChannelDropout(_Layer):
    """Channel (spatial) dropout, :func:`jaxdrop.channel_dropout` (Tompson et al., 2015).

    Whole feature maps are dropped per sample: an NHWC input keeps or drops each
    ``(sample, channel)`` pair with one draw.

    Attributes:
      rate: the probability of **dropping** a channel.
      channel_axis: the channel axis (default ``-1``, channel-last).
      batch_axis: the batch axis (one mask per sample), or ``None`` for one mask
        shared by the whole batch.
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop.linen import ChannelDropout
    >>> y = ChannelDropout(0.5, deterministic=False).apply({}, jnp.ones((2, 4, 4, 3)), rng=jax.random.key(0))
    >>> bool(((y == 0).all(axis=(1, 2)) | (y == 2).all(axis=(1, 2))).all())
    True
    """

    rate: float | jax.Array
    channel_axis: int = -1
    batch_axis: int | None = 0
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: Mode = "exact"

    @nn.compact
    def __call__(self, inputs: Any, deterministic: bool | None = None, rng: Any = None) -> jax.Array:
        key = _key(self, deterministic, rng, noop=is_zero(self.rate))
        if key is None:
            return inputs
        return jaxdrop.channel_dropout(
            key, inputs, self.rate, channel_axis=self.channel_axis, batch_axis=self.batch_axis, mode=self.mode
        )


class ActivationDropout(_Layer):
    """``activation`` then dropout, :func:`jaxdrop.activation_dropout`: the backward pass
    keeps only the output (one activation-sized array, as without dropout).

    ``ActivationDropout(rate, "tanh")(x)`` outputs exactly ``Dropout(rate)(nn.tanh(x))``
    for the same key; use it in place of that pair where the activation is ``"tanh"``
    or ``"sigmoid"``, whose derivative comes from their output (see
    :func:`jaxdrop.activation_dropout` for why the pair costs an extra array per layer).

    Attributes:
      rate: the probability of **dropping** an element.
      activation: ``"tanh"`` or ``"sigmoid"``; applied without dropout when deterministic.
      broadcast_dims, deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop.linen import ActivationDropout
    >>> ActivationDropout(0.5, "tanh", deterministic=True).apply({}, jnp.zeros(3))
    Array([0., 0., 0.], dtype=float32)
    """

    rate: float | jax.Array
    activation: Activation = "tanh"
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: Mode = "exact"

    @nn.compact
    def __call__(self, inputs: Any, deterministic: bool | None = None, rng: Any = None) -> jax.Array:
        key = _key(self, deterministic, rng, noop=is_zero(self.rate))
        if key is None:  # deterministic (or rate 0): the activation alone
            return apply_activation(jnp.asarray(inputs), self.activation)
        return jaxdrop.activation_dropout(
            key, inputs, self.rate, self.activation, broadcast_dims=self.broadcast_dims, mode=self.mode
        )


class AlphaDropout(_Layer):
    """Alpha dropout for SELU networks, :func:`jaxdrop.alpha_dropout` (Klambauer et al., 2017).

    Dropped units are set to SELU's negative saturation value and an affine map
    restores zero mean and unit variance.

    Attributes:
      rate: the probability of **dropping** a unit.
      broadcast_dims: axes that share one mask value.
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop.linen import AlphaDropout
    >>> AlphaDropout(0.1, deterministic=False).apply({}, jnp.zeros(3), rng=jax.random.key(0)).shape
    (3,)
    """

    rate: float | jax.Array
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: Mode = "exact"

    @nn.compact
    def __call__(self, inputs: Any, deterministic: bool | None = None, rng: Any = None) -> jax.Array:
        key = _key(self, deterministic, rng, noop=is_zero(self.rate))
        if key is None:
            return inputs
        return jaxdrop.alpha_dropout(key, inputs, self.rate, broadcast_dims=self.broadcast_dims, mode=self.mode)


class FeatureAlphaDropout(_Layer):
    """Alpha dropout of whole channels, :func:`jaxdrop.feature_alpha_dropout`.

    Attributes:
      rate: the probability of **dropping** a channel.
      channel_axis, batch_axis: as in :class:`ChannelDropout`.
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop.linen import FeatureAlphaDropout
    >>> layer = FeatureAlphaDropout(0.2, deterministic=False)
    >>> layer.apply({}, jnp.zeros((2, 5, 3)), rng=jax.random.key(0)).shape
    (2, 5, 3)
    """

    rate: float | jax.Array
    channel_axis: int = -1
    batch_axis: int | None = 0
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: Mode = "exact"

    @nn.compact
    def __call__(self, inputs: Any, deterministic: bool | None = None, rng: Any = None) -> jax.Array:
        key = _key(self, deterministic, rng, noop=is_zero(self.rate))
        if key is None:
            return inputs
        return jaxdrop.feature_alpha_dropout(
            key, inputs, self.rate, channel_axis=self.channel_axis, batch_axis=self.batch_axis, mode=self.mode
        )


class GaussianDropout(_Layer):
    """Multiplicative Gaussian noise, :func:`jaxdrop.gaussian_dropout` (Srivastava et al., 2014, §10).

    ``y = x * e`` with ``e ~ N(1, rate / (1 - rate))``: the mean and variance of
    Bernoulli dropout at the same rate.

    Attributes:
      rate: the equivalent **drop** probability, in ``[0, 1)``.
      broadcast_dims: axes that share one noise value.
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop.linen import GaussianDropout
    >>> GaussianDropout(0.5, deterministic=False).apply({}, jnp.ones(3), rng=jax.random.key(0)).shape
    (3,)
    """

    rate: float | jax.Array
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: Mode = "exact"

    @nn.compact
    def __call__(self, inputs: Any, deterministic: bool | None = None, rng: Any = None) -> jax.Array:
        key = _key(self, deterministic, rng, noop=is_zero(self.rate))
        if key is None:
            return inputs
        return jaxdrop.gaussian_dropout(
            key, inputs, self.rate, broadcast_dims=self.broadcast_dims, mode=self.mode
        )


class GaussianNoise(_Layer):
    """Additive Gaussian noise, :func:`jaxdrop.gaussian_noise`: ``y = x + stddev * N(0, 1)``.

    Attributes:
      stddev: the noise's standard deviation, ``>= 0``.
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop.linen import GaussianNoise
    >>> GaussianNoise(0.1, deterministic=True).apply({}, jnp.ones(3))
    Array([1., 1., 1.], dtype=float32)
    """

    stddev: float | jax.Array
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: Mode = "exact"

    @nn.compact
    def __call__(self, inputs: Any, deterministic: bool | None = None, rng: Any = None) -> jax.Array:
        key = _key(self, deterministic, rng, noop=is_zero(self.stddev))
        if key is None:
            return inputs
        return jaxdrop.gaussian_noise(key, inputs, self.stddev, mode=self.mode)


class DropBlock(_Layer):
    """DropBlock, :func:`jaxdrop.dropblock` (Ghiasi et al., 2018): contiguous square blocks.

    Attributes:
      rate: the expected fraction of **dropped** elements.
      block_size: the side of each dropped block.
      channel_axis, batch_axis: as in :class:`ChannelDropout` (2-D or 3-D maps).
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop.linen import DropBlock
    >>> DropBlock(0.1, block_size=3, deterministic=False).apply(
    ...     {}, jnp.ones((2, 8, 8, 4)), rng=jax.random.key(0)).shape
    (2, 8, 8, 4)
    """

    rate: float | jax.Array
    block_size: int = 7
    channel_axis: int = -1
    batch_axis: int | None = 0
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: Mode = "exact"

    @nn.compact
    def __call__(self, inputs: Any, deterministic: bool | None = None, rng: Any = None) -> jax.Array:
        key = _key(self, deterministic, rng, noop=is_zero(self.rate))
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


class DropPath(_Layer):
    """Stochastic depth, :func:`jaxdrop.drop_path` (Huang et al., 2016): whole samples of a branch.

    Use it on a residual branch: ``x + DropPath(rate)(branch(x))``.

    Attributes:
      rate: the probability of **dropping** the branch for a sample.
      batch_axis: the sample axis.
      scale_by_keep: divide kept samples by ``1 - rate`` (timm's default).
      batch_wise: one draw for the whole batch instead of one per sample.
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop.linen import DropPath
    >>> y = DropPath(0.5, deterministic=False).apply({}, jnp.ones((4, 3)), rng=jax.random.key(0))
    >>> bool(((y == 0).all(axis=1) | (y == 2).all(axis=1)).all())
    True
    """

    rate: float | jax.Array
    batch_axis: int = 0
    scale_by_keep: bool = True
    batch_wise: bool = False
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: Mode = "exact"

    @nn.compact
    def __call__(self, inputs: Any, deterministic: bool | None = None, rng: Any = None) -> jax.Array:
        key = _key(self, deterministic, rng, noop=is_zero(self.rate))
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


class LockedDropout(_Layer):
    """Locked (variational) dropout, :func:`jaxdrop.locked_dropout`: one mask for all time steps.

    Attributes:
      rate: the probability of **dropping** a feature (for the whole sequence).
      time_axis: the time axis of the ``(batch, time, features)`` input (default 1).
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop.linen import LockedDropout
    >>> y = LockedDropout(0.5, deterministic=False).apply({}, jnp.ones((2, 5, 3)), rng=jax.random.key(0))
    >>> bool((y == y[:, :1]).all())
    True
    """

    rate: float | jax.Array
    time_axis: int = 1
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: Mode = "exact"

    @nn.compact
    def __call__(self, inputs: Any, deterministic: bool | None = None, rng: Any = None) -> jax.Array:
        key = _key(self, deterministic, rng, noop=is_zero(self.rate))
        if key is None:
            return inputs
        return jaxdrop.locked_dropout(key, inputs, self.rate, time_axis=self.time_axis, mode=self.mode)


class EmbeddingDropout(_Layer):
    """An embedding lookup with embedding dropout, :func:`jaxdrop.embedding_dropout`.

    Like :class:`flax.linen.Embed` (same ``embedding`` parameter, so weights are
    interchangeable), but in training whole rows of the table (words) are dropped
    before the lookup, one mask per call (Gal & Ghahramani, 2016; AWD-LSTM).

    Attributes:
      num_embeddings: the vocabulary size ``V``.
      features: the embedding size ``D``.
      rate: the probability of **dropping** a word.
      embedding_init: initializer of the ``(V, D)`` table.
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop.linen import EmbeddingDropout
    >>> layer, ids = EmbeddingDropout(10, 4, 0.1), jnp.array([[1, 2, 3]])
    >>> params = layer.init(jax.random.key(0), ids, deterministic=True)
    >>> layer.apply(params, ids, deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
    (1, 3, 4)
    """

    num_embeddings: int
    features: int
    rate: float | jax.Array
    embedding_init: Initializer = default_embed_init
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: Mode = "exact"

    @nn.compact
    def __call__(self, inputs: Any, deterministic: bool | None = None, rng: Any = None) -> jax.Array:
        """Looks up integer ``inputs`` (any shape) in the (dropped) table: ``(*inputs.shape, D)``."""
        table = self.param("embedding", self.embedding_init, (self.num_embeddings, self.features))
        key = _key(self, deterministic, rng, noop=is_zero(self.rate))
        if key is not None:
            table = jaxdrop.embedding_dropout(key, table, self.rate, mode=self.mode)
        return jnp.take(table, inputs, axis=0)


class Zoneout(_Layer):
    """Zoneout, :func:`jaxdrop.zoneout` (Krueger et al., 2017): units keep their previous state.

    Called as ``Zoneout(rate)(h_prev, h_new)``; in evaluation it returns the
    expectation ``rate * h_prev + (1 - rate) * h_new``.

    Attributes:
      rate: the probability that a unit keeps ``h_prev`` (is "zoned out").
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop.linen import Zoneout
    >>> Zoneout(0.5, deterministic=True).apply({}, jnp.zeros(2), jnp.ones(2))
    Array([0.5, 0.5], dtype=float32)
    """

    rate: float | jax.Array
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: Mode = "exact"

    @nn.compact
    def __call__(
        self, h_prev: Any, h_new: Any, deterministic: bool | None = None, rng: Any = None
    ) -> jax.Array:
        det = merge_param("deterministic", self.deterministic, deterministic)
        if det:
            # zoneout's own evaluation rule (the expectation); it needs no key.
            return jaxdrop.zoneout(jax.random.key(0), h_prev, h_new, self.rate, deterministic=True)
        if is_zero(self.rate):
            # Rate 0 keeps every new state: no key drawn, the rng stream is not advanced.
            return jaxdrop.zoneout(jax.random.key(0), h_prev, h_new, 0.0)
        key = rng if rng is not None else self.make_rng(self.rng_collection)
        return jaxdrop.zoneout(key, h_prev, h_new, self.rate, mode=self.mode)


class DropConnectDense(_Layer):
    """A dense layer with DropConnect on its kernel, :func:`jaxdrop.dropconnect_dense` (Wan et al., 2013).

    Parameters are named like :class:`flax.linen.Dense`'s (``kernel``, ``bias``).

    Attributes:
      features: the number of outputs.
      rate: the probability of **dropping** each weight.
      use_bias: whether to add a (never dropped) bias.
      kernel_init, bias_init: initializers, as in ``nn.Dense``.
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop.linen import DropConnectDense
    >>> layer, x = DropConnectDense(5, 0.5), jnp.ones((8, 3))
    >>> params = layer.init(jax.random.key(0), x, deterministic=True)
    >>> layer.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
    (8, 5)
    """

    features: int
    rate: float | jax.Array
    use_bias: bool = True
    kernel_init: Initializer = default_kernel_init
    bias_init: Initializer = nn.initializers.zeros_init()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: Mode = "exact"

    @nn.compact
    def __call__(self, inputs: Any, deterministic: bool | None = None, rng: Any = None) -> jax.Array:
        if jnp.ndim(inputs) < 1:
            raise ValueError(
                f"jaxdrop.linen.DropConnectDense: `inputs` must have shape (..., in), got a scalar {inputs!r}."
            )
        kernel = self.param("kernel", self.kernel_init, (jnp.shape(inputs)[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        key = _key(self, deterministic, rng, noop=is_zero(self.rate))
        if key is None:
            return jaxdrop.dropconnect_dense(jax.random.key(0), inputs, kernel, 0.0, bias)
        return jaxdrop.dropconnect_dense(key, inputs, kernel, self.rate, bias, mode=self.mode)


class ConcreteDropout(_Layer):
    """Concrete dropout with a learned rate, wrapping a layer (Gal, Hron & Kendall, 2017).

    ``ConcreteDropout(nn.Dense(64))(x)`` applies :func:`jaxdrop.concrete_dropout`
    to ``x`` with the trainable drop-probability logit ``p_logit`` (a ``params``
    leaf of this module, initialised from ``init_rate``), then the wrapped
    ``layer``. In training it also sows the layer's regulariser
    (:func:`jaxdrop.concrete_dropout_regularizer`, with ``K`` = the kernel's input
    size ``kernel.shape[-2]``) into the ``"losses"`` collection; apply with
    ``mutable=["losses"]`` and add :func:`regularization_loss` of it to the loss.

    Attributes:
      layer: the layer applied to the dropped input; it must have a ``kernel``
        parameter (``nn.Dense``, ``nn.Conv``, ...).
      init_rate: the initial drop probability, in ``(0, 1)``.
      temperature: the relaxation's temperature ``t`` (0.1 in the paper).
      weight_regularizer: ``lambda_w = l**2 / (tau N)``.
      dropout_regularizer: ``lambda_p = 2 / (tau N)`` (``1/N`` for classification).
      broadcast_dims: axes that share one relaxed mask value.
      loss_collection: the collection the regulariser is sown into.
      deterministic, rng_collection, mode: as in :class:`Dropout`.

    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> from jaxdrop.linen import ConcreteDropout, regularization_loss
    >>> layer, x = ConcreteDropout(nn.Dense(2), weight_regularizer=1e-6, dropout_regularizer=1e-3), jnp.ones((4, 3))
    >>> params = layer.init(jax.random.key(0), x, deterministic=True)
    >>> float(jax.nn.sigmoid(params["params"]["p_logit"]))  # the initial rate
    0.1...
    >>> y, state = layer.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(1)},
    ...                        mutable=["losses"])
    >>> regularization_loss(state).shape
    ()
    """

    layer: nn.Module
    init_rate: float = 0.1
    temperature: float = 0.1
    weight_regularizer: float = 1e-6
    dropout_regularizer: float = 1e-5
    broadcast_dims: Sequence[int] = ()
    loss_collection: str = "losses"
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    mode: Mode = "exact"

    @nn.compact
    def __call__(self, inputs: Any, deterministic: bool | None = None, rng: Any = None) -> Any:
        init = rate_logit(self.init_rate, "linen.ConcreteDropout")
        p_logit = self.param("p_logit", lambda _: jnp.asarray(init, jnp.float32))
        key = _key(self, deterministic, rng)
        if key is None:
            return self.layer(inputs)
        dropped = jaxdrop.concrete_dropout(
            key,
            inputs,
            p_logit,
            temperature=self.temperature,
            broadcast_dims=self.broadcast_dims,
            mode=self.mode,
        )
        out = self.layer(dropped)
        kernel = self.layer.variables["params"]["kernel"]
        reg = jaxdrop.concrete_dropout_regularizer(
            p_logit,
            kernel,
            kernel.shape[-2],
            weight_regularizer=self.weight_regularizer,
            dropout_regularizer=self.dropout_regularizer,
        )
        self.sow(self.loss_collection, "concrete_dropout", reg)
        return out


_ATTENTION_DOC = """

    Flax's layer with :func:`jaxdrop.attention.dot_product_attention` as the default
    ``attention_fn``: the same fields, calls, parameter tree (a Flax checkpoint loads
    unchanged) and rng streams, and by default the same output bit for bit while
    attention dropout is applied (the mask is Flax's, drawn fused and regenerated in
    the backward pass). Without dropout (``deterministic``, or ``dropout_rate=0``) the
    fused :func:`jax.nn.dot_product_attention` runs: equal to Flax's to float
    rounding; ``implementation="dense"`` keeps Flax's exact computation there too.

    Extra attributes:
      implementation: ``None`` (default), ``"dense"`` or ``"blockwise"`` (memory linear
        in the sequence length, same dropout mask); see :mod:`jaxdrop.attention`.
      block_size: blockwise only, the query/key block length (an int or a pair).
      mode: ``"exact"`` (Flax's mask) or ``"fast"`` (13-round Threefry).

    Options are bound to jaxdrop's ``attention_fn`` only; another ``attention_fn``
    runs as given, and keywords bound in a ``functools.partial`` of jaxdrop's
    function win over these fields.
"""


def _bind_linen(module: Any) -> None:
    # Linen modules are frozen dataclasses; fields may still be set in __post_init__.
    object.__setattr__(
        module,
        "attention_fn",
        bind_attention(module.attention_fn, module.implementation, module.block_size, module.mode),
    )


class MultiHeadDotProductAttention(nn.MultiHeadDotProductAttention):
    __doc__ = "Drop-in :class:`flax.linen.MultiHeadDotProductAttention`." + _ATTENTION_DOC

    attention_fn: Callable[..., jax.Array] = attention.dot_product_attention
    implementation: Implementation = None
    block_size: int | tuple[int, int] = 256
    mode: Mode = "exact"

    def __post_init__(self) -> None:
        _bind_linen(self)
        super().__post_init__()


class MultiHeadAttention(nn.MultiHeadAttention):
    __doc__ = "Drop-in :class:`flax.linen.MultiHeadAttention` (the same layer, Flax's naming)." + _ATTENTION_DOC

    attention_fn: Callable[..., jax.Array] = attention.dot_product_attention
    implementation: Implementation = None
    block_size: int | tuple[int, int] = 256
    mode: Mode = "exact"

    def __post_init__(self) -> None:
        _bind_linen(self)
        super().__post_init__()


class SelfAttention(nn.SelfAttention):
    __doc__ = "Drop-in :class:`flax.linen.SelfAttention` (queries, keys and values from one input)." + _ATTENTION_DOC

    attention_fn: Callable[..., jax.Array] = attention.dot_product_attention
    implementation: Implementation = None
    block_size: int | tuple[int, int] = 256
    mode: Mode = "exact"

    def __post_init__(self) -> None:
        _bind_linen(self)
        super().__post_init__()


def regularization_loss(collection: Any) -> jax.Array:
    """The sum of every value sown into a losses collection (e.g. by :class:`ConcreteDropout`).

    Accepts the mutable state returned by ``apply(..., mutable=["losses"])`` (or its
    ``"losses"`` entry); an empty collection gives 0.

    >>> import jax.numpy as jnp
    >>> from jaxdrop.linen import regularization_loss
    >>> regularization_loss({"losses": {"a": {"concrete_dropout": (jnp.array(1.0), jnp.array(2.0))}}})
    Array(3., dtype=float32)
    """
    leaves = jax.tree.leaves(collection)
    return sum((jnp.sum(leaf) for leaf in leaves), start=jnp.zeros((), jnp.float32))
