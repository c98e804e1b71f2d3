"""What every ``adcsr`` command shares: exit codes, the error convention, input and output checks.

Exit codes (the same for every command):

* ``EXIT_OK`` 0: done.
* ``EXIT_PARTIAL`` 1: done, but some input files could not be read (each is named on stderr as
  ``adcsr CMD: skipped FILE: REASON`` and left out) or a result check failed (``adcsr export``).
* ``EXIT_USAGE`` 2: nothing was done because of a mistake in the command line: a flag, file,
  folder or value. One message on stderr, ``adcsr CMD: <what is wrong>: <what to do>``, never a
  traceback. argparse's own errors (unknown flag, missing required flag) also exit with 2.
* 130: interrupted (Ctrl-C).

A command signals a mistake by raising ``CommandError`` (or any ``adcsr_jax.errors.UserError``,
e.g. a checkpoint that does not fit); ``adcsr_jax.cli.main`` prints it. Commands check their
inputs and outputs with the helpers below before anything slow (loading weights, importing jax).
This module imports nothing heavy: ``adcsr --help`` builds every parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from adcsr_jax.errors import UserError

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandError(UserError):
    """A mistake on the command line; the message names the flag or file and what to do."""


@dataclass(frozen=True)
class Target:
    """One sub-target of a command (``adcsr convert sd``): its one-line help, flags and runner."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _existing(path: str | os.PathLike | None, flag: str, want: str) -> Path:
    """``path`` if it exists as ``want`` ('file', 'folder' or 'file or folder')."""
    if path is None:
        raise CommandError(f"give {flag} {'DIR' if want == 'folder' else 'FILE'}")
    p = Path(path)
    if not p.exists():
        raise CommandError(f"{flag} {p}: no such {want}")
    if want == "file" and p.is_dir():
        raise CommandError(f"{flag} {p} is a folder; give a file")
    if want == "folder" and not p.is_dir():
        raise CommandError(f"{flag} {p} is a file; give a folder")
    return p


def existing_file(path: str | os.PathLike | None, flag: str) -> Path:
    """``path`` as a Path if it is a file, else ``CommandError`` naming ``flag``."""
    return _existing(path, flag, "file")


def existing_dir(path: str | os.PathLike | None, flag: str) -> Path:
    """``path`` as a Path if it is a folder, else ``CommandError`` naming ``flag``."""
    return _existing(path, flag, "folder")


def existing_path(path: str | os.PathLike | None, flag: str) -> Path:
    """``path`` as a Path if it is a file or a folder, else ``CommandError``."""
    return _existing(path, flag, "file or folder")


def _check_creatable(p: Path, flag: str) -> None:
    """The first existing ancestor of ``p`` must be a writable folder."""
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CommandError(f"{flag} {p}: {parent} is a file, so {p} cannot be created")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CommandError(f"{flag} {p}: no permission to write in {parent}")


def output_dir(path: str | os.PathLike | None, flag: str) -> Path:
    """A folder the command may write into (existing or creatable); not created here."""
    if path is None:
        raise CommandError(f"give {flag} DIR")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CommandError(f"{flag} {p} is an existing file; give a folder (it is created)")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise CommandError(f"{flag} {p}: no permission to write in it")
        return p
    _check_creatable(p, flag)
    return p


def output_file(path: str | os.PathLike | None, flag: str) -> Path:
    """A file the command may write (overwritten if it exists); not created here."""
    if path is None:
        raise CommandError(f"give {flag} FILE")
    p = Path(path)
    if p.is_dir():
        raise CommandError(f"{flag} {p} is a folder; give a file name")
    _check_creatable(p, flag)
    return p


def positive(value: int, flag: str) -> int:
    """``value`` if > 0, else ``CommandError``."""
    if value <= 0:
        raise CommandError(f"{flag} must be a positive number, got {value}")
    return value


def report_skipped(command: str, failed: Iterable[tuple[Path, str]]) -> int:
    """Print ``adcsr CMD: skipped FILE: REASON`` per unreadable file; returns how many."""
    n = 0
    for path, reason in failed:
        reason = reason.removeprefix(f"{path}: ")
        print(f"adcsr {command}: skipped {path}: {reason}", file=sys.stderr)
        n += 1
    return n
