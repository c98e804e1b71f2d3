"""Where training images come from, and how raw files become 8-bit RGB arrays.

A *source* is a random-access list of encoded images: ``len(src)``, ``src.name(i)`` and
``src.read(i) -> bytes``. Two kinds:

* ``FolderSource(root)``: every ``.png/.jpg/.jpeg/.webp/.bmp`` under ``root``, recursively, in
  sorted order (LSDIR, DIV2K and FFHQ layouts are all "images somewhere below a folder"). Needs
  no TensorFlow.
* ``TfdsSource(data_dir, name)``: a dataset prepared by ``adcsr_jax.data.tfds_builders`` in
  ``array_record`` format, read with ``tfds.data_source`` (random access, no tf.data).

``decode_image`` turns bytes into ``(H, W, 3) uint8`` the way BasicSR's ``imfrombytes``
(``cv2.IMREAD_COLOR``) would: grey is replicated to RGB, alpha is dropped, CMYK and palette
images are converted, 16-bit images keep their high byte. Anything PIL cannot decode raises
``BadImageError`` with the file name, for the pipeline to skip and count.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class BadImageError(ValueError):
    """An image file that cannot be decoded (truncated, corrupt, unsupported, too small)."""


class Source(Protocol):
    def __len__(self) -> int: ...
    def name(self, index: int) -> str: ...
    def read(self, index: int) -> bytes: ...


def list_images(root: str | os.PathLike) -> list[str]:
    """Relative paths of all images below ``root`` (recursive, sorted, hidden files skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(out)


class FolderSource:
    """All images below a folder (see ``list_images``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.files = list_images(root)
        if not self.files:
            raise FileNotFoundError(f"no {'/'.join(IMAGE_EXTENSIONS)} images below {root}")

    def __len__(self) -> int:
        return len(self.files)

    def name(self, index: int) -> str:
        return self.files[index]

    def read(self, index: int) -> bytes:
        return (self.root / self.files[index]).read_bytes()


class TfdsSource:
    """Random access to a prepared ``hr_images`` TFDS dataset (``array_record`` files)."""

    def __init__(self, data_dir: str | os.PathLike, name: str = "hr_images", split: str = "train"):
        import tensorflow_datasets as tfds  # noqa: PLC0415 - TF only where TFDS is used

        from adcsr_jax.data import tfds_builders  # noqa: F401, PLC0415 - registers the builders

        self._ds = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
        self._names: list[str] | None = None

    def __len__(self) -> int:
        return len(self._ds)

    def name(self, index: int) -> str:
        return _text(self._ds[index]["filename"])

    def read(self, index: int) -> bytes:
        return bytes(self._ds[index]["image"])


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def make_source(spec: str | os.PathLike) -> Source:
    """``tfds:<data_dir>[:<name>]`` -> ``TfdsSource``; any other path -> ``FolderSource``."""
    spec = str(spec)
    if spec.startswith("tfds:"):
        parts = spec[5:].split(":")
        return TfdsSource(parts[0], *(parts[1:2] or []))
    return FolderSource(spec)


def decode_image(data: bytes, name: str = "<bytes>", min_size: int = 8) -> np.ndarray:
    """Bytes of a png/jpg/webp/bmp -> ``(H, W, 3) uint8`` RGB; ``BadImageError`` if impossible."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            im.load()
    except Exception as e:  # PIL raises many types for broken files
        raise BadImageError(f"{name}: cannot decode ({type(e).__name__}: {e})") from e
    arr = _to_rgb8(im, name)
    if min(arr.shape[:2]) < min_size:
        raise BadImageError(f"{name}: {arr.shape[1]}x{arr.shape[0]} is smaller than {min_size} px")
    return arr


def _to_rgb8(im: Image.Image, name: str) -> np.ndarray:
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
            raise BadImageError(f"{name}: unsupported image mode {mode}") from e
    a = np.asarray(im)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise BadImageError(f"{name}: unexpected decoded array {a.dtype} {a.shape}")
    return a
