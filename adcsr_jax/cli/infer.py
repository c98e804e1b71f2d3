"""Super-resolve photos (x4) with a converted AdcSR student: one file or every image in a folder.

Any size: images are padded to a multiple of 16 and, when larger than --tile (LR pixels),
split into overlapping tiles blended without seams; the colour fix uses whole-image statistics.
Greyscale, palette, RGBA (composited over --background), 16-bit and EXIF-rotated inputs are
converted; unreadable files are reported (``skipped FILE: REASON``) and left out, and the exit
status is then 1. Outputs are 8-bit PNGs named after the inputs.

    adcsr convert adcsr --net net_params_200.pkl --half-decoder halfDecoder.ckpt --out weights
    adcsr infer --weights weights --input photos/ --output sr/

The teacher (OSEDiff) instead of the student, prompted per image as OSEDiff's test_osediff.py
does (DAPE's tags of the x4 bicubic input, then ", PROMPT,"); the prompts go to
OUTPUT/prompts.txt:

    adcsr convert osediff --osediff osediff.pkl --sd21 sd21-base --out teacher
    adcsr infer --teacher teacher --text-encoder sd21-base/text_encoder \
        --ram ram_swin_large_14m.pth --dape DAPE.pth --input photos/ --output sr_teacher/
"""

from __future__ import annotations

import argparse
from typing import Any

from adcsr_jax.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    CommandError,
    existing_dir,
    existing_path,
    output_dir,
    positive,
    report_skipped,
)

TILE_MULTIPLE = 16  # the student's size multiple (adcsr_jax.models.adcsr.SIZE_MULTIPLE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", help="converted student folder")
    teacher = parser.add_argument_group("the teacher (instead of --weights)")
    teacher.add_argument("--teacher", help="converted OSEDiff folder (adcsr convert osediff)")
    teacher.add_argument("--text-encoder", help="SD 2.1's text_encoder/ folder (or the SD root)")
    teacher.add_argument("--ram", help="ram_swin_large_14m.pth (tags; without it: --prompt only)")
    teacher.add_argument("--dape", help="DAPE.pth, OSEDiff's LoRA for RAM")
    teacher.add_argument("--prompt", default="", help="user prompt after the tags (default '')")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", required=True, help="output folder (created)")
    parser.add_argument("--tile", type=int, default=128, help="tile side in LR pixels (x16)")
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in LR pixels")
    parser.add_argument("--batch-size", type=int, default=1, help="same-size images per call")
    parser.add_argument(
        "--colour-fix", choices=["adain", "wavelet", "none"], default="adain",
        help="adain: AdcSR's mean/std match to the LR (default); wavelet: OSEDiff's low band",
    )  # fmt: skip
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument(
        "--background", type=float, default=1.0, help="grey level under transparent pixels"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--attention-chunk",
        type=int,
        default=None,
        help="exact attention this many queries at a time (default: 512 on CPU, off on GPU/TPU; 0 = off)",
    )
    parser.add_argument(
        "--conv-matmul-pixels",
        type=int,
        default=None,
        help="UNet convs on maps of at most this many pixels as one matmul "
        "(default: 256 on CPU, off on GPU/TPU; 0 = off)",
    )


def check_options(args: argparse.Namespace) -> None:
    """The numeric flags, named as flags (``InferOptions`` checks the same for Python callers)."""
    if positive(args.tile, "--tile") % TILE_MULTIPLE:
        raise CommandError(f"--tile must be a multiple of {TILE_MULTIPLE}, got {args.tile}")
    if not 0 <= args.overlap < args.tile:
        raise CommandError(f"--overlap must be in [0, --tile={args.tile}), got {args.overlap}")
    positive(args.batch_size, "--batch-size")
    if not 0.0 <= args.background <= 1.0:
        raise CommandError(f"--background must be in [0, 1], got {args.background}")


def _teacher(args: argparse.Namespace, options: Any) -> Any:
    from adcsr_jax.infer import TeacherUpscaler

    teacher = existing_dir(args.teacher, "--teacher")
    if not args.text_encoder:
        raise CommandError("--teacher needs --text-encoder DIR (SD 2.1's text_encoder/)")
    text = existing_path(args.text_encoder, "--text-encoder")
    ram = existing_path(args.ram, "--ram") if args.ram else None
    dape = existing_path(args.dape, "--dape") if args.dape else None
    if dape is not None and ram is None:
        raise CommandError("--dape is a LoRA for RAM: also give --ram FILE")
    return TeacherUpscaler.from_weights(teacher, text, ram, dape, args.prompt, options)


def run(args: argparse.Namespace) -> int:
    if (args.weights is None) == (args.teacher is None):
        raise CommandError("give either --weights DIR (the student) or --teacher DIR")
    weights = existing_dir(args.weights, "--weights") if args.weights else None
    source = existing_path(args.input, "--input")
    out = output_dir(args.output, "--output")
    check_options(args)
    from adcsr_jax.image_io import IMAGE_SUFFIXES, list_images

    paths = list_images(source)
    if not paths:
        raise CommandError(f"--input {source}: no image files ({' '.join(IMAGE_SUFFIXES)})")
    from adcsr_jax.infer import InferOptions, Upscaler, super_resolve_files
    from adcsr_jax.weights.adcsr_ckpt import KIND, read_converted_meta
    from adcsr_jax.weights.errors import CheckpointReadError

    if weights is not None:
        try:  # a converted student folder, checked before the weights load
            read_converted_meta(weights, KIND)
        except CheckpointReadError as err:
            raise CommandError(
                f"--weights {err}; make one with `adcsr convert adcsr --net ... --out DIR`"
            ) from err
    options = InferOptions(
        tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
        colour_fix=args.colour_fix, dtype=args.dtype, background=args.background,
        progress=not args.no_progress, attention_chunk=args.attention_chunk,
        conv_matmul_pixels=args.conv_matmul_pixels,
    )  # fmt: skip
    if weights is not None:
        upscaler = Upscaler.from_weights(weights, options)
    else:
        upscaler = _teacher(args, options)
    out.mkdir(parents=True, exist_ok=True)
    report = super_resolve_files(upscaler, paths, out)
    if weights is None:
        lines = [f"{p.name}\t{t}" for p, t in zip(report.written, upscaler.prompts)]
        (out / "prompts.txt").write_text("\n".join(lines) + "\n")
    failed = report_skipped("infer", report.failed)
    print(f"{len(report.written)} image(s) written to {out}, {failed} skipped")
    return EXIT_PARTIAL if failed else EXIT_OK
