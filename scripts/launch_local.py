#!/usr/bin/env python3
"""Start N processes of one multi-process JAX job on this machine (what the tests use).

    python scripts/launch_local.py --num-processes 2 --devices-per-process 4 -- \
        .venv/bin/adcsr train --config configs/stage2.py:tiny --workdir runs/two_hosts

Every process gets ``ADCSR_COORDINATOR_ADDRESS=localhost:PORT``, ``ADCSR_NUM_PROCESSES`` and
``ADCSR_PROCESS_ID`` (read by ``adcsr train``, see ``adcsr_jax/train/distributed.py``) and, with
``--devices-per-process K``, ``XLA_FLAGS=--xla_force_host_platform_device_count=K`` and
``JAX_PLATFORMS=cpu`` (simulated hosts). Output lines are prefixed with ``[pI]``. When one process
fails the others are terminated after ``--grace`` seconds (JAX's heartbeat would stop them too),
and the first non-zero exit code is returned. ``--dry-run`` prints the commands and exits.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def process_env(
    i: int, n: int, address: str, devices: int | None, base: dict[str, str]
) -> dict[str, str]:
    env = dict(base)
    env.update(
        ADCSR_COORDINATOR_ADDRESS=address, ADCSR_NUM_PROCESSES=str(n), ADCSR_PROCESS_ID=str(i)
    )
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _pump(i: int, stream) -> None:
    for line in stream:
        sys.stdout.write(f"[p{i}] {line}")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-processes", "-n", type=int, required=True)
    parser.add_argument("--devices-per-process", type=int, default=None)
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default: free)")
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    if args.num_processes < 1:
        parser.error("--num-processes must be at least 1")
    address = f"localhost:{args.port or free_port()}"
    envs = [
        process_env(i, args.num_processes, address, args.devices_per_process, dict(os.environ))
        for i in range(args.num_processes)
    ]
    if args.dry_run:
        keys = ("ADCSR_COORDINATOR_ADDRESS", "ADCSR_NUM_PROCESSES", "ADCSR_PROCESS_ID")
        keys += ("XLA_FLAGS", "JAX_PLATFORMS") if args.devices_per_process else ()
        for env in envs:
            prefix = " ".join(f"{k}={shlex.quote(env[k])}" for k in keys)
            print(f"{prefix} {shlex.join(command)}")
        return 0
    procs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for env in envs
    ]
    pumps = [
        threading.Thread(target=_pump, args=(i, p.stdout), daemon=True) for i, p in enumerate(procs)
    ]
    for t in pumps:
        t.start()
    first_failure: int | None = None
    failed_at = None
    try:
        while any(p.poll() is None for p in procs):
            for p in procs:
                code = p.poll()
                if code not in (None, 0) and first_failure is None:
                    first_failure, failed_at = code, time.monotonic()
                    print(f"[launch] process {procs.index(p)} exited with {code}", flush=True)
            if failed_at is not None and time.monotonic() - failed_at > args.grace:
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
            time.sleep(0.2)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # each saves a checkpoint and exits
        for p in procs:
            p.wait()
    for t in pumps:
        t.join(timeout=5)
    codes = [p.returncode for p in procs]
    if first_failure is None:
        first_failure = next((c for c in codes if c != 0), 0)
    return int(first_failure)


if __name__ == "__main__":
    sys.exit(main())
