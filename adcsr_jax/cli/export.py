"""Export the student (or teacher) to TFLite (fp32 / fp16 / W8A16) or ONNX (fp32 / fp16) and check it.

The file takes LR images in [0, 1] (NHWC float32, fixed size, batch 1 or dynamic) and returns
the x4 SR image in [0, 1] (at W8A16 by default the raw output in about [-1, 1]; AdcSR's colour
fix then runs on the host: adcsr_jax.export.graphs.host_colour_fix). After writing, it is run on real LR images and compared with JAX
(fp32: max abs error <= 1e-4 of the output range; W8A16: PSNR, target >= 35 dB), and its size,
CPU latency and peak memory are printed. Example:

    adcsr export --weights converted/adcsr --format tflite --precision w8a16 \\
        --calib ../shared/data/realsr/test_LR --out adcsr_w8a16.tflite

Calibration can instead come from the training data pipeline (HR images degraded to LR):
``--calib-source DIR|tfds:DATA_DIR[:NAME] [--calib-degradation adcsr]``.
"""

from __future__ import annotations

import argparse
import sys

from adcsr_jax.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    CommandError,
    existing_dir,
    output_file,
    positive,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        choices=("student", "teacher"),
        default="student",
        help="AdcSR student (default) or the OSEDiff teacher, for the comparison",
    )
    parser.add_argument(
        "--weights", help="converted folder (`adcsr convert adcsr` / `adcsr convert osediff`)"
    )
    parser.add_argument(
        "--init",
        choices=("full", "tiny"),
        help="without --weights: export a freshly initialised network of this size",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --init")
    parser.add_argument("--format", choices=("tflite", "onnx"), required=True)
    parser.add_argument("--precision", choices=("fp32", "fp16", "w8a16"), default="fp32")
    parser.add_argument("--out", required=True, help="output file (.tflite / .onnx)")
    parser.add_argument("--lr-size", type=int, default=128, help="LR height = width (default 128)")
    parser.add_argument("--dynamic-batch", action="store_true", help="batch dimension left open")
    parser.add_argument("--layout", choices=("nhwc", "nchw"), default="nhwc", help="ONNX I/O")
    parser.add_argument(
        "--colour-fix",
        choices=("auto", "graph", "host", "none"),
        default="auto",
        help="where AdcSR's colour fix runs: in the graph, on the host after it (the file then "
        "returns the raw output in [-1, 1]), or nowhere; auto = host for w8a16, else graph",
    )
    parser.add_argument(
        "--calib", help="folder of LR images: W8A16 calibration and the accuracy check"
    )
    parser.add_argument(
        "--calib-source",
        help="draw the calibration LR images from the data pipeline instead: a folder of HR "
        "images or tfds:DATA_DIR[:NAME], degraded as in training (--calib-degradation)",
    )
    parser.add_argument(
        "--calib-degradation",
        default="adcsr",
        help="degradation preset for --calib-source (default adcsr)",
    )
    parser.add_argument("--calib-seed", type=int, default=0, help="seed for --calib-source")
    parser.add_argument("--calib-count", type=int, default=8, help="calibration images (8)")
    parser.add_argument(
        "--no-augment",
        action="store_true",
        help="calibrate on the images only (default adds flips and 2 noise images)",
    )
    parser.add_argument("--check-count", type=int, default=4, help="images for the check (4)")
    parser.add_argument("--no-measure", action="store_true", help="skip latency / memory")
    parser.add_argument("--runs", type=int, default=5, help="timed runs for the median")


def _check(args: argparse.Namespace) -> None:
    """Flags, paths and combinations, before any network is built."""
    if args.weights is None and args.init is None:
        raise CommandError("give --weights DIR (or --init full|tiny for random weights)")
    if args.weights is not None:
        existing_dir(args.weights, "--weights")
    output_file(args.out, "--out")
    if args.format == "onnx" and args.precision == "w8a16":
        raise CommandError(
            "ONNX W8A16 runs on Qualcomm AI Hub: export --precision fp32 and use "
            "`adcsr profile --precision w8a16`"
        )
    if args.precision == "w8a16" and not (args.calib or args.calib_source):
        raise CommandError(
            "--precision w8a16 needs --calib DIR (LR images) or --calib-source "
            "DIR|tfds:DATA_DIR (HR images, degraded by the data pipeline)"
        )
    if args.calib is not None:
        existing_dir(args.calib, "--calib")
    if args.calib_source is not None and not args.calib_source.startswith("tfds:"):
        existing_dir(args.calib_source, "--calib-source")
    for flag in ("lr_size", "calib_count", "check_count", "runs"):
        positive(getattr(args, flag), "--" + flag.replace("_", "-"))


def run(args: argparse.Namespace) -> int:
    _check(args)
    import numpy as np

    from adcsr_jax.export import calibration, graphs, job, verify

    mode = args.colour_fix
    if mode == "auto":
        mode = "host" if args.precision == "w8a16" else "graph"
    model = graphs.load(args.model, args.weights, args.init or "full", args.seed, mode)
    if model.postprocess is not graphs.host_colour_fix and mode == "host":
        print("[export] this model has no colour fix to move to the host")
    print(f"[export] {model.description}")
    calib = check = None
    if args.calib_source:
        drawn = calibration.from_pipeline(
            args.calib_source,
            args.lr_size,
            args.calib_count + args.check_count,
            args.calib_degradation,
            args.calib_seed,
        )
        calib, check = drawn[: args.calib_count], drawn[args.calib_count :]
        print(f"[export] {len(drawn)} LR images from the data pipeline ({args.calib_source})")
        if args.calib:  # a folder of real LR images checks better than degraded crops
            check = calibration.from_folder(args.calib, args.lr_size, args.check_count)
    elif args.calib:
        calib = calibration.from_folder(args.calib, args.lr_size, args.calib_count)
        check = calibration.from_folder(
            args.calib, args.lr_size, args.check_count, offset=args.calib_count
        )
    if calib is not None and not args.no_augment:
        calib = calibration.augment(calib)
    if check is None:
        rng = np.random.default_rng(0)
        check = [rng.uniform(0, 1, (1, args.lr_size, args.lr_size, 3)).astype(np.float32)]
        print("[export] no --calib: checking on a random image")
    result = job.export_and_check(
        model,
        args.format,
        args.precision,
        args.out,
        check,
        args.lr_size,
        args.dynamic_batch,
        args.layout,
        calib,
        measure=not args.no_measure,
        runs=args.runs,
    )
    acc = result.accuracy
    if acc is not None and args.precision == "fp32" and not acc.passes_fp32():
        print(
            f"[export] FAILED: fp32 error {acc.rel_max_abs:.2e} of range > {verify.FP32_REL_TOL}",
            file=sys.stderr,
        )
        return EXIT_PARTIAL
    if acc is not None and args.precision == "w8a16" and acc.psnr < verify.W8A16_PSNR_TARGET:
        print(f"[export] warning: W8A16 PSNR {acc.psnr:.1f} dB < {verify.W8A16_PSNR_TARGET} dB")
    from adcsr_jax.export.benchmark import table

    print(table([result]))
    return EXIT_OK
