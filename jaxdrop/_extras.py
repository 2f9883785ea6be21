"""Optional dependencies, installed by an extra rather than by ``pip install jaxdrop``.

The core install holds what ``jaxdrop``, ``jaxdrop.linen``, ``jaxdrop.nnx``,
``jaxdrop.training`` and ``jaxdrop.mc`` import. The demo (``python -m jaxdrop``),
:mod:`jaxdrop.data`'s bundled datasets and the plots need the ``examples`` extra
(matplotlib, scikit-learn, mlxtend); they import it inside the functions that use it,
through :func:`require`, so a missing package is an ``ImportError`` that says what to
install instead of a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# import name -> distribution name (what pip installs)
DISTRIBUTIONS = {"matplotlib": "matplotlib", "sklearn": "scikit-learn", "mlxtend": "mlxtend"}


def missing(module: str, what: str, extra: str = "examples") -> ImportError:
    """The error for ``what`` (``"jaxdrop.data.digits"``...) without the ``module`` package."""
    top = module.split(".")[0]
    dist = DISTRIBUTIONS.get(top, top)
    return ImportError(
        f'{what} needs {dist}, which is not installed (the core install of jaxdrop leaves it out). '
        f'Install the "{extra}" extra: pip install "jaxdrop[{extra}]" (from a source checkout: '
        f'pip install ".[{extra}]").',
        name=top,
    )


def require(module: str, what: str, extra: str = "examples") -> ModuleType:
    """``importlib.import_module(module)``, or :func:`missing`'s error if its package is absent.

    Only the absence of ``module``'s own package is translated; an error raised while
    importing an installed package (a broken dependency of it) propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != module.split(".")[0]:
            raise
        raise missing(module, what, extra) from e
