"""configs/ablations.py: one variant per row of AdcSR's Tables B.1 / B.2, each building its state."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest

from adcsr_jax.models.discriminator import DiscriminatorConfig, abstract_discriminator
from adcsr_jax.sharding import make_mesh
from adcsr_jax.train import param_counts, stage1, stage2
from adcsr_jax.train.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "ablations.py"
STAGE2_ROWS = ("bksdm", "taesd", "chpruned", "disc_full_ft", "lora_r2", "lora_r4", "lora_r8",
               "lora_r16", "lora_r4_conv_in")  # fmt: skip


def config(variant: str):
    return load_config(f"{CONFIG}:{variant}", [])


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_every_row_has_a_variant_and_bad_names_fail():
    for name in (*STAGE2_ROWS, "bksdm_stage1", "taesd_stage1", "chpruned_stage1"):
        for v in (name, f"{name}_tiny"):
            c = config(v)
            assert c.variant == v and c.ablation == name
            assert c.stage == ("stage1" if name.endswith("_stage1") else "stage2")
    assert config("bksdm").model.unet == "bk_small" and config("taesd").model.decoder == "taesd"
    assert config("taesd_stage1").model.decoder_init == "checkpoint"
    assert config("chpruned").model.unet == "pruned" and config("chpruned").disc.rank == 4
    assert config("lora_r16").disc.to_dict() == {"rank": 16, "conv_in": "lora", "finetune": "lora"}
    assert config("lora_r4_conv_in").disc.conv_in == "full"
    assert config("disc_full_ft").disc.finetune == "full"
    with pytest.raises(ValueError, match="variant must be one of"):
        config("lora_r3")


def test_full_size_discriminator_trainable_counts_table_b2():
    """Shapes only: rank r LoRA without conv_in = 1,016,196 r; AdcSR's r = 4 with conv_in fully
    finetuned = 4,802,384; full finetuning trains all 866,636,484 params of D."""
    want = {
        "lora_r2": 2_032_392, "lora_r4": 4_064_784, "lora_r8": 8_129_568,
        "lora_r16": 16_259_136, "lora_r4_conv_in": 4_802_384, "disc_full_ft": 866_636_484,
    }  # fmt: skip
    for row, n in want.items():
        d = config(row).disc
        cfg = DiscriminatorConfig(rank=d.rank, conv_in=d.conv_in, finetune=d.finetune)
        state = abstract_discriminator(cfg)
        assert count(state["trainable"]) == n, row
        assert count(state["trainable"]) + count(state["frozen"]) == 866_636_484 + count(
            state["trainable"]["lora"]
        ), row


QUICK = ("bksdm", "taesd", "disc_full_ft", "lora_r2")  # one per structure; the rest are slow


@pytest.mark.parametrize(
    "row", [r if r in QUICK else pytest.param(r, marks=pytest.mark.slow) for r in STAGE2_ROWS]
)
def test_tiny_stage2_variant_builds_its_state(row):
    c = config(f"{row}_tiny")
    stage = stage2.build(c, make_mesh(devices=jax.devices()[:1]))
    shapes = jax.eval_shape(stage.init, jax.random.key(0))
    weights = stage2.load_weights(c)
    nets = stage2.build_nets(c, weights)
    student = shapes["train"]["student"]
    want_disc = abstract_discriminator(nets.disc)
    # `adcsr plan --params-only` (architectures only) counts exactly what the state holds
    rows = {
        (r["network"], r["role"]): r["params"] for r in param_counts.param_counts(c)["networks"]
    }
    assert rows[("student", "trainable")] == count(student)
    assert rows[("student", "frozen")] == count(shapes["frozen"]["student_tail"])
    assert rows[("discriminator", "trainable")] == count(shapes["train"]["disc"])
    assert rows[("discriminator", "frozen")] == count(shapes["frozen"]["disc"])
    assert rows[("teacher unet", "frozen")] == count(shapes["frozen"]["teacher"]["unet"])
    assert rows[("sd vae (f_R)", "frozen")] == count(shapes["frozen"]["sd_vae"])
    assert rows.get(("half-decoder stem", "frozen"), 0) == count(shapes["frozen"]["half_stem"])
    assert count(shapes["train"]["disc"]) == count(want_disc["trainable"])
    if row == "taesd":
        assert sorted(student) == ["unet"] and nets.student.feature_space == "latent"
        assert shapes["frozen"]["half_stem"] == {} and nets.disc.feature_channels == 4
        assert "layers_18" in shapes["frozen"]["student_tail"]["decoder"]
    else:
        assert sorted(student) == ["mid_block", "unet"] and nets.disc.feature_channels == 64
    if row == "bksdm":
        assert "mid_block" not in student["unet"] and nets.student.layers_per_block == 1
        assert nets.student.block_out_channels == (32, 64, 128, 128)
    if row == "disc_full_ft":
        assert shapes["train"]["disc"]["lora"] == {} and shapes["frozen"]["disc"]["unet"] == {}
    if row.startswith("lora_r") and not row.endswith("conv_in"):
        assert shapes["train"]["disc"]["unet"] == {}
        a = shapes["train"]["disc"]["lora"]["default_encoder"]["conv_in"]["lora_A"]
        assert a.shape[-1] == c.disc.rank


def test_tiny_taesd_stage1_builds_and_trains_the_tiny_decoder():
    c = config("taesd_stage1_tiny")
    nets = stage1.networks(c)
    assert nets.taesd is not None and nets.last_layer == "layers_18"
    stage = stage1.build(c, make_mesh(devices=jax.devices()[:1]))
    state = stage.init(jax.random.key(0))
    assert sorted(state["train"]["decoder"]) == sorted(
        f"layers_{i}" for i in (0, *range(2, 5), 6, *range(7, 10), 11, *range(12, 15), 16, 17, 18)
    )
    with pytest.raises(ValueError, match="cannot be pruned"):
        bad = config("taesd_stage1_tiny")
        bad.model.decoder_init = "prune"
        stage1.build(bad, make_mesh(devices=jax.devices()[:1])).init(jax.random.key(0))


def _run_steps(c, n: int, keys: tuple[str, ...]):
    stage = (stage1 if c.stage == "stage1" else stage2).build(
        c, make_mesh(devices=jax.devices()[:1])
    )
    state = jax.tree.map(np.asarray, stage.init(jax.random.key(0)))
    rng = np.random.default_rng(0)
    crop = int(c.data.crop)
    batch = {"gt": rng.uniform(0, 1, (int(c.data.batch_size), crop, crop, 3)).astype(np.float32)}
    if "lr" in keys:
        lr = batch["gt"].reshape(-1, crop // 4, 4, crop // 4, 4, 3).mean(axis=(2, 4))
        batch["lr"] = lr.astype(np.float32)
    step = jax.jit(stage.step)
    metrics = []
    for i in range(n):
        state, m = step(state, batch, jax.random.key(i))
        metrics.append({k: float(v) for k, v in m.items()})
    return state, metrics


@pytest.mark.slow
def test_tiny_taesd_trains_two_steps_through_both_stages(tmp_path):
    """Stage 1 trains TAESD's decoder; its export feeds stage 2 (latent-space distillation)."""
    c1 = config("taesd_stage1_tiny")
    c1.data.batch_size, c1.loss.disc_start = 2, 1
    state, m1 = _run_steps(c1, 2, ("gt",))
    assert all(np.isfinite(v) for m in m1 for v in m.values())
    stage = stage1.build(c1, make_mesh(devices=jax.devices()[:1]))
    (path,) = stage.export(state, tmp_path)
    assert path.name == "taesd_decoder.safetensors"

    c2 = config("taesd_tiny")
    c2.data.batch_size = 1
    _, m2 = _run_steps(c2, 2, ("lr", "gt"))
    assert all(np.isfinite(v) for m in m2 for v in m.values())
    assert m2[0]["loss/distill"] > 0 and m2[0]["grad_norm/d"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("row", ["bksdm", "disc_full_ft"])
def test_tiny_stage2_variant_runs_a_step(row):
    c = config(f"{row}_tiny")
    c.data.batch_size = 1
    _, metrics = _run_steps(c, 2, ("lr", "gt"))
    for m in metrics:
        assert np.isfinite(m["loss/distill"]) and m["grad_norm/d"] > 0, m


def test_variant_dataclass_rejects_unknown_and_unlisted_combinations():
    from adcsr_jax.weights.stage2_weights import StudentVariant

    with pytest.raises(ValueError, match="bk_small"):
        StudentVariant(unet="bk_tiny")
    with pytest.raises(ValueError, match="Table B.1"):
        StudentVariant(unet="bk_small", decoder="taesd")
    assert dataclasses.replace(StudentVariant(), decoder="taesd").decoder == "taesd"


def test_params_only_plan_gives_table_b1_students():
    """Full size, shapes only: 457M / 444M / 456M as in Table B.1 (exact counts in the configs)."""
    want = {"bksdm": 456_651_523, "taesd": 444_373_655, "chpruned": 456_073_683}
    for row, n in want.items():
        assert param_counts.param_counts(config(row))["student_total"] == n, row
    s1 = param_counts.param_counts(config("taesd_stage1"))
    assert s1["networks"][0] == {"network": "tiny decoder (TAESD)", "role": "trainable",
                                 "params": 1_222_531}  # fmt: skip


def test_plan_params_only_command():
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-m", "adcsr_jax", "plan", "--config", f"{CONFIG}:lora_r8_tiny",
         "--params-only", "--config.disc.rank=16"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=True,
    ).stdout  # fmt: skip
    assert "variant lora_r8_tiny" in out and "student total" in out
    line = next(x for x in out.splitlines() if x.split()[:2] == ["discriminator", "trainable"])
    c = config("lora_r8_tiny")
    c.disc.rank = 16
    rows = param_counts.param_counts(c)["networks"]
    want = next(r["params"] for r in rows if r["network"] == "discriminator" and
                r["role"] == "trainable")  # fmt: skip
    assert f"{want:,d}" in line
