"""Representative LR images for W8A16 calibration and for checking exports.

From a folder of images (e.g. ``../shared/data/realsr/test_LR``), from the training data
pipeline (:func:`from_pipeline`: HR crops degraded to LR, as stage 2 sees them) or from any
iterable of ``(H, W, 3)`` / ``(1, H, W, 3)`` arrays in [0, 1].
Each image is centre-cropped (or edge-padded) to ``size`` x ``size``, as the exported graph has a
fixed spatial size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def fit(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop or edge-pad an ``(H, W, C)`` image to ``(1, size, size, C)`` float32."""
    image = np.asarray(image, np.float32)
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    out = image
    for axis in (0, 1):
        n = out.shape[axis]
        if n > size:
            start = (n - size) // 2
            out = np.take(out, np.arange(start, start + size), axis=axis)
        elif n < size:
            pad = [(0, 0)] * 3
            pad[axis] = ((size - n) // 2, size - n - (size - n) // 2)
            out = np.pad(out, pad, mode="edge")
    return out[None]


def from_arrays(images: Iterable[np.ndarray], size: int, count: int) -> list[np.ndarray]:
    """Up to ``count`` images from an iterable (batches are split), fitted to ``size``."""
    out: list[np.ndarray] = []
    for item in images:
        arr = np.asarray(item, np.float32)
        for image in arr if arr.ndim == 4 else arr[None]:
            out.append(fit(image, size))
            if len(out) >= count:
                return out
    if not out:
        raise ValueError("no calibration images")
    return out


def from_folder(folder: str | Path, size: int, count: int, offset: int = 0) -> list[np.ndarray]:
    """``count`` images of ``folder`` (sorted, starting at ``offset``) in [0, 1], fitted to ``size``."""
    from adcsr_jax.image_io import list_images, read_image

    files = list_images(folder)
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    chosen = files[offset : offset + count]
    if not chosen:
        raise ValueError(f"{folder} has {len(files)} images; offset {offset} leaves none")
    return [fit(read_image(f), size) for f in chosen]


def from_pipeline(
    source: str | Path,
    size: int,
    count: int,
    degradation: Any = "adcsr",
    seed: int = 0,
    batch_size: int = 4,
) -> list[np.ndarray]:
    """``count`` LR images of ``size`` x ``size`` drawn from the training data pipeline.

    ``source``: a folder of HR images or ``tfds:<data_dir>[:<name>]`` (as for training);
    ``degradation``: a preset name of ``adcsr_jax.data.degradations`` or a
    ``DegradationConfig``. The pipeline crops ``scale * size`` HR windows and degrades them to
    ``size`` LR (no pair pool, one host), deterministically for ``seed``.
    """
    from adcsr_jax.data import degradations
    from adcsr_jax.data.pipeline import DataIterator, PipelineConfig

    config = degradations.get_preset(degradation) if isinstance(degradation, str) else degradation
    pipe = PipelineConfig(
        batch_size=batch_size,
        crop=config.scale * size,
        seed=seed,
        pool_size=0,
        prefetch=0,
        output_dtype="float32",
    )
    it = DataIterator(str(source), pipe, process_index=0, process_count=1, degradation=config)
    try:
        batches = (next(it)["lr"] for _ in range(-(-count // batch_size)))
        return from_arrays(batches, size, count)
    finally:
        it.close()


def augment(images: Sequence[np.ndarray], noise: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Widen a calibration set: each image, its horizontal and vertical flips, and ``noise``
    uniform-noise images (the highest-variance input there is).

    Calibration fixes every int16 tensor's range to the min/max it sees; statistics tensors
    (GroupNorm variances, the colour fix's std) see few values per image, so unseen images
    easily fall outside and get clipped. Flips and noise images widen those ranges.
    """
    out: list[np.ndarray] = []
    for image in images:
        out += [image, image[:, :, ::-1], image[:, ::-1, :]]
    if images:
        rng = np.random.default_rng(seed)
        shape = np.shape(images[0])
        out += [rng.uniform(0.0, 1.0, shape).astype(np.float32) for _ in range(noise)]
    return [np.ascontiguousarray(x, np.float32) for x in out]
