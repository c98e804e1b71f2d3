"""The training engine end to end, through the one loop with a small real stage
(``toy_stage.py``: a per-pixel MLP denoiser with Adam on crops of the sample photos): 1 device vs
8 simulated devices, the step compiled once, checkpoints and their retention, SIGKILL + restart
gives the uninterrupted loss sequence, SIGTERM through ``adcsr train`` saves and exits 0, the
NaN/inf guard, an 8-device checkpoint restored on 4 devices (past a half-written one)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from adcsr_jax.train import loop
from adcsr_jax.train.checkpoint import Checkpoints
from adcsr_jax.train.config import load_config
from tests.train import toy_stage
from tests.train.subprocess_env import train_env

HERE = Path(__file__).parent
REPO = HERE.parents[1]
CONFIG = HERE / "toy_config.py"
STEPS = 6


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """The sample photos, downsized (fast to decode), as an HR folder."""
    from adcsr_jax.data.sample_set import sample_images  # noqa: PLC0415

    pytest.importorskip("skimage")
    root = tmp_path_factory.mktemp("photos")
    for name, img in sample_images().items():
        Image.fromarray(np.ascontiguousarray(img[..., :3])).resize((40, 32)).save(
            root / f"{name}.png"
        )
    return root


def _config(variant: str, images: Path, *overrides: str):
    return load_config(f"{CONFIG}:{variant}", [f"--config.data.source={images}", *overrides])


def _losses(workdir: Path) -> dict[int, float]:
    return {r["step"]: r["loss/mse"] for r in loop.read_metrics(workdir) if "loss/mse" in r}


_env = train_env


def _driver(workdir: Path, variant: str, images: Path, cache: Path, devices: int, *extra: str):
    cmd = [sys.executable, str(HERE / "run_toy.py"), str(workdir), variant, *extra]
    cmd.append(f"--config.data.source={images}")
    return subprocess.run(
        cmd, capture_output=True, text=True, env=_env(devices, cache), timeout=300, cwd=REPO
    )


@pytest.fixture(scope="module")
def ref8(tmp_path_factory, images, compile_cache):
    """The uninterrupted 8-device run (data 4 x fsdp 2), with compile and trace counts."""
    workdir = tmp_path_factory.mktemp("ref8")
    compiles: list[str] = []  # fun_name of every XLA compilation (persistent-cache hits too)

    def listener(event: str, duration: float, fun_name: str = "", **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(fun_name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    counts: dict[int, int] = {}
    traces0 = len(toy_stage.TRACES)
    try:
        result = loop.train(
            _config("8dev", images),
            workdir,
            on_step=lambda step, m: counts.__setitem__(step, len(compiles)),
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return {
        "workdir": workdir,
        "result": result,
        "counts": counts,
        "traces": len(toy_stage.TRACES) - traces0,
        "compiles": compiles,
    }


def test_run_writes_metrics_checkpoints_evals_export(ref8):
    workdir, result = ref8["workdir"], ref8["result"]
    assert result.stopped == "done" and result.step == STEPS and result.skipped_steps == 0
    records = loop.read_metrics(workdir)
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    p0 = toy_stage.build(_config("8dev", Path(".")), None).init(loop.init_rng(3))["train"]["params"]
    p6 = np.load(workdir / "toy" / "params.npz")
    assert not np.allclose(p0["w1"], p6["w1"])  # the exported params are the trained ones
    train_rec = next(r for r in records if r["step"] == 2 and "loss/mse" in r)
    for key in ("grad_norm/all", "lr/all", "perf/steps_per_sec", "perf/images_per_sec"):
        assert key in train_rec
    assert "perf/tflops_per_device" in train_rec and result.flops_per_device > 0
    assert "memory/peak_host_rss_bytes" in train_rec or "memory/peak_device_bytes" in train_rec
    plan = next(r for r in records if "compile/flops_per_device" in r)
    assert plan["step"] == 1 and plan["compile/temp_bytes"] >= 0
    assert [r["step"] for r in records if "val/mse" in r] == [3, 6]  # every 3 steps, at the end
    # keep_last=1 plus keep_every=4 of the saves at 2, 4, 6
    assert Checkpoints(workdir / "checkpoints").all_steps() == [4, 6]
    assert json.loads((workdir / "config.json").read_text())["stage"] == "tests.train.toy_stage"
    assert result.exported == [workdir / "toy" / "params.npz"]


def test_step_is_compiled_once(ref8):
    assert ref8["traces"] == 1
    assert ref8["compiles"].count("jit(guarded_train_step)") == 1, ref8["compiles"]
    # Steady state compiles nothing: steps 4..6 with saves at 4 and 6 and evals at 3 and 6 (the
    # first save, at step 2, compiles orbax's small host-copy programs once).
    counts = ref8["counts"]
    assert counts[STEPS] == counts[3], f"compiled after step 3: {ref8['compiles'][counts[3] :]}"


def test_one_device_equals_eight_devices(ref8, images, tmp_path):
    result = loop.train(_config("1dev", images), tmp_path)
    assert result.step == STEPS
    one, eight = _losses(tmp_path), _losses(ref8["workdir"])
    np.testing.assert_allclose([one[s] for s in one], [eight[s] for s in one], rtol=1e-5)
    p1 = np.load(tmp_path / "toy" / "params.npz")
    p8 = np.load(ref8["workdir"] / "toy" / "params.npz")
    for k in p8:
        np.testing.assert_allclose(p1[k], p8[k], rtol=1e-5, atol=1e-7)


def test_sigkill_and_restart_give_the_uninterrupted_losses(ref8, images, compile_cache, tmp_path):
    out = _driver(
        tmp_path, "8dev", images, compile_cache, 8, "--kill-after", "5", "--wait-for", "4"
    )
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    assert Checkpoints(tmp_path / "checkpoints").latest_step() == 4
    result = loop.train(_config("8dev", images), tmp_path)
    assert result.start_step == 4 and result.step == STEPS
    assert _losses(tmp_path) == _losses(ref8["workdir"])  # exactly, every step


def test_sigterm_through_the_cli_saves_and_exits_zero(images, compile_cache, tmp_path):
    cmd = [sys.executable, "-m", "adcsr_jax", "train", "--config", f"{CONFIG}:8dev"]
    cmd += ["--workdir", str(tmp_path), f"--config.data.source={images}"]
    cmd += ["--config.total_steps=100000", "--config.checkpoint.every_steps", "1000"]
    proc = subprocess.Popen(
        cmd, env=_env(8, compile_cache), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    metrics = tmp_path / loop.METRICS_FILE
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(_losses(tmp_path)) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    last = max(_losses(tmp_path))
    assert Checkpoints(tmp_path / "checkpoints").latest_step() == last
    assert "sigterm" in err.decode()


def test_checkpoint_from_8_devices_restores_on_4(ref8, images, compile_cache, tmp_path):
    shutil.copytree(ref8["workdir"] / "checkpoints", tmp_path / "checkpoints")
    # a save cut short by a kill: a newer step left under orbax's temporary name
    shutil.copytree(
        ref8["workdir"] / "checkpoints" / "6",
        tmp_path / "checkpoints" / "8.orbax-checkpoint-tmp-1700000000",
    )
    shutil.rmtree(tmp_path / "checkpoints" / "8.orbax-checkpoint-tmp-1700000000" / "train" / "d")
    out = _driver(tmp_path, "4dev", images, compile_cache, 4)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert got["devices"] == 4 and got["start_step"] == STEPS and got["step"] == STEPS
    a = np.load(ref8["workdir"] / "toy" / "params.npz")
    b = np.load(tmp_path / "toy" / "params.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not any("tmp" in p.name for p in (tmp_path / "checkpoints").iterdir())


def test_nonfinite_step_is_skipped_and_counted(images, tmp_path):
    seen: dict[int, dict] = {}
    config = _config("1dev", images, "--config.toy.inject_inf_steps=(2,)")
    result = loop.train(config, tmp_path, on_step=lambda s, m: seen.__setitem__(s, m))
    assert result.step == STEPS and result.skipped_steps == 1
    assert seen[2]["guard/skipped"] == 1.0 and np.isinf(seen[2]["loss/mse"])
    assert all(seen[s]["guard/skipped"] == 0.0 for s in seen if s != 2)
    records = {r["step"]: r for r in loop.read_metrics(tmp_path) if "guard/skipped_total" in r}
    assert "loss/mse" not in records[2] and records[2]["guard/skipped_in_interval"] == 1
    assert records[STEPS]["guard/skipped_total"] == 1


def test_nonfinite_in_a_row_stops_the_run(images, tmp_path):
    config = _config("1dev", images, "--config.toy.inject_inf_steps=(3, 4, 5)")
    with pytest.raises(loop.NonFiniteError, match=r"step 5: 3 steps in a row .* loss/mse"):
        loop.train(config, tmp_path)


def test_guard_keeps_the_old_train_state():
    def bad_step(state, batch, rng):
        new = {"train": {"w": state["train"]["w"] + 1.0}, "frozen": state["frozen"]}
        return new, {"loss/x": jnp.float32(jnp.nan), "other": jnp.float32(1.0)}

    def good_step(state, batch, rng):
        new = {"train": {"w": state["train"]["w"] + 1.0}, "frozen": state["frozen"]}
        return new, {"loss/x": jnp.float32(2.0), "grad_norm/x": jnp.float32(1.0)}

    state = {"train": {"w": jnp.ones(3)}, "frozen": {}}
    key = jax.random.key_data(loop.train_key(0))
    new, m = jax.jit(loop.guarded_step(bad_step))(state, {}, 1, key)
    np.testing.assert_array_equal(new["train"]["w"], np.ones(3))
    assert float(m["guard/skipped"]) == 1.0
    new, m = jax.jit(loop.guarded_step(good_step))(state, {}, 1, key)
    np.testing.assert_array_equal(new["train"]["w"], 2 * np.ones(3))
    assert float(m["guard/skipped"]) == 0.0


def test_prepare_outputs_are_batch_sharded_by_construction():
    """The per-batch program's outputs take the batch sharding ``adcsr plan`` assumes, even where
    XLA would propagate another layout (here: an output computed from replicated weights only)."""
    import types

    from adcsr_jax import sharding as shd

    mesh = jax.sharding.Mesh(
        np.array(jax.devices()[:8]).reshape(4, 2, 1), ("data", "fsdp", "tensor")
    )

    def prepare(frozen, batch):
        b = batch["lr"].shape[0]
        return {
            "text": jnp.broadcast_to(frozen["emb"], (b, *frozen["emb"].shape)),
            "n": batch["lr"][:, 0, 0, 0],
        }

    stage = types.SimpleNamespace(name="toy", prepare=prepare)
    frozen = {"emb": jax.device_put(jnp.ones((5, 3)), shd.replicated(mesh))}
    batch = shd.place_batch({"lr": np.zeros((8, 4, 4, 3), np.float32)}, mesh)
    out = loop.jit_prepare(stage, mesh)(frozen, batch)
    for v in out.values():
        assert v.sharding.is_equivalent_to(shd.batch_sharding(mesh, v.ndim), v.ndim)
    assert loop.jit_prepare(types.SimpleNamespace(prepare=None), mesh) is None
    bad = types.SimpleNamespace(name="toy", prepare=lambda f, b: {"w": f["emb"]})
    with pytest.raises(ValueError, match=r"toy.prepare returned 'w' of shape \(5, 3\): .* 8"):
        loop.jit_prepare(bad, mesh)(frozen, batch)


def test_export_only_restores_the_newest_checkpoint(ref8, images, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        loop.train(_config("8dev", images), tmp_path / "empty", export_only=True)
    shutil.copytree(ref8["workdir"] / "checkpoints", tmp_path / "checkpoints")
    result = loop.train(_config("8dev", images), tmp_path, export_only=True)
    assert result.stopped == "export_only" and result.step == STEPS
    a = np.load(ref8["workdir"] / "toy" / "params.npz")
    b = np.load(tmp_path / "toy" / "params.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.slow
def test_two_processes_write_per_process_data_states_and_resume_on_one(
    images, compile_cache, tmp_path
):
    """Two ``jax.distributed`` processes (4 devices each): every host's iterator state in the
    checkpoint, the export from process 0 only; then one 8-device process resumes from it."""
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("localhost", 0))
        address = f"localhost:{s.getsockname()[1]}"
    cmd = [sys.executable, str(HERE / "run_toy.py"), str(tmp_path), "8dev"]
    cmd += ["--coordinator", address, "--num-processes", "2", f"--config.data.source={images}"]
    procs = [
        subprocess.Popen(
            [*cmd, "--process-id", str(i)],
            env=_env(4, compile_cache),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:]))
    assert [r["step"] for r in results] == [STEPS, STEPS]
    assert results[0]["exported"] and not results[1]["exported"]
    data = json.loads((tmp_path / "checkpoints" / str(STEPS) / "data" / "metadata").read_text())
    assert sorted(data) == ["0", "1"]
    assert [data[k]["process_index"] for k in ("0", "1")] == [0, 1]
    assert all(data[k]["step"] == STEPS for k in data)
    out = _driver(tmp_path, "8dev", images, compile_cache, 8, "--config.total_steps=8")
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert got["start_step"] == STEPS and got["step"] == 8
    assert "the sample order changes" in out.stderr


def test_a_batch_that_does_not_split_over_the_mesh_is_named(images, tmp_path):
    import jax

    if jax.device_count() < 8:
        pytest.skip("needs 8 simulated devices")
    config = _config("8dev", images, "--config.data.batch_size=6")
    with pytest.raises(ValueError, match=r"batch_size=6 does not split over .* = 8 devices"):
        loop.train(config, tmp_path)
