"""The tiny OSEDiff teacher (for the Table C.3 comparison) exports to TFLite fp32 like the student."""

from __future__ import annotations

import pytest

from adcsr_jax.export.verify import FP32_REL_TOL, compare_runs

pytest.importorskip("tensorflow")


@pytest.mark.slow
def test_tiny_teacher_tflite_fp32_matches_jax(lr_images) -> None:
    from adcsr_jax.export import tflite
    from adcsr_jax.export.graphs import teacher

    model = teacher(None, size="tiny", seed=0)
    data = tflite.convert(model.apply, model.params, (1, 32, 32, 3), "fp32")
    acc = compare_runs(tflite.TFLiteRunner(data), model.jax_fn(), lr_images["check"][:1])
    assert acc.rel_max_abs <= FP32_REL_TOL, acc.summary()
