"""Training history: one flat record per epoch, written as JSON or CSV."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["write_history"]


def write_history(history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write a metrics history (a list of flat dicts) as ``.json`` or ``.csv`` (by extension).

    CSV columns are the union of the records' keys, in order of appearance.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "history.csv")
    >>> write_history([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}], path)
    >>> print(open(path).read().strip())
    epoch,loss
    1,0.5
    2,0.25
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        with open(path, "w") as f:
            json.dump(list(history), f, indent=1)
    elif ext == ".csv":
        fields: list[str] = []
        for rec in history:
            fields += [k for k in rec if k not in fields]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(history)
    else:
        raise ValueError(f"jaxdrop.training.write_history: {path!r} must end in .json or .csv.")
