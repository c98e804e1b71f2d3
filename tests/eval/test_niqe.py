"""NIQE: the MATLAB bicubic resize matrix, input checks, and OSEDiff's pyiqa log."""

from __future__ import annotations

import numpy as np
import pytest

from adcsr_jax.eval.niqe import fspecial_gaussian
from adcsr_jax.resize import imresize_matrix


def test_imresize_half_reproduces_linear_ramps_inside_and_constants_everywhere() -> None:
    a = imresize_matrix(64, 32, 0.5).astype(np.float64)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-6)
    ramp = np.arange(64, dtype=np.float64)
    inner = slice(3, -3)  # away from the symmetric padding
    np.testing.assert_allclose((a @ ramp)[inner], (2 * np.arange(32) + 0.5)[inner], atol=1e-4)
    # antialiased cubic: 8 non-zero taps per output sample, symmetric around the centre
    row = a[10]
    nz = np.flatnonzero(row)
    assert len(nz) == 8 and np.allclose(row[nz], row[nz][::-1], atol=1e-7)


def test_fspecial_is_normalised_and_symmetric() -> None:
    w = fspecial_gaussian(7, 7 / 6)
    assert w.shape == (7, 7) and abs(w.sum() - 1) < 1e-6 and np.allclose(w, w.T)


def test_niqe_rejects_small_images(metric_cache) -> None:
    from adcsr_jax.eval import get_metric

    with pytest.raises(ValueError, match="at least 96x96"):
        get_metric("niqe", weights_dir=metric_cache)(np.zeros((1, 64, 200, 3), np.float32))


def test_golden_niqe_on_ten_realsr_images(metric_cache, golden10, osediff_log) -> None:
    from adcsr_jax.eval import get_metric

    names, sr, _ = golden10
    log, _ = osediff_log
    got = get_metric("niqe", weights_dir=metric_cache)(sr)
    want = np.array([log[n]["niqe"] for n in names])
    np.testing.assert_allclose(got, want, atol=0.02)
