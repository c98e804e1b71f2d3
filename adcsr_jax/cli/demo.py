"""Run the whole AdcSR pipeline end to end: adcsr demo [--workdir DIR].

With no weights (the default) it trains tiny networks from random initialisation on the
bundled sample photos, in minutes on a CPU:

  1. a tiny SD-VAE-shaped autoencoder, the frozen encoder both stages read;
  2. stage 1, the channel-pruned half decoder (configs/stage1.py:tiny);
  3. stage 2, adversarial distillation into the student, starting from that decoder
     (configs/stage2.py:tiny, DAPE-style prompts from a tiny random tagger);
  4. evaluation of the student on held-out pairs (the sample photos that training never saw,
     degraded with the `adcsr` preset), next to bicubic x4;
  5. inference on a photo larger than one tile;
  6. TFLite W8A16 and ONNX exports, each checked against JAX and timed on this CPU;
  7. DIR/report.md and DIR/side_by_side.png.

With --adcsr-weights (a converted student folder, or AdcSR's net_params_*.pkl together with
--half-decoder), the released student replaces steps 1-3 and runs at full size. With --sd21
(SD 2.1-base in diffusers layout) and --osediff (the teacher), steps 2-3 train the full-size
networks from those weights (configs/stage1.py:full and configs/stage2.py:full) on the sample
photos at the --batch-size / --crop / --stage*-steps you pick; --half-decoder skips stage 1,
--ram / --dape give the teacher DAPE's prompts (else one fixed embedding). Slow on a CPU: meant
for a GPU or TPU machine. Whenever --osediff is given (with --sd21 for its text encoder), the
teacher is evaluated on the same held-out pairs, a row beside bicubic and the student.

Each step writes DIR/<step>/done.json when it finishes, so running the same command again skips
finished steps and resumes a training stage from its last checkpoint (after Ctrl-C, a kill or
a reboot). Tiny networks trained for minutes check the pipeline; they are not a model.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adcsr_jax.cli.common import EXIT_OK, CommandError, existing_path

STEPS = ("vae", "stage1", "stage2", "evaluate", "infer", "export", "report")
METRICS = ("psnr", "ssim", "lpips", "dists")
DONE = "done.json"
TINY_STAGE1_STEPS = 100  # half of configs/stage1.py:tiny's: the demo stays within 15 min here


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="runs/demo", help="everything goes here")
    parser.add_argument(
        "--adcsr-weights",
        metavar="PATH",
        help="the released student instead of training: a converted folder (adcsr convert "
        "adcsr) or net_params_*.pkl (then also --half-decoder)",
    )
    parser.add_argument(
        "--half-decoder", metavar="FILE", help="halfDecoder.ckpt (with a .pkl, or to skip stage 1)"
    )
    real = parser.add_argument_group("training from the real weights (instead of tiny networks)")
    real.add_argument("--sd21", metavar="DIR", help="SD 2.1-base, diffusers layout")
    real.add_argument("--osediff", metavar="PATH", help="the teacher: osediff.pkl or converted")
    real.add_argument("--ram", metavar="FILE", help="ram_swin_large_14m.pth (teacher prompts)")
    real.add_argument("--dape", metavar="FILE", help="DAPE.pth (OSEDiff's LoRA for RAM)")
    real.add_argument("--batch-size", type=int, default=2, help="global batch (default 2)")
    real.add_argument("--crop", type=int, default=256, help="HR crop side (default 256)")
    parser.add_argument(
        "--stage1-steps",
        type=int,
        default=None,
        help=f"stage-1 steps (default {TINY_STAGE1_STEPS} tiny, 1000 with --sd21)",
    )
    parser.add_argument(
        "--stage2-steps",
        type=int,
        default=None,
        help="stage-2 steps (default: configs/stage2.py:tiny's 200, 1000 with --sd21)",
    )
    parser.add_argument(
        "--pair-crop",
        type=int,
        default=None,
        help="HR side of the held-out pairs (default 128 for the tiny student, 512 released)",
    )


# ----------------------------------------------------------------------------- bookkeeping
@dataclass
class Demo:
    """What the steps share: the folders, the options and each finished step's summary."""

    workdir: Path
    args: argparse.Namespace
    configs: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def released(self) -> bool:
        return bool(self.args.adcsr_weights)

    @property
    def real(self) -> bool:
        """Training the full-size networks from --sd21 (not tiny random ones)."""
        return bool(self.args.sd21) and not self.released

    def steps(self) -> list[str]:
        skip = {"vae", "stage1", "stage2"} if self.released else set()
        if self.real:
            skip |= {"vae"} | ({"stage1"} if self.args.half_decoder else set())
        return [s for s in STEPS if s not in skip]

    def half_decoder(self) -> Path:
        """Stage 2's start: --half-decoder, else what stage 1 wrote."""
        if self.args.half_decoder:
            return Path(self.args.half_decoder)
        return self.dir("stage1") / "halfDecoder.ckpt"

    def dir(self, step: str) -> Path:
        return self.workdir / step

    @property
    def student(self) -> Path:
        return self.dir("stage2") / "student"

    @property
    def pair_crop(self) -> int:
        return self.args.pair_crop or (128 if not (self.released or self.real) else 512)

    def student_dir(self) -> Path:
        """The trained student, or the released one (converted once into DIR/student)."""
        if not self.released:
            return self.student
        source = Path(self.args.adcsr_weights)
        if source.is_dir():
            return source
        folder = self.workdir / "student"
        if not (folder / "params.safetensors").is_file():
            from adcsr_jax.weights.adcsr_ckpt import convert_official, save_student  # noqa: PLC0415

            if not self.args.half_decoder:
                raise CommandError(f"--adcsr-weights {source} is a file: also give --half-decoder")
            config, params = convert_official(source, Path(self.args.half_decoder), None)
            save_student(folder, config, params)
        return folder

    def teacher(self) -> tuple[Path, Path] | str:
        """(converted teacher folder, SD 2.1's text_encoder/) for the evaluation, or why the
        teacher is left out. An ``osediff.pkl`` is converted once into DIR/teacher."""
        a = self.args
        if not a.osediff:
            return "no --osediff"
        text = Path(a.sd21) / "text_encoder"
        if not (text / "config.json").is_file():
            return f"no SD 2.1 text encoder at {text} (the teacher's prompts)"
        source = Path(a.osediff)
        if source.is_dir():
            return source, text
        folder = self.workdir / "teacher"
        if not (folder / "params.safetensors").is_file():
            from adcsr_jax.weights.osediff_ckpt import convert_osediff, save_teacher  # noqa: PLC0415

            save_teacher(folder, *convert_osediff(source, Path(a.sd21)))
        return folder, text


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _repo_configs() -> Path:
    import adcsr_jax  # noqa: PLC0415

    configs = Path(adcsr_jax.__file__).resolve().parents[1] / "configs"
    if not (configs / "stage2.py").is_file():
        raise CommandError(
            f"no configs/ beside the package ({configs}); run adcsr demo from a source checkout "
            "(git clone, then bash scripts/setup_env.sh)"
        )
    return configs


def _check_packages(train: bool) -> None:
    """One line naming the extra to install, before anything slow."""
    import importlib.util  # noqa: PLC0415

    needs = [("skimage", "data", "the sample photos")]
    if train:
        needs.append(("torch", "torch", "halfDecoder.ckpt and the official exports"))
    for module, extra, why in needs:
        if importlib.util.find_spec(module) is None:
            raise CommandError(f"needs {module} ({why}): pip install -e '.[{extra}]'")


def _devices_for(batch: int) -> int:
    """The most local devices the batch splits over evenly (the tiny batches are 2 and 4)."""
    import jax  # noqa: PLC0415

    return max(d for d in range(1, jax.device_count() + 1) if batch % d == 0)


def _train(demo: Demo, config_file: str, name: str, overrides: list[str]) -> dict[str, Any]:
    """One training stage through the engine (resumes from DIR/<name>/checkpoints)."""
    from adcsr_jax.train import loop  # noqa: PLC0415
    from adcsr_jax.train.config import load_config  # noqa: PLC0415

    variant = "full" if demo.real else "tiny"
    config = load_config(f"{demo.configs / config_file}:{variant}", overrides)
    config.mesh.num_devices = _devices_for(int(config.data.batch_size))
    result = loop.train(config, demo.dir(name))
    if result.stopped != "done":
        raise KeyboardInterrupt(f"{name} stopped at step {result.step} ({result.stopped})")
    rows = [r for r in loop.read_metrics(demo.dir(name)) if any(k.startswith("loss/") for k in r)]
    first, last = rows[0], rows[-1]
    losses = {k: (first[k], last[k]) for k in last if k.startswith("loss/") and k in first}
    return {
        "steps": result.step,
        "losses_first_last": losses,
        "first_logged_step": first["step"],
        "tensorboard": str(demo.dir(name) / "tensorboard"),
        "checkpoints": str(demo.dir(name) / "checkpoints"),
        "exported": [str(p) for p in result.exported],
    }


# ----------------------------------------------------------------------------- steps
def step_vae(demo: Demo) -> dict[str, Any]:
    """The tiny random SD-VAE both stages read (stage 1's encoder, stage 2's f_R and tail)."""
    from adcsr_jax.models.adcsr import random_params  # noqa: PLC0415
    from adcsr_jax.train import stage1  # noqa: PLC0415
    from adcsr_jax.train.config import load_config  # noqa: PLC0415
    from adcsr_jax.weights.loaders import save_converted  # noqa: PLC0415
    from adcsr_jax.weights.networks import vae_template  # noqa: PLC0415

    config = load_config(f"{demo.configs / 'stage1.py'}:tiny", [])
    vae = stage1.sd_vae_config(config)
    folder = save_converted(demo.dir("vae"), "vae", vae, random_params(vae_template(vae), 0))
    return {"folder": str(folder), "block_out_channels": list(vae.block_out_channels)}


def _real_overrides(demo: Demo, steps: int | None) -> list[str]:
    """The full configs on the sample photos at the user's batch, crop and steps (no eval
    during training: the demo evaluates after)."""
    a = demo.args
    every = max(1, (steps or 1000) // 4)
    return [
        "--config.data.source=sample:train",
        f"--config.data.batch_size={a.batch_size}",
        f"--config.data.crop={a.crop}",
        f"--config.total_steps={steps or 1000}",
        f"--config.checkpoint.every_steps={every}",
        "--config.log.every_steps=10",
        "--config.eval.every_steps=0",
        "--config.mesh.fsdp=1",
        f"--config.data.pool_size={4 * a.batch_size}",  # a few photos: no 1200-pair pool
    ]


def _vae_overrides(vae: Path) -> list[str]:
    """Stage 1's SD-VAE architecture fields from the VAE folder's ``config.json`` (SD 2.1's
    values are the config's defaults; another SD-like VAE then needs no edit)."""
    try:
        cfg = json.loads((vae / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CommandError(f"--sd21: cannot read {vae / 'config.json'}: {e}") from None
    widths = tuple(int(w) for w in cfg.get("block_out_channels", (128, 256, 512, 512)))
    return [
        f"--config.model.sd_block_out_channels={widths}",
        f"--config.model.layers_per_block={int(cfg.get('layers_per_block', 2))}",
        f"--config.model.norm_num_groups={int(cfg.get('norm_num_groups', 32))}",
    ]


def _cpu_dtype() -> list[str]:
    """fp32 on a CPU (bf16 is emulated there and slower); the config's bf16 elsewhere."""
    import jax  # noqa: PLC0415

    return ["--config.compute_dtype=float32"] if jax.default_backend() == "cpu" else []


def stage1_overrides(demo: Demo) -> list[str]:
    a = demo.args
    if demo.real:
        vae = Path(a.sd21) / "vae"
        return [*_real_overrides(demo, a.stage1_steps), f"--config.model.sd_vae={vae}",
                "--config.optim.micro_batches=1", *_vae_overrides(vae)]  # fmt: skip
    overrides = [
        f"--config.model.sd_vae={demo.dir('vae')}",
        "--config.data.source=sample:train",  # the held-out photos stay out of training
        "--config.log.tensorboard=True",
    ]
    overrides.append(f"--config.total_steps={a.stage1_steps or TINY_STAGE1_STEPS}")
    return overrides


def stage2_overrides(demo: Demo) -> list[str]:
    a = demo.args
    common = [
        f"--config.model.half_decoder={demo.half_decoder()}",
        "--config.eval.every_steps=0",  # the demo evaluates next, on larger held-out pairs
        "--config.eval.at_end=False",
    ]
    if demo.real:
        prompt = ["--config.prompt.source=fixed"]
        if a.ram:
            prompt = [f"--config.prompt.ram={a.ram}"] + ([f"--config.prompt.dape={a.dape}"] if a.dape else [])  # fmt: skip
        return [*_real_overrides(demo, a.stage2_steps), *common, *prompt, *_cpu_dtype(),
                f"--config.model.sd21={a.sd21}", f"--config.model.osediff={a.osediff}"]  # fmt: skip
    overrides = [f"--config.model.sd_vae={demo.dir('vae')}", *common]
    if a.stage2_steps:
        overrides.append(f"--config.total_steps={a.stage2_steps}")
    return overrides


def step_stage1(demo: Demo) -> dict[str, Any]:
    return _train(demo, "stage1.py", "stage1", stage1_overrides(demo))


def step_stage2(demo: Demo) -> dict[str, Any]:
    return _train(demo, "stage2.py", "stage2", stage2_overrides(demo))


def _upscaler(demo: Demo, **options: Any) -> Any:
    from adcsr_jax.infer import InferOptions, Upscaler  # noqa: PLC0415

    return Upscaler.from_weights(demo.student_dir(), InferOptions(progress=False, **options))


def _teacher_upscaler(demo: Demo, folder: Path, text_encoder: Path) -> Any:
    """OSEDiff prompted as ``test_osediff.py`` does (DAPE's tags with --ram, else the empty
    prompt), with its own colour fix (AdaIN)."""
    from adcsr_jax.infer import InferOptions, TeacherUpscaler  # noqa: PLC0415

    options = InferOptions(progress=False, colour_fix="adain")
    a = demo.args
    return TeacherUpscaler.from_weights(folder, text_encoder, a.ram, a.dape, "", options)


def step_evaluate(demo: Demo) -> dict[str, Any]:
    """Student, bicubic x4 (and the teacher, with --osediff) on the held-out pairs, the same
    metrics for each."""
    import numpy as np  # noqa: PLC0415

    from adcsr_jax.data.sample_set import sample_pairs  # noqa: PLC0415
    from adcsr_jax.eval.evaluator import evaluate  # noqa: PLC0415
    from adcsr_jax.image_io import list_images, read_image, write_png  # noqa: PLC0415
    from adcsr_jax.resize import bicubic_resize  # noqa: PLC0415

    out = demo.dir("evaluate")
    lr_dir, hr_dir = sample_pairs(out / "pairs", demo.pair_crop)
    upscalers = {"student": _upscaler(demo)}
    summary: dict[str, Any] = {"lr_dir": str(lr_dir), "hr_dir": str(hr_dir), "skipped": {}}
    teacher = demo.teacher()
    if isinstance(teacher, tuple):
        upscalers["teacher"] = _teacher_upscaler(demo, *teacher)
    elif demo.args.osediff:
        summary["skipped"]["teacher"] = teacher
    for path in list_images(lr_dir):
        lr = read_image(path)[None]
        for method, upscaler in upscalers.items():
            write_png(out / method / path.name, upscaler(lr)[0])
        bicubic = np.clip(np.asarray(bicubic_resize(lr, scale=4)), 0.0, 1.0)[0]
        write_png(out / "bicubic" / path.name, bicubic)
    if "teacher" in upscalers:
        summary["teacher_prompts"] = upscalers["teacher"].prompts
    for method in [
        m for m in ("bicubic", "teacher", "student") if m in upscalers or m == "bicubic"
    ]:
        result = evaluate(out / method, hr_dir, metrics=list(METRICS), progress=False)
        summary[method] = {k: float(v) for k, v in result.summary.items()}
        summary["skipped"].update(result.skipped)
    return summary


def step_infer(demo: Demo) -> dict[str, Any]:
    """A held-out photo, bicubic /4 as the LR, super-resolved in overlapping tiles."""
    import numpy as np  # noqa: PLC0415

    from adcsr_jax.data.sample_set import HELD_OUT, sample_images  # noqa: PLC0415
    from adcsr_jax.image_io import write_png  # noqa: PLC0415
    from adcsr_jax.resize import bicubic_resize  # noqa: PLC0415

    name = HELD_OUT[0]
    hr = sample_images()[name][..., :3].astype(np.float32) / 255.0
    h, w = (hr.shape[0] // 4) * 4, (hr.shape[1] // 4) * 4
    lr = np.clip(np.asarray(bicubic_resize(hr[None, :h, :w], scale=0.25)), 0.0, 1.0)
    small = not (demo.released or demo.real)
    tile, overlap = (48, 16) if small else (128, 32)
    start = time.perf_counter()
    sr = _upscaler(demo, tile=tile, overlap=overlap)(lr)[0]
    seconds = time.perf_counter() - start
    out = demo.dir("infer")
    write_png(out / f"{name}_lr.png", lr[0])
    write_png(out / f"{name}_x4.png", sr)
    return {
        "input": f"{name} {lr.shape[1]}x{lr.shape[2]} (bicubic /4 of the photo)",
        "output": str(out / f"{name}_x4.png"),
        "tile": tile,
        "overlap": overlap,
        "seconds": seconds,
    }


def _training_lrs() -> list:
    """W8A16 calibration inputs: the training photos (not the held-out ones), bicubic /4."""
    import numpy as np  # noqa: PLC0415

    from adcsr_jax.data.sample_set import HELD_OUT, sample_images  # noqa: PLC0415
    from adcsr_jax.resize import bicubic_resize  # noqa: PLC0415

    out = []
    for name, img in sample_images().items():
        if name not in HELD_OUT:
            x = img[None, ..., :3].astype(np.float32) / 255.0
            out.append(np.clip(np.asarray(bicubic_resize(x, scale=0.25))[0], 0.0, 1.0))
    return out


EXPORTS = (("tflite", "w8a16", "tflite"), ("onnx", "fp32", "onnx"))
INSTALL = "pip install -e '.[export]' (TensorFlow, LiteRT, onnx, onnxruntime, jax2onnx)"


def step_export(demo: Demo) -> dict[str, Any]:
    """TFLite W8A16 and ONNX fp32 at the held-out LR size, checked against JAX, timed here."""
    from adcsr_jax.data.sample_set import sample_pairs  # noqa: PLC0415
    from adcsr_jax.export import calibration, graphs, job  # noqa: PLC0415

    lr_dir, _ = sample_pairs(demo.dir("evaluate") / "pairs", demo.pair_crop)
    size = demo.pair_crop // 4
    check = calibration.from_folder(lr_dir, size, count=2)
    calib = calibration.from_arrays(_training_lrs(), size, count=8)
    model = graphs.student(demo.student_dir())
    rows, skipped = [], {}
    for fmt, precision, suffix in EXPORTS:
        out = demo.dir("export") / f"student_{precision}.{suffix}"
        try:
            m = job.export_and_check(
                graphs.for_precision(model, precision), fmt, precision, out, check, size,
                calibration=calib if precision == "w8a16" else None, runs=5,
            )  # fmt: skip
        except ModuleNotFoundError as e:
            skipped[f"{fmt} {precision}"] = f"needs {e.name}: {INSTALL}"
            print(f"[demo] export {fmt} {precision} skipped: needs {e.name}; {INSTALL}")
            continue
        acc = m.accuracy
        rows.append({
            "format": fmt, "precision": precision, "path": str(out), "file_mb": m.file_mb,
            "latency_ms": m.latency_ms, "psnr_vs_jax": acc.psnr if acc else None,
            "rel_max_err": acc.rel_max_abs if acc else None,
        })  # fmt: skip
    return {"lr_size": size, "rows": rows, "skipped": skipped}


def step_report(demo: Demo) -> dict[str, Any]:
    from adcsr_jax.cli.demo_report import write_report  # noqa: PLC0415

    paths = write_report(demo)
    return {"report": str(paths[0]), "image": str(paths[1])}


STEP_FUNCS: dict[str, Callable[[Demo], dict[str, Any]]] = {
    "vae": step_vae,
    "stage1": step_stage1,
    "stage2": step_stage2,
    "evaluate": step_evaluate,
    "infer": step_infer,
    "export": step_export,
    "report": step_report,
}


# ----------------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> int:
    from adcsr_jax.cli.train import configure_logging, use_compile_cache  # noqa: PLC0415

    if args.adcsr_weights:
        existing_path(args.adcsr_weights, "--adcsr-weights")
    if args.half_decoder:
        existing_path(args.half_decoder, "--half-decoder")
    for flag in ("stage1_steps", "stage2_steps", "pair_crop"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise CommandError(f"--{flag.replace('_', '-')} must be positive, got {value}")
    if args.pair_crop and args.pair_crop % 64:
        raise CommandError(f"--pair-crop must be a multiple of 64, got {args.pair_crop}")
    if args.adcsr_weights and args.sd21:
        existing_path(args.sd21, "--sd21")
        for flag in ("osediff", "ram", "dape"):
            if getattr(args, flag):
                existing_path(getattr(args, flag), f"--{flag}")
    elif args.sd21:
        existing_path(args.sd21, "--sd21")
        if not args.osediff:
            raise CommandError("--sd21 trains stage 2, which distils OSEDiff: also give --osediff")
        existing_path(args.osediff, "--osediff")
        for flag in ("ram", "dape", "half_decoder"):
            if getattr(args, flag):
                existing_path(getattr(args, flag), f"--{flag.replace('_', '-')}")
        if args.crop % 64 or args.batch_size <= 0:
            raise CommandError(f"--crop must be a multiple of 64 and --batch-size positive, got "
                               f"{args.crop} and {args.batch_size}")  # fmt: skip
    elif args.osediff or args.ram or args.dape:
        raise CommandError("--osediff / --ram / --dape need --sd21 (training from the real "
                           "weights, or with --adcsr-weights the teacher's evaluation)")  # fmt: skip
    _check_packages(train=not args.adcsr_weights)
    demo = Demo(Path(args.workdir), args, _repo_configs())
    demo.workdir.mkdir(parents=True, exist_ok=True)
    configure_logging()
    use_compile_cache(None)
    steps = demo.steps()
    start = time.perf_counter()
    for i, name in enumerate(steps, 1):
        done = demo.dir(name) / DONE
        if done.is_file():
            demo.results[name] = json.loads(done.read_text())
            print(f"[demo {i}/{len(steps)}] {name}: done in an earlier run, skipped", flush=True)
            continue
        print(f"[demo {i}/{len(steps)}] {name} ({time.perf_counter() - start:.0f} s so far)",
              flush=True)  # fmt: skip
        t = time.perf_counter()
        result = STEP_FUNCS[name](demo)
        result["seconds"] = result.get("seconds", time.perf_counter() - t)
        demo.results[name] = result
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(result, indent=2, default=str) + "\n")
        logging.info("demo step %s finished in %.0f s", name, time.perf_counter() - t)
    total = time.perf_counter() - start
    print(f"[demo] finished in {total:.0f} s (this run), peak memory {_peak_rss_gb():.1f} GB")
    print(f"[demo] report: {demo.results['report']['report']}")
    return EXIT_OK
