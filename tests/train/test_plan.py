"""``adcsr plan``: the toy stage's step compiled ahead of time from shapes only, its per-device
bytes against hand counts, collectives read from HLO text, the ``eval_shape`` fallback, batch
shapes of the data configs, and the command (re-executed with its own simulated devices)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax import sharding as shd
from adcsr_jax.train import plan as plan_lib
from adcsr_jax.train.config import load_config
from adcsr_jax.train.stage import Stage

HERE = Path(__file__).parent
REPO = HERE.parents[1]
CONFIG = HERE / "toy_config.py"
WIDTH, CROP = 8, 16
TRAINABLE = 3 * WIDTH + WIDTH + WIDTH * 3 + 3  # w1, b1, w2, b2
FROZEN = CROP * CROP * 3 + 1  # pattern, sigma


def test_toy_plan_on_one_device_counts_every_byte():
    p = plan_lib.plan(load_config(f"{CONFIG}:1dev"))
    d = p["per_device"]
    assert p["params"] == {"trainable": TRAINABLE, "frozen": FROZEN}
    assert d["trainable_bytes"] == 4 * TRAINABLE
    assert d["optimizer_bytes"] == 2 * 4 * TRAINABLE + 4  # Adam mu, nu and the int32 count
    assert d["frozen_bytes"] == 4 * FROZEN
    # XLA's arguments: the state, the batch (8 x 16 x 16 x 3 float32), step and key
    state = d["trainable_bytes"] + d["optimizer_bytes"] + d["frozen_bytes"]
    assert d["argument_bytes"] == state + 8 * CROP * CROP * 3 * 4 + 4 + 8
    assert d["alias_bytes"] > 0 and d["temp_bytes"] > 0 and p["flops_per_device"] > 0
    assert p["collective_bytes_per_device"] == 0
    names = {(n["role"], n["name"]): n["params"] for n in p["networks"]}
    assert names == {
        ("trainable", "params"): TRAINABLE,
        ("frozen", "pattern"): CROP * CROP * 3,
        ("frozen", "sigma"): 1,
    }
    text = plan_lib.format_plan(p)
    assert "FLOPs per step" in text and f"{TRAINABLE} trainable" in text
    text = plan_lib.format_plan({**p, "loop_trip_counts": [3, 4, 4, 4]})
    assert "loops (count of trips): 1 of 3, 3 of 4." in text  # summarised, not listed


def test_toy_plan_on_eight_devices_shards_and_reduces():
    one = plan_lib.plan(load_config(f"{CONFIG}:1dev"))
    p = plan_lib.plan(load_config(f"{CONFIG}:8dev"))  # data 4 x fsdp 2
    assert p["mesh"] == {"data": 4, "fsdp": 2, "tensor": 1} and p["devices"] == 8
    assert p["params"] == one["params"]
    assert p["per_device"]["frozen_bytes"] < one["per_device"]["frozen_bytes"]  # FSDP-split
    assert p["flops_per_device"] < one["flops_per_device"]  # 1 row per device instead of 8
    c = p["collectives"]
    assert c["all-reduce"]["count"] > 0 and c["all-reduce"]["bytes"] > 0  # gradients, metrics
    assert c["all-gather"]["count"] > 0  # FSDP weights gathered for the forward pass


def test_collective_bytes_from_hlo_text():
    hlo = """
HloModule m
  %p.0 = f32[8,3]{1,0} parameter(0)
  %p.1 = bf16[4]{0} parameter(1)
  %all-reduce.1 = (f32[8,3]{1,0}, bf16[4]{0}) all-reduce(%p.0, %p.1), channel_id=1, to_apply=%add
  %ag = (bf16[4]{0}, bf16[16]{0}) all-gather-start(%p.1), dimensions={0}
  %agd = bf16[16]{0} all-gather-done(%ag)
  ROOT %cp = f32[8,3]{1,0} collective-permute(%p.0), source_target_pairs={{0,1}}
  %rs = f32[2,3]{1,0} reduce-scatter(%all-reduce.1.x), dimensions={0}
"""
    got = plan_lib.collective_bytes(hlo)
    assert got["all-reduce"] == {"count": 1, "bytes": 8 * 3 * 4 + 4 * 2}
    assert got["all-gather"] == {"count": 1, "bytes": 8}  # the -done half is not counted
    assert got["collective-permute"] == {"count": 1, "bytes": 96}
    assert got["reduce-scatter"] == {"count": 1, "bytes": 0}  # unknown operand: no guess
    assert got["all-to-all"] == {"count": 0, "bytes": 0}


def test_batch_shapes_follow_the_data_config():
    config = load_config(f"{CONFIG}:1dev", ["--config.data.crop=32"])
    mesh = shd.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    got = plan_lib.batch_shapes(config, ("gt",), mesh)
    assert got["gt"].shape == (8, 32, 32, 3) and got["gt"].dtype == np.float32
    config.data.source = "paired:/lr:/hr"
    config.data.output_dtype = "uint8"
    got = plan_lib.batch_shapes(config, ("gt", "lr"), mesh)
    assert got["lr"].shape == (8, 8, 8, 3) and got["lr"].dtype == np.uint8
    config.data.source = "sample"
    config.data.degradation = "adcsr"
    assert plan_lib.batch_shapes(config, ("lr",), mesh)["lr"].shape == (8, 8, 8, 3)
    config.data.degradation = None
    with pytest.raises(ValueError, match=r"batch keys \['lr'\].*gives \['gt'\]"):
        plan_lib.batch_shapes(config, ("gt", "lr"), mesh)


def _traceable_stage(config, mesh) -> Stage:
    """A stage without ``shapes`` whose ``init`` traces: the ``eval_shape`` fallback."""

    def init(rng):
        return {"train": {"params": {"w": jax.random.normal(rng, (4, 4))}}, "frozen": {}}

    def step(state, batch, rng):
        w = state["train"]["params"]["w"]
        loss = jnp.mean((batch["gt"][..., :1] @ w[:1]) ** 2)
        return state, {"loss/x": loss}

    return Stage(
        name="traceable",
        init=init,
        shardings=lambda shapes: shd.fsdp_shardings(shapes, mesh, min_size=1),
        step=step,
        batch_keys=("gt",),
    )


def test_stage_without_shapes_falls_back_to_eval_shape():
    config = load_config(f"{CONFIG}:1dev")
    mesh = shd.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    p = plan_lib.plan(config, stage=_traceable_stage(config, mesh))
    assert p["params"] == {"trainable": 16, "frozen": 0}
    from tests.train import toy_stage  # noqa: PLC0415

    numpy_init = toy_stage.build(config, mesh)
    stage = Stage(**{**numpy_init.__dict__, "shapes": None})
    with pytest.raises(ValueError, match=r"toy.init converts traced arrays.*shapes\(\)"):
        plan_lib.plan(config, stage=stage)


def test_the_command_simulates_its_own_devices():
    """The test session has 8 devices; ``adcsr plan --devices 4`` re-executes itself with 4."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "adcsr_jax", "plan", "--config", f"{CONFIG}:4dev"]
    cmd += ["--devices", "4", "--json", "--config.data.crop=8"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    p = json.loads(out.stdout)
    assert p["devices"] == 4 and p["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
    assert p["batch"] == {"gt": [[8, 8, 8, 3], "float32"]}
    assert p["params"]["frozen"] == 8 * 8 * 3 + 1


def test_loop_trip_counts_name_what_the_cost_analysis_counts_once():
    x = jnp.ones((8, 8))

    def f(x):
        return jax.lax.scan(lambda c, _: (c @ x, None), x, None, length=7)[0]

    compiled = jax.jit(f).lower(x).compile()
    assert plan_lib.loop_trip_counts(compiled.as_text()) == [7]
    flops = compiled.cost_analysis()
    flops = (flops[0] if isinstance(flops, list) else flops)["flops"]
    assert flops < 2 * 2 * 8**3  # one body's matmul, not seven
