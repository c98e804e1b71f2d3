"""Qualcomm AI Hub: compile an exported model for a phone and profile it there.

Flow (qai-hub 0.56): ``upload_model`` -> [``submit_quantize_job`` to int8 weights / int16
activations, for ONNX at ``w8a16``] -> ``submit_compile_job`` (target runtime from the file
type or ``--runtime``) -> ``submit_inference_job(profile=True)`` on the compiled model with a
random input -> ``download_profile()``: latency, peak memory and the compute units (NPU/GPU/CPU)
that ran each layer. ``dry_run`` only reads the file locally and prints the input specs the jobs
would get. Every network call goes through :func:`hub_module`, which tests replace; without an
API token qai-hub raises ``qai_hub.UserError`` and we print how to configure one.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from adcsr_jax.errors import UserError

TOKEN_HELP = (
    "Qualcomm AI Hub needs an API token: sign in at https://app.aihub.qualcomm.com, copy the "
    "token from Account -> Settings -> API Token, then run\n"
    "    qai-hub configure --api_token YOUR_TOKEN\n"
    "(this writes ~/.qai_hub/client.ini)."
)
RUNTIMES = ("tflite", "qnn_context_binary", "qnn_dlc", "onnx", "precompiled_qnn_onnx")


class AIHubConfigError(UserError, RuntimeError):
    """AI Hub is not configured (no token) or rejected the request as a user error."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    def as_hub(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {self.name: (self.shape, self.dtype)}


@dataclasses.dataclass(frozen=True)
class ProfileSummary:
    """What a profile reports: latency, peak memory range and layers per compute unit."""

    device: str
    latency_ms: float
    peak_memory_mb: tuple[float, float]
    compute_units: dict[str, int]

    def text(self) -> str:
        units = ", ".join(f"{u} ({n})" for u, n in sorted(self.compute_units.items()))
        lo, hi = self.peak_memory_mb
        return (
            f"Device: {self.device}\n"
            f"Estimated inference time: {self.latency_ms:.2f} ms\n"
            f"Estimated peak memory: {lo:.1f}-{hi:.1f} MB\n"
            f"Compute units: {units or 'unknown'} | total {sum(self.compute_units.values())}"
        )


def hub_module() -> Any:
    """The ``qai_hub`` module (imported lazily; tests monkeypatch this function)."""
    import qai_hub

    return qai_hub


def input_specs(model: str | Path, batch: int = 1) -> list[InputSpec]:
    """Input names, shapes and dtypes of a local ``.tflite`` or ``.onnx`` file (dynamic batch ->
    ``batch``); raises ``ValueError`` for other files or unresolved dynamic dimensions."""
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_path=str(path)).get_input_details()
        raw = [(d["name"], list(d["shape_signature"]), np.dtype(d["dtype"]).name) for d in details]
    elif suffix == ".onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        inits = {i.name for i in graph.initializer}
        raw = []
        for inp in graph.input:
            if inp.name in inits:
                continue
            tt = inp.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            raw.append((inp.name, dims, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name))
    else:
        raise ValueError(f"{path}: expected a .tflite or .onnx file, got {suffix or 'no suffix'}")
    specs = []
    for name, dims, dtype in raw:
        shape = [batch if i == 0 and d in (-1, 0) else d for i, d in enumerate(dims)]
        if any(d <= 0 for d in shape):
            raise ValueError(f"{path}: input {name!r} has unresolved dimensions {dims}")
        specs.append(InputSpec(name, tuple(int(d) for d in shape), dtype))
    return specs


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a qai-hub function, turning its ``UserError`` into a clear configuration message."""
    hub = hub_module()
    try:
        return fn(*args, **kwargs)
    except hub.UserError as err:
        message = str(err)
        lowered = message.lower()
        if any(k in lowered for k in ("token", "config", "api key", "client.ini")):
            raise AIHubConfigError(f"{message}\n\n{TOKEN_HELP}") from err
        raise AIHubConfigError(f"AI Hub rejected the request: {message}") from err


def _wait(job: Any, what: str, log: Callable[[str], None], poll_s: float = 10.0) -> Any:
    """Wait for ``job`` printing its status changes; raise with the job URL on failure."""
    last = None
    while True:
        status = job.get_status()
        code = getattr(status, "code", str(status))
        if code != last:
            log(f"[aihub] {what} {getattr(job, 'job_id', '')}: {code}")
            last = code
        if getattr(status, "finished", False):
            break
        time.sleep(poll_s)
    if not getattr(status, "success", False):
        raise RuntimeError(
            f"AI Hub {what} failed: {getattr(status, 'message', status)} ({getattr(job, 'url', '')})"
        )
    return job


def summarize_profile(profile: dict[str, Any], device: str) -> ProfileSummary:
    """Latency, memory range and compute-unit counts from ``download_profile()``'s dict."""
    summary = profile.get("execution_summary", {})
    latency_us = float(summary.get("estimated_inference_time", float("nan")))
    mem = summary.get("inference_memory_peak_range") or (
        summary.get("estimated_inference_peak_memory"),
        summary.get("estimated_inference_peak_memory"),
    )
    lo, hi = (float(m) / 1e6 if m is not None else float("nan") for m in mem)
    units = collections.Counter(
        str(layer.get("compute_unit", "unknown")) for layer in profile.get("execution_detail", [])
    )
    return ProfileSummary(device, latency_us / 1000.0, (lo, hi), dict(units))


def runtime_for(model: str | Path, runtime: str | None) -> str:
    if runtime:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}: expected one of {RUNTIMES}")
        return runtime
    return "tflite" if Path(model).suffix.lower() == ".tflite" else "qnn_context_binary"


def profile(
    model: str | Path,
    device: str,
    precision: str = "fp32",
    runtime: str | None = None,
    calibration: list[np.ndarray] | None = None,
    log: Callable[[str], None] = print,
    poll_s: float = 10.0,
) -> ProfileSummary:
    """Compile ``model`` for ``device`` on AI Hub, run it with profiling, return the summary.

    ``precision='w8a16'`` on an ONNX file runs AI Hub's own quantisation first (int8 weights,
    int16 activations) on ``calibration`` (NHWC/NCHW arrays matching the input); a ``.tflite``
    file is compiled as it is (quantise it locally with ``adcsr export --precision w8a16``).
    """
    hub = hub_module()
    specs = input_specs(model)
    if len(specs) != 1:
        raise ValueError(f"{model}: expected one input, found {[s.name for s in specs]}")
    spec = specs[0]
    target = runtime_for(model, runtime)
    dev = hub.Device(device)
    log(f"[aihub] uploading {model}")
    hub_model = _call(hub.upload_model, str(model))
    if precision == "w8a16" and Path(model).suffix.lower() == ".onnx":
        if not calibration:
            raise ValueError("AI Hub W8A16 quantisation needs calibration images")
        data = {spec.name: [np.asarray(c, np.float32) for c in calibration]}
        job = _call(
            hub.submit_quantize_job,
            hub_model,
            data,
            weights_dtype=hub.QuantizeDtype.INT8,
            activations_dtype=hub.QuantizeDtype.INT16,
        )
        hub_model = _wait(job, "quantize job", log, poll_s).get_target_model()
    elif precision == "w8a16":
        log("[aihub] .tflite file: compiled as it is (its own quantisation is kept)")
    compile_job = _call(
        hub.submit_compile_job,
        hub_model,
        device=dev,
        input_specs=spec.as_hub(),
        options=f"--target_runtime {target}",
    )
    compiled = _wait(compile_job, "compile job", log, poll_s).get_target_model()
    rng = np.random.default_rng(0)
    inputs = {spec.name: [rng.uniform(0.0, 1.0, spec.shape).astype(spec.dtype)]}
    job = _call(hub.submit_inference_job, compiled, device=dev, inputs=inputs, profile=True)
    _wait(job, "inference job", log, poll_s)
    return summarize_profile(job.download_profile(), device)
