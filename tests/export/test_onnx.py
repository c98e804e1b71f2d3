"""The tiny student through jax2onnx: fp32 / fp16, NHWC / NCHW, dynamic batch; onnx.checker and
onnxruntime against JAX."""

from __future__ import annotations

import numpy as np
import pytest

from adcsr_jax.export.verify import FP32_REL_TOL, compare

pytest.importorskip("onnx")
pytest.importorskip("jax2onnx")
pytest.importorskip("onnxruntime")

from adcsr_jax.export import onnx as onnx_export  # noqa: E402
from adcsr_jax.export.job import runner  # noqa: E402


@pytest.fixture(scope="module")
def fp32_nchw(tiny_student, tmp_path_factory, lr_side):
    path = tmp_path_factory.mktemp("onnx") / "tiny_fp32_nchw.onnx"
    return onnx_export.export(
        tiny_student.apply, tiny_student.params, (None, lr_side, lr_side, 3), path, "fp32", "nchw"
    )


def test_fp32_nchw_dynamic_batch_matches_jax(fp32_nchw, tiny_student, lr_images, lr_side) -> None:
    import onnx

    onnx.checker.check_model(str(fp32_nchw))
    session = onnx_export.ONNXRunner(fp32_nchw)
    assert session.input_shape[1:] == (3, lr_side, lr_side)
    assert not isinstance(session.input_shape[0], int)  # dynamic batch
    x = np.concatenate(lr_images["check"])  # batch 2 through the dynamic dimension
    ref = np.asarray(tiny_student.jax_fn()(x))
    got = runner(fp32_nchw, "onnx", "nchw")(x)
    acc = compare(ref, got)
    assert acc.rel_max_abs <= FP32_REL_TOL, acc.summary()


def test_bad_precision_and_layout(tiny_student, tmp_path, lr_side) -> None:
    with pytest.raises(ValueError, match="precision"):
        onnx_export.export(
            tiny_student.apply,
            tiny_student.params,
            (1, lr_side, lr_side, 3),
            tmp_path / "a.onnx",
            "w8a16",
        )
    with pytest.raises(ValueError, match="layout"):
        onnx_export.export(
            tiny_student.apply,
            tiny_student.params,
            (1, lr_side, lr_side, 3),
            tmp_path / "a.onnx",
            "fp32",
            "nwhc",
        )


@pytest.mark.slow
def test_fp16_nhwc_halves_the_file(tiny_student, lr_images, tmp_path, fp32_nchw, lr_side) -> None:
    path = onnx_export.export(
        tiny_student.apply,
        tiny_student.params,
        (1, lr_side, lr_side, 3),
        tmp_path / "h.onnx",
        "fp16",
    )
    assert path.stat().st_size < 0.6 * fp32_nchw.stat().st_size
    x = lr_images["check"][0]
    acc = compare(np.asarray(tiny_student.jax_fn()(x)), onnx_export.ONNXRunner(path)(x))
    assert acc.psnr > 45.0, acc.summary()
