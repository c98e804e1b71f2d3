"""JAX function -> TFLite flatbuffer through jax2tf, at fp32, fp16 (weights) or W8A16.

W8A16 = int8 weights, int16 activations (``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_
WEIGHTS_INT8``), calibrated on a representative set; the function is first passed through
:func:`adcsr_jax.export.rewrite.quant_friendly` so that no int16 SUM/MEAN/DIV is left. The
calibrated float model is then edited before TFLite's quantiser runs: shared biases are split
(:func:`unshare_biases`) and every activation range gets a 2x margin (:func:`widen_ranges`).
Everything is quantised: no op stays float. fp16
stores weights as float16 and computes in float32 (TFLite's float16 quantisation).

Params go into the TensorFlow graph as variables (not as constants of the serialised StableHLO
module), so models above protobuf's 2 GB limit still trace; the TFLite flatbuffer itself is
limited to 2 GB, which the full student fits at fp32 (1.8 GB). TensorFlow is imported inside
the functions only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flax.core.meta import unbox

from adcsr_jax.export.rewrite import quant_friendly

PRECISIONS = ("fp32", "fp16", "w8a16")
# W8A16: calibrated activation ranges are widened by this factor (see widen_ranges).
RANGE_MARGIN = 2.0


def float_converter(
    apply_fn: Callable[[Any, Any], Any],
    params: Any,
    input_shape: tuple[int | None, ...],
    rewrite: bool = False,
) -> Any:
    """A ``tf.lite.TFLiteConverter`` for ``apply_fn(params, x)`` on float32 NHWC ``input_shape``
    with no optimisation set yet (``convert`` sets the precision; the quantisation debugger
    and calibration-only runs use it directly). ``input_shape[0] = None``: dynamic batch."""
    import tensorflow as tf
    from jax.experimental import jax2tf

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
    return tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], module)


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

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
    if precision == "w8a16" and representative is None:
        raise ValueError("w8a16 needs a representative dataset (LR images) for calibration")
    rewrite = precision == "w8a16" if rewrite is None else rewrite
    converter = float_converter(apply_fn, params, input_shape, rewrite)
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "w8a16":
        samples = [np.asarray(r, np.float32) for r in representative]
        if not samples:
            raise ValueError("w8a16 representative dataset is empty")
        try:
            calibrated = calibrate(converter, samples)
            del converter  # its TF graph holds a copy of every weight
            return quantize_w8a16(calibrated)
        except Exception as err:  # the converter raises bare Exceptions / ConverterError
            raise RuntimeError(f"TFLite conversion at w8a16 failed: {err}") from err
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return converter.convert()
    except Exception as err:  # the converter raises bare Exceptions / ConverterError
        raise RuntimeError(f"TFLite conversion at {precision} failed: {err}") from err


def calibrate(converter: Any, samples: Sequence[np.ndarray]) -> bytes:
    """Float TFLite model with every activation's calibrated min / max (no quantisation yet),
    for the int16-activation / int8-weight target."""
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    ]
    converter._experimental_calibrate_only = True  # noqa: SLF001 (public in all but name)
    return converter.convert()


def quantize_w8a16(calibrated: bytes, margin: float = RANGE_MARGIN) -> bytes:
    """Calibrated float model -> W8A16 (int8 per-channel weights, int16 activations, int64
    biases), as ``TFLiteConverter.convert`` does for
    ``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``, after :func:`unshare_biases`
    and :func:`widen_ranges` (one pass over the model). Uses TFLite's calibration wrapper (the
    converter's own quantiser for int16 activations) on the edited model. The calibration
    min / max that the quantiser leaves on every tensor are dropped afterwards (no kernel reads
    them; 4% of the tiny student's file)."""
    from tensorflow.lite.python.convert import deduplicate_readonly_buffers
    from tensorflow.lite.python.optimize import calibrator

    obj = _model_object(calibrated)
    _unshare_biases(obj)
    _widen_ranges(obj, margin)
    model = _model_bytes(obj)
    del obj
    wrapper = calibrator.Calibrator(model)._calibrator  # noqa: SLF001
    f32, i16, i64 = (np.dtype(t).num for t in (np.float32, np.int16, np.int64))
    quantized = wrapper.QuantizeModel(f32, f32, False, i16, i64, False, False)
    del wrapper, model
    obj = _model_object(quantized)
    for graph in obj.subgraphs:
        for tensor in graph.tensors:
            quant = tensor.quantization
            if quant is not None and quant.scale is not None and len(quant.scale):
                quant.min = quant.max = None
    return bytes(deduplicate_readonly_buffers(_model_bytes(obj)))


def _model_object(model: bytes) -> Any:
    """Flatbuffer -> mutable ``ModelT``. Buffers stored after the flatbuffer (``offset`` /
    ``size``: TFLite's layout for models near 2 GB, which the full student's calibrated float
    model uses) become views of the one copy made here."""
    from tensorflow.lite.tools import flatbuffer_utils

    data = bytearray(model)  # writable: the object's arrays are views of it, edited in place
    obj = flatbuffer_utils.convert_bytearray_to_object(data)
    for buffer in obj.buffers:
        if buffer.offset > 1:
            buffer.data = np.frombuffer(data, np.uint8, int(buffer.size), int(buffer.offset))
            buffer.offset = buffer.size = 0
    return obj


# Constants beyond this many bytes in all are written after the flatbuffer (Python's
# flatbuffers builder stops at 2 GiB). Only then: TFLite's int16 quantiser takes constants
# stored that way for activations ("Empty min/max"), so the full student (1.83 GB of fp32
# weights) is written inline for it.
_OFFSET_ABOVE = 2_000_000_000
_ALIGN = 16


def _model_bytes(obj: Any) -> bytes:
    """``ModelT`` -> flatbuffer bytes, constants inline unless they exceed ``_OFFSET_ABOVE``
    (then after the flatbuffer with absolute offsets, as TFLite's converter writes them)."""
    from tensorflow.lite.tools import flatbuffer_utils

    big = [b for b in obj.buffers if b.data is not None and len(b.data) > _ALIGN]
    if sum(len(b.data) for b in big) <= _OFFSET_ABOVE:
        return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))
    blobs = [np.asarray(b.data, np.uint8) for b in big]
    for b, blob in zip(big, blobs):
        b.data, b.offset, b.size = None, 1, len(blob)  # placeholders: same encoded size
    head = flatbuffer_utils.convert_object_to_bytearray(obj)
    pos = -(-len(head) // _ALIGN) * _ALIGN
    starts = []
    for b, blob in zip(big, blobs):
        b.offset = pos
        starts.append(pos)
        pos = -(-(pos + len(blob)) // _ALIGN) * _ALIGN
    head = flatbuffer_utils.convert_object_to_bytearray(obj)
    if -(-len(head) // _ALIGN) * _ALIGN != starts[0]:
        raise RuntimeError("flatbuffer size changed while placing the constant buffers")
    out = bytearray(pos)
    out[: len(head)] = head
    for start, blob in zip(starts, blobs):
        out[start : start + len(blob)] = memoryview(blob)
    del blobs, head
    return bytes(out)


def widen_ranges(model: bytes, margin: float = RANGE_MARGIN) -> bytes:
    """Scale every calibrated activation range by ``margin`` (constants keep theirs).

    Calibration fixes each int16 tensor's range to the min / max seen on a handful of images,
    and an unseen image that goes beyond is clipped: measured on the tiny student, the group
    means of the first GroupNorm clipped on a held-out image with a bright colour cast. A margin
    of 2 costs one of int16's 15 bits, far below the int8 weights' error, and lets the Newton
    term of :func:`adcsr_jax.export.rewrite.rsqrt_refined` (exactly 1 in float calibration)
    reach 2. Measured on 24 held-out RealSR crops (tiny student, LR 32): margin 1 -> pooled
    PSNR 27.3 dB, 1.5 -> about 30, 2 -> 33-35, 3 -> 22 (int16 RSQRT / LOG-free tables lose
    resolution when ranges grow further).
    """
    obj = _model_object(model)
    _widen_ranges(obj, margin)
    return _model_bytes(obj)


def _widen_ranges(obj: Any, margin: float) -> None:
    for graph in obj.subgraphs:
        for tensor in graph.tensors:
            quant = tensor.quantization
            if quant is None or quant.min is None or len(quant.min) == 0:
                continue
            data = obj.buffers[tensor.buffer].data if tensor.buffer else None
            if data is not None and len(data):
                # A constant: quantised from its values. TFLite's calibrator records a min / max
                # for constants stored after the flatbuffer (the full student), which the
                # quantiser then takes for a per-tensor weight range ("Mismatch between number
                # of weight maxs and channels"): drop it.
                quant.min = quant.max = None
                continue
            quant.min = [float(v) * margin for v in quant.min]
            quant.max = [float(v) * margin for v in quant.max]


def unshare_biases(model: bytes) -> bytes:
    """Give every conv / fully-connected op its own bias tensor.

    The converter merges equal constants, so e.g. the ``+ eps`` of several GroupNorms, fused
    into the bias of their variance matmul, becomes one tensor; the quantiser then sets that
    int64 bias's scale (input scale x weight scale) for its first user only, and the other ops
    fail to prepare ("scale_diff / output_scale <= 0.02"). Copies are tiny (one value each).
    """
    obj = _model_object(model)
    return _model_bytes(obj) if _unshare_biases(obj) else model


def _unshare_biases(obj: Any) -> bool:
    import copy

    from tensorflow.lite.python import schema_py_generated as schema

    bias_input = {
        schema.BuiltinOperator.FULLY_CONNECTED: 2,
        schema.BuiltinOperator.CONV_2D: 2,
        schema.BuiltinOperator.DEPTHWISE_CONV_2D: 2,
        schema.BuiltinOperator.TRANSPOSE_CONV: 3,
    }
    changed = False
    for graph in obj.subgraphs:
        seen: set[int] = set()
        for op in graph.operators:
            code = obj.operatorCodes[op.opcodeIndex]
            slot = bias_input.get(max(code.builtinCode, code.deprecatedBuiltinCode))
            if slot is None or len(op.inputs) <= slot or op.inputs[slot] < 0:
                continue
            index = int(op.inputs[slot])
            if index not in seen:
                seen.add(index)
                continue
            tensor = copy.deepcopy(graph.tensors[index])
            buffer = copy.deepcopy(obj.buffers[tensor.buffer])
            obj.buffers.append(buffer)
            tensor.buffer = len(obj.buffers) - 1
            tensor.name = (tensor.name or b"") + f"_bias{len(graph.tensors)}".encode()
            graph.tensors.append(tensor)
            op.inputs[slot] = len(graph.tensors) - 1
            changed = True
    return changed


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
