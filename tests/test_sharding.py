"""jaxdrop on sharded arrays: 8 simulated devices in one subprocess, plus single-device checks.

The multi-device checks (``tests/_sharding_child.py``) need
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before JAX starts, so they
run in one subprocess (started once per session, about 40 s on 2 cores) whose
``RESULT`` lines become the parametrized tests below; a failure shows the
child's own message. In this process (one device) we check the block sampling
of ``jaxdrop.prng`` that the ``shard_map`` recipe relies on, the HLO parser the
child uses, and that the child's table covers every key-taking jaxdrop function.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _sharding_child import CASES, N_DEVICES, collectives, result_names
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxdrop
from jaxdrop import prng

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHILD = os.path.join(HERE, "_sharding_child.py")

# ------------------------------------------------------------------ the 8-device subprocess


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={N_DEVICES}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def child() -> tuple[dict[str, str | None], str]:
    """Run the child once: ({result name: error or None}, diagnostics for a crash)."""
    try:
        proc = subprocess.run(
            [sys.executable, CHILD], env=_child_env(), capture_output=True, text=True, timeout=900, cwd=ROOT
        )
    except subprocess.TimeoutExpired as e:
        return {}, f"the sharding subprocess timed out after {e.timeout} s; stderr:\n{(e.stderr or '')[-4000:]}"
    results: dict[str, str | None] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            record = json.loads(line[len("RESULT ") :])
            results[record["name"]] = record["error"]
    info = f"subprocess exit code {proc.returncode}; stderr (tail):\n{proc.stderr[-4000:]}"
    return results, info


@pytest.mark.parametrize("name", result_names())
def test_on_8_devices(child, name):
    results, info = child
    if name not in results:
        pytest.fail(f"{name}: no result from {CHILD}\n{info}", pytrace=False)
    if results[name] is not None:
        pytest.fail(f"{name} failed on {N_DEVICES} simulated devices:\n{results[name]}", pytrace=False)


def test_child_reported_nothing_unexpected(child):
    results, info = child
    assert set(results) == set(result_names()), info


# ------------------------------------------------------------------ the table covers jaxdrop


def _takes_key(obj) -> bool:
    if not callable(obj) or inspect.isclass(obj) or inspect.ismodule(obj):
        return False
    params = list(inspect.signature(obj).parameters)
    return bool(params) and params[0] == "key"


def test_every_key_taking_function_is_in_the_sharding_table():
    exported = {name for name in jaxdrop.__all__ if _takes_key(getattr(jaxdrop, name))}
    # Guard against the filter silently matching nothing.
    assert {"dropout", "keep_mask"} <= exported
    missing = exported - {c.fn for c in CASES}
    assert not missing, (
        f"jaxdrop exports {sorted(missing)} but tests/_sharding_child.py has no Case for them: "
        "add one to CASES (input shape and call) so they are checked on sharded arrays."
    )


# ------------------------------------------------------------------ the HLO parser of the child

_HLO = """
  %all-reduce = s32[8]{0} all-reduce(%convert_reduce_fusion), channel_id=1, to_apply=%region
  %ag = (f32[4,8]{1,0}, f32[8,8]{1,0}) all-gather-start(%p), channel_id=2, dimensions={0}
  %cp.1 = u8[4,2,6,8]{3,2,1,0} collective-permute(%f), source_target_pairs={{0,1}}
  %fusion = f32[8]{0} fusion(%all-reduce), kind=kLoop, metadata={op_name="jit(f)/all-reduce"}
  %a2a = f32[2,2]{1,0} all-to-all(%x), dimensions={0}
"""


def test_collectives_parser_finds_each_collective_instruction_once():
    assert collectives(_HLO) == [
        ("all-reduce", "s32[8]{0}"),
        ("all-gather", "(f32[4,8]{1,0}, f32[8,8]{1,0})"),
        ("collective-permute", "u8[4,2,6,8]{3,2,1,0}"),
        ("all-to-all", "f32[2,2]{1,0}"),
    ]
    single = jax.jit(lambda x: jaxdrop.dropout(jax.random.key(0), x, 0.5).sum()).lower(jnp.ones(8))
    assert collectives(single.compile().as_text()) == []


# ------------------------------------------------------------------ prng blocks (the shard_map recipe)

KEY = jax.random.key(2024)


def _slices(start, shape):
    return tuple(slice(o, o + n) for o, n in zip(start, shape, strict=True))


@settings(max_examples=12, deadline=None, derandomize=True)
@given(data=st.data())
def test_block_bits_equal_the_global_bits_sliced(data):
    gshape = tuple(data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=3), label="global_shape"))
    shape = tuple(data.draw(st.integers(1, g), label=f"size{d}") for d, g in enumerate(gshape))
    start = tuple(data.draw(st.integers(0, g - n), label=f"start{d}") for d, (g, n) in enumerate(zip(gshape, shape, strict=True)))
    mode = data.draw(st.sampled_from(["exact", "fast"]), label="mode")
    want = np.asarray(prng.bits(KEY, gshape, mode=mode))[_slices(start, shape)]
    got = prng.bits(KEY, shape, mode=mode, global_shape=gshape, index_offset=start)
    np.testing.assert_array_equal(got, want)


def test_block_samplers_equal_global_samplers_sliced_with_traced_offsets():
    gshape, shape = (6, 10, 4), (3, 5, 2)

    @jax.jit
    def block(offsets):
        kw = {"global_shape": gshape, "index_offset": offsets}
        return (
            prng.bits(KEY, shape, **kw),
            prng.uniform(KEY, shape, jnp.bfloat16, **kw),
            prng.normal(KEY, shape, **kw),
            prng.bernoulli(KEY, np.float32(0.3), shape, mode="fast", **kw),
        )

    full = (
        prng.bits(KEY, gshape),
        prng.uniform(KEY, gshape, jnp.bfloat16),
        prng.normal(KEY, gshape),
        prng.bernoulli(KEY, np.float32(0.3), gshape, mode="fast"),
    )
    for start in [(0, 0, 0), (3, 5, 2), (1, 2, 1), (3, 0, 1)]:
        for got, want in zip(block(jnp.array(start, jnp.int32)), full, strict=True):
            np.testing.assert_array_equal(got, np.asarray(want)[_slices(start, shape)])
    # Equal to jax.random's own bits, so the recipe also matches jaxdrop.dropout bit for bit.
    np.testing.assert_array_equal(full[0], jax.random.bits(KEY, gshape, jnp.uint32))


def test_block_of_a_non_fused_key_falls_back_to_jax_random():
    key = jax.random.key(5, impl="rbg")
    assert not prng.is_fused(key)
    got = prng.uniform(key, (2, 3), global_shape=(4, 6), index_offset=(2, 1))
    np.testing.assert_array_equal(got, jax.random.uniform(key, (4, 6))[2:4, 1:4])


def test_block_counters_past_2_pow_32():
    # A block whose flat indices straddle 2**32 in a global array of 3 * (2**31 + 5) elements.
    gshape = (3, 2**31 + 5)
    start = (1, 2**32 - (2**31 + 5) - 6)  # row 1, 6 columns before flat index 2**32
    shape = (2, 16)
    hi, lo = prng.counters(shape, global_shape=gshape, index_offset=start)
    rows = np.arange(start[0], start[0] + shape[0], dtype=np.uint64)[:, None]
    cols = np.arange(start[1], start[1] + shape[1], dtype=np.uint64)[None, :]
    flat = rows * np.uint64(gshape[1]) + cols
    assert flat.min() < 2**32 <= flat.max()
    np.testing.assert_array_equal(hi, (flat >> np.uint64(32)).astype(np.uint32))
    np.testing.assert_array_equal(lo, (flat & np.uint64(0xFFFFFFFF)).astype(np.uint32))

    # And the bits are those of the (never materialised) global array.
    def window(key):
        return jax.lax.slice(prng.bits(key, gshape), start, tuple(s + n for s, n in zip(start, shape, strict=True)))

    compiled = jax.jit(window).lower(KEY).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < 2**20  # fused, not allocated
    np.testing.assert_array_equal(prng.bits(KEY, shape, global_shape=gshape, index_offset=start), compiled(KEY))
    assert math.prod(gshape) > 2**32


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"global_shape": (8, 4)}, ValueError, "both"),
        ({"index_offset": (0, 0)}, ValueError, "both"),
        ({"global_shape": (8,), "index_offset": (0,)}, ValueError, "does not fit"),
        ({"global_shape": (1, 4), "index_offset": (0, 0)}, ValueError, "does not fit"),
        ({"global_shape": (8, 4), "index_offset": (0,)}, ValueError, "one start index per axis"),
        ({"global_shape": (8, 4), "index_offset": (7, 0)}, ValueError, r"must be in \[0, 6\]"),
        ({"global_shape": (8, 4), "index_offset": (-1, 0)}, ValueError, "outside"),
        ({"global_shape": (8, 4), "index_offset": (0.5, 0)}, TypeError, "must be an integer"),
        ({"global_shape": (8, 4), "index_offset": (True, 0)}, TypeError, "must be an integer"),
    ],
)
def test_block_arguments_are_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        prng.bits(KEY, (2, 4), **kwargs)
