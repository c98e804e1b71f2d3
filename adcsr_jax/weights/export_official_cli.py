"""Write a converted student folder in AdcSR's official layout (net_params_<step>.pkl + halfDecoder.ckpt).

The files load into the official PyTorch ``test.py`` (``--model_dir OUT --epoch STEP``) and back
into adcsr-jax with ``adcsr convert adcsr --net OUT/net_params_<step>.pkl --half-decoder
OUT/halfDecoder.ckpt``. ``--half-decoder`` copies conv_in and mid_block of the frozen half decoder
(AdcSR's halfDecoder.ckpt used for training) into the written halfDecoder.ckpt; without it those
slots hold a zero conv_in and the student's mid block, which ``test.py`` never runs.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights", required=True, help="converted student folder (adcsr_jax.json)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--step", type=int, default=200, help="N in net_params_N.pkl (default 200)")
    parser.add_argument(
        "--half-decoder", default=None, help="halfDecoder.ckpt for conv_in/mid_block"
    )


def run(args: argparse.Namespace) -> int:
    from adcsr_jax.weights.errors import CheckpointMismatchError, CheckpointReadError
    from adcsr_jax.weights.official_export import export_official

    try:
        paths = export_official(
            args.weights, args.out, step=args.step, half_decoder_stem=args.half_decoder
        )
    except (CheckpointReadError, CheckpointMismatchError, KeyError, ValueError) as err:
        print(f"adcsr convert export-official: {err}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0
