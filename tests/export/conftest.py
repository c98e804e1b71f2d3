"""Shared pieces of the export tests: the tiny student and real LR crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

LR = 32  # LR side for the default-run exports (output 128 x 128)


@pytest.fixture(scope="session")
def lr_side() -> int:
    """LR side of the default-run exports and of ``lr_images``."""
    return LR


@pytest.fixture(scope="session")
def tiny_student():
    """A tiny AdcSR student (random init) as an ExportModel: LR [0, 1] -> SR [0, 1]: the tiny
    config with one ResNet per block (every layer kind is still there; jax2onnx's conversion
    time grows with the square of the graph's equations: half of them, a quarter of the time)."""
    import dataclasses

    from adcsr_jax.export.graphs import student
    from adcsr_jax.models.adcsr import AdcSRConfig

    config = dataclasses.replace(AdcSRConfig.tiny(), layers_per_block=1, decoder_layers_per_block=1)
    return student(None, seed=0, config=config)


def _realsr_lr() -> Path | None:
    path = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "realsr" / "test_LR"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def lr_images() -> dict[str, list[np.ndarray]]:
    """8 calibration + 2 check images (1, 32, 32, 3): RealSR LR crops when ../shared is present,
    else scikit-image's photos."""
    from adcsr_jax.export.calibration import fit, from_folder

    folder = _realsr_lr()
    if folder is not None:
        calib = from_folder(folder, LR, 8)
        check = from_folder(folder, LR, 2, offset=8)
        return {"calib": calib, "check": check}
    data = pytest.importorskip("skimage.data")
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    crops = []
    for img in photos:
        img = np.asarray(img, np.float32)[..., :3] / 255.0
        for k in range(3):
            crops.append(fit(img[k * 40 : k * 40 + 120, k * 50 : k * 50 + 120][::3, ::3], LR))
    return {"calib": crops[:8], "check": crops[8:10]}
