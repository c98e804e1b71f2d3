"""The ``adcsr`` command.

Each sub-command lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when the parser is built, and must keep
their top-level imports light (no torch / TensorFlow), so ``adcsr --help`` stays fast.
Nested tables give nested sub-commands (``adcsr convert adcsr ...``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping, Sequence

# name -> module path, or name -> {sub-name -> module path}
COMMANDS: dict[str, str | dict[str, str]] = {
    "convert": {
        "metrics": "adcsr_jax.weights.metrics_cli",
        "sd": "adcsr_jax.weights.convert_sd_cli",
        "adcsr": "adcsr_jax.weights.convert_adcsr_cli",
        "osediff": "adcsr_jax.weights.convert_osediff_cli",
        "export-official": "adcsr_jax.weights.export_official_cli",
    },
    "eval": "adcsr_jax.eval.cli",
    "infer": "adcsr_jax.infer_cli",
    "data": {"prepare": "adcsr_jax.data.cli"},
    "export": "adcsr_jax.export.cli",
    "profile": "adcsr_jax.export.profile_cli",
}


def _add_commands(
    subparsers: argparse._SubParsersAction, table: Mapping[str, str | Mapping[str, str]]
) -> None:
    for name, target in table.items():
        if isinstance(target, Mapping):
            parser = subparsers.add_parser(name, help=f"{name} sub-commands")
            _add_commands(
                parser.add_subparsers(dest=f"{name}_command", required=True, metavar="TARGET"),
                target,
            )
            continue
        module = importlib.import_module(target)
        doc = (module.__doc__ or "").strip().splitlines()
        parser = subparsers.add_parser(
            name,
            help=doc[0] if doc else None,
            description=(module.__doc__ or "").strip() or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(parser)
        parser.set_defaults(_run=module.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adcsr",
        description="AdcSR in JAX: convert weights, super-resolve, evaluate, export, profile.",
    )
    _add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), COMMANDS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adcsr`` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
