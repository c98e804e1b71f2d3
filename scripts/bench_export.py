"""Table C.3 analogue on this CPU: the full-size student exported to every format, 128 -> 512.

For each export (TFLite fp32 / fp16 / W8A16, ONNX fp32 / fp16) it writes the file, checks it
against JAX on RealSR LR images, and measures file size, median CPU latency and added peak
memory; the table and a JSON of the figures go to --out. Heavy (several GB of RAM, tens of
minutes on 2 cores): run it alone, e.g.

    flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_export.py \\
        --lr ../shared/data/realsr/test_LR --out /tmp/bench_export

Weights: --weights DIR (a converted student), else a freshly initialised full student (seed 0).
The OSEDiff teacher rows are filled only when a teacher network exists in adcsr_jax.models.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", help="converted student folder; default: random init")
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--teacher-weights", help="converted OSEDiff folder; default: random init")
    parser.add_argument(
        "--models", default="student", help="comma list of student,teacher (teacher: heavy)"
    )
    parser.add_argument("--no-augment", action="store_true", help="calibrate on images only")
    parser.add_argument("--lr", required=True, help="folder of LR images (calibration + check)")
    parser.add_argument(
        "--out", required=True, help="output folder (files, table.md, results.json)"
    )
    parser.add_argument("--lr-size", type=int, default=128)
    parser.add_argument("--calib-count", type=int, default=8)
    parser.add_argument("--check-count", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--exports",
        default="tflite:fp32,tflite:w8a16,tflite:fp16,onnx:fp32,onnx:fp16",
        help="comma list of format:precision",
    )
    args = parser.parse_args()

    from adcsr_jax.export import calibration, models
    from adcsr_jax.export.verify import int8_weight_floor

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    calib = calibration.from_folder(args.lr, args.lr_size, args.calib_count)
    if not args.no_augment:
        calib = calibration.augment(calib)
    check = calibration.from_folder(
        args.lr, args.lr_size, args.check_count, offset=args.calib_count
    )
    rows = []
    for name in args.models.split(","):
        weights = args.weights if name == "student" else args.teacher_weights
        model = models.load(name, weights, args.size)
        print(f"[bench] {model.description} ({time.perf_counter() - start:.0f} s)", flush=True)
        floor = int8_weight_floor(model.apply, model.params, check)
        print(f"[bench] {name}: int8 weights alone vs JAX: {floor.summary()}", flush=True)
        rows += _run_exports(model, args, out, calib, check, rows)
    print(f"[bench] total {time.perf_counter() - start:.0f} s", flush=True)
    return 0


def _run_exports(model, args, out, calib, check, previous) -> list:
    from adcsr_jax.export import models, pipeline
    from adcsr_jax.export.report import table

    rows = []
    for item in args.exports.split(","):
        fmt, precision = item.split(":")
        suffix = "tflite" if fmt == "tflite" else "onnx"
        path = out / f"{model.name}_{precision}.{suffix}"
        try:
            row = pipeline.export_and_check(
                models.for_precision(model, precision),
                fmt,
                precision,
                path,
                check,
                args.lr_size,
                calibration=calib if precision == "w8a16" else None,
                runs=args.runs,
                log=lambda s: print(s, flush=True),
            )
        except Exception as err:  # keep going: one failing export should not hide the others
            print(
                f"[bench] {fmt} {precision} FAILED: {type(err).__name__}: {err}"[:2000], flush=True
            )
            continue
        rows.append(row)
        every = [*previous, *rows]
        text = table(every)
        (out / "table.md").write_text(text + "\n")
        (out / "results.json").write_text(
            json.dumps([dataclasses.asdict(r) for r in every], indent=2, default=str) + "\n"
        )
        print(text, flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
