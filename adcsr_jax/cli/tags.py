"""Tag photos with DAPE (RAM Swin-L + OSEDiff's LoRA): one line per image, tags joined by ', '.

Each image is resized to 384 x 384 (bilinear) and normalised as RAM does; tags are the classes
whose sigmoid passes RAM's per-class threshold. Without --dape it is RAM alone. --prompt prints
OSEDiff's full prompt instead ("{tags}, {prompt},"; test_osediff.py tags the x4-upscaled input).

    adcsr tags --ram ram_swin_large_14m.pth --dape DAPE.pth --input photos/
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ram", required=True, help="RAM's ram_swin_large_14m.pth")
    parser.add_argument("--dape", default=None, help="OSEDiff's DAPE.pth (LoRA for RAM)")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--tag-list", default=None, help="ram_tag_list.txt (default: vendored)")
    parser.add_argument(
        "--thresholds", default=None, help="ram_tag_list_threshold.txt (default: vendored)"
    )
    parser.add_argument(
        "--prompt", default=None, help="print OSEDiff's prompt '{tags}, PROMPT,' ('' allowed)"
    )
    parser.add_argument(
        "--no-antialias",
        action="store_true",
        help="plain bilinear when shrinking to 384 (torchvision < 0.17, OSEDiff's pinned env)",
    )
    parser.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="fully unpickle the checkpoints (only for files you trust)",
    )


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from adcsr_jax.image_io import ImageReadError, list_images, read_image
    from adcsr_jax.models.tagger import osediff_prompt
    from adcsr_jax.weights import load_tagger
    from adcsr_jax.weights.errors import CheckpointMismatchError, CheckpointReadError

    try:
        paths = list_images(args.input)
        tagger = load_tagger(
            args.ram,
            args.dape,
            tag_list=args.tag_list,
            thresholds=args.thresholds,
            antialias=not args.no_antialias,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
        )
    except (ValueError, FileNotFoundError, CheckpointReadError, CheckpointMismatchError) as err:
        print(f"adcsr tags: {err}", file=sys.stderr)
        return 2
    if not paths:
        print(f"adcsr tags: no images in {args.input}", file=sys.stderr)
        return 1
    failed = 0
    for path in paths:
        try:
            image = read_image(path)
        except ImageReadError as err:
            print(f"adcsr tags: skipped {path}: {err}", file=sys.stderr)
            failed += 1
            continue
        tags = tagger.tags(np.asarray(image)[None])[0]
        text = tags if args.prompt is None else osediff_prompt(tags, args.prompt)
        print(f"{path.name}\t{text}", flush=True)
    return 1 if failed else 0
