"""Several processes, one program: join JAX's distributed runtime, or launch local workers to try it.

JAX runs on many hosts as one process per host (the *multi-controller* model):
every process runs the same script, calls :func:`jax.distributed.initialize`,
and then sees all processes' devices in ``jax.devices()`` (its own in
``jax.local_devices()``). A :class:`~jax.sharding.Mesh` over ``jax.devices()``
spans the processes, and a :class:`jaxdrop.training.Trainer` given that mesh
trains data-parallel: the state replicated, each process loading only its
slice of every batch. See ``docs/multihost.md``.

This module adds two small things:

* :func:`initialize`: :func:`jax.distributed.initialize` from explicit
  arguments, from the ``JAXDROP_*`` variables that :func:`launch_local` sets,
  or (neither) from the cluster's environment (SLURM, Open MPI, Cloud TPU pods,
  Kubernetes...: JAX's own auto-detection). On CPU it selects the ``gloo``
  collectives, without which processes cannot exchange data.
* :func:`launch_local`: start ``num_processes`` local copies of a command, each
  with ``devices_per_process`` simulated CPU devices and the variables
  :func:`initialize` reads; wait for all of them, and when one fails stop the
  others and raise :class:`WorkerError` naming which failed and how.

One machine is enough to try it (``python -m jaxdrop --processes 2`` does)::

    # worker.py
    from jaxdrop import distributed
    distributed.initialize()          # before anything else uses JAX
    import jax
    print(jax.process_index(), jax.process_count(), jax.device_count())

    # launcher
    from jaxdrop import distributed
    distributed.launch_local(["python", "worker.py"], num_processes=2, devices_per_process=4, timeout=300)
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

from jaxdrop import _checks

__all__ = [
    "ENV_COORDINATOR",
    "ENV_HEARTBEAT",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "WorkerError",
    "free_port",
    "initialize",
    "launch_local",
    "worker_env",
]

ENV_COORDINATOR = "JAXDROP_COORDINATOR"
ENV_NUM_PROCESSES = "JAXDROP_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXDROP_PROCESS_ID"
ENV_HEARTBEAT = "JAXDROP_HEARTBEAT_TIMEOUT"

_DEVICE_COUNT = re.compile(r"--xla_force_host_platform_device_count=\S+")


class WorkerError(RuntimeError):
    """A worker of :func:`launch_local` failed (or the run timed out); the others were stopped.

    Attributes:
      returncodes: each worker's exit status (negative: killed by that signal).
      first: the process id of the first worker seen failing (None if none
        failed before a timeout).
    """

    def __init__(self, message: str, returncodes: list[int | None], first: int | None):
        super().__init__(message)
        self.returncodes = returncodes
        self.first = first


def _count(value: Any, name: str, fn: str, minimum: int = 1) -> int:
    return _checks.integer(value, f"distributed.{fn}", name, minimum=minimum)


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"jaxdrop.distributed.initialize: ${name}={text!r} is not an integer.") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout_seconds: int | None = None,
    **kwargs: Any,
) -> None:
    """Join JAX's distributed runtime (call it in every process, before anything else uses JAX).

    Each argument left ``None`` is taken from the environment that
    :func:`launch_local` sets (``JAXDROP_COORDINATOR``, ``JAXDROP_NUM_PROCESSES``,
    ``JAXDROP_PROCESS_ID``, ``JAXDROP_HEARTBEAT_TIMEOUT``); if none is set
    either, :func:`jax.distributed.initialize` detects them from the cluster
    (SLURM, Open MPI, Cloud TPU pods, GKE/Kubernetes...). Other keyword
    arguments go to :func:`jax.distributed.initialize` unchanged
    (``initialization_timeout``, ``local_device_ids``...).

    Selects the ``gloo`` CPU collectives first (unless ``jax_cpu_collectives_implementation``
    was set otherwise), so that processes running on CPU can communicate; it
    does not affect GPU or TPU devices.

    ``heartbeat_timeout_seconds``: how long the runtime waits for a silent
    process before declaring it dead and stopping every other process with an
    error (JAX's default, 100 s, when unset).

    Raises:
      ValueError: a ``process_id`` outside ``[0, num_processes)``, or, once
        joined, a number of processes different from ``num_processes`` (e.g.
        processes launched with different counts).
    """
    import jax

    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if heartbeat_timeout_seconds is None:
        heartbeat_timeout_seconds = _env_int(ENV_HEARTBEAT)
    if num_processes is not None:
        _count(num_processes, "num_processes", "initialize")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(
            f"jaxdrop.distributed.initialize: process_id={process_id} is outside [0, {num_processes}) "
            f"for num_processes={num_processes}; give each process a distinct id 0..{num_processes - 1}."
        )
    if getattr(jax.config, "jax_cpu_collectives_implementation", None) in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if heartbeat_timeout_seconds is not None:
        kwargs["heartbeat_timeout_seconds"] = _count(heartbeat_timeout_seconds, "heartbeat_timeout_seconds", "initialize")
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)
    if num_processes is not None and jax.process_count() != num_processes:
        raise ValueError(
            f"jaxdrop.distributed.initialize: this process was told num_processes={num_processes}, but the "
            f"runtime it joined has {jax.process_count()} processes; launch every process with the same count."
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it; nothing else is guaranteed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(
    process_id: int,
    num_processes: int,
    port: int,
    *,
    devices_per_process: int = 1,
    heartbeat_timeout_seconds: int | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of local worker ``process_id``: ``env`` (default ``os.environ``) plus

    ``JAX_PLATFORMS=cpu``, ``XLA_FLAGS`` with ``devices_per_process`` simulated
    devices, and the ``JAXDROP_*`` variables :func:`initialize` reads
    (coordinator ``127.0.0.1:port``).
    """
    _count(num_processes, "num_processes", "worker_env")
    _count(devices_per_process, "devices_per_process", "worker_env")
    if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(f"jaxdrop.distributed.worker_env: process_id must be in [0, {num_processes}), got {process_id!r}.")
    out = dict(os.environ if env is None else env)
    flags = _DEVICE_COUNT.sub("", out.get("XLA_FLAGS", ""))
    out["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices_per_process}".strip()
    out["JAX_PLATFORMS"] = "cpu"
    out[ENV_COORDINATOR] = f"127.0.0.1:{port}"
    out[ENV_NUM_PROCESSES] = str(num_processes)
    out[ENV_PROCESS_ID] = str(process_id)
    if heartbeat_timeout_seconds is not None:
        out[ENV_HEARTBEAT] = str(_count(heartbeat_timeout_seconds, "heartbeat_timeout_seconds", "worker_env"))
    return out


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def launch_local(
    command: Sequence[str],
    num_processes: int,
    *,
    devices_per_process: int = 1,
    timeout: float | None = None,
    port: int | None = None,
    heartbeat_timeout_seconds: int = 10,
    grace_seconds: float | None = None,
    env: Mapping[str, str] | None = None,
) -> list[int]:
    """Run ``command`` as ``num_processes`` local workers of one distributed program; return their exit codes.

    Worker ``i`` gets the environment of :func:`worker_env` (``devices_per_process``
    simulated CPU devices, coordinator on ``127.0.0.1:port``, a free port when
    ``port`` is None) and should call :func:`initialize` first. Their output
    goes to this process's stdout and stderr.

    When a worker fails (non-zero exit, or killed), the others are given
    ``grace_seconds`` (default: the heartbeat timeout plus 10 s) to stop by
    themselves (JAX's runtime stops them once it notices the loss) and are then
    killed; :class:`WorkerError` says which worker failed first and how. The
    same after ``timeout`` seconds in all (None: no limit).

    >>> import sys
    >>> launch_local([sys.executable, "-c", "pass"], 2)
    [0, 0]
    """
    if isinstance(command, str) or not command:
        raise TypeError("jaxdrop.distributed.launch_local: `command` must be a non-empty list of arguments.")
    _count(num_processes, "num_processes", "launch_local")
    port = free_port() if port is None else port
    grace = heartbeat_timeout_seconds + 10.0 if grace_seconds is None else float(grace_seconds)
    procs = [
        subprocess.Popen(
            list(command),
            env=worker_env(
                i,
                num_processes,
                port,
                devices_per_process=devices_per_process,
                heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                env=env,
            ),
        )
        for i in range(num_processes)
    ]
    start = time.monotonic()
    first: int | None = None
    failed_at = 0.0
    timed_out = False
    stopped: list[int] = []  # workers this launcher had to kill
    try:
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if first is None:
                first = next((i for i, p in enumerate(procs) if p.poll() not in (None, 0)), None)
                failed_at = now
            if first is not None and now - failed_at > grace:
                break
            if timeout is not None and now - start > timeout:
                timed_out = True
                break
            time.sleep(0.05)
    finally:
        for i, p in enumerate(procs):
            if p.poll() is None:
                p.kill()
                stopped.append(i)
        for p in procs:
            p.wait()
    codes = [p.returncode for p in procs]
    if first is None and not timed_out:
        first = next((i for i, c in enumerate(codes) if c != 0), None)
    if first is None and not timed_out:
        return codes

    def fate(i: int) -> str:
        return f"process {i}: " + ("still running, killed" if i in stopped else _describe(codes[i]))

    fates = "; ".join(fate(i) for i in range(len(procs)))
    if timed_out:
        cause = f"the run did not finish within {timeout} s"
    else:
        assert first is not None
        cause = f"process {first} failed first ({_describe(codes[first])}), so the run cannot go on"
    raise WorkerError(f"jaxdrop.distributed.launch_local: {cause} ({fates}).", codes, first)
