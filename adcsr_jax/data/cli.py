"""Prepare TFDS datasets from local folders (``adcsr data prepare``).

Examples::

    adcsr data prepare hr --manual-dir /data/LSDIR/HR --data-dir ~/tfds      # hr_images
    adcsr data prepare paired --manual-dir ../shared/data/realsr --data-dir ~/tfds
    adcsr data prepare sample --data-dir ~/tfds   # scikit-image photos, no download

Training then reads ``tfds:<data-dir>`` (or the plain folder itself, no TensorFlow needed).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=("hr", "paired", "sample"), help="which dataset to build")
    parser.add_argument("--manual-dir", help="the local folder to read (not for 'sample')")
    parser.add_argument("--data-dir", required=True, help="TFDS data_dir to write into")
    parser.add_argument(
        "--file-format", default="array_record", choices=("array_record", "tfrecord")
    )


def run(args: argparse.Namespace) -> int:
    from adcsr_jax.data import tfds_builders  # noqa: PLC0415 - imports TensorFlow

    if args.kind == "sample":
        from adcsr_jax.data.sample_set import build_sample_dataset  # noqa: PLC0415

        builder = build_sample_dataset(args.data_dir)
    else:
        if not args.manual_dir:
            raise SystemExit(f"adcsr data prepare {args.kind}: --manual-dir is required")
        build = (
            tfds_builders.build_hr_dataset
            if args.kind == "hr"
            else tfds_builders.build_paired_dataset
        )
        builder = build(args.manual_dir, args.data_dir, args.file_format)
    splits = {k: v.num_examples for k, v in builder.info.splits.items()}
    print(f"{builder.name} -> {builder.data_dir}: {splits}")
    skipped = getattr(builder, "skipped", [])
    if skipped:
        print(f"skipped {len(skipped)} unreadable files, e.g. {skipped[:3]}")
    return 0
