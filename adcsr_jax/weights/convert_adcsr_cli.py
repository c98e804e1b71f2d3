"""Convert AdcSR's released student (net_params_200.pkl + halfDecoder.ckpt) to adcsr-jax weights.

Reads the DDP state dict of AdcSR's ``Net`` (pruned UNet + trainable decoder mid block; the
duplicate ``module.body.1.body.K.*`` copies are checked and dropped) and the half-width decoder
(its up blocks, norm and conv_out are the frozen tail), then writes OUT/adcsr_jax.json and
OUT/params.safetensors (fp32), which `adcsr infer --weights OUT` reads.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--net", required=True, help="AdcSR's net_params_*.pkl")
    parser.add_argument(
        "--half-decoder",
        required=True,
        help="AdcSR's halfDecoder.ckpt, in AdcSR's layout (decoder.up_blocks...) or "
        "latent-diffusion's (decoder.up.N.block.M...), e.g. from `adcsr train` stage 1",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="fall back to full unpickling (runs code from the file) for a trusted checkpoint "
        "that torch.load(weights_only=True) refuses",
    )


def run(args: argparse.Namespace) -> int:
    from adcsr_jax.models.adcsr import count_params
    from adcsr_jax.weights.adcsr_ckpt import convert_official, save_student
    from adcsr_jax.weights.errors import CheckpointMismatchError, CheckpointReadError

    try:
        config, params = convert_official(
            args.net, args.half_decoder, allow_unsafe_pickle=args.allow_unsafe_pickle
        )
    except (CheckpointReadError, CheckpointMismatchError, KeyError, ValueError) as err:
        print(f"adcsr convert adcsr: {err}", file=sys.stderr)
        return 1
    out = save_student(args.out, config, params)
    print(f"AdcSR student ({count_params(params):,} params) written to {out}")
    return 0
