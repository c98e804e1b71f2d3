"""A small offline HR set from scikit-image's photos, so demos and tests need no download.

``astronaut``, ``chelsea``, ``coffee``, ``rocket``, ``stereo_motorcycle`` (left and right views) and
``hubble_deep_field`` (CC0 / public domain per scikit-image's docstrings), 300..1000 px, written
as PNG. ``build_sample_dataset`` also prepares them as the ``hr_images`` TFDS dataset.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE_NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
)


def sample_images() -> dict[str, np.ndarray]:
    """The sample photos as ``(H, W, 3) uint8`` arrays (needs scikit-image)."""
    from skimage import data  # noqa: PLC0415 - optional dependency (extra "data")

    left, right, _ = data.stereo_motorcycle()
    return {
        "astronaut": data.astronaut(),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "motorcycle_left": left,
        "motorcycle_right": right,
        "hubble_deep_field": data.hubble_deep_field(),
    }


def write_sample_images(dest: str | os.PathLike) -> list[Path]:
    """Writes the sample photos as ``<dest>/<name>.png``; returns the paths."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, img in sample_images().items():
        path = dest / f"{name}.png"
        Image.fromarray(np.ascontiguousarray(img[..., :3])).save(path)
        paths.append(path)
    return paths


def build_sample_dataset(data_dir: str | os.PathLike, image_dir: str | os.PathLike | None = None):
    """Writes the photos (to ``image_dir`` or ``<data_dir>/sample_images``) and builds TFDS."""
    from adcsr_jax.data.tfds_builders import build_hr_dataset  # noqa: PLC0415 - imports TF

    image_dir = Path(image_dir) if image_dir is not None else Path(data_dir) / "sample_images"
    write_sample_images(image_dir)
    return build_hr_dataset(image_dir, data_dir)
