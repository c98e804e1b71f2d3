"""The ``adcsr`` command: the parser, the exit codes and the user mistakes a new user makes.

Every mistake must end in one message naming the flag or file (exit status 2, or 1 when only
some files were skipped), never a traceback, and before any weights load.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adcsr_jax import cli

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_parser_imports_no_jax() -> None:
    """``adcsr --help`` stays fast: building every parser imports no jax, torch or TensorFlow."""
    code = (
        "import sys\n"
        "from adcsr_jax.cli import build_parser\n"
        "build_parser()\n"
        "heavy = [m for m in ('jax', 'flax', 'torch', 'tensorflow', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``cli.main(argv)`` -> (status, stderr); argparse's own exits give their status."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse: missing or invalid flag
        code = int(exc.code)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _png(path: Path, size: int = 16, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """photos/ with two PNGs, empty/, a dummy weights/ folder, a plain file."""
    _png(tmp_path / "photos" / "a.png")
    _png(tmp_path / "photos" / "b.png", value=50)
    (tmp_path / "empty").mkdir()
    (tmp_path / "weights").mkdir()
    (tmp_path / "file.txt").write_text("x")
    return {name: tmp_path / name for name in ("photos", "empty", "weights")} | {
        "file": tmp_path / "file.txt"
    }


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        # infer: output is a file; input empty / missing; weights not a converted folder
        (["infer", "--weights", "{weights}", "--input", "{photos}", "--output", "{file}"],
         "--output"),
        (["infer", "--weights", "{weights}", "--input", "{empty}", "--output", "{tmp}/o"],
         "no image files"),
        (["infer", "--weights", "{weights}", "--input", "{tmp}/nope", "--output", "{tmp}/o"],
         "--input"),
        (["infer", "--weights", "{tmp}/nope", "--input", "{photos}", "--output", "{tmp}/o"],
         "--weights"),
        (["infer", "--weights", "{weights}", "--input", "{photos}", "--output", "{tmp}/o"],
         "adcsr_jax.json"),
        (["infer", "--weights", "{weights}", "--input", "{photos}", "--output", "{tmp}/o",
          "--tile", "100"], "--tile"),
        # eval: no --sr, missing folders, unknown metric, missing weight file, model w/o dataset
        (["eval"], "--sr"),
        (["eval", "--sr", "{tmp}/nope"], "--sr"),
        (["eval", "--sr", "{photos}", "--hr", "{file}"], "--hr"),
        (["eval", "--sr", "{photos}", "--metrics", "psnr", "nope"], "unknown nope"),
        (["eval", "--sr", "{photos}", "--musiq-weights", "{tmp}/m.pth"], "--musiq-weights"),
        (["eval", "--model", "{weights}"], "--dataset"),
        (["eval", "--model", "{weights}", "--dataset", "{photos}"], "LR/ + HR/"),
        (["eval", "--sr", "{photos}", "--workdir", "{file}"], "--workdir"),
        # data prepare: no --manual-dir; a missing one; no images below it
        (["data", "prepare", "hr", "--data-dir", "{tmp}/tfds"], "--manual-dir"),
        (["data", "prepare", "hr", "--manual-dir", "{tmp}/nope", "--data-dir", "{tmp}/tfds"],
         "--manual-dir"),
        (["data", "prepare", "hr", "--manual-dir", "{empty}", "--data-dir", "{tmp}/tfds"],
         "no image files"),
        (["data", "prepare", "paired", "--manual-dir", "{photos}", "--data-dir", "{tmp}/tfds"],
         "LR/ + HR/"),
        # convert: missing checkpoint files, output that is a file
        (["convert", "adcsr", "--net", "{tmp}/n.pkl", "--half-decoder", "{tmp}/h.ckpt",
          "--out", "{tmp}/w"], "--net"),
        (["convert", "osediff", "--lora", "{file}", "--sd21", "{tmp}/nope", "--out", "{tmp}/w"],
         "--sd21"),
        (["convert", "sd", "{photos}", "{file}"], "OUT"),
        (["convert", "metrics", "--from", "{tmp}/nope"], "--from"),
        # export / profile
        (["export", "--format", "onnx", "--out", "{tmp}/m.onnx"], "--weights"),
        (["export", "--weights", "{tmp}/nope", "--format", "onnx", "--out", "{tmp}/m.onnx"],
         "--weights"),
        (["export", "--init", "tiny", "--format", "onnx", "--out", "{photos}"], "--out"),
        (["profile", "--model", "{tmp}/m.tflite", "--device", "X"], "--model"),
    ],
)  # fmt: skip
def test_user_mistakes_exit_2_with_one_message(argv, expect, folders, tmp_path, capsys) -> None:
    names = {**{k: str(v) for k, v in folders.items()}, "tmp": str(tmp_path)}
    code, err = _run([a.format(**names) for a in argv], capsys)
    assert code == 2, err
    assert expect in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "tfds").exists()
    assert not (tmp_path / "w").exists()


def test_eval_skips_a_truncated_image_and_names_it(tmp_path, capsys) -> None:
    for name, value in (("a", 100), ("b", 50), ("c", 70)):
        _png(tmp_path / "sr" / f"{name}.png", 32, value)
        _png(tmp_path / "hr" / f"{name}.png", 32, value + 1)
    data = (tmp_path / "sr" / "b.png").read_bytes()
    (tmp_path / "sr" / "b.png").write_bytes(data[: len(data) // 2])
    argv = ["eval", "--sr", str(tmp_path / "sr"), "--hr", str(tmp_path / "hr"), "--metrics",
            "psnr", "--workdir", str(tmp_path / "work"), "--no-progress"]  # fmt: skip
    code, err = _run(argv, capsys)
    assert code == 1, err
    assert f"adcsr eval: skipped {tmp_path / 'sr' / 'b.png'}:" in err
    rows = (tmp_path / "work" / "per_image.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["a", "c"]
