"""Which of jaxdrop's performance goals does a benchmark result meet?

Reads the JSON written by ``bench.py`` and prints one line per goal. First, for every
dtype in the result (rate 0.5, forward and forward+backward): exact mode <= 1.6x the
copy and fast mode <= 1.25x. Then, about float32, rate 0.5 (dropout on the N x N input;
the MLP training step):

1. exact forward <= 1.6x the jitted ``x * 2`` copy;
2. exact forward >= 5x faster than ``flax.linen.Dropout``;
3. the fastest jaxdrop mode's forward <= 1.25x the copy;
4. forward+backward (each jaxdrop mode) >= 3x faster than ``flax.linen.Dropout``'s;
5. MLP training step with jaxdrop dropout (each mode) <= 1.15x the step without dropout.

Each goal is evaluated on the medians of wall time (the headline numbers), on the minima of
the interleaved samples (the closest a shared, contended machine gets to an idle one: extra
load only ever adds time) and, on the CPU, on the medians of process CPU time (the work
done, not the waiting for a core). Not a test: timings on shared machines are noisy. Exit
status 1 if a goal is missed on the medians.

Usage::

    python benchmarks/check_goals.py [benchmarks/results/cpu.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COPY, FLAX = "copy (x * 2)", "flax.linen.Dropout"
MODES = ("jaxdrop exact", "jaxdrop fast")


def evaluate(result: dict[str, Any], stat: str = "median_s") -> list[dict[str, Any]]:
    """One dict per goal: goal (text), measured (text), value, ok (bool); ``stat`` is
    ``"median_s"``, ``"min_s"`` or ``"cpu_median_s"``."""
    goals: list[dict[str, Any]] = []

    def _t(result: dict[str, Any], impl: str, direction: str) -> float:
        for r in result["dropout"]:
            if (r["impl"], r["dtype"], r["rate"], r["direction"]) == (impl, "float32", 0.5, direction):
                return float(r[stat])
        raise KeyError(f"no float32 rate 0.5 {direction} timing for {impl}")

    def _mlp(result: dict[str, Any], variant: str) -> float:
        for r in result["mlp"]:
            if r["dtype"] == "float32" and r["variant"] == variant and r["rate"] in (None, 0.5):
                return float(r[stat])
        raise KeyError(f"no float32 MLP timing for {variant}")

    def add(goal: str, value: float, ok: bool, unit: str) -> None:
        goals.append({"goal": goal, "measured": f"{value:.2f}{unit}", "value": value, "ok": ok})

    # Every dtype, forward and forward+backward (rate 0.5): exact <= 1.6x copy, fast <= 1.25x.
    dtypes = list(dict.fromkeys(r["dtype"] for r in result["dropout"]))
    for dtype in dtypes:
        for direction in ("forward", "forward+backward"):
            rows = {
                r["impl"]: float(r[stat])
                for r in result["dropout"]
                if (r["dtype"], r["rate"], r["direction"]) == (dtype, 0.5, direction)
            }
            if COPY not in rows:
                continue
            for mode, bound in (("jaxdrop exact", 1.6), ("jaxdrop fast", 1.25)):
                if mode in rows:
                    ratio = rows[mode] / rows[COPY]
                    add(f"{mode.split()[1]} {direction} {dtype} <= {bound}x copy", ratio, ratio <= bound, "x copy")
    fwd = "forward"
    copy, flax = _t(result, COPY, fwd), _t(result, FLAX, fwd)
    exact = _t(result, "jaxdrop exact", fwd)
    add("exact forward <= 1.6x copy", exact / copy, exact / copy <= 1.6, "x copy")
    add("exact forward >= 5x faster than flax.linen", flax / exact, flax / exact >= 5, "x faster")
    fastest = min(_t(result, m, fwd) for m in MODES)
    add("fastest mode forward <= 1.25x copy", fastest / copy, fastest / copy <= 1.25, "x copy")
    fb = "forward+backward"
    flax_fb = _t(result, FLAX, fb)
    for mode in MODES:
        s = flax_fb / _t(result, mode, fb)
        add(f"{mode.split()[1]} forward+backward >= 3x faster than flax.linen", s, s >= 3, "x faster")
    if result.get("mlp"):
        none = _mlp(result, "no dropout")
        for mode in MODES:
            ratio = _mlp(result, mode) / none
            add(f"MLP step with {mode} <= 1.15x no dropout", ratio, ratio <= 1.15, "x")
    return goals


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else Path(__file__).resolve().parent / "results" / "cpu.json"
    result = json.loads(path.read_text())
    print(
        f"{path}: {result['machine']['cpu']} ({result['machine']['backend']}), size {result['config']['size']}"
    )
    print(f"  load average {result['machine'].get('loadavg_start')}; {result['config']['reps']} repetitions")
    goals = evaluate(result)
    others = [("min", evaluate(result, "min_s"))]
    if result["machine"]["backend"] == "cpu" and "cpu_median_s" in result["dropout"][0]:
        others.append(("CPU time", evaluate(result, "cpu_median_s")))
    for i, g in enumerate(goals):
        extra = "; ".join(
            f"{o[i]['measured']} ({label}) {'pass' if o[i]['ok'] else 'FAIL'}" for label, o in others
        )
        print(f"  [{'PASS' if g['ok'] else 'FAIL'}] {g['goal']}: {g['measured']} (median); {extra}")
    return 0 if all(g["ok"] for g in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
