"""Prepare TFDS datasets from local folders: ``adcsr data prepare {hr,paired,sample}``.

    adcsr data prepare hr --manual-dir /data/LSDIR/HR --data-dir ~/tfds      # hr_images
    adcsr data prepare paired --manual-dir ../shared/data/realsr --data-dir ~/tfds
    adcsr data prepare sample --data-dir ~/tfds   # scikit-image photos, no download

Training then reads ``tfds:<data-dir>`` (or the plain folder itself, no TensorFlow needed).
Needs the ``data`` extra (TensorFlow Datasets). Files that cannot be decoded are skipped at build
time and reported (``skipped FILE: REASON``); the exit status is then 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adcsr_jax.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    CommandError,
    Target,
    existing_dir,
    output_dir,
    report_skipped,
)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, help="TFDS data_dir to write into")
    parser.add_argument(
        "--file-format", default="array_record", choices=("array_record", "tfrecord")
    )


def add_folder_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manual-dir", required=True, help="the local folder to read")
    _common(parser)


def _tfds_builders():
    try:
        from adcsr_jax.data import tfds_builders
    except ImportError as err:
        raise CommandError(f"needs TensorFlow Datasets ({err}): pip install -e '.[data]'") from err
    return tfds_builders


def _report(builder, manual: Path | None = None) -> int:
    splits = {k: v.num_examples for k, v in builder.info.splits.items()}
    print(f"{builder.name} -> {builder.data_dir}: {splits}")
    skipped = [(Path(manual or "") / rel, why) for rel, why in getattr(builder, "skipped", [])]
    return EXIT_PARTIAL if report_skipped("data prepare", skipped) else EXIT_OK


def run_hr(args: argparse.Namespace) -> int:
    """``hr_images``: every image below --manual-dir (recursively), stored encoded."""
    from adcsr_jax.image_io import IMAGE_SUFFIXES, list_images

    manual = existing_dir(args.manual_dir, "--manual-dir")
    data_dir = output_dir(args.data_dir, "--data-dir")
    if not list_images(manual, recursive=True):
        raise CommandError(
            f"--manual-dir {manual}: no image files below it ({' '.join(IMAGE_SUFFIXES)})"
        )
    builders = _tfds_builders()
    return _report(builders.build_hr_dataset(manual, data_dir, args.file_format), manual)


def run_paired(args: argparse.Namespace) -> int:
    """``paired_images``: an LR/ + HR/ (test_LR/ + test_HR/, lq/ + gt/) test set, paired by name."""
    from adcsr_jax.image_io import find_pair_dirs, match_pairs

    manual = existing_dir(args.manual_dir, "--manual-dir")
    data_dir = output_dir(args.data_dir, "--data-dir")
    try:
        match_pairs(*find_pair_dirs(manual))
    except FileNotFoundError as err:
        raise CommandError(f"--manual-dir {err}") from err
    builders = _tfds_builders()
    return _report(builders.build_paired_dataset(manual, data_dir, args.file_format))


def run_sample(args: argparse.Namespace) -> int:
    """``hr_images`` from scikit-image's bundled photos (offline demo data)."""
    data_dir = output_dir(args.data_dir, "--data-dir")
    _tfds_builders()
    from adcsr_jax.data.sample_set import build_sample_dataset

    return _report(build_sample_dataset(data_dir))


TARGETS = {
    "prepare": {
        "hr": Target("HR training photos from a folder -> hr_images", add_folder_arguments, run_hr),
        "paired": Target(
            "a paired LR/HR test set -> paired_images", add_folder_arguments, run_paired
        ),
        "sample": Target("scikit-image photos -> hr_images (offline demo)", _common, run_sample),
    }
}
