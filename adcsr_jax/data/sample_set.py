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


def write_sample_images(dest: str | os.PathLike, split: str = "all") -> list[Path]:
    """Writes the sample photos as ``<dest>/<name>.png``; returns the paths. ``split``: ``all``,
    ``train`` (all but :data:`HELD_OUT`) or ``val`` (:data:`HELD_OUT`)."""
    if split not in ("all", "train", "val"):
        raise ValueError(f"sample split must be 'all', 'train' or 'val', got {split!r}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, img in sample_images().items():
        if split != "all" and (name in HELD_OUT) != (split == "val"):
            continue
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


# The photos held out of training in the tiny configs and the demo (stage-1 validation, stage-2
# evaluation pairs); the others are the training set.
HELD_OUT = ("chelsea", "coffee")


def write_degraded_pairs(
    hr_images: dict[str, np.ndarray],
    dest: str | os.PathLike,
    crop: int,
    *,
    preset: str = "adcsr",
    seed: int = 0,
) -> tuple[Path, Path]:
    """Held-out LR/HR pairs: the centre ``crop`` of each image as ``<dest>/hr/NAME.png`` and its
    degradation (``preset``, drawn from ``seed``; one image at a time, so a pair does not depend
    on the others) as ``<dest>/lr/NAME.png`` (``crop / scale`` pixels, 8-bit like a real LR).
    Writes nothing when every pair is already there (the draw is deterministic)."""
    import jax  # noqa: PLC0415 - the degradation runs on the device

    from adcsr_jax.data.degradations import Degrader  # noqa: PLC0415

    dest = Path(dest)
    lr_dir, hr_dir = dest / "lr", dest / "hr"
    if all((d / f"{n}.png").is_file() for n in hr_images for d in (lr_dir, hr_dir)):
        return lr_dir, hr_dir
    degrader = Degrader(preset)
    if crop % (4 * degrader.config.scale):
        raise ValueError(f"pair crop {crop} must be a multiple of {4 * degrader.config.scale}")
    lr_dir.mkdir(parents=True, exist_ok=True)
    hr_dir.mkdir(parents=True, exist_ok=True)
    for i, (name, img) in enumerate(sorted(hr_images.items())):
        img = np.ascontiguousarray(img[..., :3])
        h, w = img.shape[:2]
        if min(h, w) < crop:
            raise ValueError(f"{name}: {h}x{w} is smaller than the pair crop {crop}")
        top, left = (h - crop) // 2, (w - crop) // 2
        hr = img[top : top + crop, left : left + crop]
        rng = np.random.default_rng([seed, i])
        out = degrader(hr[None], rng, jax.random.fold_in(jax.random.key(seed), i))
        lr = np.asarray(out["lr"][0])
        lr8 = np.clip(np.round(lr * 255.0), 0, 255).astype(np.uint8)
        Image.fromarray(hr).save(hr_dir / f"{name}.png")
        Image.fromarray(lr8).save(lr_dir / f"{name}.png")
    return lr_dir, hr_dir


def sample_pairs(
    dest: str | os.PathLike, crop: int = 128, *, preset: str = "adcsr", seed: int = 0
) -> tuple[Path, Path]:
    """:func:`write_degraded_pairs` of the held-out sample photos (:data:`HELD_OUT`)."""
    images = sample_images()
    return write_degraded_pairs(
        {n: images[n] for n in HELD_OUT}, dest, crop, preset=preset, seed=seed
    )
