"""The training input pipeline: HR crops (stage 1) or degraded LR-HR pairs (stage 2).

Dataflow per host, per batch ``s`` (everything a pure function of ``(seed, host, s)``):

1. Files: the host's shard is ``files[process_index::process_count]`` of the source's sorted list.
   Local sample ``g = s * local_batch + i`` is file ``perm_e[g % n]`` with ``e = g // n`` and
   ``perm_e`` a permutation drawn from ``(seed, host, e)``: every file once per epoch.
2. Decode (``image_io.decode_image_cv2``) in a thread pool; a file that fails is skipped with a warning,
   counted, and replaced by the next file of the same epoch order (deterministically).
3. Crop (AdcSR ``dataset.py``): reflect-101 pad at bottom/right to ``crop`` if smaller, random
   ``crop x crop`` window, horizontal flip with p 0.5; drawn from ``(seed, host, g)``.
4. Stage 2: ``Degrader`` (kernels/params from ``(seed, host, s)``, device key
   ``fold_in(fold_in(key(seed), host), s)``) -> LR; with ``train_crop`` (Real-ESRGAN: 400 -> 256)
   one paired random crop of (GT, LR) for the batch, from ``(seed, host, s)``; then the pair pool (AdcSR's queue): the
   first ``pool_size / local_batch`` batches fill it and pass through, afterwards the pool is
   shuffled (permutation from ``(seed, host, s)``), its first ``local_batch`` pairs are returned
   and replaced by the fresh ones. The pool lives on the host as uint8 (lossless: GT crops are
   8-bit and LR is quantised to 8 bits), ``pool_size`` x (crop^2 + (crop/4)^2) x 3 bytes.
5. Global batch: ``place_batch`` on the mesh (sharded over ``('data', 'fsdp')``); a background
   thread keeps ``prefetch`` batches ready.

Iterator state (``get_state``/``set_state``, a JSON-able dict) is ``seed``, ``step`` (the next
batch), the host identity, the bad-file count and, for the pool, the *origin* ``(batch, index)``
of every pool slot. Restoring regenerates those origin batches (each one is a pure function of
the seed) and refills the pool exactly, so a resumed run sees the very batches it would have seen.
Restore cost: one regeneration per distinct origin batch (a few hundred at steady state with a
1200 pool and batch 12).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from adcsr_jax.data.degradations import DegradationConfig, Degrader, get_preset
from adcsr_jax.data.sources import Source, make_source
from adcsr_jax.image_io import ImageReadError, decode_image_cv2
from adcsr_jax.sharding import place_batch

log = logging.getLogger(__name__)

STATE_VERSION = 1
_TAG_EPOCH, _TAG_CROP, _TAG_DEGRADE, _TAG_POOL, _TAG_PAIR_CROP = 11, 12, 13, 14, 15


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What the iterator produces. ``degradation=None`` gives HR crops only (stage 1)."""

    batch_size: int = 12  # global
    crop: int = 512
    flip: bool = True
    seed: int = 0
    degradation: str | None = "adcsr"  # preset name, or None
    pool_size: int | None = None  # None: the preset's (1200 for adcsr); 0 disables
    output_dtype: str = "float32"  # "float32" in [0, 1] (the reference's range) or "uint8"
    prefetch: int = 2
    num_workers: int = 4  # decode threads
    min_image_size: int = 8
    degrade_on_local_devices: bool = True  # split the local batch over this host's devices
    max_bad_fraction: float = 0.5  # give up only if (nearly) everything is unreadable


def crop_image(img: np.ndarray, crop: int, rng: np.random.Generator, flip: bool) -> np.ndarray:
    """Reflect-101 pad (bottom/right) to ``crop``, random ``crop x crop`` window, random h-flip."""
    h, w = img.shape[:2]
    if h < crop or w < crop:
        img = np.pad(img, ((0, max(0, crop - h)), (0, max(0, crop - w)), (0, 0)), mode="reflect")
        h, w = img.shape[:2]
    top = int(rng.integers(0, h - crop + 1))
    left = int(rng.integers(0, w - crop + 1))
    out = img[top : top + crop, left : left + crop]
    if flip and rng.uniform() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class PairPool:
    """AdcSR/Real-ESRGAN's training pair pool on the host, with slot origins for exact replay."""

    def __init__(self, size: int, batch: int):
        if size % batch:
            raise ValueError(f"pool size {size} must be divisible by the local batch size {batch}")
        self.size, self.batch = size, batch
        self.arrays: dict[str, np.ndarray] | None = None
        self.origin = np.full((size, 2), -1, np.int64)
        self.ptr = 0

    def _alloc(self, fresh: dict[str, np.ndarray]) -> None:
        self.arrays = {k: np.zeros((self.size, *v.shape[1:]), v.dtype) for k, v in fresh.items()}

    def put(self, slots: np.ndarray, fresh: dict[str, np.ndarray], rows: np.ndarray, step: int):
        if self.arrays is None:
            self._alloc(fresh)
        for k, v in fresh.items():
            self.arrays[k][slots] = v[rows]
        self.origin[slots, 0] = step
        self.origin[slots, 1] = rows

    def step(self, fresh: dict[str, np.ndarray], step: int, rng: np.random.Generator):
        """Enqueue while filling (returns ``fresh``), then shuffle-dequeue-enqueue."""
        b = self.batch
        if self.ptr < self.size:
            self.put(np.arange(self.ptr, self.ptr + b), fresh, np.arange(b), step)
            self.ptr += b
            return fresh
        idx = rng.permutation(self.size)
        for k in self.arrays:
            self.arrays[k] = self.arrays[k][idx]
        self.origin = self.origin[idx]
        out = {k: v[:b].copy() for k, v in self.arrays.items()}
        self.put(np.arange(b), fresh, np.arange(b), step)
        return out


class DataIterator(Iterator[dict[str, Any]]):
    """Deterministic, resumable iterator of global batches (see the module docstring)."""

    def __init__(
        self,
        source: Source | str,
        config: PipelineConfig = PipelineConfig(),
        mesh: jax.sharding.Mesh | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
        degradation: DegradationConfig | Degrader | None = None,
    ):
        self.config = config
        self.source = make_source(source) if isinstance(source, str) else source
        self.mesh = mesh
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if config.batch_size % self.process_count:
            raise ValueError(
                f"global batch {config.batch_size} not divisible by {self.process_count} hosts"
            )
        self.local_batch = config.batch_size // self.process_count
        self.files = np.arange(len(self.source))[self.process_index :: self.process_count]
        if len(self.files) == 0:
            raise ValueError(f"host {self.process_index} has no files ({len(self.source)} in all)")
        self.degrader: Degrader | None = None
        pool_size = 0
        if config.degradation is not None or degradation is not None:
            if isinstance(degradation, Degrader):
                self.degrader = degradation  # shared (its compiled programs are reused)
            else:
                self.degrader = Degrader(
                    degradation or get_preset(config.degradation), self._local_sharding()
                )
            dcfg = self.degrader.config
            if config.crop % (4 * dcfg.scale):
                raise ValueError(f"crop {config.crop} must be a multiple of {4 * dcfg.scale}")
            if dcfg.train_crop is not None and (
                dcfg.train_crop > config.crop or dcfg.train_crop % dcfg.scale
            ):
                raise ValueError(
                    f"train_crop {dcfg.train_crop} must be a multiple of {dcfg.scale} and at most"
                    f" the crop {config.crop}"
                )
            pool_size = dcfg.pool_size if config.pool_size is None else config.pool_size
        self.pool = PairPool(pool_size, self.local_batch) if pool_size else None
        self.step = 0
        self.bad_count = 0
        self._bad: set[int] = set()
        self._bad_lock = threading.Lock()
        self._executor = cf.ThreadPoolExecutor(max(1, config.num_workers))
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._state = self._snapshot()

    def _local_sharding(self) -> jax.sharding.NamedSharding | None:
        """Batch axis over this host's devices, when there are several and the batch divides."""
        devices = jax.local_devices()
        if not self.config.degrade_on_local_devices or len(devices) < 2:
            return None
        if self.local_batch % len(devices):
            log.warning(
                "local batch %d not divisible by %d local devices: degrading on one device",
                self.local_batch,
                len(devices),
            )
            return None
        mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
        return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))

    # ------------------------------------------------------------------ sample -> file, crop
    def _rng(self, tag: int, *ids: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, tag, self.process_index, *ids])

    def _epoch_perm(self, epoch: int) -> np.ndarray:
        return self._rng(_TAG_EPOCH, epoch).permutation(len(self.files))

    def _file_for(self, g: int, k: int = 0) -> int:
        n = len(self.files)
        epoch, pos = divmod(g, n)
        return int(self.files[self._epoch_perm(epoch)[(pos + k) % n]])

    def _load(self, g: int) -> np.ndarray:
        """Decoded crop of local sample ``g``; bad files are skipped deterministically."""
        n = len(self.files)
        for k in range(n):
            index = self._file_for(g, k)
            if index in self._bad:
                continue
            try:
                img = decode_image_cv2(
                    self.source.read(index), self.source.name(index), self.config.min_image_size
                )
            except (ImageReadError, OSError) as e:
                with self._bad_lock:
                    self._bad.add(index)
                    self.bad_count += 1
                    count, n_bad = self.bad_count, len(self._bad)
                log.warning("skipping bad image (%d so far): %s", count, e)
                if n_bad > self.config.max_bad_fraction * n:
                    raise RuntimeError(
                        f"{len(self._bad)} of {n} files on host {self.process_index} are unreadable"
                    ) from e
                continue
            return crop_image(img, self.config.crop, self._rng(_TAG_CROP, g), self.config.flip)
        raise RuntimeError(f"no readable image among {n} files on host {self.process_index}")

    def crops(self, step: int) -> np.ndarray:
        """The ``(local_batch, crop, crop, 3) uint8`` GT crops of batch ``step``."""
        g0 = step * self.local_batch
        return np.stack(list(self._executor.map(self._load, range(g0, g0 + self.local_batch))))

    # ------------------------------------------------------------------ batches
    def fresh_batch(self, step: int) -> dict[str, np.ndarray]:
        """Batch ``step`` before the pool: uint8 ``gt`` (and ``lr``)."""
        gt = self.crops(step)
        if self.degrader is None:
            return {"gt": gt}
        params = self.degrader.sample(self._rng(_TAG_DEGRADE, step), len(gt), gt.shape[1:3])
        key = jax.random.fold_in(
            jax.random.fold_in(jax.random.key(self.config.seed), self.process_index), step
        )
        lr = np.round(np.asarray(self.degrader.apply(gt, params, key)["lr"]) * 255.0)
        gt, lr = self._pair_crop(gt, lr.astype(np.uint8), step)
        return {"gt": gt, "lr": lr}

    def _pair_crop(
        self, gt: np.ndarray, lr: np.ndarray, step: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """BasicSR ``paired_random_crop`` on the batch: one LR window, the GT window x scale."""
        size = self.degrader.config.train_crop
        if size is None:
            return gt, lr
        scale = gt.shape[1] // lr.shape[1]  # 1 when the LR was resized back to the GT size
        rng, small = self._rng(_TAG_PAIR_CROP, step), size // scale
        top = int(rng.integers(0, lr.shape[1] - small + 1))
        left = int(rng.integers(0, lr.shape[2] - small + 1))
        gt = gt[:, top * scale : top * scale + size, left * scale : left * scale + size]
        return np.ascontiguousarray(gt), np.ascontiguousarray(
            lr[:, top : top + small, left : left + small]
        )

    def _produce(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        fresh = self.fresh_batch(self.step)
        if self.pool is not None:
            fresh = self.pool.step(fresh, self.step, self._rng(_TAG_POOL, self.step))
        self.step += 1
        return fresh, self._snapshot()

    def _finish(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        if self.config.output_dtype == "float32":
            batch = {k: v.astype(np.float32) / 255.0 for k, v in batch.items()}
        elif self.config.output_dtype != "uint8":
            raise ValueError(
                f"output_dtype must be float32 or uint8, got {self.config.output_dtype}"
            )
        if self.degrader is not None and self.degrader.config.usm_gt:
            from adcsr_jax.data import kernels  # noqa: PLC0415

            gt = batch["gt"].astype(np.float32) / (255.0 if batch["gt"].dtype == np.uint8 else 1.0)
            usm = np.asarray(self.degrader._usm(gt, kernels.usm_kernel()))
            batch["gt_usm"] = (
                usm
                if self.config.output_dtype == "float32"
                else np.round(usm * 255).astype(np.uint8)
            )
        if self.mesh is not None:
            return place_batch(batch, self.mesh)
        return batch

    def __next__(self) -> dict[str, Any]:
        if self.config.prefetch <= 0:
            batch, self._state = self._produce()
            return self._finish(batch)
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        batch, self._state = item
        return self._finish(batch)

    def _start(self) -> None:
        self._queue = queue.Queue(self.config.prefetch)
        self._stop.clear()

        def work():
            try:
                while not self._stop.is_set():
                    item = self._produce()
                    while not self._stop.is_set():
                        try:
                            self._queue.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except BaseException as e:  # surfaced to the consumer
                self._queue.put(e)

        self._thread = threading.Thread(target=work, daemon=True, name="adcsr-data")
        self._thread.start()

    def _halt(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._queue = None

    def close(self) -> None:
        """Stops the prefetch thread and the decode workers."""
        self._halt()
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ state
    def _snapshot(self) -> dict[str, Any]:
        state = {
            "version": STATE_VERSION,
            "seed": self.config.seed,
            "step": self.step,
            "process_index": self.process_index,
            "process_count": self.process_count,
            "bad_count": self.bad_count,
        }
        if self.pool is not None:
            state["pool_ptr"] = self.pool.ptr
            state["pool_origin"] = self.pool.origin[: self.pool.ptr].tolist()
        return state

    def get_state(self) -> dict[str, Any]:
        """State after the last batch returned by ``__next__`` (JSON-able)."""
        return dict(self._state)

    def set_state(self, state: dict[str, Any]) -> None:
        """Resumes at ``state``: the next batch is the one that followed when it was taken."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"data iterator state version {state.get('version')} != {STATE_VERSION}"
            )
        for k in ("seed", "process_index", "process_count"):
            mine = {"seed": self.config.seed}.get(k, getattr(self, k, None))
            if state[k] != mine:
                raise ValueError(f"data iterator state has {k}={state[k]}, this iterator {mine}")
        self._halt()
        self.step = int(state["step"])
        if self.pool is not None:
            self.pool = PairPool(self.pool.size, self.local_batch)
            origin = np.asarray(state.get("pool_origin", []), np.int64).reshape(-1, 2)
            self.pool.ptr = int(state.get("pool_ptr", 0))
            for step in np.unique(origin[:, 0]):
                fresh = self.fresh_batch(int(step))
                slots = np.nonzero(origin[:, 0] == step)[0]
                self.pool.put(slots, fresh, origin[slots, 1], int(step))
        self.bad_count = int(state.get("bad_count", 0))
        self._state = self._snapshot()

    def __iter__(self) -> DataIterator:
        return self

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
