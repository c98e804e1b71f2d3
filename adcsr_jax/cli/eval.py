"""Evaluate super-resolved images with the paper's metrics (PSNR, SSIM, LPIPS, DISTS, FID, NIQE, MUSIQ, MANIQA, CLIPIQA).

  adcsr eval --sr DIR --hr DIR [--lr DIR] [--metrics psnr ssim ...] [--workdir DIR]
  adcsr eval --model WEIGHTS --dataset DIR [--workdir DIR]   (super-resolve DIR's LR images first)

Pairs are matched by file name. A --dataset folder holds LR/ and HR/ (AdcSR's layout),
test_LR/ and test_HR/ (StableSR/OSEDiff) or lq/ and gt/; with --model the converted student
writes its outputs to --sr (default WORKDIR/sr) before the evaluation. An image that cannot be
read is reported (``skipped FILE: REASON``) and left out of every metric; the exit status is 1.

Writes per_image.csv, summary.md / summary.csv (the paper's table layout) and TensorBoard
summaries under --workdir (no TensorFlow needed), and prints the summary table.
LPIPS, DISTS, FID and NIQE weights come from the cache that `adcsr convert metrics` prepares
(--cache, default $ADCSR_CACHE or ~/.cache/adcsr_jax). MUSIQ, MANIQA and CLIPIQA weights ship
in no package: name their files with --musiq-weights / --maniqa-weights / --clipiqa-weights or
$ADCSR_MUSIQ_WEIGHTS / $ADCSR_MANIQA_WEIGHTS / $ADCSR_CLIP_RN50_WEIGHTS; without them and
without an explicit --metrics those three are skipped with a note saying which file is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adcsr_jax.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    CommandError,
    existing_dir,
    existing_file,
    output_dir,
    positive,
    report_skipped,
)

LEARNED_NR = ("musiq", "maniqa", "clipiqa")  # no-reference metrics whose weights ship nowhere


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sr", type=Path, help="folder of super-resolved images")
    parser.add_argument("--model", type=Path, help="converted AdcSR weights: super-resolve first")
    parser.add_argument(
        "--dataset", type=Path, help="folder with LR/ and HR/ (or test_LR/test_HR, lq/gt)"
    )
    parser.add_argument("--hr", type=Path, help="folder of ground-truth images (same names)")
    parser.add_argument("--lr", type=Path, help="folder of LR inputs (only for the image grids)")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help="metrics to compute (default: all nine of the paper; 'lpips-vgg' also available)",
    )
    parser.add_argument("--workdir", type=Path, help="where tables and TensorBoard summaries go")
    parser.add_argument(
        "--cache", default=None, help="metric weight cache root (adcsr convert metrics)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dataset-name", default="", help="row label in the summary table")
    parser.add_argument("--method", default="", help="row label in the summary table")
    for name in LEARNED_NR:
        parser.add_argument(f"--{name}-weights", default=None, help=f"{name.upper()} weight file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _check(args: argparse.Namespace) -> None:
    """Every path and value of the command line, before any metric or model loads."""
    from adcsr_jax.image_io import find_pair_dirs

    positive(args.batch_size, "--batch-size")
    if args.dataset is not None:
        existing_dir(args.dataset, "--dataset")
        try:
            lr_dir, hr_dir = find_pair_dirs(args.dataset)
        except FileNotFoundError as err:
            raise CommandError(f"--dataset {err}") from err
        args.lr, args.hr = args.lr or lr_dir, args.hr or hr_dir
        args.dataset_name = args.dataset_name or args.dataset.name
    if args.model is not None:
        if args.dataset is None:
            raise CommandError("--model needs --dataset DIR (the LR/HR folder to super-resolve)")
        existing_dir(args.model, "--model")
        args.workdir = args.workdir or Path("eval") / args.dataset.name
        args.sr = output_dir(args.sr or args.workdir / "sr", "--sr")
        args.method = args.method or args.model.name
    elif args.sr is None:
        raise CommandError("give --sr DIR (or --model WEIGHTS --dataset DIR)")
    else:
        existing_dir(args.sr, "--sr")
    for flag in ("hr", "lr"):
        if getattr(args, flag) is not None:
            existing_dir(getattr(args, flag), f"--{flag}")
    if args.workdir is not None:
        output_dir(args.workdir, "--workdir")
    if args.cache is not None:
        existing_dir(args.cache, "--cache")
    for name in LEARNED_NR:
        if getattr(args, f"{name}_weights"):
            existing_file(getattr(args, f"{name}_weights"), f"--{name}-weights")
    if args.metrics is not None:
        from adcsr_jax.eval.base import available_metrics

        known = [*available_metrics(), "fid"]
        unknown = [m for m in args.metrics if m.lower() not in known]
        if unknown:
            raise CommandError(f"--metrics: unknown {' '.join(unknown)}; known: {' '.join(known)}")


def _super_resolve(model: Path, lr_dir: Path, sr_dir: Path) -> list[tuple[Path, str]]:
    """Run the student over ``lr_dir`` into ``sr_dir``; returns the LR files that failed."""
    from adcsr_jax.infer import super_resolve_folder
    from adcsr_jax.weights.adcsr_ckpt import KIND, read_converted_meta
    from adcsr_jax.weights.errors import CheckpointReadError

    try:
        read_converted_meta(model, KIND)
    except CheckpointReadError as err:
        raise CommandError(
            f"--model {err}; make one with `adcsr convert adcsr --net ... --out DIR`"
        ) from err
    print(f"super-resolving {lr_dir} with {model} into {sr_dir}", file=sys.stderr)
    sr_dir.mkdir(parents=True, exist_ok=True)
    return super_resolve_folder(model, lr_dir, sr_dir).failed


def run(args: argparse.Namespace) -> int:
    _check(args)
    failed: list[tuple[Path, str]] = []
    if args.model is not None:
        failed += _super_resolve(args.model, args.lr, args.sr)
    from adcsr_jax.eval.evaluator import evaluate
    from adcsr_jax.eval.report import summary_markdown

    opts = {
        name: {"weights_path": getattr(args, f"{name}_weights")}
        for name in LEARNED_NR
        if getattr(args, f"{name}_weights")
    }
    dataset = args.dataset_name or (args.hr.parent.name if args.hr else "")
    method = args.method or args.sr.name
    try:
        result = evaluate(
            args.sr,
            args.hr,
            lr_dir=args.lr,
            metrics=args.metrics,
            workdir=args.workdir,
            weights_dir=args.cache,
            batch_size=args.batch_size,
            metric_opts=opts,
            dataset=dataset,
            method=method,
            progress=not args.no_progress,
        )
    except (KeyError, ValueError) as err:  # a metric that needs what was not given
        raise CommandError(str(err).strip("'\"")) from err
    failed += result.failed
    for name, reason in result.skipped.items():
        print(f"adcsr eval: metric {name} not computed: {reason}", file=sys.stderr)
    columns = list(result.summary) + list(result.skipped)
    print(summary_markdown([result.row(dataset, method)], columns))
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    return EXIT_PARTIAL if report_skipped("eval", failed) else EXIT_OK
