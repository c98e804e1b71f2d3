"""The training engine's config fields, and loading ``FILE[:VARIANT]`` with ``--config.x=y`` overrides.

A config file (``configs/stage2.py``) defines ``get_config(arg=None) -> ml_collections.ConfigDict``
(``arg`` is the text after the colon: ``configs/stage2.py:tiny``). ``load_config`` deep-merges its
result over :func:`base_config`, so a stage config states only the engine fields it changes plus
its own stage fields, then applies command-line overrides typed by the existing field (the
``ml_collections.config_flags`` convention, without absl flags).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from adcsr_jax.sharding import DEFAULT_RULES


def base_config() -> ml_collections.ConfigDict:
    """Every field the loop reads, with its default (stages add their own fields beside these)."""
    c = ml_collections.ConfigDict()
    # The stage module: "stage1" / "stage2" (adcsr_jax.train.<name>) or a dotted module path
    # exposing build(config, mesh) -> Stage.
    c.stage = "stage2"
    c.seed = 0  # step rng = fold_in(key(seed), step)
    c.total_steps = 1000

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all remaining devices
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.num_devices = -1  # use the first N devices (-1: all)

    c.sharding = ml_collections.ConfigDict()
    c.sharding.rules = tuple((k, v) for k, v in DEFAULT_RULES)  # logical name -> mesh axes
    c.sharding.fsdp_min_size = 2**16  # leaves without names: FSDP-split from this many elements

    c.data = ml_collections.ConfigDict()
    # "sample" (bundled photos, written to <workdir>/sample_images; "sample:train": all but
    # the held-out ones, adcsr_jax.data.sample_set.HELD_OUT), an HR folder,
    # "tfds:DATA_DIR[:NAME]", or "paired:LR_DIR:HR_DIR" (the user's own LR/HR pairs).
    c.data.source = "sample"
    c.data.batch_size = 12  # global
    c.data.crop = 512
    c.data.flip = True
    c.data.degradation = "adcsr"  # preset name, or None for HR crops only (stage 1)
    c.data.pool_size = -1  # -1: the preset's; 0: no pair pool
    c.data.output_dtype = "float32"
    c.data.prefetch = 2
    c.data.num_workers = 4
    c.data.scale = 4  # paired folders: HR / LR size ratio
    # paired folders: "host" (each host shuffles its own files) or "global" (the global batch of
    # step s depends on (seed, s) only: the same on any number of processes)
    c.data.order = "host"

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.keep_last = 3
    c.checkpoint.keep_every = 0  # also keep every K-th step forever (0: none)
    c.checkpoint.asynchronous = True

    c.log = ml_collections.ConfigDict()
    c.log.every_steps = 50  # metrics are means over this many steps
    c.log.tensorboard = True  # False: console + metrics.jsonl only

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 0  # the stage's evaluate (scalars + image grids); 0: never
    c.eval.at_end = True

    c.max_nonfinite_in_a_row = 10
    c.export_at_end = True
    return c


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"_adcsr_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} defines no get_config(arg)")
    return module


def load_config(
    spec: str | os.PathLike, overrides: Sequence[str] = ()
) -> ml_collections.ConfigDict:
    """``"configs/stage2.py:tiny"`` + ``["--config.data.crop=64", ...]`` -> the run's config."""
    text = str(spec)
    path, _, variant = text.partition(":") if not Path(text).is_file() else (text, "", "")
    module = _import_file(Path(path))
    got = module.get_config(variant) if variant else module.get_config()
    if isinstance(got, ml_collections.ConfigDict):
        got = got.to_dict()
    if not isinstance(got, Mapping):
        raise TypeError(
            f"{path}: get_config({variant!r}) returned {type(got).__name__}, not a dict"
        )
    config = ml_collections.ConfigDict(_merge(base_config().to_dict(), got))
    apply_overrides(config, overrides)
    return config


def _parse_value(key: str, text: str, current: Any) -> Any:
    """``text`` converted to the type of the field's current value."""
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--config.{key}={text}: expected true/false")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--config.{key}={text}: expected an integer") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--config.{key}={text}: expected a number") from None
    if isinstance(current, str):
        return None if text == "None" else text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return None if text.lower() == "none" else text
        raise ValueError(
            f"--config.{key}={text}: expected a Python literal like the current {current!r}"
        ) from None
    if isinstance(current, (tuple, list)):
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"--config.{key}={text}: expected a list/tuple")
        return type(current)(value)
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """``--config.a.b=3`` or ``--config.a.b 3`` tokens, in place; unknown keys raise."""
    tokens = list(overrides)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--config."):
            raise ValueError(f"expected --config.KEY=VALUE, got {tok!r}")
        key, eq, value = tok[len("--config.") :].partition("=")
        if not eq:
            if i + 1 >= len(tokens):
                raise ValueError(f"{tok} has no value")
            value, i = tokens[i + 1], i + 1
        i += 1
        *parents, leaf = key.split(".")
        node = config
        for depth, name in enumerate(parents):
            if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
                _unknown(".".join(parents[: depth + 1]), node)
            node = node[name]
        if leaf not in node:
            _unknown(key, node)
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ValueError(f"--config.{key} is a group; set one of its fields: {sorted(current)}")
        with node.ignore_type():
            node[leaf] = _parse_value(key, value, current)


def _unknown(key: str, node: ml_collections.ConfigDict) -> None:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, list(node.keys()), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; fields here: {sorted(node)}"
    raise ValueError(f"--config.{key}: no such config field{hint}")


def flatten(config: ml_collections.ConfigDict | Mapping[str, Any], prefix: str = "") -> dict:
    """Dotted keys -> scalar values (tuples and None as text), for hparams and logs."""
    out: dict[str, Any] = {}
    items = config.items() if hasattr(config, "items") else []
    for k, v in items:
        name = f"{prefix}{k}"
        if isinstance(v, (Mapping, ml_collections.ConfigDict)):
            out.update(flatten(v, f"{name}."))
        elif isinstance(v, (bool, int, float, str)):
            out[name] = v
        else:
            out[name] = repr(v)
    return out
