"""TFDS builders that prepare local image folders offline (``manual_dir``); imports TensorFlow.

* ``HrImages`` (``hr_images``): every png/jpg/jpeg/webp/bmp below ``manual_dir``, recursively
  (LSDIR's ``0001000/0000001.png``, DIV2K's ``DIV2K_train_HR/0001.png``, FFHQ's
  ``00000/00000.png`` all fit). Features: ``image`` (the encoded bytes, untouched),
  ``filename`` (path relative to ``manual_dir``), ``height``, ``width``. Files PIL cannot decode
  are skipped at build time with a warning and listed in the builder's ``skipped``
  (relative path, reason).
* ``PairedImages`` (``paired_images``): a test set ``LR/`` + ``HR/`` or ``test_LR/`` +
  ``test_HR/`` (as ``../shared/data/realsr``), pairs matched by file name (stem, ``image_io.match_pairs``). Features:
  ``lr``, ``hr`` (encoded bytes), ``name``.

Both are written as ``array_record`` by default so ``tfds.data_source`` gives random access
without tf.data (``sources.TfdsSource``). Images are stored encoded and decoded by
``image_io.decode_image_cv2`` at read time (TF's decoders do not read webp, nor CMYK or 16-bit
like cv2 does). Build with ``build_hr_dataset`` / ``build_paired_dataset`` or
``adcsr data prepare``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from adcsr_jax.image_io import (
    ImageReadError,
    decode_image_cv2,
    find_pair_dirs,
    list_images,
    match_pairs,
)

log = logging.getLogger(__name__)


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) after a full decode (catches truncated files at build time)."""
    arr = decode_image_cv2(path.read_bytes(), str(path), min_size=1)
    return int(arr.shape[0]), int(arr.shape[1])


class HrImages(tfds.core.GeneratorBasedBuilder):
    """High-resolution training photos from a local folder."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Point manual_dir at a folder of images (searched recursively)."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="HR images from a local folder (encoded bytes).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "filename": tfds.features.Text(),
                    "height": tfds.features.Scalar(dtype=np.int32),
                    "width": tfds.features.Scalar(dtype=np.int32),
                }
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {"train": self._generate_examples(Path(dl_manager.manual_dir))}

    def _generate_examples(self, root: Path):
        self.skipped: list[tuple[str, str]] = []
        for path in list_images(root, recursive=True):
            rel = str(path.relative_to(root))
            try:
                h, w = _image_size(path)
            except (ImageReadError, OSError) as e:
                log.warning("hr_images: skipping %s (%s)", rel, e)
                self.skipped.append((rel, str(e)))
                continue
            yield rel, {"image": path.read_bytes(), "filename": rel, "height": h, "width": w}


class PairedImages(tfds.core.GeneratorBasedBuilder):
    """A paired LR/HR test set from a local folder."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Point manual_dir at a folder with LR/ + HR/ (or test_LR/ + test_HR/)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Paired LR/HR images from a local folder (encoded bytes).",
            features=tfds.features.FeaturesDict(
                {
                    "lr": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "hr": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "name": tfds.features.Text(),
                }
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {"test": self._generate_examples(Path(dl_manager.manual_dir))}

    def _generate_examples(self, root: Path):
        for name, lr, hr in match_pairs(*find_pair_dirs(root)):
            yield name, {"lr": lr.read_bytes(), "hr": hr.read_bytes(), "name": name}


def _build(cls, manual_dir, data_dir, file_format: str) -> tfds.core.DatasetBuilder:
    builder = cls(data_dir=str(data_dir), file_format=file_format)
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    builder.download_and_prepare(download_config=config)
    return builder


def build_hr_dataset(
    manual_dir: str | os.PathLike, data_dir: str | os.PathLike, file_format: str = "array_record"
) -> tfds.core.DatasetBuilder:
    """Prepares ``hr_images`` from ``manual_dir`` into ``data_dir``."""
    return _build(HrImages, manual_dir, data_dir, file_format)


def build_paired_dataset(
    manual_dir: str | os.PathLike, data_dir: str | os.PathLike, file_format: str = "array_record"
) -> tfds.core.DatasetBuilder:
    """Prepares ``paired_images`` from ``manual_dir`` into ``data_dir``."""
    return _build(PairedImages, manual_dir, data_dir, file_format)


def read_pairs(data_dir: str | os.PathLike, split: str = "test"):
    """Yields ``(name, lr uint8, hr uint8)`` from a prepared ``paired_images`` dataset."""
    ds = tfds.data_source("paired_images", split=split, data_dir=str(data_dir), download=False)
    for i in range(len(ds)):
        ex = ds[i]
        name = ex["name"].decode() if isinstance(ex["name"], bytes) else str(ex["name"])
        yield name, decode_image_cv2(bytes(ex["lr"]), name), decode_image_cv2(bytes(ex["hr"]), name)


__all__ = [
    "HrImages",
    "PairedImages",
    "build_hr_dataset",
    "build_paired_dataset",
    "read_pairs",
]
