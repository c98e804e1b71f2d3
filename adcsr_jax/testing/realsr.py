"""RealSR helpers of the metric tests and benchmarks: OSEDiff's pyiqa log and its output images.

The data live in ``../shared/data/realsr`` beside a checkout (RealSR test_LR/test_HR and OSEDiff's
outputs with the pyiqa log it published); tests that need them skip without it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from adcsr_jax.eval.evaluator import pair_images
from adcsr_jax.image_io import read_image_pyiqa


def parse_pyiqa_log(path: Path) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-image values and the final averages of a pyiqa inference log."""
    per_image: dict[str, dict[str, float]] = {}
    averages: dict[str, float] = {}
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.search(r"/([^/\s]+)\.\w+ \| (.*) \| Runtime", line)
        if match:
            values = re.findall(r"(\w+): ([\d.]+)", match.group(2))
            per_image[match.group(1)] = {k.lower(): float(v) for k, v in values}
        if "Average Metrics" in line:
            values = re.findall(r"(\w+): ([\d.]+)", lines[i + 1])
            averages = {k.lower(): float(v) for k, v in values}
    return per_image, averages


def osediff_outputs(
    realsr: Path, per_image: dict[str, dict[str, float]], metric: str, count: int
) -> Iterator[tuple[str, np.ndarray, float]]:
    """(name, OSEDiff output HWC in [0, 1], logged ``metric``) for the first ``count`` images."""
    for name in sorted(per_image)[:count]:
        image = read_image_pyiqa(realsr / "results_osediff" / f"{name}.png")
        yield name, image, per_image[name][metric]


def load_realsr(
    realsr: Path, count: int | None, start: int = 0
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, SR (OSEDiff) and HR batches of RealSR pairs ``start:start+count``."""
    pairs = pair_images(realsr / "results_osediff", realsr / "test_HR")
    pairs = pairs[start : None if count is None else start + count]
    sr = np.stack([read_image_pyiqa(p.sr) for p in pairs])
    hr = np.stack([read_image_pyiqa(p.hr) for p in pairs])
    return [p.name for p in pairs], sr, hr
