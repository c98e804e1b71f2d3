"""Image files: the suffixes we read, listing folders, pairing two folders, and three decoders.

One home for every image-file rule, so training, evaluation and inference accept the same files:

* ``IMAGE_SUFFIXES``, ``list_images`` (a file, a folder, or a folder tree), ``image_size``;
* ``find_pair_dirs`` / ``match_pairs``: LR/HR (or SR/HR) folders paired by file stem;
* three decoders whose semantics differ on purpose, each named after the code it reproduces:

  - ``read_image``: inference. Pillow's ``convert('RGB')`` is wrong for several real photos
    (16-bit greyscale clipped to white, alpha dropped without compositing, EXIF orientation
    ignored), so each case is handled explicitly; an 8-bit RGB file gives exactly AdcSR's input
    (``ToTensor()(Image.open(path).convert('RGB'))``, AdcSR ``test.py``).
  - ``read_image_pyiqa``: evaluation, what pyiqa's ``imread2tensor`` reads
    (``Image.open(path).convert('RGB')`` + ToTensor), so the metrics match the published logs.
  - ``decode_image_cv2``: training, bytes -> uint8 as BasicSR's ``imfrombytes``
    (``cv2.IMREAD_COLOR``): grey replicated, alpha dropped, 16-bit keeps its high byte.

Every decoder raises ``ImageReadError`` naming the file, which the data pipeline, ``adcsr infer``
and ``adcsr eval`` catch to skip the file and report it.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from adcsr_jax.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")

# (LR, HR) sub-folder names of a paired test set: AdcSR's, StableSR/OSEDiff's, BasicSR's.
PAIR_LAYOUTS = (("LR", "HR"), ("test_LR", "test_HR"), ("lq", "gt"))

# What Pillow raises for files it cannot decode (truncated, corrupt, unsupported, too large).
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


class ImageReadError(UserError, ValueError):
    """A file that is not a readable image; ``path`` and ``reason`` for the skip report."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class PairingError(UserError, ValueError):
    """Two image folders do not match one to one (or a pair differs in size)."""


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def list_images(path: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """A file itself, or the image files in a folder (below it with ``recursive``), sorted.

    Images are recognised by suffix (``IMAGE_SUFFIXES``, any case); hidden files and folders are
    skipped. The order is that of the paths relative to ``path`` as strings, stable across
    machines (the training pipeline's shuffles depend on it).
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither an image file nor a folder")
    if not recursive:
        return sorted(p for p in path.iterdir() if p.is_file() and _is_image(p.name))
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, path)
        found += [os.path.normpath(os.path.join(rel, f)) for f in filenames if _is_image(f)]
    return [path / rel for rel in sorted(found)]


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from the header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except _DECODE_ERRORS as e:
        raise ImageReadError(path, f"cannot read image ({type(e).__name__}: {e})") from e


def find_pair_dirs(root: str | os.PathLike) -> tuple[Path, Path]:
    """(LR, HR) sub-folders of a paired test set in any of ``PAIR_LAYOUTS``."""
    root = Path(root)
    for lr, hr in PAIR_LAYOUTS:
        if (root / lr).is_dir() and (root / hr).is_dir():
            return root / lr, root / hr
    layouts = ", ".join(f"{lr}/ + {hr}/" for lr, hr in PAIR_LAYOUTS)
    raise FileNotFoundError(f"{root} has none of the folder layouts {layouts}")


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + ("..." if len(names) > 5 else "")


def match_pairs(
    first: str | os.PathLike, second: str | os.PathLike
) -> list[tuple[str, Path, Path]]:
    """``(stem, first_path, second_path)`` for the images of two folders, paired by file stem.

    Every image must have exactly one partner: raises ``PairingError`` naming the unmatched stems
    of each folder, or the folder in which two files share a stem.
    """
    out: list[dict[str, Path]] = []
    for folder in (first, second):
        files = list_images(folder)
        by_stem = {p.stem: p for p in files}
        if len(by_stem) != len(files):
            raise PairingError(f"two files share a name (stem) in {folder}")
        out.append(by_stem)
    a, b = out
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        raise PairingError(
            f"unmatched images: {len(only_a)} only in {first} ({_names(only_a)}), "
            f"{len(only_b)} only in {second} ({_names(only_b)})"
        )
    return [(stem, a[stem], b[stem]) for stem in sorted(a)]


# ----------------------------------------------------------------------------- decoders


def _to_float_rgb(img: Image.Image, background: float) -> np.ndarray:
    """Pillow image of any mode -> float32 (H, W, 3) in [0, 1] (``read_image``'s rules)."""
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


def read_image(path: str | os.PathLike, background: float = 1.0) -> np.ndarray:
    """Inference: ``path`` as float32 (H, W, 3) RGB in [0, 1], upright (EXIF orientation applied).

    Greyscale, palette, 16-bit greyscale and CMYK inputs are converted to RGB; images with alpha
    are composited over a grey level ``background`` (1.0 = white). An 8-bit image gives exactly
    ``ToTensor()(Image.open(path).convert('RGB'))``, the reference's input.
    """
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
            arr = _to_float_rgb(img, background)
    except _DECODE_ERRORS as e:
        raise ImageReadError(path, f"cannot read image ({type(e).__name__}: {e})") from e
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageReadError(path, f"unexpected decoded shape {arr.shape}")
    return arr


def read_image_pyiqa(path: str | os.PathLike) -> np.ndarray:
    """Evaluation: HWC float32 RGB in [0, 1] as pyiqa reads it (PIL ``convert('RGB')`` + ToTensor)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.float32) / np.float32(255.0)
    except _DECODE_ERRORS as e:
        raise ImageReadError(path, f"cannot read image ({type(e).__name__}: {e})") from e


def decode_image_cv2(data: bytes, name: str = "<bytes>", min_size: int = 8) -> np.ndarray:
    """Training: encoded bytes -> ``(H, W, 3) uint8`` RGB as BasicSR's ``imfrombytes`` decodes.

    Raises ``ImageReadError`` (named ``name``) for undecodable data or a side under ``min_size``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            im.load()
    except Exception as e:  # PIL raises many types for broken files
        raise ImageReadError(name, f"cannot decode ({type(e).__name__}: {e})") from e
    arr = _to_rgb8(im, name)
    if min(arr.shape[:2]) < min_size:
        raise ImageReadError(name, f"{arr.shape[1]}x{arr.shape[0]} is smaller than {min_size} px")
    return arr


def _to_rgb8(im: Image.Image, name: str) -> np.ndarray:
    """Pillow image -> uint8 RGB with cv2 ``IMREAD_COLOR`` semantics."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im).astype(np.int64)
        # cv2 IMREAD_COLOR keeps the high byte of 16-bit data; 32-bit 'I' is clipped to 16 bits.
        a = (np.clip(a, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode == "F":
        a = np.clip(np.asarray(im), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode == "CMYK":
        return np.asarray(im.convert("RGB"))
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
    if mode != "RGB":
        try:
            im = im.convert("RGB")  # L, LA, RGBA, 1, YCbCr, ... (alpha dropped like cv2)
        except Exception as e:
            raise ImageReadError(name, f"unsupported image mode {mode}") from e
    a = np.asarray(im)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ImageReadError(name, f"unexpected decoded array {a.dtype} {a.shape}")
    return a


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Save float (H, W, 3) in [0, 1] as 8-bit PNG with torchvision's truncating conversion."""
    from adcsr_jax.imageops import to_uint8

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path, format="PNG")
