"""Super-resolve photos (x4) with a converted AdcSR student: one file or every image in a folder.

Any size: images are padded to a multiple of 16 and, when larger than --tile (LR pixels),
split into overlapping tiles blended without seams; the colour fix uses whole-image statistics.
Greyscale, palette, RGBA (composited over --background), 16-bit and EXIF-rotated inputs are
converted; unreadable files are reported and skipped, and the exit status is 1 if any failed.
Outputs are 8-bit PNGs named after the inputs.

    adcsr convert adcsr --net net_params_200.pkl --half-decoder halfDecoder.ckpt --out weights
    adcsr infer --weights weights --input photos/ --output sr/
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="converted student folder")
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


def run(args: argparse.Namespace) -> int:
    from adcsr_jax.image_io import list_images
    from adcsr_jax.infer import InferOptions, Upscaler, super_resolve_files
    from adcsr_jax.weights.errors import CheckpointMismatchError, CheckpointReadError

    try:
        options = InferOptions(
            tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
            colour_fix=args.colour_fix, dtype=args.dtype, background=args.background,
            progress=not args.no_progress, attention_chunk=args.attention_chunk,
            conv_matmul_pixels=args.conv_matmul_pixels,
        )  # fmt: skip
        paths = list_images(args.input)
        upscaler = Upscaler.from_weights(args.weights, options)
    except (ValueError, FileNotFoundError, CheckpointReadError, CheckpointMismatchError) as err:
        print(f"adcsr infer: {err}", file=sys.stderr)
        return 2
    if not paths:
        print(f"adcsr infer: no images in {args.input}", file=sys.stderr)
        return 1
    report = super_resolve_files(upscaler, paths, args.output)
    for path, reason in report.failed:
        print(f"adcsr infer: skipped {path}: {reason}", file=sys.stderr)
    print(f"{len(report.written)} image(s) written to {args.output}, {len(report.failed)} failed")
    return 1 if report.failed else 0
