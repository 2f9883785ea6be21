"""DropBlock: the dropped set is a union of whole blocks, the realised drop fraction, scaling, layouts.

Tolerances: realised fractions are compared with their exact expectation (computed
from gamma and the number of block positions covering each element) within four
standard errors, estimated from the spread of the per-(sample, channel) fractions,
which are independent.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from helpers import SIGMA, within_binomial
from numpy.lib.stride_tricks import sliding_window_view

import jaxdrop

KEY = jax.random.key(0)


def ones(shape) -> np.ndarray:
    return np.ones(shape, np.float32)


def union_of_full_blocks(dropped: np.ndarray, block: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """The union of every block (of `block` sizes along `axes`) that lies inside the map and is fully dropped."""
    k = len(axes)
    last = tuple(range(-k, 0))
    d = np.moveaxis(dropped, axes, last)
    full = sliding_window_view(d, block, axis=last).all(axis=tuple(range(-k, 0)))
    padded = np.pad(full, [(0, 0)] * (full.ndim - k) + [(b - 1, b - 1) for b in block])
    cover = sliding_window_view(padded, block, axis=last).any(axis=tuple(range(-k, 0)))
    return np.moveaxis(cover, last, axes)


def coverage(size: int, block: int) -> np.ndarray:
    """How many valid block positions (corners s in [0, size - block]) cover each index."""
    i = np.arange(size)
    return np.minimum(i, size - block) - np.maximum(0, i - block + 1) + 1


def expected_fraction(rate: float, size: int, block: int) -> float:
    """Exact expected drop fraction of a size x size map: mean of 1 - (1 - gamma)^n(i, j)."""
    b = min(block, size)
    gamma = jaxdrop.dropblock_gamma(rate, (size, size), block)
    n = np.outer(coverage(size, b), coverage(size, b))
    return float(np.mean(1 - (1 - gamma) ** n))


def test_dropped_set_is_a_union_of_whole_blocks_per_channel():
    rate, bs = 0.3, 5
    y = np.asarray(jaxdrop.dropblock(KEY, ones((4, 20, 20, 8)), rate, block_size=bs))
    dropped = y == 0
    assert dropped.any() and not dropped.all()
    np.testing.assert_array_equal(union_of_full_blocks(dropped, (bs, bs), (1, 2)), dropped)
    # The check can fail: an element-wise dropout mask is not a union of 5x5 squares.
    iid = np.asarray(jaxdrop.keep_mask(KEY, (4, 20, 20, 8), 0.3)) == 0
    assert not (union_of_full_blocks(iid, (bs, bs), (1, 2)) == iid).all()
    # Blocks are drawn per (sample, channel): the maps differ across both.
    maps = dropped.transpose(0, 3, 1, 2).reshape(32, -1)
    assert len({m.tobytes() for m in maps}) == 32


@pytest.mark.parametrize(
    ("shape", "kw", "block", "axes"),
    [
        ((4, 8, 18, 18), {"channel_axis": 1, "block_size": 4}, (4, 4), (2, 3)),  # NCHW, even block
        ((18, 18, 6), {"batch_axis": None, "block_size": 3}, (3, 3), (0, 1)),  # unbatched HWC
        ((2, 10, 10, 10, 4), {"block_size": 3}, (3, 3, 3), (1, 2, 3)),  # 3-D, cubes
        ((8, 5, 16, 6), {"block_size": 7}, (5, 7), (1, 2)),  # block clipped to the 5-row map
    ],
    ids=["nchw-even", "unbatched", "3d", "clipped"],
)
def test_layouts_even_sizes_3d_and_clipping(shape, kw, block, axes):
    dropped = np.asarray(jaxdrop.dropblock(KEY, ones(shape), 0.3, **kw)) == 0
    assert dropped.any() and not dropped.all()
    np.testing.assert_array_equal(union_of_full_blocks(dropped, block, axes), dropped)


def test_expected_fraction_matches_the_reference_simulation():
    # Valid-centre rule, rate 0.1, block 7: the reference notes (section 5) simulated
    # 0.094, 0.091, 0.092 and 0.103, with Monte-Carlo noise of a few thousandths (the
    # 7x7 case is exactly 0.1: one valid position, gamma = rate, whole-map drops).
    for size, reference in ((56, 0.094), (28, 0.091), (14, 0.092), (7, 0.103)):
        assert abs(expected_fraction(0.1, size, 7) - reference) < 0.005
    assert math.isclose(expected_fraction(0.1, 7, 7), 0.1)
    # ... below the target, unlike seeding everywhere (0.112 to 0.932 in the same table).
    assert all(0.09 < expected_fraction(0.1, s, 7) < 0.1 for s in (56, 28, 14))


@pytest.mark.parametrize(("size", "bs", "rate"), [(56, 7, 0.1), (14, 7, 0.1), (32, 3, 0.3), (16, 1, 0.2)])
def test_realised_drop_fraction(size, bs, rate):
    n, c = 4, 4096 // size
    y = np.asarray(jaxdrop.dropblock(KEY, ones((n, size, size, c)), rate, block_size=bs))
    per_map = (y == 0).mean(axis=(1, 2)).ravel()  # independent across (sample, channel)
    expected = expected_fraction(rate, size, bs)
    se = per_map.std(ddof=1) / math.sqrt(per_map.size)
    assert abs(per_map.mean() - expected) <= SIGMA * se, (per_map.mean(), expected, se)
    # Overlapping blocks drop a little less than `rate` (block_size 1 is exactly dropout).
    assert expected <= rate + 1e-12
    if bs == 1:
        assert math.isclose(expected, rate)


def test_whole_map_drops_when_the_block_covers_the_map():
    rate = 0.3
    y = np.asarray(jaxdrop.dropblock(KEY, ones((64, 5, 5, 32)), rate, block_size=7))
    dropped = y == 0
    assert (dropped == dropped[:, :1, :1, :]).all(), "a map was partly dropped"
    frac, n = dropped[:, 0, 0, :].mean(), 64 * 32
    assert within_binomial(frac, rate, n)


def test_per_sample_count_ratio_rescaling():
    eps = 1e-6
    x = np.random.default_rng(1).uniform(1.0, 2.0, (6, 12, 12, 5)).astype(np.float32)
    y = np.asarray(jaxdrop.dropblock(KEY, x, 0.2, block_size=3, eps=eps))
    keep = y != 0
    numel = 12 * 12 * 5
    count = keep.sum(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, np.where(keep, x * numel / (eps + count), 0), rtol=1e-6)
    # Equivalently: every sample of ones keeps its total.
    ones_out = np.asarray(jaxdrop.dropblock(KEY, ones(x.shape), 0.2, block_size=3, eps=eps), np.float64)
    np.testing.assert_allclose(ones_out.sum(axis=(1, 2, 3)), numel, rtol=1e-5)
    # dropblock_mask is the mask dropblock uses.
    np.testing.assert_array_equal(jaxdrop.dropblock_mask(KEY, x.shape, 0.2, block_size=3), keep)


def test_gamma_formula():
    # The paper's square-map form: (1 - keep_prob) / bs^2 * f^2 / (f - bs + 1)^2.
    for f, bs, rate in ((56, 7, 0.1), (14, 3, 0.25), (9, 9, 0.5), (8, 2, 0.3)):
        paper = rate / bs**2 * f**2 / (f - bs + 1) ** 2
        assert math.isclose(jaxdrop.dropblock_gamma(rate, (f, f), bs), paper, rel_tol=1e-12)
    assert math.isclose(jaxdrop.dropblock_gamma(0.2, (10, 12, 14), 3), 0.2 * 10 * 12 * 14 / (27 * 8 * 10 * 12))
    assert jaxdrop.dropblock_gamma(0.4, (3, 5), 7) == 0.4  # clipped: one position, gamma = rate


def test_bad_layouts_and_arguments():
    x4 = ones((2, 8, 8, 3))
    with pytest.raises(ValueError, match="2 or 3 of them"):
        jaxdrop.dropblock(KEY, ones((8, 3)), 0.1)
    with pytest.raises(ValueError, match="leaves 1 spatial"):
        jaxdrop.dropblock(KEY, ones((2, 8, 3)), 0.1)
    with pytest.raises(ValueError, match="leaves 4 spatial"):
        jaxdrop.dropblock(KEY, ones((2, 4, 4, 4, 4, 3)), 0.1)
    with pytest.raises(ValueError, match="block_size"):
        jaxdrop.dropblock(KEY, x4, 0.1, block_size=0)
    with pytest.raises(TypeError, match="block_size"):
        jaxdrop.dropblock(KEY, x4, 0.1, block_size=2.5)
    with pytest.raises(TypeError, match="block_size"):
        jaxdrop.dropblock(KEY, x4, 0.1, block_size=True)
    with pytest.raises(ValueError, match="eps"):
        jaxdrop.dropblock(KEY, x4, 0.1, eps=-1.0)
    with pytest.raises(ValueError, match="same axis"):
        jaxdrop.dropblock(KEY, x4, 0.1, channel_axis=0)
    with pytest.raises(TypeError, match=r"dropblock_mask\(key, shape, rate\)"):
        jaxdrop.dropblock_mask((2, 8, 8, 3), KEY, 0.1)
    assert jaxdrop.dropblock(KEY, ones((0, 8, 8, 3)), 0.5).shape == (0, 8, 8, 3)
