"""The package as users get it: what the built files hold, and the installed wheel at work.

``python check_package.py files DIST``: the wheel and sdist in DIST hold what they should.
``python check_package.py installed``: run by the throwaway environment's Python, outside
the repository, after the wheel was installed there: imports, metadata and a smoke test of
the installed package (not the source tree, not the editable install).
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path


def check_files(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    assert "jaxdrop/py.typed" in names, f"{wheel.name} has no jaxdrop/py.typed"
    assert "jaxdrop/__init__.py" in names and "jaxdrop/nnx.py" in names, names
    stray = [n for n in names if not n.startswith(("jaxdrop/", f"{wheel.name.split('-')[0]}-"))]
    assert not stray, f"{wheel.name} holds files outside the package: {stray}"
    for part in ("tests/", "notebooks/", "benchmarks/", "docs/", "__pycache__", ".ipynb"):
        bad = [n for n in names if part in n]
        assert not bad, f"{wheel.name} holds {part}: {bad}"
    members = [m.split("/", 1)[1] for m in tarfile.open(sdist).getnames() if "/" in m]
    for needed in ("jaxdrop/py.typed", "pyproject.toml", "README.md", "CHANGELOG.md", "tests/_train_child.py"):
        assert needed in members, f"{sdist.name} has no {needed}"
    bad = [m for m in members if m.startswith(("notebooks/", "benchmarks/")) or "__pycache__" in m]
    assert not bad, f"{sdist.name} holds {bad}"
    print(f"{wheel.name}: {len(names)} files, py.typed, nothing but the package; {sdist.name}: {len(members)} entries")


def check_installed() -> None:
    import importlib.metadata
    import json

    import jaxdrop

    here = Path(jaxdrop.__file__).resolve()
    prefix = Path(sys.prefix).resolve()
    assert prefix in here.parents, f"imported {here}, not the wheel installed under {prefix}"
    dist = importlib.metadata.distribution("jaxdrop")
    direct_url = dist.read_text("direct_url.json")
    assert not (direct_url and json.loads(direct_url).get("dir_info", {}).get("editable")), "an editable install"
    assert jaxdrop.__version__ == dist.version, (jaxdrop.__version__, dist.version)
    assert (here.parent / "py.typed").is_file()
    extras = set(dist.metadata.get_all("Provides-Extra") or [])
    assert {"examples", "test", "notebooks", "docs", "bench"} <= extras, extras
    core = " ".join(r for r in dist.requires or [] if "extra ==" not in r)
    for heavy in ("matplotlib", "scikit-learn", "mlxtend", "pandas"):
        assert heavy not in core, f"core requirements name {heavy}: {core}"

    import jax
    import jax.numpy as jnp
    from flax import nnx

    import jaxdrop.linen
    import jaxdrop.mc
    import jaxdrop.nnx
    import jaxdrop.training

    for mod in (jaxdrop.linen, jaxdrop.nnx, jaxdrop.training, jaxdrop.mc):
        assert prefix in Path(mod.__file__).resolve().parents, mod.__file__
    x = jnp.ones((64, 64))
    y = jaxdrop.dropout(jax.random.key(0), x, 0.25)
    kept = float((y != 0).mean())
    assert bool(jnp.allclose(y[y != 0], 1 / 0.75)) and 0.65 < kept < 0.85, kept
    expected = jax.random.bernoulli(jax.random.key(0), 0.75, x.shape)
    assert bool(((y != 0) == expected).all()), "the mask is not jax.random.bernoulli's"
    layer = jaxdrop.nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    assert bool((layer(x) == nnx.Dropout(0.5, rngs=nnx.Rngs(0))(x)).all())
    print(f"installed jaxdrop {jaxdrop.__version__} from {here.parent}: imports, metadata and dropout OK")


if __name__ == "__main__":
    if sys.argv[1:2] == ["files"] and len(sys.argv) == 3:
        check_files(Path(sys.argv[2]))
    elif sys.argv[1:] == ["installed"]:
        check_installed()
    else:
        sys.exit(__doc__)
