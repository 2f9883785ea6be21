"""jaxdrop: fast, fused, explicit-key dropout for JAX.

Every function takes a PRNG key first, then the array, then the drop rate::

    y = jaxdrop.dropout(key, x, rate=0.1)

Masks are generated inside one fused computation from the key and each element's
index (see :mod:`jaxdrop.prng`), bit-identical to ``jax.random.bernoulli`` by
default, and regenerated rather than stored for the backward pass.
"""

from jaxdrop import attention, prng
from jaxdrop._checks import checked
from jaxdrop._dropout import dropout, keep_mask

# -- variants (issue 4) --
# isort: split
from jaxdrop import schedules
from jaxdrop._channel import channel_dropout
from jaxdrop._concrete import concrete_dropout, concrete_dropout_regularizer
from jaxdrop._depth import drop_path, stochastic_depth_rates
from jaxdrop._dropblock import dropblock, dropblock_gamma, dropblock_mask
from jaxdrop._dropconnect import dropconnect, dropconnect_dense
from jaxdrop._noise import alpha_dropout, feature_alpha_dropout, gaussian_dropout, gaussian_noise
from jaxdrop._recurrent import embedding_dropout, locked_dropout, zoneout
from jaxdrop.schedules import curriculum_schedule, early_dropout_schedule, late_dropout_schedule

# -- end variants --

# -- mc (issue 7) --
# isort: split
from jaxdrop import mc

# -- end mc --

__version__ = "0.1.0"

__all__ = [
    "attention",
    "checked",
    # variants (issue 4)
    "alpha_dropout",
    "channel_dropout",
    "concrete_dropout",
    "concrete_dropout_regularizer",
    "curriculum_schedule",
    "drop_path",
    "dropblock",
    "dropblock_gamma",
    "dropblock_mask",
    "dropconnect",
    "dropconnect_dense",
    "early_dropout_schedule",
    "embedding_dropout",
    "feature_alpha_dropout",
    "gaussian_dropout",
    "gaussian_noise",
    "late_dropout_schedule",
    "locked_dropout",
    "schedules",
    "stochastic_depth_rates",
    "zoneout",
    # end variants
    "dropout",
    "keep_mask",
    "mc",  # issue 7
    "prng",
]
