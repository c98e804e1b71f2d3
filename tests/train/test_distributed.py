"""Joining multi-process runs (``adcsr_jax.train.distributed``) and the launch scripts' commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adcsr_jax.train import distributed
from adcsr_jax.train.distributed import ClusterConfigError, resolve

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("distributed_worker.py")


def test_resolve_flags_env_detection_and_single():
    c = resolve("host:1234", 4, 3, env={})
    assert (c.mode, c.coordinator_address, c.num_processes, c.process_id) == (
        "explicit",
        "host:1234",
        4,
        3,
    )
    env = {"ADCSR_COORDINATOR_ADDRESS": "h:1", "ADCSR_NUM_PROCESSES": "2", "ADCSR_PROCESS_ID": "1"}
    assert resolve(env=env).process_id == 1
    assert resolve(process_id=0, env=env).process_id == 0  # the flag wins over the variable
    assert resolve(env={"SLURM_NTASKS": "16", "SLURM_JOB_ID": "7"}).mode == "detected"
    assert resolve(env={"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}).mode == "detected"
    assert resolve(env={"SLURM_NTASKS": "1"}).mode == "single"
    assert resolve(env={}).mode == "single"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"coordinator_address": "h:1"}, "missing: --num-processes, --process-id"),
        ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, "in \\[0, "),
        ({"coordinator_address": "h", "num_processes": 2, "process_id": 0}, "HOST:PORT"),
    ],
)
def test_resolve_rejects_incomplete_or_inconsistent_flags(kwargs, message):
    with pytest.raises(ClusterConfigError, match=message):
        resolve(env={}, **kwargs)
    with pytest.raises(ClusterConfigError, match="ADCSR_NUM_PROCESSES must be an integer"):
        resolve(env={"ADCSR_NUM_PROCESSES": "two"})


def _run(cmd: list[str], **env: str) -> str:
    full = dict(os.environ, **env)
    out = subprocess.run(cmd, cwd=REPO, env=full, capture_output=True, text=True, check=True)
    return out.stdout


def test_local_launcher_dry_run_gives_each_process_its_identity():
    lines = _run(
        [
            sys.executable,
            "scripts/launch_local.py",
            "-n",
            "3",
            "--devices-per-process",
            "4",
            "--port",
            "4567",
            "--dry-run",
            "--",
            "adcsr",
            "train",
            "--workdir",
            "w",
        ]
    ).splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert line.startswith(
            f"ADCSR_COORDINATOR_ADDRESS=localhost:4567 ADCSR_NUM_PROCESSES=3 ADCSR_PROCESS_ID={i} "
        )
        assert "--xla_force_host_platform_device_count=4" in line
        assert line.endswith("adcsr train --workdir w")


def test_tpu_pod_launcher_dry_run():
    out = _run(
        [
            "bash",
            "scripts/launch_tpu_pod.sh",
            "--dry-run",
            "--setup",
            "pod",
            "us-central2-b",
            "configs/stage2.py:full",
            "/mnt/run",
            "--config.total_steps=10",
        ]
    )
    lines = out.strip().splitlines()
    assert lines[0].startswith("git -C ") and " archive " in lines[0]
    assert all("--worker=all" in line for line in lines[1:])
    assert "pip\\ install\\ -q\\ -e\\ \\'.\\[tpu\\]\\'" in lines[2]
    assert lines[-1].startswith("gcloud compute tpus tpu-vm ssh pod --zone us-central2-b")
    assert (
        "adcsr\\ train\\ --config\\ configs/stage2.py:full\\ --workdir\\ /mnt/run\\ " in lines[-1]
    )
    assert lines[-1].rstrip().endswith("--config.total_steps=10")


def test_slurm_launcher_dry_run():
    out = _run(
        [
            "bash",
            "scripts/launch_slurm.sh",
            "configs/stage2.py:full",
            "/shared/run",
            "--config.seed=1",
        ],
        DRY_RUN="1",
    )
    assert re.fullmatch(
        r"srun --kill-on-bad-exit=1 --ntasks-per-node=1 \S+/\.venv/bin/adcsr train "
        r"--config configs/stage2\.py:full --workdir /shared/run --config\.seed=1 \n",
        out,
    ), out


@pytest.mark.parametrize("die", [1, 0], ids=["worker_dies", "coordinator_dies"])
def test_a_dying_process_stops_the_others_within_the_heartbeat_timeout(die):
    heartbeat = 5
    env = dict(
        os.environ,
        HEARTBEAT_S=str(heartbeat),
        DIE_PROCESS=str(die),
        DIE_AFTER="20",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/launch_local.py",
            "-n",
            "2",
            "--devices-per-process",
            "1",
            "--grace",
            "120",
            "--",
            sys.executable,
            str(WORKER),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode != 0, proc.stdout[-2000:]
    died = [float(m) for m in re.findall(rf"\[p{die}\] STEP 20 t=([0-9.]+)", proc.stdout)]
    assert died, proc.stdout[-3000:]
    # The survivor stops by itself (the launcher's grace is 120 s): within the heartbeat timeout
    # plus scheduling slack, with JAX's message naming the cause.
    assert "JAX distributed service detected fatal errors" in proc.stdout or die == 0
    assert time.time() - died[0] < heartbeat + 20, proc.stdout[-3000:]
    assert elapsed < 120
    assert distributed.DEFAULT_HEARTBEAT_TIMEOUT_S == 60
