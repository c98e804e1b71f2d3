"""Calibration sets (folder / iterable / augmentation), accuracy metrics and the report table."""

from __future__ import annotations

import numpy as np
import pytest

from adcsr_jax.export import calibration
from adcsr_jax.export.benchmark import Measurement, table
from adcsr_jax.export.graphs import host_colour_fix
from adcsr_jax.export.verify import compare, round_weights_int8
from adcsr_jax.testing.degradation import cheap_preset


def test_fit_crops_and_pads_to_square() -> None:
    img = np.arange(40 * 20 * 3, dtype=np.float32).reshape(40, 20, 3)
    out = calibration.fit(img, 32)
    assert out.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(out[0, :, 6:26], img[4:36])  # centre crop rows, pad columns
    np.testing.assert_array_equal(out[0, :, 0], img[4:36, 0])  # edge padding
    with pytest.raises(ValueError, match="one image"):
        calibration.fit(np.zeros((2, 8, 8, 3)), 8)


def test_from_arrays_splits_batches_and_stops_at_count() -> None:
    batches = (np.full((3, 16, 16, 3), i, np.float32) for i in range(5))
    out = calibration.from_arrays(batches, 16, 7)
    assert len(out) == 7 and out[-1].shape == (1, 16, 16, 3) and out[-1][0, 0, 0, 0] == 2
    with pytest.raises(ValueError, match="no calibration"):
        calibration.from_arrays([], 16, 2)


def test_augment_adds_flips_and_noise() -> None:
    img = np.random.default_rng(0).uniform(0, 1, (1, 8, 8, 3)).astype(np.float32)
    out = calibration.augment([img], noise=2)
    assert len(out) == 5
    np.testing.assert_array_equal(out[1], img[:, :, ::-1])
    np.testing.assert_array_equal(out[2], img[:, ::-1, :])
    assert all(o.shape == img.shape and o.dtype == np.float32 for o in out)


def test_from_folder(tmp_path) -> None:
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((20, 24, 3), 50 * i, np.uint8)).save(tmp_path / f"{i}.png")
    out = calibration.from_folder(tmp_path, 16, 2, offset=1)
    assert len(out) == 2 and out[0].shape == (1, 16, 16, 3)
    assert out[1].max() == pytest.approx(100 / 255)
    with pytest.raises(ValueError, match="offset"):
        calibration.from_folder(tmp_path, 16, 2, offset=5)


def test_compare_peak_and_errors() -> None:
    ref = np.zeros((1, 4, 4, 3), np.float32)
    out = ref.copy()
    out[0, 0, 0, 0] = 0.1
    acc = compare(ref, out, peak=1.0)
    assert acc.max_abs == pytest.approx(0.1) and acc.rel_max_abs == pytest.approx(0.1)
    assert acc.psnr == pytest.approx(10 * np.log10(48 / 0.01))
    with pytest.raises(ValueError, match="shape"):
        compare(ref, out[:, :2])
    with pytest.raises(ValueError, match="non-finite"):
        compare(ref, out * np.nan)


def test_round_weights_int8_is_per_output_channel() -> None:
    kernel = np.array([[1.0, 100.0], [0.5, -50.0]], np.float32)
    rounded = round_weights_int8({"d": {"kernel": kernel, "bias": np.ones(2, np.float32)}})
    np.testing.assert_allclose(rounded["d"]["kernel"][:, 0], [1.0, 0.5], atol=1 / 254)
    np.testing.assert_array_equal(rounded["d"]["bias"], np.ones(2))


def test_host_colour_fix_matches_the_model_finish() -> None:
    import jax.numpy as jnp

    from adcsr_jax.models.adcsr import finish

    rng = np.random.default_rng(1)
    raw = rng.normal(0, 0.7, (2, 16, 16, 3)).astype(np.float32)
    lr01 = rng.uniform(0, 1, (2, 4, 4, 3)).astype(np.float32)
    ref = np.asarray(finish(jnp.asarray(raw), jnp.asarray(lr01 * 2 - 1)))
    np.testing.assert_allclose(host_colour_fix(raw, lr01), ref, atol=2e-6)


def test_table_has_teacher_student_and_reduction_rows() -> None:
    rows = [
        Measurement("teacher", "tflite", "w8a16", 1693.0, 1647.0, 1777.0),
        Measurement("student", "tflite", "w8a16", 435.0, 65.0, 510.0),
    ]
    text = table(rows)
    assert "| tflite | w8a16 | reduction | 96% | 71% | 74% | |" in text
    assert text.count("\n") == 4


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    root = tmp_path_factory.mktemp("hr")
    for name, img in [("a.png", skimage_data.astronaut()), ("b.png", skimage_data.coffee())]:
        Image.fromarray(img).resize((96, 80)).save(root / name)
    return root


def test_from_pipeline_draws_degraded_lr(hr_dir) -> None:
    deg = cheap_preset()
    out = calibration.from_pipeline(hr_dir, 16, 5, deg, seed=1, batch_size=2)
    again = calibration.from_pipeline(hr_dir, 16, 5, deg, seed=1, batch_size=2)
    other = calibration.from_pipeline(hr_dir, 16, 5, deg, seed=2, batch_size=2)
    assert len(out) == 5 and all(x.shape == (1, 16, 16, 3) for x in out)
    assert all(x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0 for x in out)
    assert all(np.array_equal(a, b) for a, b in zip(out, again))  # deterministic per seed
    assert not all(np.array_equal(a, b) for a, b in zip(out, other))
    assert len({float(x.std()) for x in out}) == 5  # different crops / degradations


def test_export_cli_calibrates_from_the_pipeline(hr_dir, tmp_path, monkeypatch) -> None:
    """``--calib-source`` feeds pipeline LR images to the export (conversion stubbed out)."""
    from adcsr_jax import cli
    from adcsr_jax.data import degradations
    from adcsr_jax.export import job
    from adcsr_jax.export.benchmark import Measurement

    monkeypatch.setitem(degradations.PRESETS, "cheap_test", cheap_preset())
    seen = {}

    def fake_export(model, fmt, precision, out, check, lr_size, *args, **kwargs):
        seen.update(check=check, calib=args[2], precision=precision, lr=lr_size)
        return Measurement("student", fmt, precision, 1.0, 0.0, 0.0)

    monkeypatch.setattr(job, "export_and_check", fake_export)
    argv = ["export", "--init", "tiny", "--format", "tflite", "--precision", "w8a16"]
    argv += ["--out", str(tmp_path / "m.tflite"), "--lr-size", "16", "--calib-count", "3"]
    argv += ["--check-count", "2", "--calib-source", str(hr_dir)]
    argv += ["--calib-degradation", "cheap_test", "--no-augment"]
    assert cli.main(argv) == 0
    assert seen["precision"] == "w8a16" and seen["lr"] == 16
    assert len(seen["calib"]) == 3 and len(seen["check"]) == 2
    assert all(x.shape == (1, 16, 16, 3) for x in seen["calib"] + seen["check"])
    expected = calibration.from_pipeline(hr_dir, 16, 5, cheap_preset())
    np.testing.assert_array_equal(seen["calib"][0], expected[0])
