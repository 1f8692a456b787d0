"""Approximate rank pooling: coefficients, still clips, time reversal, windows."""

import numpy as np
import pytest

from emonas_edge.data.dynamic_image import (
    dynamic_image,
    rank_pool,
    rank_pool_coefficients,
    select_span,
    to_uint8,
    window_indices,
)


def direct_alpha(T: int) -> np.ndarray:
    """Bilen et al.'s formula written out term by term, with explicit harmonic sums."""
    out = []
    for t in range(1, T + 1):
        h_T = sum(1.0 / i for i in range(1, T + 1))
        h_prev = sum(1.0 / i for i in range(1, t))  # H_{t-1}, H_0 = 0
        out.append(2 * (T - t + 1) - (T + 1) * (h_T - h_prev))
    return np.array(out)


@pytest.mark.parametrize("T", [1, 2, 3, 5, 8, 16, 31, 64])
def test_coefficients_match_direct_sum_and_sum_to_zero(T):
    a = rank_pool_coefficients(T)
    np.testing.assert_allclose(a, direct_alpha(T), rtol=1e-12, atol=1e-12)
    assert abs(a.sum()) < 1e-9
    if T >= 2:
        assert a[0] < 0 < a[-1] or T == 2  # early frames weigh negative, late ones positive
        assert a[-1] > 0


def test_pooling_equals_weighted_sum():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(7, 12, 10, 3)).astype(np.uint8)
    a = direct_alpha(7)
    expected = sum(a[t] * frames[t].astype(np.float64) for t in range(7))
    np.testing.assert_allclose(rank_pool(frames), expected, rtol=1e-4, atol=1e-2)


def test_still_clip_is_flat():
    frame = np.random.default_rng(1).integers(0, 256, size=(16, 16, 3)).astype(np.uint8)
    clip = np.repeat(frame[None], 9, axis=0)
    pooled = rank_pool(clip)
    assert np.abs(pooled).max() < 1e-2 * 255
    di = dynamic_image(clip)
    assert di.dtype == np.uint8 and di.shape == frame.shape
    assert di.min() == di.max()  # flat


@pytest.mark.parametrize("T", [2, 5, 12])
def test_time_reversal_negates_pooled_result_for_linear_motion(T):
    # For clips whose pixels change linearly in time (the first-order motion rank pooling
    # captures), reversing the frame order negates the pooled image exactly because the
    # coefficients sum to zero. (For arbitrary clips Bilen's coefficients are not antisymmetric,
    # so reversal only approximately negates: checked below as strongly anti-correlated.)
    rng = np.random.default_rng(T)
    base = rng.normal(size=(8, 8, 3))
    slope = rng.normal(size=(8, 8, 3))
    clip = np.stack([base + slope * t for t in range(T)])
    np.testing.assert_allclose(rank_pool(clip[::-1]), -rank_pool(clip), rtol=1e-4, atol=1e-3)


def test_brightening_pools_positive_darkening_negative():
    ramp = np.stack([np.full((6, 6), 10.0 * t) for t in range(8)])
    assert (rank_pool(ramp) > 0).all()
    assert (rank_pool(ramp[::-1]) < 0).all()


def test_uint8_normalisation_is_per_channel_min_max():
    pooled = np.stack([np.linspace(-5, 5, 64).reshape(8, 8), np.linspace(0, 100, 64).reshape(8, 8)], axis=-1)
    out = to_uint8(pooled)
    for c in range(2):
        assert out[..., c].min() == 0 and out[..., c].max() == 255


def test_windows_and_spans():
    assert window_indices(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    assert window_indices(11, 4, 3) == [(0, 4), (3, 7), (6, 10), (7, 11)]
    assert window_indices(3, 8, 2) == [(0, 3)]
    assert select_span(10, 20, 40) == (10, 40)
    first, last = select_span(10, 20, 40, "apex", 11)
    assert (first, last) == (15, 25)
    assert select_span(10, 12, 40, "apex", 11) == (10, 20)  # clipped at onset, still 11 frames
    with pytest.raises(ValueError):
        select_span(30, None, 20)
