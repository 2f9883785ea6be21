"""Reference models for the demo, the notebooks and the tests.

* :class:`MLP` -- the fully connected network of Srivastava et al. (2014):
  784-1024-1024-10 ReLU units by default, dropout 0.2 on the inputs and 0.5 on
  the hidden units, ready for the max-norm constraint
  (:func:`jaxdrop.training.max_norm`).
* :class:`CNN` -- a small LeNet-style network: two 5x5 convolutions with
  max-pooling, one hidden dense layer.
* :class:`LinenMLP` -- the same MLP as a ``flax.linen`` module.

The Flax NNX models take the dropout key and the mode at call time, the way
``flax.nnx.Dropout`` does::

    logits = model(x, deterministic=False, rngs=nnx.Rngs(dropout=key))  # training
    logits = model(x, deterministic=True)                                # evaluation

and an optional call-time ``rate`` (a Python float or a traced JAX scalar) that
overrides the configured hidden-unit rate; every other dropout site is scaled
in proportion (``input_rate * rate / self.rate``), the way curriculum dropout
(Morerio et al., 2017) ramps every layer towards its own target. A traced rate
does not recompile, so a rate that follows an optax schedule costs nothing
(:class:`jaxdrop.training.Trainer`'s ``rate_schedule``). This is why the models
call jaxdrop's functions (:func:`jaxdrop.dropout`, ...) rather than hold
``Dropout`` layers, whose rate is a constructor constant.

**Keys.** One key is drawn per call (``rngs.dropout()``, or the key itself if a
key array is passed) and dropout site ``i`` uses ``fold_in(key, i)``, so no two
sites share a mask.

**Variants** (``variant=``), applied at every dropout site:

==============  ==================================================================
``"dropout"``   Bernoulli inverted dropout (:func:`jaxdrop.dropout`), default
``"gaussian"``  multiplicative N(1, rate/(1-rate)) noise (:func:`jaxdrop.gaussian_dropout`)
``"alpha"``     (MLP) SELU units, LeCun-normal init and :func:`jaxdrop.alpha_dropout`
``"dropconnect"`` (MLP) drops the *weights* of the layer after each site (:func:`jaxdrop.dropconnect_dense`)
``"channel"``   (CNN) whole feature maps after each convolution (:func:`jaxdrop.channel_dropout`)
``"dropblock"`` (CNN) square blocks of each feature map (:func:`jaxdrop.dropblock`)
==============  ==================================================================

The CNN's dense site uses Bernoulli dropout for ``"channel"`` and ``"dropblock"``
(which are defined for feature maps only).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen, nnx

import jaxdrop

__all__ = ["CNN", "CNN_VARIANTS", "MLP", "MLP_VARIANTS", "LinenMLP"]

MLP_VARIANTS = ("dropout", "gaussian", "alpha", "dropconnect")
CNN_VARIANTS = ("dropout", "gaussian", "channel", "dropblock")


def _check_rate(value: Any, cls: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"jaxdrop.models.{cls}: `{name}` must be a number in [0, 1), got {value!r}.")
    v = float(value)
    if not 0.0 <= v < 1.0:
        raise ValueError(
            f"jaxdrop.models.{cls}: `{name}` is the probability of DROPPING a unit and must be in [0, 1), got {v}."
        )
    return v


def _check_variant(variant: str, allowed: tuple[str, ...], cls: str) -> str:
    if variant not in allowed:
        raise ValueError(f"jaxdrop.models.{cls}: unknown variant {variant!r}; choose one of {allowed}.")
    return variant


def _dropout_key(rngs: Any, deterministic: bool, cls: str) -> jax.Array | None:
    """The call's base dropout key from an ``nnx.Rngs``/``RngStream``/key, or None in eval mode."""
    if deterministic:
        return None
    if rngs is None:
        raise ValueError(
            f"jaxdrop.models.{cls}: training mode (deterministic=False) needs a dropout key: call "
            f"model(x, rngs=nnx.Rngs(dropout=key)) or model(x, rngs=key), or pass deterministic=True "
            f"to evaluate."
        )
    if isinstance(rngs, nnx.Rngs):
        return rngs.dropout()
    if isinstance(rngs, nnx.RngStream):
        return rngs()
    return jaxdrop.prng.as_key(rngs, fn=f"models.{cls}", signature="x, *, deterministic, rngs")


def _scaled(base: float, hidden: float, rate: Any) -> Any:
    """Site rate ``base`` rescaled so that the hidden rate becomes the call-time ``rate``."""
    if rate is None:
        return base
    if hidden == 0.0:
        return base
    return base * (rate / hidden)


def _site(variant: str, key: jax.Array | None, i: int, x: jax.Array, rate: Any) -> jax.Array:
    """Apply the variant's noise at dropout site ``i`` (identity in eval mode or at rate 0)."""
    if key is None or (isinstance(rate, float) and rate == 0.0):
        return x
    k = jax.random.fold_in(key, i)
    if variant == "gaussian":
        return jaxdrop.gaussian_dropout(k, x, rate)
    if variant == "alpha":
        return jaxdrop.alpha_dropout(k, x, rate)
    if variant == "channel":
        return jaxdrop.channel_dropout(k, x, rate)
    if variant == "dropblock":
        return jaxdrop.dropblock(k, x, rate, block_size=min(3, x.shape[1]))
    return jaxdrop.dropout(k, x, rate)


class MLP(nnx.Module):
    r"""The dropout MLP of Srivastava et al. (2014), Flax NNX.

    .. math::

        h_0 = \tilde{x}, \quad h_l = \phi(W_l\,\tilde{h}_{l-1} + b_l), \quad
        \mathrm{logits} = W_{L+1}\,\tilde{h}_L + b_{L+1},

    where :math:`\tilde{\cdot}` is the chosen noise: inverted dropout with drop
    probability ``input_rate`` on the inputs and ``rate`` on each hidden layer
    (the paper's retain probabilities 0.8 and 0.5), :math:`\phi` = ReLU (SELU for
    ``variant="alpha"``).

    Args:
      in_features: input size (784 for flattened MNIST). Inputs of shape
        ``(batch, ...)`` are flattened.
      hidden: hidden-layer widths, ``(1024, 1024)`` as in the paper.
      num_classes: number of output logits.
      rate: drop probability of hidden units (0.5). ``0`` disables it.
      input_rate: drop probability of input units (0.2).
      variant: one of ``MLP_VARIANTS`` (see the module docstring).
      rngs: ``nnx.Rngs`` for parameter initialisation (stream ``params``).

    Call: ``model(x, *, deterministic=None, rngs=None, rate=None)`` -> logits of
    shape ``(batch, num_classes)``. ``deterministic`` defaults to the attribute
    ``self.deterministic`` (False; ``nnx.view(model, deterministic=True)`` sets
    it). ``rngs`` is an ``nnx.Rngs`` with a ``dropout`` stream, an
    ``RngStream`` or a key. ``rate`` overrides the hidden rate for this call and
    scales ``input_rate`` in proportion (may be traced).

    Max-norm: every ``nnx.Linear`` kernel is ``(in, out)``, so column ``j`` is
    unit ``j``'s incoming weight vector, as :func:`jaxdrop.training.max_norm`
    expects.

    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> model = MLP(784, (64, 64), rngs=nnx.Rngs(0))
    >>> x = jnp.ones((5, 784))
    >>> model(x, rngs=nnx.Rngs(dropout=1)).shape
    (5, 10)
    >>> bool(jnp.all(model(x, deterministic=True) == model(x, deterministic=True)))
    True
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (1024, 1024),
        num_classes: int = 10,
        *,
        rate: float = 0.5,
        input_rate: float = 0.2,
        variant: str = "dropout",
        rngs: nnx.Rngs,
    ):
        self.rate = _check_rate(rate, "MLP", "rate")
        self.input_rate = _check_rate(input_rate, "MLP", "input_rate")
        self.variant = _check_variant(variant, MLP_VARIANTS, "MLP")
        self.deterministic = False
        widths = [int(in_features), *(int(h) for h in hidden), int(num_classes)]
        if any(w < 1 for w in widths):
            raise ValueError(f"jaxdrop.models.MLP: layer widths must be positive, got {widths}.")
        init = (
            nnx.initializers.lecun_normal()
            if variant == "alpha"
            else nnx.nn.linear.default_kernel_init
        )
        self.layers = nnx.List(
            [nnx.Linear(a, b, kernel_init=init, rngs=rngs) for a, b in itertools.pairwise(widths)]
        )

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view(model, deterministic=...)``."""
        if deterministic is not None:
            self.deterministic = deterministic

    def __call__(
        self,
        x: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: Any = None,
        rate: Any = None,
    ) -> jax.Array:
        det = self.deterministic if deterministic is None else deterministic
        key = _dropout_key(rngs, bool(det), "MLP")
        act: Callable[[jax.Array], jax.Array] = jax.nn.selu if self.variant == "alpha" else jax.nn.relu
        h = jnp.reshape(x, (x.shape[0], -1))
        hidden_rate = self.rate if rate is None else rate
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            r = _scaled(self.input_rate, self.rate, rate) if i == 0 else hidden_rate
            if self.variant == "dropconnect":
                if key is None or (isinstance(r, float) and r == 0.0):
                    h = layer(h)
                else:
                    bias = None if layer.bias is None else layer.bias[...]
                    h = jaxdrop.dropconnect_dense(jax.random.fold_in(key, i), h, layer.kernel[...], r, bias)
            else:
                h = layer(_site(self.variant, key, i, h, r))
            if i < n - 1:
                h = act(h)
        return h


class CNN(nnx.Module):
    r"""A small LeNet-style CNN, Flax NNX (channel-last, ``(N, H, W, C)``).

    ``conv5x5(c1) - ReLU - maxpool2 - noise(conv_rate) - conv5x5(c2) - ReLU -
    maxpool2 - noise(conv_rate) - dense(hidden) - ReLU - noise(rate) -
    dense(num_classes)``, SAME padding. With the defaults (32, 64, 256) on 28x28
    MNIST this is LeCun et al.'s LeNet layout with modern widths.

    Args:
      input_shape: ``(H, W, C)`` of one example; flattened inputs
        ``(N, H*W*C)`` are reshaped to it.
      num_classes: number of logits.
      channels: the two convolutions' output channels.
      hidden: width of the dense hidden layer.
      rate: drop probability of the dense hidden units (0.5).
      conv_rate: drop probability after each convolution block (0.25; the
        paper uses retain 0.75-0.9 in convolutional layers).
      variant: one of ``CNN_VARIANTS``.
      rngs: ``nnx.Rngs`` for initialisation.

    Call: as :class:`MLP` (``rate`` overrides the dense rate and scales
    ``conv_rate`` in proportion).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> cnn = CNN((8, 8, 1), channels=(4, 8), hidden=16, variant="channel", rngs=nnx.Rngs(0))
    >>> cnn(jnp.ones((2, 64)), rngs=nnx.Rngs(dropout=0)).shape
    (2, 10)
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (28, 28, 1),
        num_classes: int = 10,
        *,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 256,
        rate: float = 0.5,
        conv_rate: float = 0.25,
        variant: str = "dropout",
        rngs: nnx.Rngs,
    ):
        if len(tuple(input_shape)) != 3:
            raise ValueError(f"jaxdrop.models.CNN: input_shape must be (H, W, C), got {tuple(input_shape)}.")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.rate = _check_rate(rate, "CNN", "rate")
        self.conv_rate = _check_rate(conv_rate, "CNN", "conv_rate")
        self.variant = _check_variant(variant, CNN_VARIANTS, "CNN")
        self.deterministic = False
        h, w, c = self.input_shape
        c1, c2 = (int(ch) for ch in channels)
        flat = ((h // 2) // 2) * ((w // 2) // 2) * c2
        if flat == 0:
            raise ValueError(f"jaxdrop.models.CNN: input {self.input_shape} is too small for two 2x2 poolings.")
        self.conv1 = nnx.Conv(c, c1, (5, 5), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, (5, 5), padding="SAME", rngs=rngs)
        self.dense1 = nnx.Linear(flat, int(hidden), rngs=rngs)
        self.dense2 = nnx.Linear(int(hidden), int(num_classes), rngs=rngs)

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view(model, deterministic=...)``."""
        if deterministic is not None:
            self.deterministic = deterministic

    def __call__(
        self,
        x: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: Any = None,
        rate: Any = None,
    ) -> jax.Array:
        det = self.deterministic if deterministic is None else deterministic
        key = _dropout_key(rngs, bool(det), "CNN")
        conv_rate = _scaled(self.conv_rate, self.rate, rate)
        dense_rate = self.rate if rate is None else rate
        dense_variant = "gaussian" if self.variant == "gaussian" else "dropout"
        h = jnp.reshape(x, (x.shape[0], *self.input_shape))
        h = nnx.max_pool(jax.nn.relu(self.conv1(h)), (2, 2), strides=(2, 2))
        h = _site(self.variant, key, 0, h, conv_rate)
        h = nnx.max_pool(jax.nn.relu(self.conv2(h)), (2, 2), strides=(2, 2))
        h = _site(self.variant, key, 1, h, conv_rate)
        h = jax.nn.relu(self.dense1(h.reshape(h.shape[0], -1)))
        h = _site(dense_variant, key, 2, h, dense_rate)
        return self.dense2(h)


class LinenMLP(linen.Module):
    """:class:`MLP` (Bernoulli variant) as a ``flax.linen`` module.

    Fields: ``hidden`` widths, ``num_classes``, ``rate`` (hidden drop
    probability), ``input_rate``. Call:
    ``module.apply(variables, x, deterministic=False, rngs={"dropout": key})``;
    an optional call-time ``rate`` works as in :class:`MLP`. Each dropout site
    draws its own key with ``make_rng("dropout")``.

    >>> import jax, jax.numpy as jnp
    >>> m = LinenMLP(hidden=(32,))
    >>> v = m.init(jax.random.key(0), jnp.ones((1, 784)), deterministic=True)
    >>> m.apply(v, jnp.ones((3, 784)), deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
    (3, 10)
    """

    hidden: Sequence[int] = (1024, 1024)
    num_classes: int = 10
    rate: float = 0.5
    input_rate: float = 0.2

    @linen.compact
    def __call__(self, x: jax.Array, *, deterministic: bool = False, rate: Any = None) -> jax.Array:
        base = _check_rate(self.rate, "LinenMLP", "rate")
        in_rate = _scaled(_check_rate(self.input_rate, "LinenMLP", "input_rate"), base, rate)
        hid_rate = base if rate is None else rate

        def drop(h: jax.Array, r: Any) -> jax.Array:
            if deterministic or (isinstance(r, float) and r == 0.0):
                return h
            return jaxdrop.dropout(self.make_rng("dropout"), h, r)

        h = drop(jnp.reshape(x, (x.shape[0], -1)), in_rate)
        for width in self.hidden:
            h = drop(jax.nn.relu(linen.Dense(int(width))(h)), hid_rate)
        return linen.Dense(self.num_classes)(h)
