"""Table C.3 analogue on this CPU: the full-size student exported to every format, 128 -> 512.

For each export (``format:precision[@lr]``) it writes the file, checks it against JAX on RealSR
LR images (for W8A16 also against the accuracy floor of int8 weights alone), and measures file
size, median CPU latency and added peak memory; the table and a JSON of the figures go to
--out. Heavy (about 10 GB of RAM, tens of minutes on 2 cores): run it alone, e.g.

    flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_export.py \\
        --lr ../shared/data/realsr/test_LR --out /tmp/bench_export

``tflite:w8a16@32`` exports W8A16 at LR 32 (the file size is set by the weights, so it is the
same at any LR; TFLite's int16 kernels are reference C++ on a CPU, about 0.3 GMAC/s here, so a
128 x 128 W8A16 inference of the 495 GMAC student would take about half an hour).
Measured here (2 cores, 24 GB shared): TFLite fp32 of the full student converts in 87 s and
needs about 10 GB; its W8A16 conversion (calibration keeps every float intermediate) was killed
by the kernel on this machine, so run W8A16 at full size on a machine with more memory.
Weights: --weights DIR (a converted student), else a freshly initialised full student (seed 0).
``--models student,teacher`` adds OSEDiff (random init unless --teacher-weights).
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


def _log(text: str) -> None:
    print(text, flush=True)


def _parse_exports(spec: str, default_lr: int) -> list[tuple[str, str, int]]:
    out = []
    for item in spec.split(","):
        head, _, lr = item.partition("@")
        fmt, precision = head.split(":")
        out.append((fmt, precision, int(lr) if lr else default_lr))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", help="converted student folder; default: random init")
    parser.add_argument("--teacher-weights", help="converted OSEDiff folder; default: random init")
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--models", default="student", help="comma list: student,teacher")
    parser.add_argument("--lr", required=True, help="folder of LR images (calibration + check)")
    parser.add_argument("--out", required=True, help="output folder (files, table, JSON)")
    parser.add_argument("--lr-size", type=int, default=128)
    parser.add_argument("--calib-count", type=int, default=8)
    parser.add_argument("--check-count", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-augment", action="store_true", help="calibrate on images only")
    parser.add_argument(
        "--exports",
        default="tflite:fp32,tflite:w8a16@32,onnx:fp32,tflite:fp16,onnx:fp16",
        help="comma list of format:precision[@lr]",
    )
    args = parser.parse_args()

    from adcsr_jax.export import calibration, models, pipeline
    from adcsr_jax.export.report import table
    from adcsr_jax.export.verify import int8_weight_floor

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    notes = []
    for name in args.models.split(","):
        weights = args.weights if name == "student" else args.teacher_weights
        model = models.load(name, weights, args.size)
        _log(f"[bench] {model.description} ({time.perf_counter() - start:.0f} s)")
        for fmt, precision, lr in _parse_exports(args.exports, args.lr_size):
            check = calibration.from_folder(args.lr, lr, args.check_count, offset=args.calib_count)
            calib = None
            variant = models.for_precision(model, precision)
            if precision == "w8a16":
                calib = calibration.from_folder(args.lr, lr, args.calib_count)
                calib = calib if args.no_augment else calibration.augment(calib)
                floor = int8_weight_floor(variant.reference, variant.params, check)
                notes.append(f"{name} LR {lr}: int8 weights alone vs JAX: {floor.summary()}")
                _log(f"[bench] {notes[-1]}")
            suffix = "tflite" if fmt == "tflite" else "onnx"
            path = out / f"{name}_{precision}_lr{lr}.{suffix}"
            try:
                row = pipeline.export_and_check(
                    variant,
                    fmt,
                    precision,
                    path,
                    check,
                    lr,
                    calibration=calib,
                    runs=1 if precision == "w8a16" else args.runs,
                    log=_log,
                )
            except Exception as err:  # one failing export should not hide the others
                _log(f"[bench] {fmt} {precision} FAILED: {type(err).__name__}: {err}"[:3000])
                continue
            if lr != args.lr_size:
                row = dataclasses.replace(row, precision=f"{precision} (LR {lr})")
            rows.append(row)
            text = table(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)
            (out / "table.md").write_text(text + "\n")
            (out / "results.json").write_text(
                json.dumps([dataclasses.asdict(r) for r in rows], indent=2, default=str) + "\n"
            )
            _log(text)
    _log(f"[bench] total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
