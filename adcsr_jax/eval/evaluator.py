"""Evaluate a folder of super-resolved images: per-image metrics, FID, tables, CLU summaries.

``evaluate`` is the one entry point (``adcsr eval`` calls it):

1. pair SR and HR images by file name (clear error for unmatched names or different sizes);
   a file that cannot be read is skipped and reported in ``EvalResult.failed`` (as ``adcsr infer``
   reports its inputs);
2. stream the pairs in fixed-size batches (the last batch padded, so each jitted metric compiles
   once) through every per-image metric of ``adcsr_jax.eval.base.REGISTRY``;
3. FID over the two folders (pyiqa's folder-vs-folder "clean" FID);
4. write ``per_image.csv``, ``summary.md`` / ``summary.csv`` (the paper's table layout) under
   ``workdir``, and scalars plus a few LR | SR | HR image grids through a CLU metric writer.

Metrics whose weight files are missing are skipped with the reason (the error names the file and
how to get it) when they were not asked for explicitly; asked-for metrics must load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adcsr_jax.eval.base import PAPER_METRICS, Metric, get_metric
from adcsr_jax.eval.report import write_per_image, write_summary
from adcsr_jax.image_io import (
    ImageReadError,
    PairingError,
    image_size,
    list_images,
    match_pairs,
    read_image_pyiqa,
)
from adcsr_jax.weights.errors import MissingWeightError

NUM_GRID_IMAGES = 4


@dataclass(frozen=True)
class Pair:
    """An SR image and its HR reference (``hr`` None for no-reference evaluation)."""

    name: str
    sr: Path
    hr: Path | None


def pair_images(
    sr_dir: str | Path, hr_dir: str | Path | None, check_sizes: bool = True
) -> list[Pair]:
    """SR and HR images paired by file stem (``image_io.match_pairs``); sizes must agree.

    Raises ``PairingError`` for an empty SR folder, unmatched names, or pairs of different size.
    """
    if not list_images(sr_dir):
        raise PairingError(f"no images in {sr_dir}")
    if hr_dir is None:
        return [Pair(p.stem, p, None) for p in list_images(sr_dir)]
    pairs = [Pair(name, sr, hr) for name, sr, hr in match_pairs(sr_dir, hr_dir)]
    if check_sizes:
        bad = []
        for p in pairs:
            try:
                sizes = image_size(p.sr), image_size(p.hr)
            except ImageReadError:
                continue  # unreadable: skipped and reported by ``evaluate``
            if sizes[0] != sizes[1]:
                bad.append(f"{p.name}: sr {sizes[0]} vs hr {sizes[1]}")
        if bad:
            raise PairingError(f"{len(bad)} pairs differ in size: " + "; ".join(bad[:5]))
    return pairs


@dataclass
class EvalResult:
    """Per-image scores, the summary (means and FID), metrics skipped and files that failed.

    ``failed`` lists ``(path, reason)`` for every image that could not be read; its pair is left
    out of every metric.
    """

    per_image: dict[str, dict[str, float]]
    summary: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def row(self, dataset: str = "", method: str = "") -> dict[str, Any]:
        """One row of the summary table."""
        return {"dataset": dataset, "method": method, **self.summary}


def _build_metrics(
    names: Sequence[str], explicit: bool, hr: bool, weights_dir: Any, opts: dict[str, dict]
) -> tuple[list[Metric], dict[str, str]]:
    metrics, skipped = [], {}
    for name in names:
        if name == "fid":
            continue
        try:
            metric = get_metric(name, weights_dir=weights_dir, **opts.get(name, {}))
        except (MissingWeightError, ModuleNotFoundError) as err:
            if explicit:
                raise
            skipped[name] = str(err)
            continue
        if metric.needs_reference and not hr:
            if explicit:
                raise ValueError(f"{name} needs HR references: give the HR folder (--hr)")
            skipped[name] = "needs HR references"
            continue
        metrics.append(metric)
    return metrics, skipped


def _batches(pairs: list[Pair], batch_size: int, failed: list[tuple[Path, str]]):
    """Pairs grouped by image size, in order, ``batch_size`` at a time, as decoded arrays.

    Yields ``(pairs, sr, hr)``; a pair whose SR or HR file cannot be read goes to ``failed``.
    """
    by_size: dict[tuple[int, int], list[Pair]] = {}
    for pair in pairs:
        try:
            by_size.setdefault(image_size(pair.sr), []).append(pair)
        except ImageReadError as e:
            failed.append((e.path, e.reason))
    for group in by_size.values():
        for start in range(0, len(group), batch_size):
            ok, srs, hrs = [], [], []
            for pair in group[start : start + batch_size]:
                try:
                    sr = read_image_pyiqa(pair.sr)
                    hr = None if pair.hr is None else read_image_pyiqa(pair.hr)
                except ImageReadError as e:
                    failed.append((e.path, e.reason))
                    continue
                ok.append(pair)
                srs.append(sr)
                hrs.append(hr)
            if ok:
                yield ok, np.stack(srs), None if hrs[0] is None else np.stack(hrs)


def _pad(batch: np.ndarray, size: int) -> np.ndarray:
    if len(batch) == size:
        return batch
    return np.concatenate([batch, np.repeat(batch[-1:], size - len(batch), axis=0)])


def _grid(lr: Path | None, sr: np.ndarray, hr: np.ndarray | None) -> np.ndarray:
    """LR (nearest-upscaled to SR size) | SR | HR side by side, HWC float in [0, 1].

    An unreadable LR image (only used for the picture) leaves its panel out.
    """
    panels = []
    if lr is not None:
        try:
            small = read_image_pyiqa(lr)
        except ImageReadError:
            small = None
        if small is not None:
            rows = np.arange(sr.shape[0]) * small.shape[0] // sr.shape[0]
            cols = np.arange(sr.shape[1]) * small.shape[1] // sr.shape[1]
            panels.append(small[rows][:, cols])
    panels.append(sr)
    if hr is not None:
        panels.append(hr)
    return np.concatenate(panels, axis=1)


def _lr_paths(lr_dir: Path | None, names: Sequence[str]) -> dict[str, Path]:
    if lr_dir is None:
        return {}
    by_stem = {p.stem: p for p in list_images(lr_dir)}
    missing = [n for n in names if n not in by_stem]
    if missing:
        raise ValueError(
            f"{len(missing)} SR images have no LR image in {lr_dir}: {', '.join(missing[:5])}"
        )
    return {n: by_stem[n] for n in names}


def evaluate(
    sr_dir: str | Path,
    hr_dir: str | Path | None = None,
    lr_dir: str | Path | None = None,
    metrics: Sequence[str] | None = None,
    workdir: str | Path | None = None,
    weights_dir: str | Path | None = None,
    batch_size: int = 4,
    metric_opts: dict[str, dict] | None = None,
    writer: Any | None = None,
    step: int = 0,
    prefix: str = "eval",
    dataset: str = "",
    method: str = "",
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``sr_dir`` against ``hr_dir`` (see the module docstring).

    ``metrics`` defaults to the paper's nine (``PAPER_METRICS``); without ``hr_dir`` only the
    no-reference ones run. ``writer`` is a CLU ``MetricWriter`` (one is created under
    ``workdir`` by ``adcsr_jax.writers.create_writer`` when ``workdir`` is given and ``writer``
    is None, no TensorFlow needed); scalars are written as
    ``{prefix}/{metric}`` at ``step``.
    """
    from tqdm import tqdm

    explicit = metrics is not None
    names = [m.lower() for m in (metrics or PAPER_METRICS)]
    pairs = pair_images(sr_dir, hr_dir)
    lr_paths = _lr_paths(Path(lr_dir) if lr_dir else None, [p.name for p in pairs])
    models, skipped = _build_metrics(
        names, explicit, hr_dir is not None, weights_dir, metric_opts or {}
    )
    if "fid" in names and hr_dir is None:
        if explicit:
            raise ValueError("fid compares two folders: give the HR folder (--hr)")
        skipped["fid"] = "needs HR references"

    failed: list[tuple[Path, str]] = []
    per_image: dict[str, dict[str, float]] = {}
    grids: list[np.ndarray] = []
    batches = _batches(pairs, batch_size, failed)
    for batch, sr, hr in tqdm(batches, desc="metrics", unit="batch", disable=not progress):
        sr, hr = _pad(sr, batch_size), None if hr is None else _pad(hr, batch_size)
        for pair in batch:
            per_image[pair.name] = {}
        for metric in models:
            scores = np.asarray(metric(sr, hr if metric.needs_reference else None))
            for pair, score in zip(batch, scores[: len(batch)]):
                per_image[pair.name][metric.name] = float(score)
        for i, pair in enumerate(batch):
            if len(grids) < NUM_GRID_IMAGES:
                grids.append(_grid(lr_paths.get(pair.name), sr[i], None if hr is None else hr[i]))
    if not per_image:
        raise PairingError(
            f"no readable images in {sr_dir}: " + "; ".join(r for _, r in failed[:3])
        )

    summary = {m.name: float(np.mean([v[m.name] for v in per_image.values()])) for m in models}
    if "fid" in names and hr_dir is not None:
        try:
            from adcsr_jax.eval.fid import FIDExtractor, fid_from_features

            extractor = FIDExtractor(weights_dir)
        except MissingWeightError as err:
            if explicit:
                raise
            skipped["fid"] = str(err)
        else:
            wrap = (lambda it: tqdm(it, desc="fid", unit="batch")) if progress else None
            bad = {path for path, _ in failed}
            good = [p for p in pairs if p.name in per_image]
            feats_sr = extractor.files([p.sr for p in good], wrap)
            feats_hr = extractor.files([p for p in list_images(hr_dir) if p not in bad], wrap)
            summary["fid"] = fid_from_features(feats_sr, feats_hr)

    result = EvalResult(per_image, summary, skipped, failed=failed)
    columns = [m for m in names if m in summary or m in skipped]
    if workdir is not None:
        folder = Path(workdir)
        folder.mkdir(parents=True, exist_ok=True)
        result.files["per_image"] = write_per_image(
            folder / "per_image.csv", per_image, [m.name for m in models]
        )
        md, csv_path = write_summary(folder, [result.row(dataset, method)], columns)
        result.files["summary_md"], result.files["summary_csv"] = md, csv_path
        (folder / "skipped.json").write_text(json.dumps(skipped, indent=2) + "\n")
    own_writer = writer is None and workdir is not None
    if own_writer:
        from adcsr_jax.writers import create_writer

        writer = create_writer(workdir, asynchronous=False)
    if writer is not None:
        scalars = {f"{prefix}/{k}": v for k, v in summary.items() if math.isfinite(v)}
        writer.write_scalars(step, scalars)
        if grids:
            shapes = {g.shape for g in grids}
            if len(shapes) == 1:
                writer.write_images(step, {f"{prefix}/lr_sr_hr": np.stack(grids)})
        writer.flush()
        if own_writer:
            writer.close()
    return result
