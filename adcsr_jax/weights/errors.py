"""Errors raised while reading or fitting checkpoints; each names the file and every problem."""

from __future__ import annotations

from collections.abc import Sequence


class CheckpointReadError(OSError):
    """A checkpoint file is missing, unreadable, truncated or in an unknown format."""


class CheckpointMismatchError(ValueError):
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
