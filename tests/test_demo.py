"""``adcsr demo``: flags, the report from step summaries, and (slow) the whole tiny pipeline
twice: the second run skips every finished step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adcsr_jax.cli import main


def _args(workdir: Path, *flags: str):
    from adcsr_jax.cli import build_parser

    return build_parser().parse_args(["demo", "--workdir", str(workdir), *flags])


def test_steps_and_stage_overrides_of_each_mode(tmp_path):
    from adcsr_jax.cli.demo import Demo, stage1_overrides, stage2_overrides

    tiny = Demo(tmp_path, _args(tmp_path, "--stage2-steps", "7"), tmp_path)
    assert tiny.steps() == ["vae", "stage1", "stage2", "evaluate", "infer", "export", "report"]
    assert f"--config.model.sd_vae={tmp_path / 'vae'}" in stage1_overrides(tiny)
    s2 = stage2_overrides(tiny)
    assert f"--config.model.half_decoder={tmp_path / 'stage1' / 'halfDecoder.ckpt'}" in s2
    assert "--config.total_steps=7" in s2 and tiny.pair_crop == 128
    real = Demo(tmp_path, _args(tmp_path, "--sd21", "sd", "--osediff", "o.pkl", "--ram", "r.pth",
                                "--half-decoder", "h.ckpt", "--crop", "128"), tmp_path)  # fmt: skip
    assert real.steps() == ["stage2", "evaluate", "infer", "export", "report"]
    s2 = stage2_overrides(real)
    assert {"--config.model.sd21=sd", "--config.model.osediff=o.pkl", "--config.data.crop=128",
            "--config.prompt.ram=r.pth", "--config.model.half_decoder=h.ckpt"} <= set(s2)  # fmt: skip
    assert real.pair_crop == 512
    released = Demo(tmp_path, _args(tmp_path, "--adcsr-weights", "w"), tmp_path)
    assert released.steps() == ["evaluate", "infer", "export", "report"]


def test_bad_flags_exit_2(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path), "--pair-crop", "100"]) == 2
    assert "--pair-crop must be a multiple of 64" in capsys.readouterr().err
    assert main(["demo", "--workdir", str(tmp_path), "--stage2-steps", "0"]) == 2
    missing = tmp_path / "nope.pkl"
    assert main(["demo", "--workdir", str(tmp_path), "--adcsr-weights", str(missing)]) == 2
    assert "nope.pkl" in capsys.readouterr().err
    assert main(["demo", "--workdir", str(tmp_path), "--sd21", str(tmp_path)]) == 2
    assert "also give --osediff" in capsys.readouterr().err
    assert main(["demo", "--workdir", str(tmp_path), "--osediff", str(tmp_path)]) == 2
    assert "--osediff / --ram / --dape need --sd21" in capsys.readouterr().err


def test_a_missing_package_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "skimage" else real(n, *a)
    )
    assert main(["demo", "--workdir", str(tmp_path)]) == 2
    assert "needs skimage (the sample photos): pip install -e '.[data]'" in capsys.readouterr().err


def test_teacher_flags_need_sd21(tmp_path, capsys):
    weights = tmp_path / "student"
    weights.mkdir()
    argv = ["demo", "--workdir", str(tmp_path / "w"), "--adcsr-weights", str(weights)]
    assert main([*argv, "--osediff", str(weights)]) == 2
    assert "--osediff / --ram / --dape need --sd21" in capsys.readouterr().err


def test_teacher_is_left_out_with_the_reason_when_sd21_has_no_text_encoder(tmp_path):
    from adcsr_jax.cli.demo import Demo

    (tmp_path / "sd21").mkdir()
    flags = ["--adcsr-weights", str(tmp_path), "--sd21", str(tmp_path / "sd21")]
    assert Demo(tmp_path, _args(tmp_path, *flags), tmp_path).teacher() == "no --osediff"
    demo = Demo(tmp_path, _args(tmp_path, *flags, "--osediff", str(tmp_path)), tmp_path)
    assert (
        demo.teacher() == f"no SD 2.1 text encoder at {tmp_path / 'sd21' / 'text_encoder'} "
        "(the teacher's prompts)"
    )


def test_report_tables_and_side_by_side(tmp_path):
    from adcsr_jax.cli.demo import Demo
    from adcsr_jax.cli.demo_report import write_report

    ev = tmp_path / "evaluate"
    for sub, size in (("pairs/lr", 8), ("pairs/hr", 32), ("bicubic", 32), ("student", 32)):
        (ev / sub).mkdir(parents=True)
        Image.fromarray(np.full((size, size, 3), 100, np.uint8)).save(ev / sub / "cat.png")
    train = {"steps": 5, "seconds": 1.0, "first_logged_step": 1, "tensorboard": "tb",
             "checkpoints": "ck", "exported": ["x.ckpt"],
             "losses_first_last": {"loss/distill": [2.0, 1.5]}}  # fmt: skip
    demo = Demo(tmp_path, _args(tmp_path), tmp_path)
    demo.results = {
        "stage1": train, "stage2": train,
        "evaluate": {"lr_dir": str(ev / "pairs/lr"), "hr_dir": str(ev / "pairs/hr"),
                     "bicubic": {"psnr": 20.0, "lpips": 0.5}, "student": {"psnr": 18.5,
                     "lpips": 0.6}, "skipped": {"dists": "no weights"}},
        "infer": {"input": "cat 8x8", "tile": 48, "overlap": 16, "seconds": 0.5, "output": "o"},
        "export": {"lr_size": 8, "skipped": {"onnx fp32": "needs onnx"},
                   "rows": [{"format": "tflite", "precision": "w8a16", "path": "m.tflite",
                             "file_mb": 1.5, "latency_ms": 3.0, "psnr_vs_jax": 41.0,
                             "rel_max_err": 0.01}]},
    }  # fmt: skip
    md, png = write_report(demo)
    text = md.read_text()
    assert "| bicubic | 20 | 0.5 |" in text and "| student | 18.5 | 0.6 |" in text
    assert "dists skipped: no weights" in text and "onnx fp32 skipped: needs onnx" in text
    assert "| tflite | w8a16 | 1.5 | 3 | 41 | 0.01 |" in text
    assert "`loss/distill`: 2 -> 1.5" in text and "It is not a model" in text
    assert "| teacher |" not in text and "LR | bicubic | student | HR" in text
    assert np.asarray(Image.open(png)).shape == (32, 4 * 32 + 3 * 4, 3)

    (ev / "teacher").mkdir()
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(ev / "teacher" / "cat.png")
    demo.results["evaluate"].update(teacher={"psnr": 21.0, "lpips": 0.3},
                                    teacher_prompts=["cat, grass"])  # fmt: skip
    md, png = write_report(demo)
    text = md.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "." in ln]
    assert rows[:3] == [
        "| bicubic | 20 | 0.5 |",
        "| teacher | 21 | 0.3 |",
        "| student | 18.5 | 0.6 |",
    ]
    assert "LR | bicubic | teacher | student | HR" in text and "`cat, grass`" in text
    image = np.asarray(Image.open(png))
    assert image.shape == (32, 5 * 32 + 4 * 4, 3)
    assert (image[:, 2 * 36 : 2 * 36 + 32] == 7).all()  # the teacher panel, third


@pytest.mark.slow
def test_tiny_demo_runs_end_to_end_and_a_rerun_skips_every_step(tmp_path, capsys):
    pytest.importorskip("skimage")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tensorflow")
    # The default pair crop (LR 32): at LR 16 the tiny student attends over a 1 x 1 latent and
    # its W8A16 file agrees with JAX at only ~14 dB (measured), below the check's 25 dB.
    argv = ["demo", "--workdir", str(tmp_path), "--stage1-steps", "6", "--stage2-steps", "6",
            "--pair-crop", "128"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[demo 7/7] report" in out
    results = {p.parent.name: json.loads(p.read_text()) for p in tmp_path.glob("*/done.json")}
    assert set(results) == {"vae", "stage1", "stage2", "evaluate", "infer", "export", "report"}
    assert results["stage2"]["steps"] == 6 and (tmp_path / "stage2" / "student").is_dir()
    assert {r["format"] for r in results["export"]["rows"]} == {"tflite", "onnx"}
    for row in results["export"]["rows"]:
        assert Path(row["path"]).is_file() and row["psnr_vs_jax"] > 25
    ev = results["evaluate"]
    assert set(ev["student"]) >= {"psnr", "ssim"} and set(ev["bicubic"]) >= {"psnr", "ssim"}
    text = (tmp_path / "report.md").read_text()
    assert "| student |" in text and (tmp_path / "side_by_side.png").is_file()
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert again.count("done in an earlier run, skipped") == 7


@pytest.mark.slow
def test_real_mode_trains_from_sd21_and_osediff_folders(tmp_path, capsys):
    """``--sd21 --osediff``: the full configs and the real loading code (diffusers folders, a
    converted teacher) on small SD-shaped networks written here; two steps per stage."""
    pytest.importorskip("skimage")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tensorflow")
    pytest.importorskip("diffusers")
    from adcsr_jax.models.adcsr import random_params
    from adcsr_jax.models.osediff import OSEDiffConfig, abstract_params
    from adcsr_jax.testing import reference as ref
    from adcsr_jax.testing import torch_adcsr as T
    from adcsr_jax.weights.osediff_ckpt import read_sd21, save_teacher

    sd21 = tmp_path / "sd21"
    vae_cfg = {**T.TINY_SD_VAE_CONFIG, "block_out_channels": [64, 64, 128, 128],
               "layers_per_block": 2}  # fmt: skip
    ref.torch_unet(T.TINY_SD_UNET_CONFIG, seed=1).save_pretrained(sd21 / "unet")
    ref.torch_vae(vae_cfg, seed=2).save_pretrained(sd21 / "vae")
    unet_cfg, _, vae, _ = read_sd21(sd21)
    teacher_cfg = OSEDiffConfig(unet=unet_cfg, vae=vae, half_decoder=None)
    save_teacher(tmp_path / "teacher", teacher_cfg, random_params(abstract_params(teacher_cfg), 3))
    work = tmp_path / "demo"
    argv = ["demo", "--workdir", str(work), "--sd21", str(sd21), "--osediff",
            str(tmp_path / "teacher"), "--stage1-steps", "2", "--stage2-steps", "2", "--crop",
            "64", "--batch-size", "2", "--pair-crop", "128"]  # fmt: skip
    assert main(argv) == 0
    results = {p.parent.name: json.loads(p.read_text()) for p in work.glob("*/done.json")}
    assert set(results) == {"stage1", "stage2", "evaluate", "infer", "export", "report"}
    assert results["stage1"]["steps"] == 2 and results["stage2"]["steps"] == 2
    assert "full-size networks trained from your SD 2.1-base" in (work / "report.md").read_text()
    assert results["evaluate"]["skipped"]["teacher"].startswith("no SD 2.1 text encoder")


@pytest.mark.slow
def test_released_student_and_teacher_are_evaluated_exported_and_reported(tmp_path, capsys):
    """``--adcsr-weights --sd21 --osediff``: no training; the released student (a converted
    folder) and the teacher (osediff.pkl in AdcSR's merged layout, converted by the demo, with
    SD 2.1's text encoder) on the held-out pairs, then the exports and the report."""
    pytest.importorskip("skimage")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tensorflow")
    import torch
    import transformers

    from adcsr_jax.models.adcsr import AdcSRConfig, init_student
    from adcsr_jax.testing import reference as ref
    from adcsr_jax.testing import torch_adcsr as T
    from adcsr_jax.weights.adcsr_ckpt import save_student

    module, params = init_student(AdcSRConfig.tiny(), seed=0)
    save_student(tmp_path / "student", AdcSRConfig.tiny(), params)
    sd21 = tmp_path / "sd21"
    unet = ref.torch_unet(T.TINY_SD_UNET_CONFIG, seed=1)
    vae = ref.torch_vae(T.TINY_SD_VAE_CONFIG, seed=2)
    unet.save_pretrained(sd21 / "unet")
    vae.save_pretrained(sd21 / "vae")
    torch.manual_seed(3)
    text_cfg = transformers.CLIPTextConfig(hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=1, num_attention_heads=2,
                                           max_position_embeddings=77, projection_dim=32)  # fmt: skip
    transformers.CLIPTextModel(text_cfg).save_pretrained(sd21 / "text_encoder")
    merged = tmp_path / "osediff.pkl"  # AdcSR's layout: {"unet": sd, "vae": sd}, LoRA merged
    torch.save({"unet": unet.state_dict(), "vae": vae.state_dict()}, merged)
    work = tmp_path / "demo"
    argv = ["demo", "--workdir", str(work), "--adcsr-weights", str(tmp_path / "student"),
            "--sd21", str(sd21), "--osediff", str(merged), "--pair-crop", "128"]  # fmt: skip
    assert main(argv) == 0
    results = {p.parent.name: json.loads(p.read_text()) for p in work.glob("*/done.json")}
    assert set(results) == {"evaluate", "infer", "export", "report"}
    ev = results["evaluate"]
    assert set(ev["teacher"]) >= {"psnr", "ssim"} and set(ev["student"]) >= {"psnr", "ssim"}
    # No --ram: no tags, only test_osediff.py's f"{tags}, {prompt}," with an empty user prompt.
    assert ev["teacher_prompts"] == [",", ","]
    assert (work / "teacher" / "params.safetensors").is_file()
    text = (work / "report.md").read_text()
    assert "| teacher |" in text and "released AdcSR student" in text
    assert {r["format"] for r in results["export"]["rows"]} == {"tflite", "onnx"}
