"""JAX function -> ONNX through jax2onnx, fp32 or fp16 weights, NHWC or NCHW I/O, dynamic batch.

fp16 stores the weights as float16 initializers, cast to float32 inside the graph (the same
meaning as TFLite's fp16: half the storage, float32 arithmetic, so the accuracy stays close to
fp32). Every file is checked with ``onnx.checker`` (by path, so models with external data
above 2 GB are checked too). onnx, jax2onnx and onnxruntime are imported inside the functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.core.meta import unbox

PRECISIONS = ("fp32", "fp16")
LAYOUTS = ("nhwc", "nchw")


def export(
    apply_fn: Callable[[Any, Any], Any],
    params: Any,
    input_shape: tuple[int | None, ...],
    path: str | Path,
    precision: str = "fp32",
    layout: str = "nhwc",
    model_name: str = "adcsr",
) -> Path:
    """Write ``apply_fn(params, x)`` (x: float32 NHWC of ``input_shape``) to ``path``; check it.

    ``input_shape[0] = None`` gives a dynamic batch ``B``; ``layout='nchw'`` makes the file take
    and return NCHW tensors (transposes at the boundary, NHWC inside).
    """
    import onnx
    from jax2onnx import to_onnx

    if precision not in PRECISIONS:
        raise ValueError(f"ONNX precision {precision!r}: expected one of {PRECISIONS}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {LAYOUTS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = unbox(params)
    if precision == "fp16":
        stored = jax.tree.map(lambda p: jnp.asarray(p, jnp.float16), params)

        def fn(x: jax.Array) -> Any:
            return apply_fn(jax.tree.map(lambda p: p.astype(jnp.float32), stored), x)
    else:
        stored = jax.tree.map(jnp.asarray, params)

        def fn(x: jax.Array) -> Any:
            return apply_fn(stored, x)

    # The spec is the JAX (NHWC) shape; jax2onnx puts the NCHW transposes at the boundary.
    spec = tuple("B" if d is None else int(d) for d in input_shape)
    nchw = [0] if layout == "nchw" else None
    to_onnx(
        fn,
        inputs=[spec],
        model_name=model_name,
        return_mode="file",
        output_path=str(path),
        inputs_as_nchw=nchw,
        outputs_as_nchw=nchw,
        input_names=["lr"],
        output_names=["sr"],
    )
    onnx.checker.check_model(str(path), full_check=False)
    return path


class ONNXRunner:
    """Runs an ONNX file on CPU with onnxruntime."""

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self.session.get_inputs()[0]

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        return tuple(self._input.shape)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        want = self.input_shape
        if len(want) != x.ndim or any(isinstance(w, int) and w != g for w, g in zip(want, x.shape)):
            raise ValueError(f"ONNX model expects input shape {want}, got {x.shape}")
        return self.session.run(None, {self._input.name: x})[0]

    def timed(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        out = self(x)
        return out, time.perf_counter() - start
