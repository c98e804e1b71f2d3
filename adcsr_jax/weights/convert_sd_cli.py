"""Convert a diffusers Stable Diffusion folder (unet/, vae/) into adcsr-jax's own format.

Reads ``SRC/unet`` and ``SRC/vae`` (diffusers ``config.json`` + safetensors or .bin), checks
every key and shape, and writes ``OUT/unet`` and ``OUT/vae`` (``adcsr_jax.json`` +
``params.safetensors``), which ``load_unet`` / ``load_vae`` / ``load_converted`` read back.

Example: ``adcsr convert sd ~/sd21-base ~/sd21-base-jax``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="diffusers pipeline folder with unet/ and vae/")
    parser.add_argument("out", type=Path, help="output folder (gets unet/ and vae/)")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["unet", "vae"],
        default=["unet", "vae"],
        help="what to convert",
    )


def run(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from adcsr_jax.models import UnsupportedConfigError
    from adcsr_jax.weights import (
        CheckpointMismatchError,
        CheckpointReadError,
        load_unet,
        load_vae,
        save_converted,
    )

    loaders = {"unet": load_unet, "vae": load_vae}
    for part in args.parts:
        try:
            module, params = loaders[part](args.src)
        except (CheckpointReadError, CheckpointMismatchError, UnsupportedConfigError) as e:
            print(f"adcsr convert sd: {part}: {e}", file=sys.stderr)
            return 1
        count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
        out = save_converted(args.out / part, part, module.config, params)
        print(f"{part}: {count:,} params -> {out}")
    return 0
