"""Training pairs a user already has: an LR folder and an HR folder matched by file name.

For users who bring their own degraded/clean pairs instead of synthesising LR with the
Real-ESRGAN pipeline. ``lr/<path>/<stem>.*`` pairs with ``hr/<path>/<stem>.*`` (extensions may
differ); the HR image must be ``scale`` times the LR one. Each sample is an aligned random crop
(BasicSR ``paired_random_crop``: an LR window of ``crop / scale``, the HR window ``x scale``)
with the same horizontal flip for both.

Two sample orders, both deterministic; the state is the next batch index, so ``set_state``
resumes exactly. Batches are numpy dicts ``{"gt", "lr"}`` of this host's ``local_batch`` rows.

* ``order="host"`` (as ``pipeline.DataIterator``): the host's files are
  ``pairs[process_index::process_count]``, local sample ``g = step * local_batch + i`` is pair
  ``perm_e[g % n]`` of epoch ``e = g // n``, crops from ``(seed, host, g)``. Cheap, but the
  global batch depends on the number of processes.
* ``order="global"``: the global batch of step ``s`` is a pure function of ``(seed, s)``. Every
  host draws the same permutation of *all* pairs; global row ``G = s * batch_size + r`` is pair
  ``perm_e[G % n]``, ``e = G // n``, its crop and flip from ``(seed, G)``; a host loads only its
  rows ``row_offset .. row_offset + local_batch`` (those its devices hold). One process with 8
  devices and two with 4 each see the same batches, and a checkpoint resumes with the same order
  on any number of processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from adcsr_jax.image_io import decode_image_cv2, list_images

log = logging.getLogger(__name__)

STATE_VERSION = 1
_TAG_EPOCH, _TAG_CROP = 21, 22
ORDERS = ("host", "global")


def _relative_images(root: str | os.PathLike) -> list[str]:
    """Image paths below ``root`` (recursive), relative to it, in ``list_images`` order."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    return [str(p.relative_to(root)) for p in list_images(root, recursive=True)]


def match_pairs(lr_dir: str | os.PathLike, hr_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """``(lr_relpath, hr_relpath)`` of every file stem present in both folders, sorted."""
    lr = {os.path.splitext(f)[0]: f for f in _relative_images(lr_dir)}
    hr = {os.path.splitext(f)[0]: f for f in _relative_images(hr_dir)}
    common = sorted(lr.keys() & hr.keys())
    if not common:
        raise FileNotFoundError(f"no file names in common between LR {lr_dir} and HR {hr_dir}")
    unmatched = len(lr) + len(hr) - 2 * len(common)
    if unmatched:
        log.warning("%d images in %s / %s have no partner; ignored", unmatched, lr_dir, hr_dir)
    return [(lr[s], hr[s]) for s in common]


class PairedFolderIterator(Iterator[dict[str, np.ndarray]]):
    """Deterministic, resumable host batches of aligned (HR, LR) crops from two folders."""

    def __init__(
        self,
        lr_dir: str | os.PathLike,
        hr_dir: str | os.PathLike,
        *,
        batch_size: int,
        crop: int,
        scale: int = 4,
        flip: bool = True,
        seed: int = 0,
        output_dtype: str = "float32",
        num_workers: int = 4,
        process_index: int | None = None,
        process_count: int | None = None,
        order: str = "host",
        row_offset: int | None = None,
    ):
        if crop % scale:
            raise ValueError(f"crop {crop} must be a multiple of the scale {scale}")
        if output_dtype not in ("float32", "uint8"):
            raise ValueError(f"output_dtype must be float32 or uint8, got {output_dtype}")
        self.lr_dir, self.hr_dir = Path(lr_dir), Path(hr_dir)
        self.crop, self.scale, self.flip, self.seed = crop, scale, flip, seed
        self.output_dtype = output_dtype
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if batch_size % self.process_count:
            raise ValueError(
                f"global batch {batch_size} not divisible by {self.process_count} hosts"
            )
        if order not in ORDERS:
            raise ValueError(f"data order must be one of {ORDERS}, got {order!r}")
        self.order, self.batch_size = order, batch_size
        self.local_batch = batch_size // self.process_count
        pairs = match_pairs(lr_dir, hr_dir)
        if order == "host":
            pairs = pairs[self.process_index :: self.process_count]
            if not pairs:
                raise ValueError(f"host {self.process_index} has no pairs")
        self.pairs = pairs
        if row_offset is None:
            row_offset = self.process_index * self.local_batch
        if not 0 <= row_offset <= batch_size - self.local_batch:
            raise ValueError(
                f"row_offset {row_offset}: this host's {self.local_batch} rows do not fit in the"
                f" global batch {batch_size}"
            )
        self.row_offset = row_offset
        self.step = 0
        self._executor = cf.ThreadPoolExecutor(max(1, num_workers))

    def _rng(self, tag: int, *ids: int) -> np.random.Generator:
        if self.order == "global":  # no host in the key: the same draw on every topology
            return np.random.default_rng([self.seed, tag, *ids])
        return np.random.default_rng([self.seed, tag, self.process_index, *ids])

    def _indices(self) -> range:
        """The sample indices of this host's rows of the next batch (see the module docstring)."""
        if self.order == "global":
            g0 = self.step * self.batch_size + self.row_offset
        else:
            g0 = self.step * self.local_batch
        return range(g0, g0 + self.local_batch)

    def _sample(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.pairs)
        epoch, pos = divmod(g, n)
        lr_name, hr_name = self.pairs[int(self._rng(_TAG_EPOCH, epoch).permutation(n)[pos])]
        lr = decode_image_cv2((self.lr_dir / lr_name).read_bytes(), lr_name)
        hr = decode_image_cv2((self.hr_dir / hr_name).read_bytes(), hr_name)
        s, small = self.scale, self.crop // self.scale
        if hr.shape[0] != lr.shape[0] * s or hr.shape[1] != lr.shape[1] * s:
            raise ValueError(
                f"{hr_name} is {hr.shape[1]}x{hr.shape[0]}, expected {s} x its LR {lr_name}"
                f" ({lr.shape[1]}x{lr.shape[0]})"
            )
        if min(lr.shape[:2]) < small:
            raise ValueError(f"{lr_name} is smaller than the LR crop {small}")
        rng = self._rng(_TAG_CROP, g)
        top = int(rng.integers(0, lr.shape[0] - small + 1))
        left = int(rng.integers(0, lr.shape[1] - small + 1))
        lr = lr[top : top + small, left : left + small]
        hr = hr[top * s : top * s + self.crop, left * s : left * s + self.crop]
        if self.flip and rng.uniform() < 0.5:
            lr, hr = lr[:, ::-1], hr[:, ::-1]
        return np.ascontiguousarray(hr), np.ascontiguousarray(lr)

    def __next__(self) -> dict[str, np.ndarray]:
        got = list(self._executor.map(self._sample, self._indices()))
        self.step += 1
        gt, lr = np.stack([g for g, _ in got]), np.stack([x for _, x in got])
        if self.output_dtype == "float32":
            return {"gt": gt.astype(np.float32) / 255.0, "lr": lr.astype(np.float32) / 255.0}
        return {"gt": gt, "lr": lr}

    def __iter__(self) -> PairedFolderIterator:
        return self

    def get_state(self) -> dict[str, Any]:
        """The next batch index and the host identity (JSON-able)."""
        return {
            "version": STATE_VERSION,
            "kind": "paired",
            "seed": self.seed,
            "order": self.order,
            "step": self.step,
            "process_index": self.process_index,
            "process_count": self.process_count,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Resumes at ``state`` (the batch that followed when it was taken).

        A ``"global"``-order state may come from any host of any topology (the order is the
        same); a ``"host"``-order one must be this host's.
        """
        if state.get("version") != STATE_VERSION or state.get("kind") != "paired":
            raise ValueError(f"not a paired-folder iterator state: {state}")
        order = state.get("order", "host")
        if order != self.order:
            raise ValueError(
                f"iterator state has data order {order!r}, this run {self.order!r}"
                " (config.data.order)"
            )
        keys = ("seed",) if order == "global" else ("seed", "process_index", "process_count")
        for k in keys:
            if state[k] != getattr(self, k):
                raise ValueError(
                    f"iterator state has {k}={state[k]}, this iterator {getattr(self, k)}"
                )
        self.step = int(state["step"])

    def close(self) -> None:
        self._executor.shutdown(wait=True)
