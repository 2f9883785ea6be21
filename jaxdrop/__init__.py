"""jaxdrop: fast, fused, explicit-key dropout for JAX.

Every function takes a PRNG key first, then the array, then the drop rate::

    y = jaxdrop.dropout(key, x, rate=0.1)

Masks are generated inside one fused computation from the key and each element's
index (see :mod:`jaxdrop.prng`), bit-identical to ``jax.random.bernoulli`` by
default, and regenerated rather than stored for the backward pass.
"""

from jaxdrop import prng
from jaxdrop._checks import checked
from jaxdrop._dropout import dropout, keep_mask

# -- variants (issue 4) --
# -- end variants --

__version__ = "0.1.0"

__all__ = [
    "checked",
    "dropout",
    "keep_mask",
    "prng",
]
