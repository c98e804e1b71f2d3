"""The evaluator and ``adcsr eval``: pairing errors, tables, CLU summaries, skipped metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adcsr_jax import cli
from adcsr_jax.eval import MissingWeightError, get_metric
from adcsr_jax.eval.evaluator import evaluate, pair_images
from adcsr_jax.image_io import PairingError, read_image_pyiqa


def _write_set(
    root: Path, names: list[str], size=(40, 48), seed: int = 0
) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(seed)
    dirs = [root / d for d in ("sr", "hr", "lr")]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for name in names:
        hr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
        Image.fromarray(hr).save(dirs[1] / f"{name}.png")
        Image.fromarray(sr).save(dirs[0] / f"{name}.png")
        Image.fromarray(hr[::4, ::4]).save(dirs[2] / f"{name}.png")
    return dirs[0], dirs[1], dirs[2]


def test_pairs_match_by_name_and_mismatches_are_explained(tmp_path: Path) -> None:
    sr, hr, _ = _write_set(tmp_path, ["a", "b", "c"])
    assert [p.name for p in pair_images(sr, hr)] == ["a", "b", "c"]
    (hr / "c.png").rename(hr / "d.png")
    with pytest.raises(PairingError, match=r"1 only in .*sr \(c\), 1 only in .*hr \(d\)"):
        pair_images(sr, hr)
    (hr / "d.png").unlink()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(hr / "c.png")
    with pytest.raises(PairingError, match=r"c: sr \(40, 48\) vs hr \(10, 10\)"):
        pair_images(sr, hr)


def test_evaluate_writes_tables_and_summaries(tmp_path: Path) -> None:
    sr, hr, lr = _write_set(tmp_path, [f"img{i}" for i in range(5)])
    work = tmp_path / "out"
    result = evaluate(
        sr, hr, lr, metrics=["psnr", "ssim"], workdir=work, batch_size=2, progress=False
    )
    # per-image values equal direct metric calls (the padded last batch does not leak)
    names = sorted(result.per_image)
    srs = np.stack([read_image_pyiqa(sr / f"{n}.png") for n in names])
    hrs = np.stack([read_image_pyiqa(hr / f"{n}.png") for n in names])
    np.testing.assert_allclose(
        [result.per_image[n]["psnr"] for n in names], get_metric("psnr")(srs, hrs)
    )
    np.testing.assert_allclose(
        [result.per_image[n]["ssim"] for n in names], get_metric("ssim")(srs, hrs)
    )
    assert result.summary["psnr"] == pytest.approx(np.mean(get_metric("psnr")(srs, hrs)))
    with open(work / "per_image.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == names and float(rows[0]["psnr"]) == pytest.approx(
        result.per_image[names[0]]["psnr"]
    )
    md = (work / "summary.md").read_text()
    assert "| PSNR↑ | SSIM↑ |" in md and f"{result.summary['psnr']:.2f}" in md
    assert list(work.glob("events.out.tfevents.*")), "no CLU/TensorBoard summary written"


def test_missing_weights_skip_defaults_but_fail_explicit_requests(tmp_path: Path) -> None:
    sr, hr, _ = _write_set(tmp_path, ["a", "b"], size=(32, 32))
    empty = tmp_path / "no_cache"
    result = evaluate(sr, hr, weights_dir=empty, progress=False)
    assert set(result.summary) == {"psnr", "ssim"}
    assert (
        "lpips_alex.npz" in result.skipped["lpips"]
        and "adcsr convert metrics" in result.skipped["lpips"]
    )
    assert "fid_inception.npz" in result.skipped["fid"]
    with pytest.raises(MissingWeightError, match="dists.npz"):
        evaluate(sr, hr, metrics=["dists"], weights_dir=empty, progress=False)


def test_no_reference_run_requires_hr_for_full_reference_metrics(tmp_path: Path) -> None:
    sr, _, _ = _write_set(tmp_path, ["a"])
    with pytest.raises(ValueError, match="needs HR"):
        evaluate(sr, None, metrics=["psnr"], progress=False)


def test_cli_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sr, hr, lr = _write_set(tmp_path, ["a", "b", "c"])
    work = tmp_path / "w"
    code = cli.main(
        [
            "eval",
            "--sr",
            str(sr),
            "--hr",
            str(hr),
            "--lr",
            str(lr),
            "--metrics",
            "psnr",
            "--workdir",
            str(work),
            "--no-progress",
            "--method",
            "mine",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| mine |" in out and (work / "summary.csv").is_file()
    (hr / "a.png").unlink()
    assert (
        cli.main(["eval", "--sr", str(sr), "--hr", str(hr), "--metrics", "psnr", "--no-progress"])
        == 2
    )
    assert "unmatched images" in capsys.readouterr().err


def test_cli_eval_model_super_resolves_the_dataset_first(tmp_path: Path, monkeypatch) -> None:
    infer = pytest.importorskip("adcsr_jax.infer")
    root = tmp_path / "RealSR"
    sr, hr, lr = _write_set(root, ["a", "b"], size=(32, 32))
    lr.rename(root / "LR")
    hr.rename(root / "HR")
    calls = []

    def fake_super_resolve(weights, input_dir, output_dir, **options):
        calls.append((Path(weights), Path(input_dir)))
        for path in sorted(Path(input_dir).iterdir()):
            small = Image.open(path)
            small.resize((32, 32), Image.BICUBIC).save(Path(output_dir) / f"{path.stem}.png")
        return infer.Report()

    monkeypatch.setattr(infer, "super_resolve_folder", fake_super_resolve)
    from adcsr_jax.weights.loaders import CONVERTED_CONFIG, FORMAT

    (tmp_path / "student").mkdir()
    meta = {"format": FORMAT, "kind": "adcsr", "config": {}}
    (tmp_path / "student" / CONVERTED_CONFIG).write_text(json.dumps(meta))
    work = tmp_path / "w"
    args = [
        "eval",
        "--model",
        str(tmp_path / "student"),
        "--dataset",
        str(root),
        "--metrics",
        "psnr",
    ]
    assert cli.main([*args, "--workdir", str(work), "--no-progress"]) == 0
    assert calls == [(tmp_path / "student", root / "LR")]
    assert sorted(p.name for p in (work / "sr").iterdir()) == ["a.png", "b.png"]
    assert "RealSR" in (work / "summary.md").read_text()
    assert cli.main(["eval", "--model", "x", "--dataset", str(tmp_path / "nothing")]) == 2


@pytest.mark.slow
def test_full_realsr_evaluation_reproduces_the_log(
    tmp_path: Path, realsr: Path, metric_cache: Path, osediff_log
) -> None:
    log, averages = osediff_log
    result = evaluate(
        realsr / "results_osediff",
        realsr / "test_HR",
        realsr / "test_LR",
        metrics=["psnr", "ssim", "lpips", "dists", "niqe", "fid"],
        workdir=tmp_path,
        weights_dir=metric_cache,
        progress=False,
    )
    tol = {"psnr": 1e-4, "ssim": 1e-4, "lpips": 1e-3, "dists": 1e-3, "niqe": 0.02}
    for name, values in result.per_image.items():
        for metric, t in tol.items():
            assert values[metric] == pytest.approx(log[name][metric], abs=t), (name, metric)
    # the log's averages have 4 decimals (+-5e-5), plus the port's own per-image error
    avg_tol = {"psnr": 6e-5, "ssim": 6e-5, "lpips": 1e-4, "dists": 1e-4, "niqe": 3e-3}
    for metric, t in avg_tol.items():
        assert result.summary[metric] == pytest.approx(averages[metric], abs=t), metric
    assert result.summary["fid"] == pytest.approx(123.4938, abs=0.1)
