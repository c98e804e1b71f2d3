"""Where training images come from: random-access lists of encoded images.

A *source* has ``len(src)``, ``src.name(i)`` and ``src.read(i) -> bytes``. Two kinds:

* ``FolderSource(root)``: every image below ``root`` (``adcsr_jax.image_io.list_images``,
  recursive, sorted; LSDIR, DIV2K and FFHQ layouts are all "images somewhere below a folder").
  Needs no TensorFlow.
* ``TfdsSource(data_dir, name)``: a dataset prepared by ``adcsr_jax.data.tfds_builders`` in
  ``array_record`` format, read with ``tfds.data_source`` (random access, no tf.data).

The bytes are decoded by ``adcsr_jax.image_io.decode_image_cv2`` (BasicSR's ``imfrombytes``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from adcsr_jax.image_io import IMAGE_SUFFIXES, list_images


class Source(Protocol):
    def __len__(self) -> int: ...
    def name(self, index: int) -> str: ...
    def read(self, index: int) -> bytes: ...


class FolderSource:
    """All images below a folder (``image_io.list_images(root, recursive=True)``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        self.files = [str(p.relative_to(self.root)) for p in list_images(root, recursive=True)]
        if not self.files:
            raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images below {root}")

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
