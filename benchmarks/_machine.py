"""What the benchmarks record about the machine they ran on (shared by every benchmark script)."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import jax


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def git_state() -> dict[str, Any] | None:
    """The checkout's commit and the uncommitted files under jaxdrop/ (what was benchmarked)."""
    root = str(Path(__file__).resolve().parents[1])

    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", root, *cmd], capture_output=True, text=True, timeout=30).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = [line[3:] for line in git("status", "--porcelain", "--", "jaxdrop").splitlines()]
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "jaxdrop_uncommitted": dirty} if commit else None


def machine_info(packages: tuple[str, ...]) -> dict[str, Any]:
    """Date, CPU, cores, backend and device, platform, XLA flags, ``packages``' versions, load at start."""
    dev = jax.devices()[0]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "versions": {d: package_version(d) for d in packages},
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
