"""Reading any photo as float RGB in [0, 1] and writing 8-bit PNGs the way the reference does.

Pillow's ``convert('RGB')`` is wrong for several real-world files: 16-bit greyscale ('I;16') is
clipped to white, alpha is dropped without compositing, and the EXIF orientation is ignored.
``read_image`` handles each case explicitly; anything Pillow cannot decode raises
``ImageReadError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")


class ImageReadError(Exception):
    """An input file that is not a readable image."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def _to_float_rgb(img: Image.Image, background: float) -> np.ndarray:
    """Pillow image of any mode -> float32 (H, W, 3) in [0, 1]."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":  # 16-bit greyscale (PNG, TIFF)
        grey = np.asarray(img, dtype=np.float64)
        grey = np.clip(grey / 65535.0, 0.0, 1.0).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "F":  # 32-bit float greyscale, taken as [0, 1]
        grey = np.clip(np.asarray(img, np.float32), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    elif mode not in ("RGB", "RGBA"):  # 1, L, CMYK, YCbCr, LAB, HSV, ...
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    if arr.shape[-1] == 4:  # composite over a uniform background instead of dropping alpha
        alpha = arr[..., 3:]
        if np.all(alpha == 1.0):
            return np.ascontiguousarray(arr[..., :3])
        return arr[..., :3] * alpha + np.float32(background) * (1.0 - alpha)
    return arr


def read_image(path: str | Path, background: float = 1.0) -> np.ndarray:
    """Read ``path`` as float32 (H, W, 3) RGB in [0, 1], upright (EXIF orientation applied).

    Greyscale, palette, 16-bit greyscale and CMYK inputs are converted to RGB; images with alpha
    are composited over a grey level ``background`` (1.0 = white). An 8-bit image gives exactly
    ``ToTensor()(Image.open(path).convert('RGB'))``, the reference's input.
    """
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
            arr = _to_float_rgb(img, background)
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as e:
        raise ImageReadError(path, f"cannot read image ({type(e).__name__}: {e})") from e
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageReadError(path, f"unexpected decoded shape {arr.shape}")
    return arr


def list_images(path: str | Path) -> list[Path]:
    """A file itself, or the image files (by suffix, case-insensitive) directly in a folder, sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input {path} is neither a file nor a folder")
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Save float (H, W, 3) in [0, 1] as 8-bit PNG with torchvision's truncating conversion."""
    from .imageops import to_uint8

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path, format="PNG")
