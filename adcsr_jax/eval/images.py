"""Image folders for evaluation: listing, loading as float32 RGB in [0, 1], pairing by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(path: str | Path) -> np.ndarray:
    """HWC float32 RGB in [0, 1], as PIL ``convert('RGB')`` + ToTensor (what pyiqa reads)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / np.float32(255.0)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) without decoding the pixels."""
    with Image.open(path) as img:
        return img.height, img.width


@dataclass(frozen=True)
class Pair:
    """An SR image and its HR reference (``hr`` None for no-reference evaluation)."""

    name: str
    sr: Path
    hr: Path | None


class PairingError(ValueError):
    """SR and HR folders do not match one to one, or a pair differs in size."""


def match_pairs(
    sr_dir: str | Path, hr_dir: str | Path | None, check_sizes: bool = True
) -> list[Pair]:
    """Pair SR and HR images by file stem; every image must have exactly one partner.

    Raises ``PairingError`` listing the unmatched names or the pairs whose sizes differ.
    """
    sr_files = list_images(sr_dir)
    if not sr_files:
        raise PairingError(f"no images in {sr_dir}")
    if hr_dir is None:
        return [Pair(p.stem, p, None) for p in sr_files]
    hr_files = list_images(hr_dir)
    sr_by = {p.stem: p for p in sr_files}
    hr_by = {p.stem: p for p in hr_files}
    if len(sr_by) != len(sr_files) or len(hr_by) != len(hr_files):
        raise PairingError(f"two files share a name (stem) in {sr_dir} or {hr_dir}")
    only_sr = sorted(set(sr_by) - set(hr_by))
    only_hr = sorted(set(hr_by) - set(sr_by))
    if only_sr or only_hr:
        raise PairingError(
            f"unmatched images: {len(only_sr)} only in {sr_dir} ({', '.join(only_sr[:5])}"
            f"{'...' if len(only_sr) > 5 else ''}), {len(only_hr)} only in {hr_dir} "
            f"({', '.join(only_hr[:5])}{'...' if len(only_hr) > 5 else ''})"
        )
    pairs = [Pair(name, sr_by[name], hr_by[name]) for name in sorted(sr_by)]
    if check_sizes:
        bad = [
            f"{p.name}: sr {image_size(p.sr)} vs hr {image_size(p.hr)}"
            for p in pairs
            if image_size(p.sr) != image_size(p.hr)
        ]
        if bad:
            raise PairingError(f"{len(bad)} pairs differ in size: " + "; ".join(bad[:5]))
    return pairs
