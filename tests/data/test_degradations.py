"""The second-order degradation: bucketed programs equal the plain chain of single steps,
determinism, shapes and value range per preset, and a bounded number of compilations."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from adcsr_jax.data import degradations as D
from adcsr_jax.data.jpeg import diff_jpeg
from adcsr_jax.data.ops import filter2d, quantize_8bit
from adcsr_jax.resize import resize


@pytest.fixture(scope="module")
def gt64() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    imgs = [
        skimage_data.astronaut(),
        skimage_data.coffee(),
        skimage_data.chelsea(),
        skimage_data.rocket(),
    ]
    return np.stack([im[100:164, 100:164] for im in imgs])  # uint8 (4, 64, 64, 3)


def _plain_chain(cfg: D.DegradationConfig, gt: np.ndarray, p: dict, i: int) -> np.ndarray:
    """One sample through the reference order of operations, exact sizes, no buckets."""
    h = gt.shape[1]
    x = gt[i : i + 1].astype(np.float32) / 255
    x = filter2d(x, p["kernel1"][i])
    x = resize(x, scale_factor=p["scale1"][i], mode=p["mode1"][i])
    x = np.clip(np.asarray(x), 0, 1)  # noise is zero in this config
    x = diff_jpeg(x, p["q1"][i])
    if p["blur2"][i]:
        x = filter2d(x, p["kernel2"][i])
    x = resize(x, size=p["size2"][i], mode=p["mode2"][i])
    x = np.clip(np.asarray(x), 0, 1)
    lr = h // cfg.scale
    if p["sinc_first"][i]:
        x = filter2d(resize(x, size=(lr, lr), mode=p["mode3"][i]), p["sinc"][i])
        x = diff_jpeg(np.clip(np.asarray(x), 0, 1), p["q2"][i])
    else:
        x = diff_jpeg(x, p["q2"][i])
        x = filter2d(resize(x, size=(lr, lr), mode=p["mode3"][i]), p["sinc"][i])
    if cfg.resize_back:
        x = resize(x, size=(h, h), mode=p["mode4"][i])
    return np.asarray(quantize_8bit(x))[0]


def test_bucketed_programs_equal_the_plain_chain(gt64):
    cfg = D.get_preset(
        "adcsr",
        granularity="sample",  # every sample its own sizes, modes and order inside one bucket
        gaussian_noise_prob=1.0,
        gaussian_noise_prob2=1.0,
        noise_range=(0.0, 0.0),
        noise_range2=(0.0, 0.0),
        second_blur_prob=0.5,
        resize_back=True,
    )
    deg = D.Degrader(cfg)
    rng = np.random.default_rng(3)
    for _ in range(1):
        p = deg.sample(rng, 4, (64, 64))
        out = np.asarray(deg.apply(gt64, p, jax.random.key(0))["lr"])
        assert out.shape == (4, 64, 64, 3)
        for i in range(4):
            ref = _plain_chain(cfg, gt64, p, i)
            diff = np.abs(out[i] - ref)
            assert diff.max() <= 1 / 255 + 1e-6, (i, p["size1"][i], p["mode1"][i])
            assert diff.mean() < 2e-4


def test_adcsr_preset_small_crops_deterministic_and_8bit(gt64):
    cfg = D.get_preset("adcsr", resize_prob=(0.0, 0.0, 1.0), gaussian_noise_prob=0.5)
    deg = D.Degrader(cfg)
    runs = []
    for _ in range(2):
        out = deg(gt64, np.random.default_rng(7), jax.random.key(7))
        runs.append(np.asarray(out["lr"]))
    lr = runs[0]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert lr.shape == (4, 16, 16, 3) and lr.dtype == np.float32
    assert lr.min() >= 0 and lr.max() <= 1
    np.testing.assert_allclose(lr * 255, np.round(lr * 255), atol=1e-4)
    other = np.asarray(deg(gt64, np.random.default_rng(8), jax.random.key(8))["lr"])
    assert not np.array_equal(other, lr)
    # the LR resembles a 4x downscale of the GT (same content, not noise)
    small = np.asarray(resize(gt64.astype(np.float32) / 255, size=(16, 16), mode="area"))
    assert np.abs(lr - small).mean() < 0.12


def test_compilations_stay_bounded(gt64):
    cfg = D.get_preset(
        "adcsr",
        resize_range=(0.75, 1.0),
        resize_prob=(0.0, 0.9, 0.1),
        gaussian_noise_prob=1.0,
        gaussian_noise_prob2=1.0,
    )
    deg = D.Degrader(cfg)
    buckets = D.stage1_buckets(64, cfg.resize_range[1], cfg.resize_range[0])
    assert buckets == (48, 64)
    rng = np.random.default_rng(0)
    seen = set()
    for step in range(30):
        p = deg.sample(rng, 2, (64, 64))
        seen.add(p["size1"][0])
        jax.block_until_ready(deg.apply(gt64[:2], p, jax.random.key(step))["lr"])
    assert len(seen) > 6  # many distinct intermediate sizes ...
    assert deg.num_compilations() <= 2 * len(buckets)  # ... few programs


def test_buckets_cover_the_range():
    b = D.stage1_buckets(512, 1.5)
    assert b == (160, 256, 320, 384, 448, 512, 640, 768)
    assert D.stage1_buckets(512, 1.5, 0.3) == b  # 153 px still needs the 160 bucket
    assert D.stage1_buckets(512, 1.2, 0.6) == (320, 384, 448, 512, 624)
    assert all(x % 16 == 0 for x in b)


def test_presets_follow_the_spec_table():
    a, o, r = (D.get_preset(n) for n in ("adcsr", "osediff", "realesrgan"))
    assert a.blur_sigma == (0.2, 1.5) and a.second_blur_prob == 0.5 and a.jpeg_range2 == (60, 100)
    assert a.pool_size == 1200 and not a.usm_gt and not a.resize_back
    assert o.resize_range == (0.15, 1.5) and o.resize_back and o.pool_size == 0
    assert r.usm_gt and r.pool_size == 180 and r.noise_range == (1, 30)
    with pytest.raises(ValueError, match="unknown degradation preset"):
        D.get_preset("bsrgan")
    assert dataclasses.replace(a, scale=4) == a


@pytest.mark.slow
@pytest.mark.parametrize("preset,size", [("adcsr", 512), ("osediff", 512), ("realesrgan", 400)])
def test_full_size_presets(preset, size):
    skimage_data = pytest.importorskip("skimage.data")
    img = skimage_data.hubble_deep_field()
    gt = np.stack([img[i * 20 : i * 20 + size, i * 30 : i * 30 + size] for i in range(12)])
    deg = D.Degrader(preset)
    outs = [deg(gt, np.random.default_rng(s), jax.random.key(s)) for s in (0, 0, 1)]
    lr = np.asarray(outs[0]["lr"])
    expect = size if preset == "osediff" else size // 4
    assert lr.shape == (12, expect, expect, 3)
    assert lr.min() >= 0 and lr.max() <= 1 and np.isfinite(lr).all()
    np.testing.assert_allclose(lr * 255, np.round(lr * 255), atol=1e-4)
    np.testing.assert_array_equal(lr, np.asarray(outs[1]["lr"]))
    assert not np.array_equal(lr, np.asarray(outs[2]["lr"]))
    if preset == "realesrgan":
        assert outs[0]["gt_usm"].shape == gt.shape
