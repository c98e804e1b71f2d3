"""FID between two image folders, as pyiqa's ``fid(dir1, dir2)`` in its default "clean" mode.

Per image: PIL RGB uint8 -> each channel resized to 299x299 by PIL bicubic in float mode 'F',
clipped to [0, 255] -> (x - 128) / 128 -> FID InceptionV3 pool3 (2048-d, JAX port). Per folder:
float64 mean and covariance (``np.cov``, rowvar=False). Distance: the Sutherland-stable Frechet
formula with ``scipy.linalg.sqrtm(sigma1 @ sigma2)`` (+1e-6 I on both if the root is not
finite), real part of the root; an imaginary diagonal above 1e-3 is an error, as in pyiqa.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from adcsr_jax.image_io import list_images
from adcsr_jax.models.inception import inception_features, prepare_params

FID_SIZE = 299


def clean_resize(rgb_uint8: np.ndarray, size: int = FID_SIZE) -> np.ndarray:
    """clean-fid / pyiqa "clean" resize of an HWC uint8 image -> (size, size, 3) float32 in [0, 255]."""
    if rgb_uint8.dtype != np.uint8 or rgb_uint8.ndim != 3 or rgb_uint8.shape[-1] != 3:
        raise ValueError(
            f"expected an HWC uint8 RGB image, got {rgb_uint8.dtype} {rgb_uint8.shape}"
        )
    channels = []
    for c in range(3):
        img = Image.fromarray(rgb_uint8[:, :, c].astype(np.float32), mode="F")
        img = img.resize((size, size), resample=Image.BICUBIC)
        channels.append(np.asarray(img).clip(0, 255))
    return np.stack(channels, axis=-1).astype(np.float32)


def load_for_fid(path: str | Path) -> np.ndarray:
    """Read an image file as pyiqa's FID dataset does and resize it: (299, 299, 3) float32."""
    with Image.open(path) as img:
        return clean_resize(np.asarray(img.convert("RGB")))


@jax.jit
def _features(params: dict, batch: jnp.ndarray) -> jnp.ndarray:
    return inception_features(params, (batch - 128.0) / 128.0)


class FIDExtractor:
    """Inception pool3 features for batches of clean-resized images (N, 299, 299, 3) in [0, 255]."""

    def __init__(self, weights_dir: str | Path | None = None, batch_size: int = 10) -> None:
        from adcsr_jax.weights.metrics import load_weights

        self.params = prepare_params(load_weights("fid_inception", weights_dir))
        self.batch_size = batch_size

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, 299, 299, 3) -> (N, 2048) float32; pads to the fixed batch size to compile once."""
        batch = np.asarray(batch, np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (FID_SIZE, FID_SIZE, 3):
            raise ValueError(f"FID batches must be (N, 299, 299, 3), got {batch.shape}")
        out = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start : start + self.batch_size]
            n = len(chunk)
            if n < self.batch_size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch_size - n, 0)])
            out.append(np.asarray(_features(self.params, jnp.asarray(chunk)))[:n])
        return np.concatenate(out) if out else np.zeros((0, 2048), np.float32)

    def files(
        self, paths: Sequence[Path], progress: Callable[[Iterable], Iterable] | None = None
    ) -> np.ndarray:
        """Features of image files, ``batch_size`` at a time (``progress`` wraps the batch loop)."""
        starts = range(0, len(paths), self.batch_size)
        feats = []
        for start in progress(starts) if progress else starts:
            chunk = paths[start : start + self.batch_size]
            feats.append(self(np.stack([load_for_fid(p) for p in chunk])))
        return np.concatenate(feats)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 mean and unbiased covariance of (N, D) features."""
    if len(features) < 2:
        raise ValueError(f"FID needs at least 2 images per folder, got {len(features)}")
    feats = np.asarray(features, np.float64)
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    from scipy import linalg

    root = linalg.sqrtm(a)
    return root[0] if isinstance(root, tuple) else root


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)) with pyiqa's (clean-fid's) safeguards."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"statistics differ in shape: {mu1.shape}/{mu2.shape}, {sigma1.shape}/{sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID between two feature sets."""
    return frechet_distance(*statistics(feats1), *statistics(feats2))


def fid_folders(
    dir1: str | Path,
    dir2: str | Path,
    weights_dir: str | Path | None = None,
    batch_size: int = 10,
    extractor: FIDExtractor | None = None,
) -> float:
    """FID between every image of ``dir1`` and every image of ``dir2`` (pyiqa ``fid(dir1, dir2)``)."""
    extractor = extractor or FIDExtractor(weights_dir, batch_size)
    return fid_from_features(extractor.files(list_images(dir1)), extractor.files(list_images(dir2)))
