"""Metric writers (CLU's ``MetricWriter`` interface) that need no TensorFlow.

The core install (``pip install -e .``: jax, flax, optax, orbax, clu, tensorboard) must be able to
log. clu 0.0.12's ``clu.metric_writers`` package imports its TensorFlow ``SummaryWriter`` in its
``__init__``, so ``from clu import metric_writers`` fails where TensorFlow is not installed,
although CLU's interface, ``LoggingWriter``, ``MultiWriter`` and ``AsyncWriter`` need no TF.
This module writes TensorBoard event files with the ``tensorboard`` package alone
(``tensorboard.summary.writer.event_file_writer`` and tensorboard's own protos, the same summary
formats as ``tf.summary``: scalar, image, text, histogram and hparams plugins) and combines that
writer with CLU's console and asynchronous writers, as ``clu.metric_writers.create_default_writer``
does with TF's writer.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
import sys
import time
import types
from collections.abc import Mapping
from typing import Any

import numpy as np


def _clu_writer_modules() -> types.ModuleType:
    """``clu.metric_writers``, importable without TensorFlow.

    With TF installed this is CLU's package unchanged. Without it, the package object is created
    from its spec without running its ``__init__`` (which only re-exports names and imports the TF
    writer), and the TF-free names are set on it, so ``from clu import metric_writers`` then gives
    ``MetricWriter``, ``LoggingWriter``, ``MultiWriter``, ``AsyncWriter``, ``AsyncMultiWriter`` and
    ``ensure_flushes`` (what ``clu.periodic_actions`` uses) instead of an ImportError.
    """
    try:
        from clu import metric_writers

        return metric_writers
    except ImportError as err:
        if "tensorflow" not in str(err):
            raise
    name = "clu.metric_writers"
    spec = importlib.util.find_spec(name)
    if spec is None:  # clu itself is missing: the core install is broken
        raise ImportError("clu is not installed (pip install -e . installs clu==0.0.12)")
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    async_writer = importlib.import_module(f"{name}.async_writer")
    interface = importlib.import_module(f"{name}.interface")
    logging_writer = importlib.import_module(f"{name}.logging_writer")
    multi_writer = importlib.import_module(f"{name}.multi_writer")
    package.AsyncMultiWriter = async_writer.AsyncMultiWriter
    package.AsyncWriter = async_writer.AsyncWriter
    package.ensure_flushes = async_writer.ensure_flushes
    package.MetricWriter = interface.MetricWriter
    package.LoggingWriter = logging_writer.LoggingWriter
    package.MultiWriter = multi_writer.MultiWriter
    sys.modules["clu"].metric_writers = package
    return package


metric_writers = _clu_writer_modules()
MetricWriter = metric_writers.MetricWriter


def _flatten(hparams: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested hparams as ``{"a.b": value}``; values that are not bool/number/str become strings."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in hparams.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        elif isinstance(value, np.generic):
            flat[name] = value.item()
        else:
            flat[name] = "" if value is None else str(value)
    return flat


def _png(image: np.ndarray) -> bytes:
    """One HxWxC (C in 1, 3, 4) image as PNG bytes; floats are taken in [0, 1]."""
    from PIL import Image

    if image.dtype != np.uint8:
        image = np.clip(np.rint(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)
    if image.shape[-1] == 1:
        image = image[..., 0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class TensorBoardWriter(MetricWriter):
    """TensorBoard event files under ``logdir``, written without TensorFlow.

    Same summary formats as CLU's TF ``SummaryWriter`` (``tf.summary.scalar`` / ``image`` /
    ``text`` / ``histogram`` and the hparams plugin), so TensorBoard shows them the same way.
    Videos and audio are not supported (CLU's TF writer skips videos too).
    """

    def __init__(self, logdir: str | os.PathLike) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        super().__init__()
        os.makedirs(logdir, exist_ok=True)
        self._writer = EventFileWriter(os.fspath(logdir))

    def _add(self, step: int, summary: Any) -> None:
        from tensorboard.compat.proto import event_pb2

        self._writer.add_event(
            event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        )

    def _tensor_summary(self, tag: str, value: Any, metadata: Any) -> Any:
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.util import tensor_util

        return summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(
                    tag=tag, tensor=tensor_util.make_tensor_proto(value), metadata=metadata
                )
            ]
        )

    def write_summaries(
        self, step: int, values: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        from tensorboard.compat.proto import summary_pb2

        for key, value in values.items():
            md = None if metadata is None else metadata.get(key)
            if isinstance(md, bytes):
                md = summary_pb2.SummaryMetadata.FromString(md)
            self._add(step, self._tensor_summary(key, np.asarray(value), md))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        from tensorboard.plugins.scalar import metadata

        md = metadata.create_summary_metadata(display_name=None, description=None)
        for key, value in scalars.items():
            self._add(step, self._tensor_summary(key, np.asarray(value, np.float32), md))

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        from tensorboard.plugins.image import metadata

        md = metadata.create_summary_metadata(display_name=None, description=None)
        for key, value in images.items():
            batch = np.asarray(value)
            if batch.ndim == 3:
                batch = batch[None]
            if batch.ndim != 4 or batch.shape[-1] not in (1, 3, 4):
                raise ValueError(
                    f"image {key!r}: expected [N, H, W, C] or [H, W, C] with C in 1, 3, 4, "
                    f"got shape {batch.shape}"
                )
            # The image plugin's tensor: [width, height, png_0, ..., png_{N-1}] (tf.summary.image).
            data = [str(batch.shape[2]).encode(), str(batch.shape[1]).encode()]
            data += [_png(im) for im in batch]
            self._add(step, self._tensor_summary(key, np.array(data, dtype=object), md))

    def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
        from absl import logging

        logging.log_first_n(logging.WARNING, "TensorBoardWriter does not write videos.", 1)

    def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
        from absl import logging

        logging.log_first_n(logging.WARNING, "TensorBoardWriter does not write audio.", 1)

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        for key, value in texts.items():
            self._add(step, text_pb(key, value))

    def write_histograms(
        self,
        step: int,
        arrays: Mapping[str, Any],
        num_buckets: Mapping[str, int] | None = None,
    ) -> None:
        from tensorboard.plugins.histogram.summary_v2 import histogram_pb

        for key, value in arrays.items():
            buckets = None if num_buckets is None else num_buckets.get(key)
            self._add(step, histogram_pb(key, np.asarray(value, np.float64), buckets=buckets))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb

        self._add(0, hparams_pb(_flatten(hparams)))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def create_writer(
    logdir: str | os.PathLike | None,
    *,
    just_logging: bool = False,
    asynchronous: bool = True,
) -> MetricWriter:
    """The project's metric writer: console logging plus TensorBoard files under ``logdir``.

    Mirrors ``clu.metric_writers.create_default_writer`` without TensorFlow.
    ``just_logging=True`` (the processes other than 0 of a multi-host run) or ``logdir=None``
    logs to the console only. ``asynchronous`` wraps the writers in CLU's ``AsyncMultiWriter``
    (writes happen on a background thread; ``flush()`` waits for them).
    """
    writers: list[MetricWriter] = [metric_writers.LoggingWriter()]
    if not just_logging and logdir is not None:
        writers.append(TensorBoardWriter(logdir))
    if asynchronous:
        return metric_writers.AsyncMultiWriter(writers)
    return metric_writers.MultiWriter(writers)
