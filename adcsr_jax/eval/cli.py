"""Evaluate super-resolved images with the paper's metrics (PSNR, SSIM, LPIPS, DISTS, FID, NIQE, MUSIQ, MANIQA, CLIPIQA).

  adcsr eval --sr DIR --hr DIR [--lr DIR] [--metrics psnr ssim ...] [--workdir DIR]
  adcsr eval --model WEIGHTS --dataset DIR [--workdir DIR]   (super-resolve DIR's LR images first)

Pairs are matched by file name. A --dataset folder holds LR/ and HR/ (AdcSR's layout),
test_LR/ and test_HR/ (StableSR/OSEDiff) or lq/ and gt/; with --model the converted student
writes its outputs to --sr (default WORKDIR/sr) before the evaluation.

Writes per_image.csv, summary.md / summary.csv (the paper's table layout) and TensorBoard summaries (CLU) under --workdir, and prints the summary table.
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
    for name in ("musiq", "maniqa", "clipiqa"):
        parser.add_argument(f"--{name}-weights", default=None, help=f"{name.upper()} weight file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


DATASET_LAYOUTS = (("LR", "HR"), ("test_LR", "test_HR"), ("lq", "gt"))


def find_dataset_dirs(dataset: Path) -> tuple[Path, Path]:
    """(LR, HR) sub-folders of a benchmark folder, in any of ``DATASET_LAYOUTS``."""
    for lr, hr in DATASET_LAYOUTS:
        if (dataset / lr).is_dir() and (dataset / hr).is_dir():
            return dataset / lr, dataset / hr
    layouts = ", ".join(f"{lr}/+{hr}/" for lr, hr in DATASET_LAYOUTS)
    raise FileNotFoundError(f"{dataset} has none of the layouts {layouts}")


def _super_resolve(model: Path, lr_dir: Path, sr_dir: Path) -> bool:
    """Run the student over ``lr_dir`` into ``sr_dir``; False (after a message) on failure."""
    from adcsr_jax.infer import super_resolve_folder

    print(f"super-resolving {lr_dir} with {model} into {sr_dir}", file=sys.stderr)
    sr_dir.mkdir(parents=True, exist_ok=True)
    report = super_resolve_folder(model, lr_dir, sr_dir)
    for path, reason in report.failed:
        print(f"adcsr eval: could not super-resolve {path}: {reason}", file=sys.stderr)
    return not report.failed


def run(args: argparse.Namespace) -> int:
    from adcsr_jax.eval.base import MissingWeightError
    from adcsr_jax.eval.evaluator import evaluate
    from adcsr_jax.eval.images import PairingError
    from adcsr_jax.eval.report import summary_markdown

    if args.dataset is not None:
        try:
            lr_dir, hr_dir = find_dataset_dirs(args.dataset)
        except FileNotFoundError as err:
            print(f"adcsr eval: {err}", file=sys.stderr)
            return 1
        args.lr, args.hr = args.lr or lr_dir, args.hr or hr_dir
        args.dataset_name = args.dataset_name or args.dataset.name
    if args.model is not None:
        if args.dataset is None:
            print(
                "adcsr eval: --model needs --dataset (the LR/HR folder to super-resolve)",
                file=sys.stderr,
            )
            return 2
        args.workdir = args.workdir or Path("eval") / args.dataset.name
        args.sr = args.sr or args.workdir / "sr"
        args.method = args.method or args.model.name
        if not _super_resolve(args.model, args.lr, args.sr):
            return 1
    if args.sr is None:
        print("adcsr eval: give --sr DIR (or --model WEIGHTS --dataset DIR)", file=sys.stderr)
        return 2
    opts = {
        name: {"weights_path": getattr(args, f"{name}_weights")}
        for name in ("musiq", "maniqa", "clipiqa")
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
    except (PairingError, MissingWeightError, FileNotFoundError, KeyError, ValueError) as err:
        print(f"adcsr eval: {err}", file=sys.stderr)
        return 1
    for name, reason in result.skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    columns = list(result.summary) + list(result.skipped)
    print(summary_markdown([result.row(dataset, method)], columns))
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    return 0
