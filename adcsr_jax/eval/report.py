"""Result tables: per-image CSV and the summary in the layout of the paper's comparison table.

Summary rows are (dataset, method); columns are the paper's metrics in its order
(PSNR, SSIM, LPIPS, DISTS, FID, NIQE, MUSIQ, MANIQA, CLIPIQA) with the paper's arrows and
decimals. Metrics that were not computed show as "-".
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from adcsr_jax.eval.base import PAPER_METRICS

HIGHER_IS_BETTER = {
    "psnr": True,
    "ssim": True,
    "lpips": False,
    "lpips-vgg": False,
    "dists": False,
    "fid": False,
    "niqe": False,
    "musiq": True,
    "maniqa": True,
    "clipiqa": True,
}
DECIMALS = {"psnr": 2, "fid": 2, "musiq": 2}
LABELS = {"lpips-vgg": "LPIPS-VGG"}


def label(metric: str) -> str:
    """Column header with the paper's arrow, e.g. ``PSNR↑``."""
    arrow = "↑" if HIGHER_IS_BETTER.get(metric, True) else "↓"
    return LABELS.get(metric, metric.upper()) + arrow


def fmt(metric: str, value: float | None) -> str:
    """The paper's number format (2 decimals for PSNR, FID, MUSIQ; 4 otherwise)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{DECIMALS.get(metric, 4)}f}"


def ordered_metrics(metrics: Sequence[str]) -> list[str]:
    """Paper order first, then any other metric in the given order."""
    known = [m for m in PAPER_METRICS if m in metrics]
    return known + [m for m in metrics if m not in known]


def summary_markdown(rows: Sequence[Mapping[str, object]], metrics: Sequence[str]) -> str:
    """Markdown table; each row has 'dataset', 'method' and metric values."""
    metrics = ordered_metrics(metrics)
    head = ["Dataset", "Method", *[label(m) for m in metrics]]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * len(metrics)) + "|",
    ]
    for row in rows:
        cells = [str(row.get("dataset", "")), str(row.get("method", ""))]
        cells += [fmt(m, row.get(m)) for m in metrics]  # type: ignore[arg-type]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(
    folder: Path, rows: Sequence[Mapping[str, object]], metrics: Sequence[str]
) -> tuple[Path, Path]:
    """``summary.md`` (paper layout, rounded) and ``summary.csv`` (full precision)."""
    metrics = ordered_metrics(metrics)
    md = folder / "summary.md"
    md.write_text(summary_markdown(rows, metrics))
    path = folder / "summary.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["dataset", "method", *metrics])
        for row in rows:
            values = [row.get(m) for m in metrics]
            writer.writerow(
                [
                    row.get("dataset", ""),
                    row.get("method", ""),
                    *["" if v is None else repr(float(v)) for v in values],
                ]
            )  # type: ignore[arg-type]
    return md, path


def write_per_image(
    path: Path, per_image: Mapping[str, Mapping[str, float]], metrics: Sequence[str]
) -> Path:
    """One row per image: name, then each per-image metric at full precision."""
    metrics = ordered_metrics(metrics)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", *metrics])
        for name, values in per_image.items():
            writer.writerow(
                [name, *[repr(float(values[m])) if m in values else "" for m in metrics]]
            )
    return path
