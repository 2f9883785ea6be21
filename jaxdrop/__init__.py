"""jaxdrop: fast, fused, explicit-key dropout for JAX.

Every function takes a PRNG key first, then the array, then the drop rate::

    y = jaxdrop.dropout(key, x, rate=0.1)

Masks are generated inside one fused computation from the key and each element's
index (see :mod:`jaxdrop.prng`), bit-identical to ``jax.random.bernoulli`` by
default, and regenerated rather than stored for the backward pass.
"""

from jaxdrop import attention, mc, prng, schedules
from jaxdrop._checks import checked
from jaxdrop._variants._activation import activation_dropout
from jaxdrop._variants._alpha import alpha_dropout, feature_alpha_dropout
from jaxdrop._variants._channel import channel_dropout
from jaxdrop._variants._concrete import concrete_dropout, concrete_dropout_regularizer
from jaxdrop._variants._depth import drop_path, stochastic_depth_rates
from jaxdrop._variants._dropblock import dropblock, dropblock_gamma, dropblock_mask
from jaxdrop._variants._dropconnect import dropconnect, dropconnect_dense
from jaxdrop._variants._dropout import dropout, keep_mask
from jaxdrop._variants._gaussian import gaussian_dropout, gaussian_noise
from jaxdrop._variants._recurrent import embedding_dropout, locked_dropout, zoneout
from jaxdrop.schedules import curriculum_schedule, early_dropout_schedule, late_dropout_schedule

__version__ = "0.1.0"

__all__ = [
    "activation_dropout",
    "alpha_dropout",
    "attention",
    "channel_dropout",
    "checked",
    "concrete_dropout",
    "concrete_dropout_regularizer",
    "curriculum_schedule",
    "drop_path",
    "dropblock",
    "dropblock_gamma",
    "dropblock_mask",
    "dropconnect",
    "dropconnect_dense",
    "dropout",
    "early_dropout_schedule",
    "embedding_dropout",
    "feature_alpha_dropout",
    "gaussian_dropout",
    "gaussian_noise",
    "keep_mask",
    "late_dropout_schedule",
    "locked_dropout",
    "mc",
    "prng",
    "schedules",
    "stochastic_depth_rates",
    "zoneout",
]
