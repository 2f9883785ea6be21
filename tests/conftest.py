"""pytest configuration shared by every test module.

The test directory is on ``sys.path`` (pytest's default ``prepend`` import mode), so
modules import the shared bounds with ``from helpers import SIGMA, binomial_bound``.
Hypothesis runs derandomized everywhere, so property tests are as deterministic as
the seeded statistical ones.
"""

from hypothesis import settings

settings.register_profile("jaxdrop", deadline=None, derandomize=True)
settings.load_profile("jaxdrop")
