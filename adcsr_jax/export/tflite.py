"""JAX function -> TFLite flatbuffer through jax2tf, at fp32, fp16 (weights) or W8A16.

W8A16 = int8 weights, int16 activations (``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_
WEIGHTS_INT8``), calibrated on a representative set; the function is first passed through
:func:`adcsr_jax.export.rewrite.quant_friendly` so that no int16 SUM/MEAN/DIV is left. fp16
stores weights as float16 and computes in float32 (TFLite's float16 quantisation).

Params go into the TensorFlow graph as variables (not as constants of the serialised StableHLO
module), so models above protobuf's 2 GB limit still trace; the TFLite flatbuffer itself is
limited to 2 GB, which the full student fits at fp32 (1.8 GB). TensorFlow is imported inside
the functions only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flax.core.meta import unbox

from adcsr_jax.export.rewrite import quant_friendly

PRECISIONS = ("fp32", "fp16", "w8a16")


def convert(
    apply_fn: Callable[[Any, Any], Any],
    params: Any,
    input_shape: tuple[int | None, ...],
    precision: str = "fp32",
    representative: Iterable[np.ndarray] | None = None,
    rewrite: bool | None = None,
) -> bytes:
    """``apply_fn(params, x)`` -> TFLite bytes for float32 NHWC inputs of ``input_shape``.

    ``input_shape[0] = None`` gives a dynamic batch (shape-polymorphic jax2tf). ``representative``
    (arrays of ``input_shape`` with a concrete batch) is required for ``w8a16``. ``rewrite``
    (default: only for w8a16) applies the quantisation-friendly replacements.
    """
    import tensorflow as tf
    from jax.experimental import jax2tf

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
    if precision == "w8a16" and representative is None:
        raise ValueError("w8a16 needs a representative dataset (LR images) for calibration")
    rewrite = precision == "w8a16" if rewrite is None else rewrite
    fn = quant_friendly(apply_fn) if rewrite else apply_fn

    dims = ",".join("b" if d is None else str(d) for d in input_shape)
    polymorphic = None if None not in input_shape else [None, f"({dims})"]
    converted = jax2tf.convert(fn, polymorphic_shapes=polymorphic, with_gradient=False)
    module = tf.Module()
    module.params = tf.nest.map_structure(
        lambda p: tf.Variable(np.asarray(p), trainable=False), unbox(params)
    )

    @tf.function(input_signature=[tf.TensorSpec(input_shape, tf.float32)], autograph=False)
    def serve(x: Any) -> Any:
        return converted(module.params, x)

    module.serve = serve
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], module
    )
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "w8a16":
        samples = [np.asarray(r, np.float32) for r in representative]
        if not samples:
            raise ValueError("w8a16 representative dataset is empty")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([s] for s in samples)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return converter.convert()
    except Exception as err:  # the converter raises bare Exceptions / ConverterError
        raise RuntimeError(f"TFLite conversion at {precision} failed: {err}") from err


def save(data: bytes, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class TFLiteRunner:
    """Runs a ``.tflite`` file (or bytes) on CPU with ai-edge-litert, resizing the batch as needed."""

    def __init__(self, model: str | Path | bytes, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        kwargs: dict[str, Any] = {"num_threads": num_threads} if num_threads else {}
        if isinstance(model, bytes):
            self.interpreter = Interpreter(model_content=model, **kwargs)
        else:
            self.interpreter = Interpreter(model_path=str(model), **kwargs)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._shape: tuple[int, ...] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Declared input shape; -1 marks a dynamic dimension."""
        return tuple(int(d) for d in self._input["shape_signature"])

    def op_names(self) -> set[str]:
        return {d["op_name"] for d in self.interpreter._get_ops_details()}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        want = self.input_shape
        if len(want) != x.ndim or any(w not in (-1, g) for w, g in zip(want, x.shape)):
            raise ValueError(f"TFLite model expects input shape {want}, got {x.shape}")
        if self._shape != x.shape:
            if tuple(self._input["shape"]) != x.shape:
                self.interpreter.resize_tensor_input(self._input["index"], x.shape)
                self.interpreter.allocate_tensors()
            self._shape = x.shape
        self.interpreter.set_tensor(self._input["index"], x)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self._output["index"]))

    def timed(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        out = self(x)
        return out, time.perf_counter() - start
