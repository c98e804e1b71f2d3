"""`adcsr profile` / `adcsr export` argument handling, the AI Hub flow against a fake qai_hub,
and the no-token path. No test makes a network call: ``aihub.hub_module`` is replaced."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from adcsr_jax import cli
from adcsr_jax.export import aihub

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    """A one-conv NHWC model (dynamic batch) written with the onnx helper API."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "w")
    nodes = [
        helper.make_node("Transpose", ["lr"], ["x"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x", "w"], ["y"]),
        helper.make_node("Transpose", ["y"], ["sr"], perm=[0, 2, 3, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["B", 32, 32, 3])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["B", 32, 32, 3])],
        [w],
    )
    path = tmp_path_factory.mktemp("aihub") / "small.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


class _Status:
    def __init__(self, finished: bool, success: bool = True) -> None:
        self.finished, self.success, self.code, self.message = finished, success, "DONE", ""


class _Job:
    def __init__(self, log: list, kind: str) -> None:
        self.log, self.kind, self.job_id, self.url, self.polls = log, kind, f"j{kind}", "u", 0

    def get_status(self) -> _Status:
        self.polls += 1
        return _Status(finished=self.polls > 1)

    def get_target_model(self) -> str:
        return f"target-of-{self.kind}"

    def download_profile(self) -> dict:
        return {
            "execution_summary": {
                "estimated_inference_time": 65000,
                "inference_memory_peak_range": (100e6, 510e6),
            },
            "execution_detail": [{"compute_unit": "NPU"}] * 5 + [{"compute_unit": "CPU"}],
        }


def _fake_hub(calls: list, token: bool = True) -> types.SimpleNamespace:
    class UserError(Exception):
        pass

    def guarded(name, result):
        def fn(*args, **kwargs):
            if not token:
                raise UserError("Failed to load configuration file. Please configure an API token")
            calls.append((name, args, kwargs))
            return result(*args, **kwargs)

        return fn

    return types.SimpleNamespace(
        UserError=UserError,
        Device=lambda name: f"device:{name}",
        QuantizeDtype=types.SimpleNamespace(INT8="int8", INT16="int16"),
        upload_model=guarded("upload", lambda *a, **k: "uploaded"),
        submit_quantize_job=guarded("quantize", lambda *a, **k: _Job(calls, "quantize")),
        submit_compile_job=guarded("compile", lambda *a, **k: _Job(calls, "compile")),
        submit_inference_job=guarded("inference", lambda *a, **k: _Job(calls, "inference")),
    )


def test_input_specs_resolve_dynamic_batch(small_onnx) -> None:
    (spec,) = aihub.input_specs(small_onnx, batch=2)
    assert spec == aihub.InputSpec("lr", (2, 32, 32, 3), "float32")


def test_dry_run_submits_nothing(small_onnx, monkeypatch, capsys) -> None:
    calls: list = []
    fake = _fake_hub(calls)
    monkeypatch.setattr(aihub, "hub_module", lambda: fake)
    assert cli.main(["profile", "--model", str(small_onnx), "--device", "X", "--dry-run"]) == 0
    assert calls == []
    assert "(1, 32, 32, 3)" in capsys.readouterr().out


def test_profile_flow_compile_then_profile(small_onnx, monkeypatch) -> None:
    calls: list = []
    fake = _fake_hub(calls)
    monkeypatch.setattr(aihub, "hub_module", lambda: fake)
    summary = aihub.profile(small_onnx, "Snapdragon 8 Elite QRD", poll_s=0, log=lambda s: None)
    assert [c[0] for c in calls] == ["upload", "compile", "inference"]
    compile_kwargs = calls[1][2]
    assert compile_kwargs["input_specs"] == {"lr": ((1, 32, 32, 3), "float32")}
    assert "qnn_context_binary" in compile_kwargs["options"]
    assert calls[2][1][0] == "target-of-compile" and calls[2][2]["profile"] is True
    assert summary.latency_ms == pytest.approx(65.0)
    assert summary.peak_memory_mb == pytest.approx((100.0, 510.0))
    assert summary.compute_units == {"NPU": 5, "CPU": 1}
    assert "NPU (5)" in summary.text()


def test_w8a16_onnx_goes_through_hub_quantisation(small_onnx, monkeypatch) -> None:
    calls: list = []
    fake = _fake_hub(calls)
    monkeypatch.setattr(aihub, "hub_module", lambda: fake)
    calib = [np.zeros((1, 32, 32, 3), np.float32)] * 2
    aihub.profile(small_onnx, "X", "w8a16", calibration=calib, poll_s=0, log=lambda s: None)
    assert [c[0] for c in calls] == ["upload", "quantize", "compile", "inference"]
    assert calls[1][2]["activations_dtype"] == "int16"
    assert calls[2][1][0] == "target-of-quantize"
    with pytest.raises(ValueError, match="calibration"):
        aihub.profile(small_onnx, "X", "w8a16", poll_s=0, log=lambda s: None)


def test_no_token_prints_how_to_configure(small_onnx, monkeypatch, capsys) -> None:
    fake = _fake_hub([], token=False)
    monkeypatch.setattr(aihub, "hub_module", lambda: fake)
    code = cli.main(["profile", "--model", str(small_onnx), "--device", "X", "--poll", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "qai-hub configure --api_token" in err


def test_profile_arguments(small_onnx, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["profile", "--model", str(small_onnx)])  # --device missing
    assert exc.value.code == 2
    assert cli.main(["profile", "--model", str(tmp_path / "nope.onnx"), "--device", "X"]) == 2
    (tmp_path / "m.bin").write_bytes(b"x")
    assert cli.main(["profile", "--model", str(tmp_path / "m.bin"), "--device", "X"]) == 2
    code = cli.main(
        ["profile", "--model", str(small_onnx), "--device", "X", "--precision", "w8a16"]
    )
    assert code == 2 and "--calib" in capsys.readouterr().err
    with pytest.raises(ValueError, match="runtime"):
        aihub.runtime_for(small_onnx, "coreml")


def test_export_arguments(tmp_path, capsys) -> None:
    out = str(tmp_path / "m.onnx")
    assert cli.main(["export", "--format", "onnx", "--out", out]) == 2  # no weights / init
    assert "--weights" in capsys.readouterr().err
    code = cli.main(
        ["export", "--init", "tiny", "--format", "onnx", "--precision", "w8a16", "--out", out]
    )
    assert code == 2 and "AI Hub" in capsys.readouterr().err
    code = cli.main(
        ["export", "--init", "tiny", "--format", "tflite", "--precision", "w8a16", "--out", out]
    )
    assert code == 2 and "--calib" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", "--init", "tiny", "--format", "coreml", "--out", out])


def test_real_qai_hub_without_config_fails_before_any_request(small_onnx, monkeypatch, capsys):
    """With no ~/.qai_hub/client.ini, qai-hub raises UserError while loading its config, before
    any request; we turn that into the configuration help."""
    pytest.importorskip("qai_hub")
    home = small_onnx.parent / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    code = cli.main(["profile", "--model", str(small_onnx), "--device", "X", "--poll", "0"])
    assert code == 2
    assert "qai-hub configure --api_token" in capsys.readouterr().err
