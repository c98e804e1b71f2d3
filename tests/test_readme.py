"""Every command the README shows exists as written: each ``adcsr ...`` line names a real
(sub)command and only flags it accepts; each ``scripts/...`` and ``configs/...`` path (with its
``:variant``) is in the repository; the two first lines are the ones ``.ci/run`` and the demo
test exercise."""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from adcsr_jax.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _code_lines() -> list[str]:
    """Shell lines of the README's fenced blocks and inline code, continuations joined."""
    lines = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S):
        lines += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    lines += [c.replace("\n", " ") for c in re.findall(r"`([^`]*adcsr [^`]*)`", prose)]
    return [ln.strip() for ln in lines if ln.strip()]


def _commands() -> list[list[str]]:
    """The argv (after ``adcsr``) of every README command, prompts and comments removed."""
    out = []
    for line in _code_lines():
        line = line.split(" #", 1)[0].removeprefix("$ ")
        for part in re.split(r"&&|\|", line):
            words = part.split()
            for i, w in enumerate(words):
                if w.endswith("adcsr") and w in ("adcsr", ".venv/bin/adcsr"):
                    try:
                        argv = shlex.split(" ".join(words[i + 1 :]))
                    except ValueError:
                        continue
                    if argv and not argv[0].startswith("-") and argv[0] != "CMD:":
                        out.append(argv)
                    break
    return out


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _resolve(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str], str]:
    """The parser of the deepest (sub)command named by ``argv`` and the words after it."""
    parser, name = build_parser(), "adcsr"
    while argv and (subs := _subparsers(parser)):
        if argv[0] not in subs:
            choices = "{" + ",".join(subs) + "}"
            if re.fullmatch(r"\{[\w,]+\}", argv[0]):  # `adcsr convert {sd,adcsr,...}` in prose
                assert set(argv[0][1:-1].split(",")) <= set(subs), (name, argv[0], choices)
                return parser, [], name
            raise AssertionError(f"README: `{name} {argv[0]}` is not a command ({choices})")
        parser, name, argv = subs[argv[0]], f"{name} {argv[0]}", argv[1:]
    return parser, argv, name


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


COMMANDS = _commands()


def test_the_readme_has_its_commands() -> None:
    names = {" ".join(_resolve(argv)[2].split()[1:2]) for argv in COMMANDS}
    assert {"demo", "train", "infer", "eval", "export", "convert", "plan", "data"} <= names
    assert "bash scripts/setup_env.sh && .venv/bin/adcsr demo --workdir runs/demo" in README


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_each_command_and_flag_exists(argv: list[str]) -> None:
    parser, rest, name = _resolve(argv)
    known = _flags(parser)
    prefix = parser.get_default("_extra_prefix")
    for word in (w.strip("[]") for w in rest):  # `[--flag X]`: an optional flag in prose
        if not word.startswith("--") or word == "--":
            continue
        flag = word.split("=", 1)[0]
        if prefix and flag.startswith(prefix):
            continue
        if flag.startswith("--xla_"):  # XLA_FLAGS values quoted on the same line
            continue
        assert flag in known, f"README: `{name}` has no flag {flag} (known: {sorted(known)})"


def _paths(kind: str) -> set[str]:
    return set(re.findall(rf"(?<![\w/.]){kind}/[\w./-]+\.(?:py|sh)(?::\w+)?", README))


@pytest.mark.parametrize("ref", sorted(_paths("scripts") | _paths("configs")))
def test_each_script_and_config_exists(ref: str) -> None:
    path, _, variant = ref.partition(":")
    assert (ROOT / path).is_file(), f"README names {path}, which is not in the repository"
    if variant:
        spec = importlib.util.spec_from_file_location("readme_config", ROOT / path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.get_config(variant)  # raises on an unknown variant
