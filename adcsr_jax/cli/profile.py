"""Profile an exported model on a phone through Qualcomm AI Hub (latency, memory, compute units).

Uploads the file, compiles it for the device (``submit_compile_job``), runs it with profiling
(``submit_inference_job(profile=True)``) and prints latency, peak memory and the compute units
used. ``--precision w8a16`` on an ONNX file quantises it with AI Hub's own quantiser (int8
weights, int16 activations) on ``--calib`` images first. ``--dry-run`` only checks the input
specs locally. Needs an AI Hub token (``qai-hub configure --api_token ...``). Example:

    adcsr profile --model adcsr_w8a16.tflite --device "Snapdragon 8 Elite QRD"
"""

from __future__ import annotations

import argparse

from adcsr_jax.cli.common import CommandError, existing_dir, existing_file, positive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="exported .tflite or .onnx file")
    parser.add_argument(
        "--device", required=True, help='AI Hub device name, e.g. "Samsung Galaxy S24"'
    )
    parser.add_argument("--precision", choices=("fp32", "fp16", "w8a16"), default="fp32")
    parser.add_argument(
        "--runtime",
        help="AI Hub target runtime (tflite, qnn_context_binary, qnn_dlc, onnx); "
        "default: tflite for .tflite, qnn_context_binary for .onnx",
    )
    parser.add_argument("--calib", help="folder of LR images for AI Hub's W8A16 quantisation")
    parser.add_argument("--calib-count", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="batch for a dynamic-batch file")
    parser.add_argument("--dry-run", action="store_true", help="check input specs locally only")
    parser.add_argument("--poll", type=float, default=10.0, help="status poll interval (s)")


def run(args: argparse.Namespace) -> int:
    model = existing_file(args.model, "--model")
    if model.suffix.lower() not in (".tflite", ".onnx"):
        raise CommandError(f"--model {model}: give an exported .tflite or .onnx file")
    if args.precision == "w8a16" and model.suffix.lower() == ".onnx" and not args.calib:
        raise CommandError("--precision w8a16 on ONNX needs --calib DIR (LR images)")
    if args.calib is not None:
        existing_dir(args.calib, "--calib")
    positive(args.batch, "--batch")
    positive(args.calib_count, "--calib-count")
    from adcsr_jax.export import aihub

    try:
        specs = aihub.input_specs(model, batch=args.batch)
        runtime = aihub.runtime_for(model, args.runtime)
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(str(err)) from err
    for spec in specs:
        print(f"[aihub] input {spec.name}: shape {spec.shape}, {spec.dtype}; runtime {runtime}")
    if args.dry_run:
        print("[aihub] dry run: input specs OK, nothing submitted")
        return 0
    calib = None
    if args.calib:
        import numpy as np

        from adcsr_jax.export.calibration import from_folder

        size = specs[0].shape[1] if specs[0].shape[-1] == 3 else specs[0].shape[2]
        calib = from_folder(args.calib, size, args.calib_count)
        if specs[0].shape[-1] != 3:  # NCHW file
            calib = [np.transpose(c, (0, 3, 1, 2)) for c in calib]
    summary = aihub.profile(
        model, args.device, args.precision, args.runtime, calib, poll_s=args.poll
    )  # AIHubConfigError (no token) is a UserError: one message, exit status 2
    print(summary.text())
    return 0
