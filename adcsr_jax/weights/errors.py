"""Errors raised while finding, reading or fitting checkpoints; each names the file and every problem."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from adcsr_jax.errors import UserError


class CheckpointReadError(UserError, OSError):
    """A checkpoint file is missing, unreadable, truncated or in an unknown format."""


class CheckpointMismatchError(UserError, ValueError):
    """A state dict does not fit the network: lists every missing, unexpected and misshapen key."""

    def __init__(
        self,
        source: str,
        target: str,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
        hint: str = "",
    ) -> None:
        self.source = source
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        lines = [f"checkpoint {source} does not fit {target}:"]
        if self.missing:
            lines.append(f"  {len(self.missing)} missing key(s):")
            lines += [f"    {k}" for k in self.missing]
        if self.unexpected:
            lines.append(f"  {len(self.unexpected)} unexpected key(s):")
            lines += [f"    {k}" for k in self.unexpected]
        if self.mismatched:
            lines.append(f"  {len(self.mismatched)} shape mismatch(es) (checkpoint vs expected):")
            lines += [f"    {k}: {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched]
        if hint:
            lines.append(f"  hint: {hint}")
        super().__init__("\n".join(lines))


class MissingWeightError(UserError, FileNotFoundError):
    """A weight file a metric needs is absent; the message names it and says how to get it."""


def resolve_weight_file(
    metric: str,
    weights_path: str | os.PathLike[str] | None,
    env_var: str,
    filename: str,
    where: str,
    weights_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The weight file of a metric whose weights ship in no package, or ``MissingWeightError``.

    Order: ``weights_path`` (``--<metric>-weights``), then ``$env_var``, then
    ``weights_dir/filename``. The message names the flag and the variable, and where to get it.
    """
    candidates: list[tuple[str, Path]] = []
    if weights_path:
        candidates.append((f"--{metric.lower()}-weights", Path(weights_path)))
    elif os.environ.get(env_var):
        candidates.append((f"${env_var}", Path(os.environ[env_var])))
    elif weights_dir is not None:
        candidates.append(("the weight cache", Path(weights_dir) / filename))
    for _, path in candidates:
        if path.is_file():
            return path
    tried = "; ".join(f"{how}: {p}" for how, p in candidates) or "nothing given"
    raise MissingWeightError(
        f"{metric} needs the weight file {filename} (tried {tried}). It ships in no package and "
        f"cannot be downloaded here: get it from {where}, then give "
        f"--{metric.lower()}-weights /path/to/{filename} or set {env_var}=/path/to/{filename}."
    )
