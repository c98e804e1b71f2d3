"""PSNR and SSIM: pyiqa's Y-channel conventions, against an independent float64 numpy reference
and against OSEDiff's pyiqa log."""

from __future__ import annotations

import numpy as np
import pytest

from adcsr_jax.eval import get_metric
from adcsr_jax.testing.realsr import load_realsr


def _y_ycbcr(x: np.ndarray) -> np.ndarray:
    return (x @ np.array([65.481, 128.553, 24.966]) + 16.0) / 255.0


def _ssim_reference(x: np.ndarray, y: np.ndarray, relu: bool = True) -> float:
    """Plain float64 SSIM on rounded Y (2-D window, scipy correlate, 'valid' crop)."""
    from scipy.ndimage import correlate

    r = np.arange(11) - 5.0
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    g /= g.sum()
    a = np.round(_y_ycbcr(x.astype(np.float64)) * 255)
    b = np.round(_y_ycbcr(y.astype(np.float64)) * 255)

    def f(z: np.ndarray) -> np.ndarray:
        return correlate(z, g, mode="constant")[5:-5, 5:-5]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = f(a), f(b)
    s1, s2, s12 = f(a * a) - mu1**2, f(b * b) - mu2**2, f(a * b) - mu1 * mu2
    cs = (2 * s12 + c2) / (s1 + s2 + c2)
    if relu:
        cs = np.maximum(cs, 0)
    return float(np.mean((2 * mu1 * mu2 + c1) / (mu1**2 + mu2**2 + c1) * cs))


def _random_pair(seed: int, shape=(2, 40, 48, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, shape).astype(np.float32) / 255
    noise = rng.normal(0, 0.1, shape)
    sr = (np.clip(np.round((hr + noise) * 255), 0, 255) / 255).astype(np.float32)
    return sr, hr


def test_psnr_matches_numpy_float64() -> None:
    sr, hr = _random_pair(0)
    got = get_metric("psnr")(sr, hr)
    mse = np.mean(
        (_y_ycbcr(sr.astype(np.float64)) - _y_ycbcr(hr.astype(np.float64))) ** 2, axis=(1, 2)
    )
    np.testing.assert_allclose(got, 10 * np.log10(1 / (mse + 1e-8)), atol=1e-5)


def test_ssim_matches_numpy_reference_and_needs_the_relu() -> None:
    sr, hr = _random_pair(1)
    sr[1] = 1.0 - hr[1]  # anti-correlated image: negative cs values, where the ReLU matters
    got = get_metric("ssim")(sr, hr)
    want = [_ssim_reference(sr[i], hr[i]) for i in range(2)]
    np.testing.assert_allclose(got, want, atol=1e-8)
    assert abs(_ssim_reference(sr[1], hr[1], relu=False) - want[1]) > 1e-3


def test_identical_images_score_perfectly() -> None:
    _, hr = _random_pair(2)
    assert np.allclose(get_metric("ssim")(hr, hr), 1.0)
    assert np.all(get_metric("psnr")(hr, hr) > 79.9)  # 10 log10(1 / 1e-8)


def test_bad_input_is_rejected() -> None:
    sr, hr = _random_pair(3)
    with pytest.raises(ValueError, match="same shape"):
        get_metric("psnr")(sr, hr[:, :-1])
    with pytest.raises(ValueError, match="NHWC RGB"):
        get_metric("ssim")(sr[..., 0], hr[..., 0])
    with pytest.raises(ValueError, match="full-reference"):
        get_metric("psnr")(sr)


def test_golden_psnr_ssim_on_ten_realsr_images(golden10, osediff_log) -> None:
    names, sr, hr = golden10
    log, _ = osediff_log
    for metric in ("psnr", "ssim"):
        got = get_metric(metric)(sr, hr)
        want = np.array([log[n][metric] for n in names])
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=metric)


@pytest.mark.slow
def test_golden_psnr_ssim_all_realsr_and_averages(realsr, osediff_log) -> None:
    log, averages = osediff_log
    names, sr, hr = load_realsr(realsr, None)
    for metric in ("psnr", "ssim"):
        got = np.concatenate(
            [get_metric(metric)(sr[i : i + 10], hr[i : i + 10]) for i in range(0, 100, 10)]
        )
        want = np.array([log[n][metric] for n in names])
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=metric)
        assert abs(got.mean() - averages[metric]) <= 5e-5 + 1e-5, metric
