"""The bundled sample photos: the train / held-out split and the degraded held-out pairs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("skimage")

from adcsr_jax.data.sample_set import (  # noqa: E402
    HELD_OUT,
    SAMPLE_NAMES,
    sample_pairs,
    write_degraded_pairs,
    write_sample_images,
)


def test_splits_partition_the_photos(tmp_path):
    train = {p.stem for p in write_sample_images(tmp_path / "train", "train")}
    val = {p.stem for p in write_sample_images(tmp_path / "val", "val")}
    assert val == set(HELD_OUT) and not train & val and train | val == set(SAMPLE_NAMES)
    with pytest.raises(ValueError, match="'all', 'train' or 'val'"):
        write_sample_images(tmp_path / "x", "test")


def test_degraded_pairs_are_deterministic_centre_crops(tmp_path):
    lr_dir, hr_dir = sample_pairs(tmp_path / "a", crop=64)
    assert sorted(p.stem for p in lr_dir.iterdir()) == sorted(HELD_OUT)
    for name in HELD_OUT:
        hr = np.asarray(Image.open(hr_dir / f"{name}.png"))
        lr = np.asarray(Image.open(lr_dir / f"{name}.png"))
        assert hr.shape == (64, 64, 3) and lr.shape == (16, 16, 3) and lr.dtype == np.uint8
        # degraded: not a plain box downscale of the HR crop
        box = hr.reshape(16, 4, 16, 4, 3).mean((1, 3))
        assert np.abs(lr.astype(np.float64) - box).mean() > 1.0
    again, _ = sample_pairs(tmp_path / "b", crop=64)
    for name in HELD_OUT:
        np.testing.assert_array_equal(
            np.asarray(Image.open(again / f"{name}.png")),
            np.asarray(Image.open(lr_dir / f"{name}.png")),
        )
    stamp = (lr_dir / f"{HELD_OUT[0]}.png").stat().st_mtime_ns
    sample_pairs(tmp_path / "a", crop=64)  # already there: nothing rewritten
    assert (lr_dir / f"{HELD_OUT[0]}.png").stat().st_mtime_ns == stamp


def test_degraded_pairs_reject_bad_crops(tmp_path):
    img = {"x": np.zeros((40, 40, 3), np.uint8)}
    with pytest.raises(ValueError, match="multiple of 16"):
        write_degraded_pairs(img, tmp_path, 24)
    with pytest.raises(ValueError, match="smaller than the pair crop 48"):
        write_degraded_pairs(img, tmp_path, 48)
