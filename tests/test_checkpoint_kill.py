"""A training process SIGKILLed at random moments (mostly mid-save) always resumes, bit for bit.

The child (tests/_train_child.py) saves after every step, so most of its time is
spent inside orbax saves and a random kill usually lands in one. After each kill
the newest checkpoint must be loadable without any fall-back, at least as new
as the last save the child reported, and equal to the uninterrupted run's state
at that step; the last run must finish with exactly the uninterrupted result.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings

import jax
import numpy as np
from _train_child import BATCH, make_trainer, toy_data

from jaxdrop.data import epoch_permutation
from jaxdrop.training import Checkpointer

TOTAL = 30
KILLS = 4
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class Child:
    """The training subprocess, with its stdout read by a thread."""

    def __init__(self, directory: str, cache: str):
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        # Children share compiled programs through JAX's persistent cache: only the first compiles.
        env["JAX_COMPILATION_CACHE_DIR"] = cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "_train_child.py"), directory, str(TOTAL)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.saved: list[int] = []
        self.done = False
        self.ended = False
        self.progress = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, _, num = line.partition(" ")
            with self.progress:
                if word == "saved":
                    self.saved.append(int(num))
                elif word == "done":
                    self.done = True
                self.progress.notify_all()
        with self.progress:
            self.ended = True
            self.progress.notify_all()

    def wait_for_saves(self, n: int, timeout: float) -> bool:
        """Wait until the child has reported ``n`` saves (or ended)."""
        with self.progress:
            return self.progress.wait_for(lambda: len(self.saved) >= n or self.ended, timeout)


def reference_states():
    """The uninterrupted run's state after each step, from the documented data order
    (batch ``s % E`` of ``epoch_permutation(data_key, n, s // E)``) and the jitted step."""
    trainer = make_trainer()
    data = toy_data()
    state = trainer.init(jax.random.key(0))
    per_epoch = len(data) // BATCH
    states = [state]
    for step in range(TOTAL):
        epoch, b = divmod(step, per_epoch)
        idx = epoch_permutation(state.shuffle_key(), len(data), epoch)[b * BATCH : (b + 1) * BATCH]
        state, _ = trainer.train_step(state, data.x[idx], data.y[idx])
        states.append(state)
    return states


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigkill_at_random_moments_always_resumes(tmp_path):
    directory = str(tmp_path / "ckpt")
    cache = str(tmp_path / "jax_cache")
    rng = random.Random(20240611)
    ref = reference_states()
    template = ref[0]
    killed_at: list[int] = []
    for _ in range(KILLS):
        child = Child(directory, cache)
        # Let it make 1-3 saves, then kill it at a random moment of the next step or save
        # (a step plus a save takes a few tens of milliseconds).
        assert child.wait_for_saves(rng.randint(1, 3), timeout=300), "the training child never saved"
        time.sleep(rng.uniform(0.0, 0.08))
        with child.progress:
            seen = list(child.saved)  # saves the child reported before the kill
        os.kill(child.proc.pid, signal.SIGKILL)
        child.proc.wait(timeout=60)
        child.reader.join(timeout=10)
        if child.proc.returncode == 0:
            break
        assert seen, "killed before any save was reported"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no corrupt checkpoint, no fall-back needed
            state, meta = Checkpointer(directory).restore_latest(template)
        step = int(state.step)
        assert step >= seen[-1], f"checkpoint {step} is older than the last reported save {seen[-1]}"
        assert meta["step"] == step
        assert_same(state, ref[step])
        killed_at.append(step)
    assert len(killed_at) >= 3, f"the child finished too soon to be killed several times: {killed_at}"
    assert killed_at == sorted(killed_at), "a resumed run went backwards"
    final = Child(directory, cache)
    assert final.proc.wait(timeout=300) == 0
    final.reader.join(timeout=10)
    state, meta = Checkpointer(directory).restore_latest(template)
    assert int(state.step) == TOTAL
    assert_same(state, ref[TOTAL])
    # The history survives the kills too: equal to the uninterrupted run's.
    _, history = make_trainer().fit(template, toy_data(), batch_size=BATCH, steps=TOTAL, progress=False)
    assert meta["history"] == history
