"""Train a stage: adcsr train --config FILE[:VARIANT] --workdir DIR [--config.x=y ...].

Resumes automatically from the newest complete checkpoint in DIR/checkpoints. SIGTERM saves a
checkpoint at the next step boundary and exits 0. DIR holds config.json, metrics.jsonl (one JSON
line per logged step), tensorboard/ and the stage's exports. Example:

  adcsr train --config configs/stage2.py:tiny --workdir /tmp/tiny --config.total_steps=200
"""

from __future__ import annotations

import argparse
import logging

EXTRA_PREFIX = "--config."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="config file, optionally :VARIANT (configs/stage2.py:tiny)"
    )
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics and exports")
    parser.add_argument(
        "--export-only",
        action="store_true",
        help="restore the newest checkpoint in --workdir, run the stage's export, exit",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    hosts = parser.add_argument_group(
        "multi-process runs",
        "TPU VM slices and SLURM jobs are detected by JAX itself; elsewhere give all three "
        "(or ADCSR_COORDINATOR_ADDRESS, ADCSR_NUM_PROCESSES, ADCSR_PROCESS_ID). "
        "scripts/launch_local.py, launch_tpu_pod.sh and launch_slurm.sh set them.",
    )
    hosts.add_argument("--coordinator-address", metavar="HOST:PORT", help="process 0's address")
    hosts.add_argument("--num-processes", type=int, metavar="N")
    hosts.add_argument("--process-id", type=int, metavar="I")
    hosts.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=60,
        metavar="S",
        help="when another process dies, this one stops within S seconds (default 60)",
    )
    # --config.KEY=VALUE overrides are collected by adcsr_jax.cli.main (parse_known_args).
    parser.set_defaults(_extra_prefix=EXTRA_PREFIX)


def _quiet_orbax(record: logging.LogRecord) -> bool:
    """Orbax logs every save step by step at INFO; keep its warnings and errors only."""
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def run(args: argparse.Namespace) -> int:
    from absl import logging as absl_logging  # noqa: PLC0415 - CLU and orbax log through absl

    from adcsr_jax.train import distributed, loop  # noqa: PLC0415 - keeps `adcsr --help` light
    from adcsr_jax.train.config import load_config  # noqa: PLC0415

    # force: importing the loop's dependencies already gave the root logger a WARNING-level
    # handler, which hid the loop's own INFO lines (mesh, resumed from step N, exports).
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    absl_logging.set_verbosity(absl_logging.INFO)  # ReportProgress's ETA, the metric lines
    logging.getLogger("absl").addFilter(_quiet_orbax)
    config = load_config(args.config, getattr(args, "extra", []))
    if args.print_config:
        print(config)
        return 0
    try:
        cluster = distributed.resolve(
            args.coordinator_address,
            args.num_processes,
            args.process_id,
            heartbeat_timeout_s=args.heartbeat_timeout,
        )
    except distributed.ClusterConfigError as e:
        logging.error("%s", e)
        return 2
    distributed.initialize(cluster)
    try:
        result = loop.train(config, args.workdir, export_only=args.export_only)
    except loop.NonFiniteError as e:
        logging.error("%s", e)
        return 1
    logging.info("stopped at step %d (%s)", result.step, result.stopped)
    for path in result.exported:
        print(path)
    return 0
