"""Convert the OSEDiff teacher (SD 2.1-base + osediff.pkl) to adcsr-jax weights.

--lora takes either OSEDiff's own osediff.pkl (PEFT LoRA, merged here into the SD 2.1-base
folder given by --sd21 with scaling alpha/r = 8/4 = 2.0) or AdcSR's already-merged
{"vae", "unet"} osediff.pkl (--sd21 then only supplies the configs; SD 2.1-base's by default).
--half-decoder adds AdcSR's halfDecoder.ckpt conv_in + mid block, for the stage-2 feature f_T.
Writes OUT/adcsr_jax.json and OUT/params.safetensors (fp32).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sd21", default=None, help="diffusers SD 2.1-base folder (unet/, vae/)")
    parser.add_argument("--lora", required=True, help="osediff.pkl (OSEDiff's or AdcSR's)")
    parser.add_argument("--half-decoder", default=None, help="AdcSR's halfDecoder.ckpt (optional)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--lora-alpha", type=float, default=8.0, help="PEFT lora_alpha (default 8)")
    parser.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="fall back to full unpickling for trusted files torch.load(weights_only=True) refuses",
    )


def run(args: argparse.Namespace) -> int:
    from adcsr_jax.weights.errors import CheckpointMismatchError, CheckpointReadError
    from adcsr_jax.weights.osediff_ckpt import convert_osediff, save_teacher

    try:
        config, params = convert_osediff(
            args.lora,
            args.sd21,
            args.half_decoder,
            alpha=args.lora_alpha,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
        )
    except (CheckpointReadError, CheckpointMismatchError, KeyError, ValueError) as err:
        print(f"adcsr convert osediff: {err}", file=sys.stderr)
        return 1
    out = save_teacher(args.out, config, params)
    count = sum(int(v.size) for part in params.values() for v in _leaves(part))
    print(f"OSEDiff teacher ({count:,} params) written to {out}")
    return 0


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree
