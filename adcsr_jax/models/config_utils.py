"""Shared helpers for the frozen network configs: dtype names, JSON round trips, validation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import jax.numpy as jnp

from adcsr_jax.errors import UserError


class UnsupportedConfigError(UserError, ValueError):
    """A (diffusers) config asks for something these networks do not implement."""


def dtype_name(dtype: Any) -> str:
    """Canonical numpy name of a dtype given as a string, numpy or jax dtype (``'float32'``)."""
    return jnp.dtype(dtype).name


def as_tuple(value: Any, length: int, field: str) -> tuple:
    """A per-block value (scalar or sequence) as a tuple of ``length`` entries."""
    if isinstance(value, list | tuple):
        if len(value) != length:
            raise UnsupportedConfigError(f"{field} has {len(value)} entries, expected {length}")
        return tuple(value)
    return (value,) * length


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (tuples as lists)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Build ``cls`` from :func:`config_to_dict` output; unknown fields are an error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UnsupportedConfigError(f"{cls.__name__}: unknown config fields {unknown}")
    return cls(**data)


def check_supported(
    source: Mapping[str, Any], allowed: Mapping[str, Iterable[Any]], what: str
) -> None:
    """Raise one error naming every field of ``source`` whose value is not in ``allowed``."""
    bad = []
    for key, values in allowed.items():
        if key in source and source[key] not in list(values):
            bad.append(f"{key}={source[key]!r} (supported: {list(values)!r})")
    if bad:
        raise UnsupportedConfigError(f"{what}: unsupported config values: " + "; ".join(bad))
