"""Subprocess driver of the engine tests: trains the toy stage (or ``--config FILE:VARIANT``,
e.g. ``configs/stage2.py:tiny``, the variant argument then ignored) in WORKDIR and prints one
``RESULT {json}`` line (``--coordinator``: as one process of a ``jax.distributed`` run). ``--kill-after STEP --wait-for CKPT``: SIGKILL this process from the
step hook once step STEP is done and checkpoint CKPT is committed (a hard crash mid-run)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402

from adcsr_jax.train import loop  # noqa: E402
from adcsr_jax.train.config import load_config  # noqa: E402

CONFIG = Path(__file__).with_name("toy_config.py")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("workdir")
    p.add_argument("variant")
    p.add_argument("--config", help="FILE:VARIANT instead of the toy config")
    p.add_argument("--kill-after", type=int)
    p.add_argument("--wait-for", type=int)
    p.add_argument("--coordinator", help="HOST:PORT: join jax.distributed as one of N processes")
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--num-processes", type=int, default=1)
    args, overrides = p.parse_known_args()
    if args.coordinator:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    config = load_config(args.config or f"{CONFIG}:{args.variant}", overrides)
    ckpt = Path(args.workdir) / "checkpoints"

    def on_step(step: int, metrics: dict) -> None:
        if args.kill_after is not None and step >= args.kill_after:
            deadline = time.time() + 60
            while not (ckpt / str(args.wait_for)).is_dir() and time.time() < deadline:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)

    result = loop.train(config, args.workdir, on_step=on_step)
    state_devices = jax.device_count()
    print(
        "RESULT "
        + json.dumps(
            {
                "step": result.step,
                "start_step": result.start_step,
                "stopped": result.stopped,
                "devices": state_devices,
                "exported": [str(x) for x in result.exported],
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
