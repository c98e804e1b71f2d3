"""SIGTERM is never lost: one that arrives while the stage initialises, while the step compiles
or while a long step runs stops the run at the next step boundary with a checkpoint of that step
(single process; multi-process runs stop at JAX's preemption sync point, the same step on every
process)."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import jax
import pytest

from adcsr_jax.train import loop
from adcsr_jax.train.checkpoint import Checkpoints
from adcsr_jax.train.config import load_config
from tests.train import toy_stage
from tests.train.pairs import write_pairs

CONFIG = Path(__file__).with_name("toy_config.py")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    pytest.importorskip("skimage")
    paired = write_pairs(tmp_path_factory.mktemp("pairs"))
    return load_config(
        f"{CONFIG}:1dev",
        [
            f"--config.data.source={paired}",
            "--config.total_steps=6",
            "--config.checkpoint.every_steps=100",
            "--config.eval.every_steps=0",
            "--config.export_at_end=false",
        ],
    )


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def _stage(config):
    return toy_stage.build(config, loop.config_mesh(config))


def test_sigterm_during_init_and_compilation_stops_after_step_one(config, tmp_path):
    stage = _stage(config)

    def init(rng):
        _sigterm()  # the default action would kill the process here
        return stage.init(rng)

    def listener(event: str, duration: float, fun_name: str = "", **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration" and "train_step" in fun_name:
            _sigterm()

    for name, patched in (("init", dataclasses.replace(stage, init=init)), ("compile", stage)):
        workdir = tmp_path / name
        if name == "compile":
            jax.monitoring.register_event_duration_secs_listener(listener)
        try:
            result = loop.train(config, workdir, stage=patched)
        finally:
            if name == "compile":
                jax.monitoring.unregister_event_duration_listener(listener)
        assert result.stopped == "sigterm" and result.step == 1, name
        assert Checkpoints(workdir / "checkpoints").latest_step() == 1
    resumed = loop.train(config, tmp_path / "compile", stage=stage)
    assert resumed.start_step == 1 and resumed.step == 6 and resumed.stopped == "done"


def test_sigterm_during_a_long_step_stops_at_the_next_boundary(config, tmp_path):
    stage = _stage(config)
    calls = []

    def slow_and_signal(_) -> None:
        calls.append(1)
        if len(calls) == 3:  # inside step 3, while the device (CPU thread) runs it
            _sigterm()
            time.sleep(0.5)

    def step(state, batch, rng):
        jax.debug.callback(slow_and_signal, rng)
        return stage.step(state, batch, rng)

    result = loop.train(config, tmp_path, stage=dataclasses.replace(stage, step=step))
    assert result.stopped == "sigterm"
    # the flag is read after each step's dispatch: step 3's own boundary or step 4's
    assert result.step in (3, 4)
    assert Checkpoints(tmp_path / "checkpoints").latest_step() == result.step
    assert len(calls) == result.step
