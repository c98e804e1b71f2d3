"""Two real processes joined by ``jax.distributed`` on this machine (2 CPU devices each): the data
pipeline's per-host file shards, global batches on the (data, fsdp) mesh, and a jitted global
reduction that both hosts must agree on, checked against the single-process simulation."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adcsr_jax.data.pipeline import DataIterator, PipelineConfig

WORKER = Path(__file__).with_name("multihost_worker.py")
REPO = Path(__file__).resolve().parents[2]
STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hosts")
    rng = np.random.default_rng(0)
    for i in range(6):
        img = rng.integers(0, 256, (40 + 4 * i, 48, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def hosts(image_dir: Path) -> list[dict]:
    """What each of the two hosts printed, host 0 first."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    address = f"localhost:{_free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), address, str(i), "2", str(image_dir), str(STEPS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a host of the two-process run did not finish in 240 s")
        line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
        assert p.returncode == 0 and line, f"host failed (rc {p.returncode}):\n{err[-3000:]}"
        results.append(json.loads(line[len("RESULT ") :]))
    return sorted(results, key=lambda r: r["process_index"])


def test_two_processes_share_one_global_batch(hosts: list[dict]) -> None:
    # Each host reads its own files; together every file once.
    assert sorted(hosts[0]["files"] + hosts[1]["files"]) == list(range(6))
    assert not set(hosts[0]["files"]) & set(hosts[1]["files"])
    for step in range(STEPS):
        a, b = hosts[0]["steps"][step], hosts[1]["steps"][step]
        assert a["global_shape"] == b["global_shape"] == [8, 32, 32, 3]  # 2 per device, 4 devices
        assert a["lq_shape"] == [8, 8, 8, 3]
        assert a["spec"] == b["spec"] and "data" in a["spec"] and "fsdp" in a["spec"]
        # The jitted global computations see the same global array on both hosts...
        np.testing.assert_allclose(a["gt_means"], b["gt_means"], rtol=0, atol=0)
        assert a["lq_sum"] == pytest.approx(b["lq_sum"], rel=1e-6)
        # ...made of each host's own rows, host 0 first (process order on the batch axis).
        local = [m for shard in a["local_means"] for m in shard]
        local += [m for shard in b["local_means"] for m in shard]
        np.testing.assert_allclose(local, a["gt_means"], rtol=1e-6)
    assert hosts[0]["state_step"] == hosts[1]["state_step"] == STEPS


def test_two_processes_match_the_single_process_simulation(
    hosts: list[dict], image_dir: Path
) -> None:
    from adcsr_jax.testing.degradation import cheap_preset

    cfg = PipelineConfig(batch_size=8, crop=32, degradation=None, prefetch=0)
    deg = cheap_preset(pool_size=4)
    sims = [
        DataIterator(str(image_dir), cfg, process_index=i, process_count=2, degradation=deg)
        for i in range(2)
    ]
    for step in range(STEPS):
        want = np.concatenate([next(s)["gt"].mean(axis=(1, 2, 3)) for s in sims])
        np.testing.assert_allclose(hosts[0]["steps"][step]["gt_means"], want, rtol=1e-6)
