"""``scripts/gpu_check.sh``: its batch search and MFU table (default run), and the whole check
end to end on this CPU with the tiny networks (slow: the tiny stage-2 step compiles for
minutes here)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_table_and_override():
    gc = _module()
    assert gc.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.4
    assert gc.peak_tflops("NVIDIA H200", None) == 989.4
    assert gc.peak_tflops("NVIDIA A100-SXM4-80GB", None) == 312.0
    assert gc.peak_tflops("cpu", None) is None and gc.peak_tflops("cpu", 2.0) == 2.0


def _fake_compile(base: float, per: float):
    """A compile whose estimate is ``base + per * batch`` bytes (what XLA:GPU reports)."""
    mem = lambda b: SimpleNamespace(  # noqa: E731
        argument_size_in_bytes=int(base), output_size_in_bytes=0, alias_size_in_bytes=0,
        temp_size_in_bytes=int(per * b), generated_code_size_in_bytes=0,
    )  # fmt: skip
    return lambda b: SimpleNamespace(compiled=SimpleNamespace(memory_analysis=lambda: mem(b)))


def test_batch_search_takes_the_largest_batch_under_the_budget():
    gc = _module()
    args = argparse.Namespace(step_batch=0, tiny=False, fit=0.9, max_step_batch=64)
    limit = 100e9
    batch, _, tried = gc.choose_batch(args, limit, _fake_compile(20e9, 6e9))
    assert batch == 11  # 20 + 6 * 11 = 86 <= 90 < 92
    assert [t["batch"] for t in tried] == [1, 2, 11]
    batch, _, tried = gc.choose_batch(args, limit, _fake_compile(95e9, 1e9))
    assert batch == 1  # nothing fits: the smallest (the run then reports the OOM)
    args.step_batch = 3
    assert gc.choose_batch(args, limit, _fake_compile(1, 1))[0] == 3
    args.step_batch = 0
    assert gc.choose_batch(args, None, _fake_compile(1, 1))[0] == 4  # no limit known (CPU)


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_cpu_tiny(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHON"] = sys.executable
    out = tmp_path / "gpu_check.json"
    cmd = ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--tiny", "--out", str(out),
           "--iters", "2", "--warmup", "1", "--max-infer-batch", "2", "--degrade-batches", "2",
           "--cpu-plan"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["tiny"] and r["device"]["platform"] == "cpu"
    s = r["student"]
    for dtype in ("float32", "bfloat16"):
        assert s[dtype]["batch1_latency_s"] > 0 and s[dtype]["best_batch"] in (1, 2)
    assert s["bf16_vs_fp32"]["psnr_db"] > 20
    step = r["step"]
    assert step["batch_per_device"] == 1 and step["s_per_step"] > 0 and step["images_per_s"] > 0
    assert step["flops_per_step_per_device"] > 0 and step["mfu"] is None  # no CPU peak known
    assert step["compiled_estimate_bytes"] > 0 and step["cpu_plan"]["peak_bytes"] > 0
    deg = r["degradation"]
    assert deg["batch"] == 1 and 0 < deg["share_of_step"] < 1
