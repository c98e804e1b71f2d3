"""Reading foreign checkpoints into ``{name: np.ndarray}`` and writing our own safetensors.

``.safetensors`` is parsed here with numpy alone (header JSON + raw little-endian buffers; BF16 via
ml_dtypes), so no torch is needed and truncated files give a precise error. Torch pickles
(``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``) import torch inside :func:`read_torch`.
"""

from __future__ import annotations

import json
import pickle
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from adcsr_jax.weights.errors import CheckpointReadError

SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
DIFFUSERS_WEIGHTS = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata of a ``.safetensors`` file (arrays are copies, not memory maps)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointReadError(f"{path}: not a safetensors file (only {size} bytes)")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                raise CheckpointReadError(
                    f"{path}: truncated or not safetensors (header of {header_len} bytes, "
                    f"file of {size})"
                )
            raw_header = f.read(header_len)
    except OSError as e:
        raise CheckpointReadError(f"cannot read {path}: {e}") from e
    try:
        header = json.loads(raw_header)
    except ValueError as e:
        raise CheckpointReadError(f"{path}: corrupt safetensors header: {e}") from e
    if not isinstance(header, dict):
        raise CheckpointReadError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + header_len
    data = np.memmap(path, dtype=np.uint8, mode="r") if size > base else np.zeros(0, np.uint8)
    tensors = {}
    for name, info in header.items():
        try:
            dtype = np.dtype(SAFETENSORS_DTYPES[info["dtype"]])
            shape = tuple(int(d) for d in info["shape"])
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointReadError(f"{path}: tensor {name!r} has a bad header entry") from e
        if base + end > size:
            raise CheckpointReadError(
                f"{path}: truncated: tensor {name!r} ends at byte {base + end}, file has {size}"
            )
        count = int(np.prod(shape, dtype=np.int64))
        if end - start != count * dtype.itemsize or start < 0:
            raise CheckpointReadError(f"{path}: tensor {name!r} size does not match its shape")
        chunk = data[base + start : base + end]
        tensors[name] = np.array(chunk.view(dtype) if count else np.zeros(0, dtype)).reshape(shape)
    del data
    return tensors, metadata


def write_safetensors(
    path: str | Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (numpy-convertible) with string ``metadata``."""
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in tensors.items()}
    save_file(arrays, str(path), metadata=dict(metadata or {}))


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds dicts, lists and numpy arrays (no arbitrary code)."""

    ALLOWED = {
        ("collections", "OrderedDict"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _to_numpy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _to_numpy(v) for k, v in value.items()}
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        t = value.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            return t.view(dtype=__import__("torch").int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()
    return value


def read_torch(path: str | Path, *, allow_unsafe_pickle: bool = False) -> Any:
    """Load a torch-saved or plain-pickled object (on CPU) with tensors turned into numpy.

    Tries ``torch.load(weights_only=True)``, then a numpy-only unpickler; full unpickling (which
    can run arbitrary code) only with ``allow_unsafe_pickle=True``, for files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError(f"{path}: no such file")
    errors = []
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is an extra
        torch = None
    if torch is not None:
        try:
            with warnings.catch_warnings():  # e.g. "pickle protocol 4": we handle failures below
                warnings.simplefilter("ignore", UserWarning)
                return _to_numpy(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:  # noqa: BLE001 - every failure falls through to the next reader
            errors.append(f"torch.load(weights_only=True): {type(e).__name__}: {e}".split("\n")[0])
    try:
        with path.open("rb") as f:
            return _to_numpy(_NumpyUnpickler(f).load())
    except Exception as e:  # noqa: BLE001
        errors.append(f"numpy-only unpickler: {type(e).__name__}: {e}")
    if allow_unsafe_pickle and torch is not None:
        try:
            return _to_numpy(torch.load(path, map_location="cpu", weights_only=False))
        except Exception as e:  # noqa: BLE001
            errors.append(f"torch.load(weights_only=False): {type(e).__name__}: {e}".split("\n")[0])
    tail = (
        ""
        if allow_unsafe_pickle
        else " (for a file you trust: --allow-unsafe-pickle, or allow_unsafe_pickle=True in Python)"
    )
    raise CheckpointReadError(
        f"cannot read {path} as a torch/pickle checkpoint{tail}: " + "; ".join(errors)
    )


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Descend into nested ``state_dict`` entries, then flatten to ``{dotted.name: array}``.

    Non-array entries (step counters, hyper-parameters) are dropped.
    """
    while (
        isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping)
    ):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointReadError(
            f"{source}: expected a dict of tensors, found {type(obj).__name__}"
        )
    flat = _flatten(obj)
    return {k: np.asarray(v) for k, v in flat.items() if isinstance(v, np.ndarray | np.generic)}


def find_weights_file(folder: Path) -> Path:
    """The weights file of a diffusers model folder (safetensors preferred)."""
    for name in DIFFUSERS_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise CheckpointReadError(
        f"{folder}: no weights file (looked for {', '.join(DIFFUSERS_WEIGHTS)}; found {found})"
    )


def read_state_dict(
    path: str | Path, *, allow_unsafe_pickle: bool = False
) -> dict[str, np.ndarray]:
    """``{torch name: np.ndarray}`` from a diffusers folder, ``.safetensors`` or torch pickle.

    A nested ``state_dict`` is unwrapped; names are kept as stored (see :func:`strip_prefix`).
    """
    path = Path(path)
    if path.is_dir():
        path = find_weights_file(path)
    if not path.exists():
        raise CheckpointReadError(f"{path}: no such file or directory")
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    if path.suffix in TORCH_SUFFIXES:
        return unwrap_state_dict(
            read_torch(path, allow_unsafe_pickle=allow_unsafe_pickle), str(path)
        )
    raise CheckpointReadError(
        f"{path}: unknown checkpoint type {path.suffix!r} (expected .safetensors or {TORCH_SUFFIXES})"
    )


def strip_prefix(state_dict: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Keys that start with ``prefix``, with it removed (e.g. ``'decoder.'``, ``'module.body.1.'``)."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def strip_module_prefix(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Remove DDP's ``module.`` prefix from every key that has it."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}
