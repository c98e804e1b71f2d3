"""``adcsr plan`` on the real stages: stage 1 tiny in the default run, stage 2 tiny and the
full-size stage-2 config (no weight file on this machine: ``Stage.shapes``) as slow tests, and
the memory presets of ``configs/stage{1,2}.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adcsr_jax.train.config import load_config

REPO = Path(__file__).resolve().parents[2]
GB = 1e9


def _plan(config: str, devices: int, *extra: str, timeout: int = 3600) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "adcsr_jax", "plan", "--config", config, "--devices",
           str(devices), "--json", "--fast-compile", *extra]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_plan_stage1_tiny():
    p = _plan("configs/stage1.py:tiny", 2)
    assert p["stage"] == "stage1" and p["devices"] == 2 and p["global_batch"] == 4
    d = p["per_device"]
    assert d["trainable_bytes"] > 0 and d["optimizer_bytes"] > 0 and d["temp_bytes"] > 0
    assert p["flops_per_device"] > 0
    assert p["collectives"]["all-reduce"]["count"] > 0  # the data-parallel gradient mean


@pytest.mark.slow
def test_plan_stage2_tiny():
    p = _plan("configs/stage2.py:tiny", 2)
    assert p["stage"] == "stage2" and p["batch"]["lr"][0] == [2, 16, 16, 3]
    assert {n["name"] for n in p["networks"]} >= {"student", "disc", "teacher", "tagger"}


@pytest.mark.slow
def test_plan_stage2_full_without_weights():
    """The full config names no file here; the plan is still made (per device, 1 device of the
    paper's per-GPU batch 12), and its parameter bytes are the architectures' fp32 sizes."""
    config = load_config("configs/stage2.py:full")
    assert not config.model.sd21 and not config.model.osediff
    p = _plan("configs/stage2.py:full", 1, "--config.data.batch_size=12")
    d = p["per_device"]
    assert p["params"]["trainable"] > 440e6  # student (446M) + D's LoRA and conv_in
    assert d["trainable_bytes"] == 4 * p["params"]["trainable"]
    assert d["optimizer_bytes"] >= 2 * d["trainable_bytes"]  # Adam's two moments
    assert 9 * GB < d["frozen_bytes"] < 11 * GB  # teacher + D base + VAE parts + DAPE + CLIP
    assert d["peak_bytes"] > d["argument_bytes"] > 15 * GB
    assert p["flops_per_device"] > 1e13


def test_presets_are_full_configs_with_their_split():
    from importlib import util

    for stage in ("stage1", "stage2"):
        spec = util.spec_from_file_location(f"{stage}_cfg", REPO / "configs" / f"{stage}.py")
        module = util.module_from_spec(spec)
        spec.loader.exec_module(module)
        full = module.get_config("full")
        for name, preset in module.PRESETS.items():
            c = module.get_config(name)
            devices = preset["mesh"][0] * preset["mesh"][1] * preset["mesh"][2]
            assert c.data.batch_size == full.data.batch_size  # the recipe's global batch
            micro = c.grad_accum if stage == "stage2" else c.optim.micro_batches
            assert c.data.batch_size % (devices * micro) == 0, (stage, name)
            assert c.data.batch_size == (96 if stage == "stage2" else 24)
            assert c.total_steps == full.total_steps and c.data.crop == full.data.crop
