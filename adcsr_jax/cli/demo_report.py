"""``adcsr demo``'s report: DIR/report.md (tables, curves' final values, paths) and
DIR/side_by_side.png (LR | bicubic | [teacher |] student | HR of one held-out pair)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

REAL_THING = """\
The real thing: AdcSR's released student (weights from the AdcSR repository):

    adcsr demo --workdir runs/adcsr --adcsr-weights net_params_200.pkl --half-decoder halfDecoder.ckpt

Training it yourself (GPUs or a TPU pod; see the README's Train section):

    adcsr train --config configs/stage1.py:full --workdir runs/stage1 --config.model.sd_vae=SD21/vae
    adcsr train --config configs/stage2.py:full --workdir runs/stage2 --config.model.sd21=SD21 \\
        --config.model.osediff=OSEDIFF --config.model.half_decoder=runs/stage1 \\
        --config.prompt.ram=ram_swin_large_14m.pth --config.prompt.dape=DAPE.pth
"""

TINY_NOTE = (
    "**What this is.** Tiny networks (a few million parameters) from random initialisation, "
    "trained for minutes on the bundled sample photos with a random teacher. This run checks "
    "that every part of the pipeline works on this machine: data and degradation, both "
    "training stages, checkpoints, evaluation, inference, export. It is not a model: expect "
    "the student to score below bicubic."
)
REAL_NOTE = (
    "**What this is.** The full-size networks trained from your SD 2.1-base and OSEDiff weights "
    "for the few steps and the sample photos this run used: a check of the real training path, "
    "not the paper's 200k steps on LSDIR."
)
RELEASED_NOTE = (
    "**What this is.** The released AdcSR student on held-out sample photos degraded with the "
    "`adcsr` preset (Real-ESRGAN's second-order pipeline), no training."
)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def methods(evaluation: dict[str, Any]) -> list[str]:
    """The evaluated methods in table order: bicubic, the teacher when it ran, the student."""
    return [m for m in ("bicubic", "teacher", "student") if m in evaluation]


def metric_table(evaluation: dict[str, Any]) -> list[str]:
    names = [k for k in evaluation["student"] if k in evaluation["bicubic"]]
    arrows = {"psnr": "up", "ssim": "up", "lpips": "down", "dists": "down"}
    head = " | ".join(f"{n.upper()} ({arrows.get(n, '')})" for n in names)
    lines = [f"| Method | {head} |", "|---" * (len(names) + 1) + "|"]
    for method in methods(evaluation):
        row = evaluation[method]
        lines.append(f"| {method} | " + " | ".join(_fmt(row[n]) for n in names) + " |")
    for name, reason in evaluation.get("skipped", {}).items():
        lines.append(f"\n{name} skipped: {reason}")
    return lines


def export_table(export: dict[str, Any]) -> list[str]:
    lines = [
        "| Format | Precision | Size (MB) | CPU latency (ms) | PSNR vs JAX (dB) | rel. max err |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in export["rows"]:
        lines.append(
            f"| {r['format']} | {r['precision']} | {_fmt(r['file_mb'], 3)} | "
            f"{_fmt(r['latency_ms'], 3)} | {_fmt(r['psnr_vs_jax'], 4)} | {_fmt(r['rel_max_err'], 3)} |"
        )
    for name, reason in export.get("skipped", {}).items():
        lines.append(f"\n{name} skipped: {reason}")
    return lines


def training_lines(name: str, result: dict[str, Any]) -> list[str]:
    lines = [f"**{name}** ({result['steps']} steps, {result['seconds']:.0f} s): "
             f"first logged step {result['first_logged_step']} -> last"]  # fmt: skip
    for k, (a, b) in sorted(result["losses_first_last"].items()):
        lines.append(f"- `{k}`: {_fmt(a)} -> {_fmt(b)}")
    lines.append(
        f"- TensorBoard: `{result['tensorboard']}`; checkpoints: `{result['checkpoints']}`"
    )
    lines += [f"- exported: `{p}`" for p in result["exported"]]
    return lines


def side_by_side(evaluation: dict[str, Any], evaluate_dir: Path, out: Path) -> Path:
    """LR (nearest x4) | bicubic | [teacher |] student | HR of the first held-out pair, as one
    PNG."""
    from adcsr_jax.image_io import list_images, read_image, write_png

    lr_path = list_images(evaluation["lr_dir"])[0]
    lr = read_image(lr_path)
    panels = [np.repeat(np.repeat(lr, 4, 0), 4, 1)]
    panels += [read_image(evaluate_dir / m / lr_path.name) for m in methods(evaluation)]
    panels.append(read_image(Path(evaluation["hr_dir"]) / lr_path.name))
    gap = np.ones((panels[0].shape[0], 4, 3), np.float32)
    row = [p for panel in panels for p in (panel, gap)][:-1]
    write_png(out, np.concatenate(row, axis=1))
    return out


def write_report(demo: Any) -> tuple[Path, Path]:
    """Writes the report from ``demo.results`` (each step's summary); returns (md, png)."""
    r = demo.results
    image = side_by_side(r["evaluate"], demo.dir("evaluate"), demo.workdir / "side_by_side.png")
    total = sum(float(v.get("seconds", 0.0)) for k, v in r.items() if k != "report")
    note = RELEASED_NOTE if demo.released else REAL_NOTE if demo.real else TINY_NOTE
    lines = ["# AdcSR demo report", "", note, ""]
    lines += [f"Steps took {total:.0f} s in all (summed over runs that did them).", ""]
    panels = " | ".join(["LR", *methods(r["evaluate"]), "HR"])
    vs = " and the teacher" if "teacher" in r["evaluate"] else ""
    lines += [f"## Held-out pairs: student vs bicubic x4{vs}", ""]
    lines += [f"{len(list(Path(r['evaluate']['lr_dir']).iterdir()))} held-out sample photos, "
              f"centre {demo.pair_crop}-pixel HR crops, LR by the `adcsr` degradation.", ""]  # fmt: skip
    lines += metric_table(r["evaluate"]) + [""]
    prompts = r["evaluate"].get("teacher_prompts")
    if prompts:
        lines += ["Teacher prompts (DAPE tags, as `test_osediff.py` makes them): "
                  + "; ".join(f"`{p}`" for p in prompts), ""]  # fmt: skip
    lines += [f"![{panels}]({image.name})", "", panels, ""]
    lines += ["## Exports (student)", "", f"LR input {r['export']['lr_size']} pixels; latency is "
              "the median of 5 runs on this CPU.", ""]  # fmt: skip
    lines += export_table(r["export"]) + [""]
    lines += ["## Inference on a photo larger than one tile", ""]
    inf = r["infer"]
    lines += [f"{inf['input']} in {inf['tile']}-pixel tiles (overlap {inf['overlap']}), "
              f"{inf['seconds']:.1f} s: `{inf['output']}`", ""]  # fmt: skip
    stages = [
        ("stage1", "Stage 1 (half decoder)"),
        ("stage2", "Stage 2 (adversarial distillation)"),
    ]
    if any(k in r for k, _ in stages):
        lines += ["## Training", ""]
        for key, title in stages:
            if key in r:
                lines += training_lines(title, r[key]) + [""]
    lines += ["## Files", "", f"- workdir: `{demo.workdir}`",
              f"- student weights: `{demo.student_dir()}`"]  # fmt: skip
    lines += [
        f"- {row['format']} {row['precision']}: `{row['path']}`" for row in r["export"]["rows"]
    ]
    lines += ["", "## Next", "", "```", *REAL_THING.splitlines(), "```", ""]
    md = demo.workdir / "report.md"
    md.write_text("\n".join(lines))
    return md, image
