"""``adcsr train --config configs/stage1.py:tiny`` end to end, in subprocesses through the CLI:
the tiny run lowers the reconstruction loss, validates (half vs SD decoder, grids) and exports a
halfDecoder.ckpt that AdcSR's ``train.py`` and the stage-2 config load; a run SIGKILLed after a
checkpoint and restarted gives the uninterrupted run's losses exactly, every step."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adcsr_jax.train import loop
from adcsr_jax.train.checkpoint import Checkpoints
from tests.train.subprocess_env import REPO, train_env

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytestmark = (
    pytest.mark.slow
)  # three tiny stage-1 runs (about 320 steps): 10 min on a busy 2-core CPU

CONFIG = REPO / "configs" / "stage1.py"
KILL_AFTER_CKPT = 50  # tiny: checkpoints every 50 steps, D from step 100, evals at 100 and 200
RESUMED_TOTAL = 120  # the restarted run crosses disc_start
WINDOW = 20  # steps averaged at the start and the end of the run


def _cmd(workdir: Path, *overrides: str) -> list[str]:
    cmd = [sys.executable, "-m", "adcsr_jax", "train", "--config", f"{CONFIG}:tiny"]
    return [*cmd, "--workdir", str(workdir), "--config.log.every_steps=1", *overrides]


def _run(workdir: Path, cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        _cmd(workdir, *overrides),
        capture_output=True,
        text=True,
        env=train_env(1, cache),
        cwd=REPO,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _series(workdir: Path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in loop.read_metrics(workdir) if key in r}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, compile_cache) -> Path:
    """The uninterrupted tiny run (200 steps), TensorBoard on to keep the validation grids."""
    workdir = tmp_path_factory.mktemp("stage1_tiny")
    _run(workdir, compile_cache, "--config.log.tensorboard=True")
    return workdir


def test_tiny_run_lowers_the_loss_validates_and_exports(reference: Path) -> None:
    from adcsr_jax.testing.torch_stage1 import load_like_train_py
    from adcsr_jax.weights import half_decoder as hd

    rec = _series(reference, "loss/rec")
    assert sorted(rec) == list(range(1, 201))
    first = np.mean([rec[s] for s in range(1, WINDOW + 1)])
    last = np.mean([rec[s] for s in range(201 - WINDOW, 201)])
    assert last < 0.9 * first, (first, last)
    assert all(np.isfinite(v) for v in rec.values())
    val = {r["step"]: r for r in loop.read_metrics(reference) if "val/psnr_half" in r}
    assert sorted(val) == [100, 200]
    for r in val.values():
        for key in ("val/psnr_half", "val/psnr_sd", "val/lpips_half", "val/lpips_sd"):
            assert np.isfinite(r[key]), key
    assert val[100]["val/psnr_sd"] == val[200]["val/psnr_sd"]  # the frozen SD decoder
    events = b"".join(p.read_bytes() for p in (reference / "tensorboard").rglob("*tfevents*"))
    assert b"val/x_sd_half" in events  # the grid x | SD decoder | half decoder
    ckpt = hd.resolve_half_decoder_file(reference)  # what the stage-2 config does
    assert ckpt == reference / hd.CKPT_NAME
    decoder = load_like_train_py(ckpt)  # AdcSR train.py: strict
    assert decoder.conv_out.weight.shape == (3, 32, 3, 3)
    config, _ = hd.load_half_decoder(reference / "half_decoder")
    assert config.block_out_channels == (32, 32, 64, 64)


def test_sigkill_and_restart_give_the_uninterrupted_losses(
    reference: Path, compile_cache: Path, tmp_path: Path
) -> None:
    env = train_env(1, compile_cache)
    proc = subprocess.Popen(
        _cmd(tmp_path), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    committed = tmp_path / "checkpoints" / str(KILL_AFTER_CKPT)  # orbax renames when complete
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not committed.is_dir():
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-3000:].decode()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert Checkpoints(tmp_path / "checkpoints").latest_step() == KILL_AFTER_CKPT
    assert max(_series(tmp_path, "loss/rec")) >= KILL_AFTER_CKPT
    out = _run(tmp_path, compile_cache, f"--config.total_steps={RESUMED_TOTAL}")
    assert f"resumed from step {KILL_AFTER_CKPT} (" in out.stderr
    # each run writes its compile record at its first step: the restart began after step 50
    starts = [r["step"] for r in loop.read_metrics(tmp_path) if "compile/flops_per_device" in r]
    assert starts == [1, KILL_AFTER_CKPT + 1]
    want = _series(reference, "loss/total")
    got = _series(tmp_path, "loss/total")
    assert sorted(got) == list(range(1, RESUMED_TOTAL + 1))
    assert {s: got[s] for s in got} == {s: want[s] for s in got}  # exactly, every step
    for key in ("loss/d", "adaptive_weight", "grad_norm/g"):  # past disc_start too
        a, b = _series(tmp_path, key), _series(reference, key)
        assert {s: a[s] for s in a} == {s: b[s] for s in a}, key
