r"""Monte Carlo dropout: predictive uncertainty from a model trained with dropout.

Gal and Ghahramani (2016) showed that a network trained with dropout (and L2
weight decay) is an approximate Bayesian model: keeping dropout **on** at test
time and averaging ``T`` stochastic forward passes

.. math::

    \hat y_t = f^{\omega_t}(x^*), \qquad \omega_t \sim q(\omega), \quad t = 1..T

draws from the approximate posterior predictive distribution. This module turns
any dropout model into those draws and the usual uncertainty summaries.

**Drawing passes.** Everything is built on one core, :func:`sample`, which runs a
function ``f(key, x) -> y`` under ``T`` independent keys, vectorised with
:func:`jax.vmap` and optionally *chunked* (``chunk_size`` passes at a time, in a
:func:`jax.lax.map` loop) so memory stays bounded for large ``T``. Pass ``t`` uses
``jax.random.split(key, T)[t]``. :func:`from_linen` and :func:`from_nnx` build
``f`` from a trained Flax model, running its dropout layers (``flax`` or
``jaxdrop``) in training mode while every other layer (BatchNorm...) stays in
evaluation mode.

**Summaries.** From the stacked samples (leading axis ``T``):
:func:`regression` (predictive mean and variance, including the model-precision
term :math:`\tau^{-1}`; :func:`model_precision` derives :math:`\tau`),
:func:`log_likelihood` (MC test log-likelihood) and :func:`classification`
(predictive probabilities, predictive entropy, mutual information / BALD,
variation ratio). :func:`predict_regression` and :func:`predict_classification`
compute the same summaries in one call *streaming* over chunks of passes, so
not even the ``T`` outputs are stored. Metrics: :func:`negative_log_likelihood`
and :func:`expected_calibration_error`.

References:
    - Y. Gal, Z. Ghahramani, "Dropout as a Bayesian Approximation: Representing
      Model Uncertainty in Deep Learning", ICML 2016.
    - N. Houlsby, F. Huszár, Z. Ghahramani, M. Lengyel, "Bayesian Active Learning
      for Classification and Preference Learning", arXiv:1112.5745, 2011.
    - Y. Gal, R. Islam, Z. Ghahramani, "Deep Bayesian Active Learning with Image
      Data", ICML 2017.
    - C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern
      Neural Networks", ICML 2017.

Example::

    >>> import jax, jax.numpy as jnp, jaxdrop
    >>> from jaxdrop import mc
    >>> w = jnp.linspace(-1.0, 1.0, 16).reshape(4, 4)
    >>> f = lambda key, x: jaxdrop.dropout(key, x, 0.5) @ w   # any stochastic model
    >>> x = jnp.ones((3, 4))
    >>> ys = mc.sample(f, jax.random.key(0), x, 100, chunk_size=32)
    >>> ys.shape
    (100, 3, 4)
    >>> r = mc.regression(ys, tau=10.0)
    >>> r.mean.shape, bool((r.variance >= 0.1).all())
    ((3, 4), True)
"""

from jaxdrop.mc._classification import Classification, classification, predict_classification
from jaxdrop.mc._flax import from_linen, from_nnx, is_dropout
from jaxdrop.mc._metrics import expected_calibration_error, negative_log_likelihood
from jaxdrop.mc._regression import (
    Regression,
    log_likelihood,
    model_precision,
    predict_regression,
    regression,
    weight_decay,
)
from jaxdrop.mc._sampling import sample

__all__ = [
    "Classification",
    "Regression",
    "classification",
    "expected_calibration_error",
    "from_linen",
    "from_nnx",
    "is_dropout",
    "log_likelihood",
    "model_precision",
    "negative_log_likelihood",
    "predict_classification",
    "predict_regression",
    "regression",
    "sample",
    "weight_decay",
]
