"""Scale-out through the one loop with the toy stage (``toy_stage.py``): ``data.order="global"``
gives the same global batches on any number of processes; checkpoints restore bit-exactly onto
other meshes (fewer devices, another ``fsdp``, one process instead of two) with the new
shardings; a resume on another process count continues from the same global step and says
whether the sample order changed; two ``jax.distributed`` processes launched by
``scripts/launch_local.py`` through ``adcsr train`` log the losses of one 8-device process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from adcsr_jax.data.paired import PairedFolderIterator
from adcsr_jax.train import checkpoint as ckpt_lib
from adcsr_jax.train import loop
from adcsr_jax.train.config import load_config
from tests.train import toy_stage
from tests.train.pairs import write_pairs

HERE = Path(__file__).parent
REPO = HERE.parents[1]
CONFIG = HERE / "toy_config.py"


@pytest.fixture(scope="module")
def paired(tmp_path_factory) -> str:
    pytest.importorskip("skimage")
    return write_pairs(tmp_path_factory.mktemp("pairs"))


def _dirs(paired: str) -> tuple[str, str]:
    lr, _, hr = paired[len("paired:") :].partition(":")
    return lr, hr


def _iterators(paired: str, processes: int, order: str, batch: int = 8):
    lr, hr = _dirs(paired)
    return [
        PairedFolderIterator(
            lr, hr, batch_size=batch, crop=16, seed=5, num_workers=1, order=order,
            process_index=i, process_count=processes,
        )
        for i in range(processes)
    ]  # fmt: skip


def _global_batches(iterators, steps: int) -> list[np.ndarray]:
    return [np.concatenate([next(it)["gt"] for it in iterators]) for _ in range(steps)]


def test_global_order_is_the_same_on_one_and_two_processes(paired):
    one = _global_batches(_iterators(paired, 1, "global"), 3)  # 24 rows of 7 pairs: 3+ epochs
    two = _global_batches(_iterators(paired, 2, "global"), 3)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)
    host = _global_batches(_iterators(paired, 2, "host"), 1)
    assert not np.array_equal(host[0], one[0])  # the per-host order depends on the topology


def test_global_order_state_resumes_on_another_topology(paired):
    reference = _global_batches(_iterators(paired, 1, "global"), 4)
    two = _iterators(paired, 2, "global")
    _global_batches(two, 2)
    one = _iterators(paired, 1, "global")[0]
    one.set_state(two[1].get_state())  # any host's state: the order does not depend on it
    np.testing.assert_array_equal(next(one)["gt"], reference[2])
    host = _iterators(paired, 1, "host")[0]
    with pytest.raises(ValueError, match=r"data order 'global', this run 'host'"):
        host.set_state(one.get_state())


def test_resume_on_another_process_count_logs_the_order(paired, caplog):
    """The loop's data-state restore: host order restarts the stream at the same global step and
    warns that the order changed; global order carries on unchanged."""
    for order, says in (("host", "the sample order changes"), ("global", "order is unchanged")):
        two = _iterators(paired, 2, order)
        _global_batches(two, 3)
        states = {str(i): it.get_state() for i, it in enumerate(two)}
        one = _iterators(paired, 1, order)[0]
        with caplog.at_level(logging.INFO, logger=loop.__name__):
            caplog.clear()
            loop.restore_data_state(one, states, 3)
        assert one.step == 3
        assert says in caplog.text and "global step 3" in caplog.text


def _toy_config(paired: str, *overrides: str):
    return load_config(
        f"{CONFIG}:8dev",
        [f"--config.data.source={paired}", "--config.data.order=global", *overrides],
    )


def _losses(workdir: Path) -> dict[int, float]:
    return {r["step"]: r["loss/mse"] for r in loop.read_metrics(workdir) if "loss/mse" in r}


def _restore(workdir: Path, step: int, config, devices: int):
    """``state["train"]`` of checkpoint ``step`` restored onto ``config.mesh`` on ``devices``."""
    config.mesh.num_devices = devices
    mesh = loop.config_mesh(config)
    stage = toy_stage.build(config, mesh)
    shapes = loop.abstract_state(stage, config.seed)
    shardings = loop.state_shardings(stage, shapes)
    checkpoints = ckpt_lib.Checkpoints(workdir / "checkpoints")
    try:
        train, meta, _ = checkpoints.restore(
            step, ckpt_lib.abstract(shapes["train"], shardings["train"])
        )
    finally:
        checkpoints.close()
    return train, shardings["train"], meta


def test_checkpoint_restores_bit_exact_onto_other_meshes(paired, tmp_path):
    """Written on data 2 x fsdp 4; restored onto data 8 x fsdp 1, onto 4 devices (data 2 x
    fsdp 2) and onto 1: params and Adam states equal bit for bit, placed with the new mesh."""
    config = _toy_config(
        paired,
        "--config.mesh.data=2",
        "--config.mesh.fsdp=4",
        "--config.total_steps=2",
        "--config.eval.at_end=false",
        "--config.export_at_end=false",
    )
    loop.train(config, tmp_path)
    saved, saved_sh, meta = _restore(tmp_path, 2, config, 8)
    assert meta["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert saved_sh["params"]["w1"].spec != saved_sh["params"]["b1"].spec  # some leaf is split
    init = toy_stage.build(config, None).init(loop.init_rng(config.seed))["train"]
    assert not np.array_equal(init["params"]["w1"], np.asarray(saved["params"]["w1"]))
    assert int(saved["opt"][0].count) == 2
    for data, fsdp, devices in ((8, 1, 8), (2, 2, 4), (1, 1, 1)):
        other = _toy_config(paired, f"--config.mesh.data={data}", f"--config.mesh.fsdp={fsdp}")
        got, shardings, _ = _restore(tmp_path, 2, other, devices)
        for a, b, sh in zip(
            jax.tree.leaves(saved), jax.tree.leaves(got), jax.tree.leaves(shardings), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            assert b.sharding == sh and len(b.sharding.device_set) == devices


def _env(devices: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # launch_local sets each process's device count
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


@pytest.mark.slow
def test_two_processes_give_the_losses_of_one_and_resume_on_one(paired, tmp_path):
    """``adcsr train`` on 2 processes x 4 devices (``scripts/launch_local.py``) logs the per-step
    losses of 1 process x 8 devices; its checkpoint resumes on 1 process with the params it
    exported and continues the uninterrupted run's losses (global order on both topologies)."""
    ref = tmp_path / "one"
    loop.train(_toy_config(paired), ref)  # 6 steps, 8 devices
    two = tmp_path / "two"
    cmd = [sys.executable, str(REPO / "scripts" / "launch_local.py"), "-n", "2"]
    cmd += ["--devices-per-process", "4", "--", sys.executable, "-m", "adcsr_jax", "train"]
    cmd += ["--config", f"{CONFIG}:8dev", "--workdir", str(two), f"--config.data.source={paired}"]
    cmd += ["--config.data.order=global", "--config.total_steps=4", "--config.eval.at_end=false"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=500)
    assert out.returncode == 0, out.stdout[-4000:]
    one, both = _losses(ref), _losses(two)
    assert sorted(both) == [1, 2, 3, 4]
    np.testing.assert_allclose([both[s] for s in both], [one[s] for s in both], rtol=1e-5)

    exported = np.load(two / "toy" / "params.npz")  # process 0, from the 2-process state
    got, _, meta = _restore(two, 4, _toy_config(paired), 8)
    assert meta["process_count"] == 2
    for k in exported:
        np.testing.assert_array_equal(exported[k], np.asarray(got["params"][k]))
    result = loop.train(_toy_config(paired), two)  # 1 process resumes at 4, runs to 6
    assert result.start_step == 4 and result.step == 6
    resumed = _losses(two)
    np.testing.assert_allclose([resumed[5], resumed[6]], [one[5], one[6]], rtol=1e-5)
