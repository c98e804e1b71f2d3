"""The ``adcsr`` command: one module per top-level command in this package.

* ``adcsr convert {sd,adcsr,osediff,metrics}`` (``cli/convert.py``), ``adcsr infer``
  (``cli/infer.py``), ``adcsr eval`` (``cli/eval.py``), ``adcsr data prepare {hr,paired,sample}``
  (``cli/data.py``), ``adcsr export`` (``cli/export.py``), ``adcsr profile`` (``cli/profile.py``),
  ``adcsr train`` (``cli/train.py``), ``adcsr plan`` (``cli/plan.py``), ``adcsr tags``
  (``cli/tags.py``), ``adcsr demo`` (``cli/demo.py``, its report in ``cli/demo_report.py``).
* A command module exposes ``add_arguments(parser)`` and ``run(args) -> int``, or, when it has
  sub-targets, ``TARGETS = {name: Target(help, add_arguments, run)}`` (nested dicts for deeper
  levels: ``data`` -> ``prepare`` -> ``hr``). A target is always a sub-command with its own
  ``--help`` and flags, never a positional choice.
* A command that sets the parser default ``_extra_prefix`` (``adcsr train``/``plan``:
  ``"--config."``) receives the unknown arguments starting with it as ``args.extra``; any other
  unknown argument is an error.
* Errors and exit codes follow ``adcsr_jax.cli.common`` (0 done, 1 some files skipped or a check
  failed, 2 a command-line mistake, printed as one message without a traceback).
* ``main`` sets this project's XLA:CPU defaults (``adcsr_jax.xla_cpu``) before a command runs.
* Building the parser imports only these modules, which import no jax, torch or TensorFlow at
  module level, so ``adcsr --help`` starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType

from adcsr_jax import xla_cpu
from adcsr_jax.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, Target
from adcsr_jax.errors import UserError

# Top-level command -> the module that implements it.
COMMANDS: dict[str, str] = {
    "convert": "adcsr_jax.cli.convert",
    "infer": "adcsr_jax.cli.infer",
    "eval": "adcsr_jax.cli.eval",
    "data": "adcsr_jax.cli.data",
    "export": "adcsr_jax.cli.export",
    "profile": "adcsr_jax.cli.profile",
    "train": "adcsr_jax.cli.train",
    "plan": "adcsr_jax.cli.plan",
    "tags": "adcsr_jax.cli.tags",
    "demo": "adcsr_jax.cli.demo",
}


def _doc(module: ModuleType) -> tuple[str | None, str | None]:
    doc = (module.__doc__ or "").strip()
    return (doc.splitlines()[0] if doc else None), (doc or None)


def _add_targets(
    subparsers: argparse._SubParsersAction,
    targets: Mapping[str, Target | Mapping],
    path: tuple[str, ...],
    description: str | None,
) -> None:
    for name, target in targets.items():
        if isinstance(target, Mapping):
            parser = subparsers.add_parser(name, help=f"{name} targets")
            nested = parser.add_subparsers(
                dest="_".join((*path, name)), required=True, metavar="TARGET"
            )
            _add_targets(nested, target, (*path, name), description)
            continue
        parser = subparsers.add_parser(
            name,
            help=target.help,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        target.add_arguments(parser)
        parser.set_defaults(_run=target.run, _name=" ".join((*path, name)))


def build_parser() -> argparse.ArgumentParser:
    """The whole ``adcsr`` parser (imports the command modules, nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog="adcsr",
        description="AdcSR in JAX: convert weights, super-resolve, evaluate, prepare data, "
        "export, profile. Exit status: 0 done, 1 some files skipped or a check failed, "
        "2 a mistake on the command line.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        summary, description = _doc(module)
        targets = getattr(module, "TARGETS", None)
        if targets is not None:
            sub = commands.add_parser(
                name,
                help=summary,
                description=description,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            nested = sub.add_subparsers(dest=f"{name}_target", required=True, metavar="TARGET")
            _add_targets(nested, targets, (name,), description)
            continue
        sub = commands.add_parser(
            name,
            help=summary,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run, _name=name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adcsr`` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    prefix = getattr(args, "_extra_prefix", None)
    stray = [a for a in extra if not (prefix and _is_extra(a, extra, prefix))]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.extra = extra
    xla_cpu.apply()  # before any command starts jax: XLA reads XLA_FLAGS once
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"adcsr {args._name}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"adcsr {args._name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _is_extra(arg: str, extra: Sequence[str], prefix: str) -> bool:
    """``--config.x=y``, ``--config.x`` or the value after a bare ``--config.x``."""
    if arg.startswith(prefix):
        return True
    i = extra.index(arg)
    return i > 0 and extra[i - 1].startswith(prefix) and "=" not in extra[i - 1]


if __name__ == "__main__":
    sys.exit(main())
