"""Cross-talk check: does the timing design give the same figures alone and interleaved?

Times a jitted ``x * 2`` copy, ``flax.linen.Dropout``, ``jaxdrop.dropout`` and
``jaxdrop.linen.Dropout`` (forward, ``N x N``, rate 0.5) three ways, in one process:

* **alone**: each implementation in its own block of back-to-back calls (nothing else
  runs between its calls: the reference figure);
* **interleaved, unpaired**: the plain round-robin (each round calls every
  implementation once, in a rotated order), as ``bench.py`` did before: the
  memory traffic of the implementation that ran before lands on the timed call;
* **interleaved, paired**: the same rounds, each timed call immediately preceded by
  an untimed call of the same function (``_timing.time_paired``, what ``bench.py``,
  ``bench_sharding.py`` and ``bench_attention.py`` use now).

The three designs are themselves cycled ``--cycles`` times so a slow phase of a shared
machine hits all three; per design and implementation the median over every sample is
reported, and its ratio to the copy's median in the same design. Writes
``benchmarks/results/crosstalk-<backend>.json`` and ``.md``.

Usage::

    python benchmarks/crosstalk.py                  # 4096x4096, float32 + bfloat16
    python benchmarks/crosstalk.py --size 2048 --reps 7 --cycles 2 --dtypes float32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as fnn
import jax
import jax.numpy as jnp

try:
    import jaxdrop
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import jaxdrop
import jaxdrop.linen as jdl

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared timing helper
from _timing import time_paired

RESULTS = Path(__file__).resolve().parent / "results"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
RATE = 0.5
COPY = "copy (x * 2)"
DESIGNS = ("alone", "interleaved, unpaired", "interleaved, paired")


def thunks(size: int, dtype: str) -> dict[str, Callable[[], Any]]:
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (size, size), DTYPES[dtype])
    fs: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
        COPY: lambda key, x: x * 2,
        "flax.linen.Dropout": lambda key, x: fnn.Dropout(RATE, deterministic=False).apply({}, x, rng=key),
        "jaxdrop.dropout": lambda key, x: jaxdrop.dropout(key, x, RATE),
        "jaxdrop.linen.Dropout": lambda key, x: jdl.Dropout(RATE, deterministic=False).apply({}, x, rng=key),
    }
    out = {}
    for name, f in fs.items():
        jf = jax.jit(f)
        out[name] = lambda jf=jf: jf(key, x)
    return out


def measure(size: int, dtype: str, reps: int, cycles: int) -> dict[str, dict[str, list[float]]]:
    fns = thunks(size, dtype)
    for fn in fns.values():  # compile and warm up every implementation first
        fn().block_until_ready()
        fn().block_until_ready()
    samples: dict[str, dict[str, list[float]]] = {d: {n: [] for n in fns} for d in DESIGNS}
    for _ in range(cycles):
        for name, fn in fns.items():  # alone: one implementation at a time
            samples["alone"][name] += time_paired({name: fn}, reps)[name]["samples_s"]
        for design, paired in (("interleaved, unpaired", False), ("interleaved, paired", True)):
            for name, t in time_paired(fns, reps, paired=paired).items():
                samples[design][name] += t["samples_s"]
    return samples


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    n = cfg["size"]
    out = [
        f"# Cross-talk check ({result['backend']}, {n}x{n}, rate {RATE}, forward)",
        "",
        f"{result['machine']}. {cfg['cycles']} cycles of the three designs, {cfg['reps']} timed calls "
        "per implementation and design in each cycle; median over all samples, and its ratio to the "
        "copy's median in the same design. *alone*: back-to-back calls of one implementation; "
        "*unpaired*: plain round-robin (the old `bench.py`); *paired*: round-robin with an untimed "
        "call of the same function right before each timed call (the benchmarks now).",
        "",
    ]
    for dtype, samples in result["samples"].items():
        out += [
            f"## {dtype}",
            "",
            "| implementation | "
            + " | ".join(f"{d} ms | x copy" for d in DESIGNS)
            + " | paired / alone (x copy) |",
            "| --- | " + " | ".join("---: | ---:" for _ in DESIGNS) + " | ---: |",
        ]
        for name in samples["alone"]:
            cells, ratios = [], {}
            for d in DESIGNS:
                med = statistics.median(samples[d][name])
                ratios[d] = med / statistics.median(samples[d][COPY])
                cells += [f"{med * 1e3:.1f}", f"{ratios[d]:.2f}"]
            out.append(
                f"| {name} | " + " | ".join(cells) + f" | {ratios['interleaved, paired'] / ratios['alone']:.2f} |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=9, help="timed calls per design and cycle")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["float32", "bfloat16"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result: dict[str, Any] = {
        "backend": jax.default_backend(),
        "machine": f"{os.cpu_count()} cores, jax {jax.__version__}, load average {load:.1f} at start",
        "config": {"size": args.size, "reps": args.reps, "cycles": args.cycles},
        "samples": {},
    }
    for dtype in args.dtypes:
        result["samples"][dtype] = measure(args.size, dtype, args.reps, args.cycles)
        print(f"  {dtype}: done", file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"crosstalk-{result['backend']}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    (args.out / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
