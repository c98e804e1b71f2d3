"""``resize`` against ``torch.nn.functional.interpolate`` (align_corners=False, no antialias)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adcsr_jax.resize import MODES, apply_resize, resize, resize_matrix

RNG = np.random.default_rng(0)
X = RNG.random((2, 3, 37, 53)).astype(np.float32)


def _torch(x, **kw):
    return F.interpolate(torch.from_numpy(x), **kw).numpy()


def _ours(x, **kw):
    return np.asarray(resize(x.transpose(0, 2, 3, 1), **kw)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [0.15, 0.3, 0.5, 0.77, 1.0, 1.2, 1.5, 2.0])
def test_scale_factor_matches_torch(mode, scale):
    ref = _torch(X, scale_factor=scale, mode=mode)
    out = _ours(X, scale_factor=scale, mode=mode)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [(10, 20), (128, 128), (37, 53), (64, 31), (9, 106)])
def test_size_matches_torch(mode, size):
    ref = _torch(X, size=size, mode=mode)
    out = _ours(X, size=size, mode=mode)
    assert np.abs(out - ref).max() <= 1e-5


def test_scale_factor_uses_the_factor_not_the_size_ratio():
    # floor(37 * 0.77) = 28, but the coordinate map uses 1/0.77, not 37/28: results differ.
    by_factor = _ours(X, scale_factor=0.77, mode="bilinear")
    by_size = _ours(X, size=(28, 40), mode="bilinear")
    assert by_factor.shape == by_size.shape
    assert np.abs(by_factor - by_size).max() > 1e-3


@pytest.mark.parametrize("mode", MODES)
def test_padded_matrices_give_the_same_valid_region(mode):
    x = X.transpose(0, 2, 3, 1)
    ref = np.asarray(resize(x, size=(20, 30), mode=mode))
    mh = resize_matrix(37, 20, mode, pad_in=48, pad_out=32)
    mw = resize_matrix(53, 30, mode, pad_in=64, pad_out=32)
    padded = np.pad(x, ((0, 0), (0, 11), (0, 11), (0, 0)), constant_values=7.0)
    out = np.asarray(apply_resize(padded, mh, mw))
    np.testing.assert_allclose(out[:, :20, :30], ref, atol=1e-6)
    assert np.all(out[:, 20:] == 0) and np.all(out[:, :, 30:] == 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        resize_matrix(4, 2, "nearest")
    with pytest.raises(ValueError, match="exactly one"):
        resize(X.transpose(0, 2, 3, 1), size=4, scale_factor=2.0)
