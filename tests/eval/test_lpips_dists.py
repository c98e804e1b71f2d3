"""LPIPS (AlexNet, VGG) and DISTS: the JAX ports against plain-torch references with the same
weights (random ones without the cache, the shipped ones with it), and against OSEDiff's log."""

from __future__ import annotations

import numpy as np
import pytest

from adcsr_jax.eval.dists import DISTS, dists_distance
from adcsr_jax.eval.lpips import LPIPS, lpips_distance

torch = pytest.importorskip("torch")
from adcsr_jax.testing.torch_metrics import random_params as _random_params  # noqa: E402
from adcsr_jax.testing.torch_metrics import torch_dists, torch_lpips  # noqa: E402


def _images(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hr = rng.uniform(0, 1, (2, size, size, 3)).astype(np.float32)
    sr = np.clip(hr + rng.normal(0, 0.1, hr.shape), 0, 1).astype(np.float32)
    return sr, hr


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_torch_with_random_weights(net: str) -> None:
    params = _random_params(net, seed=1)
    sr, hr = _images(2, size=64 if net == "alex" else 32)
    got = np.asarray(lpips_distance(params, sr, hr, net))
    for contiguous in (False, True):  # both torch input layouts that bench_eval times
        with torch.no_grad():
            want = torch_lpips(params, sr, hr, net, contiguous)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_dists_matches_torch_with_random_weights() -> None:
    params = _random_params("vgg", seed=3, dists=True)
    sr, hr = _images(4, size=32)
    got = np.asarray(dists_distance(params, sr, hr))
    for contiguous in (False, True):
        with torch.no_grad():
            want = torch_dists(params, sr, hr, contiguous)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_lpips_is_zero_for_identical_images_and_differentiable() -> None:
    import jax

    params = _random_params("alex", seed=5)
    sr, hr = _images(6, size=64)
    assert np.allclose(lpips_distance(params, hr, hr, "alex"), 0.0, atol=1e-7)
    grad = jax.grad(lambda x: lpips_distance(params, x, hr, "alex").sum())(sr)
    assert grad.shape == sr.shape and np.isfinite(grad).all() and np.abs(grad).max() > 0


def test_shipped_weights_match_torch_on_real_images(metric_cache, golden10) -> None:
    from adcsr_jax.weights.metrics import load_weights

    _, sr, hr = golden10
    sr, hr = sr[:2, :128, :128], hr[:2, :128, :128]
    for net in ("alex", "vgg"):
        params = load_weights(f"lpips_{net}", metric_cache)
        with torch.no_grad():
            want = torch_lpips(params, sr, hr, net)
        np.testing.assert_allclose(LPIPS(params, net=net)(sr, hr), want, rtol=1e-4, atol=1e-6)
    params = load_weights("dists", metric_cache)
    with torch.no_grad():
        want = torch_dists(params, sr, hr)
    np.testing.assert_allclose(DISTS(params)(sr, hr), want, atol=1e-5)


def test_golden_lpips_dists_on_ten_realsr_images(metric_cache, golden10, osediff_log) -> None:
    from adcsr_jax.eval import get_metric

    names, sr, hr = golden10
    log, _ = osediff_log
    for metric in ("lpips", "dists"):
        fn = get_metric(metric, weights_dir=metric_cache)
        got = np.concatenate([fn(sr[i : i + 5], hr[i : i + 5]) for i in (0, 5)])
        want = np.array([log[n][metric] for n in names])
        np.testing.assert_allclose(got, want, atol=1e-3, err_msg=metric)
