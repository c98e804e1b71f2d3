"""Table C.3 analogue on this CPU: the full-size student exported to every format, 128 -> 512.

For each export (``format:precision[@lr]``) it writes the file, checks it against JAX on RealSR
LR images (for W8A16 also against the accuracy floor of int8 weights alone), and measures file
size, median CPU latency and added peak memory; the table and a JSON of the figures go to
--out. Heavy (up to 19 GB of RAM, tens of minutes on 2 cores): run it alone, e.g.

    flock /tmp/adcsr-heavy.lock .venv/bin/python scripts/bench_export.py \\
        --lr ../shared/data/realsr/test_LR --out /tmp/bench_export

``tflite:w8a16@32`` exports W8A16 at LR 32 (the file size is set by the weights, so it is the
same at any LR; TFLite's int16 kernels are reference C++ on a CPU, 12.5 s for one LR-32 image of
the full student here, so about 3.5 min at LR 128).

Measured here (2 cores, 24 GB shared; full student, random init seed 0; RealSR LR crops):

    flock /tmp/adcsr-heavy.lock nice -n 19 /usr/bin/time -v .venv/bin/python \\
        scripts/bench_export.py --lr ../shared/data/realsr/test_LR --out DIR --exports E

| E | storage | CPU latency | added peak | vs JAX (2 images) | convert | bench peak RSS |
|---|---:|---:|---:|---|---:|---:|
| tflite:fp32 | 1825.5 MB | 16.7 s | 4544 MB | 104.3 dB | 87 s | (earlier run) |
| onnx:fp32 | 1825.2 MB | 20.3 s | 3714 MB | 100.4 dB, 8.5e-5 | 52 s | 14.6 GB (with fp16) |
| tflite:fp16 | 913.8 MB | 15.6 s | 3775 MB | 64.7 dB | 158 s | (same run) |
| tflite:w8a16@32 | 462.7 MB (25.3%) | 12.5 s (LR 32) | 482 MB | 36.71 dB | 338 s | 19.2 GB |

W8A16 equals the int8-weights-only floor (36.73 dB on the same images). Its conversion used to
fail at full size: TFLite stores the calibrated float model's constants after the flatbuffer
(models near 2 GB), and its int16 quantiser cannot read that layout; ``tflite.quantize_w8a16``
now rewrites it inline (see there). Peak memory is jax2tf + calibration, not the quantiser.
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

    from adcsr_jax.export import calibration, graphs, job
    from adcsr_jax.export.benchmark import table
    from adcsr_jax.export.verify import int8_weight_floor

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    notes = []
    for name in args.models.split(","):
        weights = args.weights if name == "student" else args.teacher_weights
        model = graphs.load(name, weights, args.size)
        _log(f"[bench] {model.description} ({time.perf_counter() - start:.0f} s)")
        for fmt, precision, lr in _parse_exports(args.exports, args.lr_size):
            check = calibration.from_folder(args.lr, lr, args.check_count, offset=args.calib_count)
            calib = None
            variant = graphs.for_precision(model, precision)
            if precision == "w8a16":
                calib = calibration.from_folder(args.lr, lr, args.calib_count)
                calib = calib if args.no_augment else calibration.augment(calib)
                floor = int8_weight_floor(variant.reference, variant.params, check)
                notes.append(f"{name} LR {lr}: int8 weights alone vs JAX: {floor.summary()}")
                _log(f"[bench] {notes[-1]}")
            suffix = "tflite" if fmt == "tflite" else "onnx"
            path = out / f"{name}_{precision}_lr{lr}.{suffix}"
            try:
                row = job.export_and_check(
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
