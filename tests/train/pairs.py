"""Paired LR/HR folders of the sample photos for the topology tests (small: fast to decode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

HR_SIZE = (40, 32)  # (width, height); LR is HR / 4


def write_pairs(root: Path) -> str:
    """``root/hr``, ``root/lr`` from the bundled photos; returns ``paired:LR:HR``."""
    from adcsr_jax.data.sample_set import sample_images  # noqa: PLC0415

    (root / "hr").mkdir(parents=True)
    (root / "lr").mkdir()
    for name, img in sample_images().items():
        hr = Image.fromarray(np.ascontiguousarray(img[..., :3])).resize(HR_SIZE)
        hr.save(root / "hr" / f"{name}.png")
        hr.resize((HR_SIZE[0] // 4, HR_SIZE[1] // 4)).save(root / "lr" / f"{name}.png")
    return f"paired:{root / 'lr'}:{root / 'hr'}"
