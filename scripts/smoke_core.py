"""Smoke test of the core install (``pip install -e .``, no extras), run by ``.ci/run``.

Imports every module of the package that the core install must support (all but
``EXTRA_MODULES``), writes a TensorBoard scalar and an image through ``adcsr_jax.writers`` and
reads them back with TensorBoard's own reader, and builds the ``adcsr`` parser. With
``--block-extras`` the optional stacks (torch, TensorFlow, export tools) are made unimportable
first, so the same check runs in a full development venv (``tests/test_core_install.py``).
Exit status 0 when everything works; otherwise the failures are listed.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import tempfile

# Modules that need an extra, with the extra that provides it.
EXTRA_MODULES = {
    "adcsr_jax.data.tfds_builders": "data",
    "adcsr_jax.testing": "torch",
}
# What the extras install; blocked by --block-extras.
EXTRA_PACKAGES = (
    "tensorflow", "tensorflow_datasets", "torch", "diffusers", "peft", "taming", "onnx",
    "onnxruntime", "ai_edge_litert", "jax2onnx", "qai_hub", "skimage",
)  # fmt: skip


def core_modules() -> list[str]:
    import adcsr_jax

    names = []
    for info in pkgutil.walk_packages(adcsr_jax.__path__, "adcsr_jax."):
        if info.name.endswith("__main__"):
            continue
        if any(info.name == m or info.name.startswith(m + ".") for m in EXTRA_MODULES):
            continue
        names.append(info.name)
    return names


def check_writer() -> None:
    import numpy as np
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    from adcsr_jax.writers import create_writer

    with tempfile.TemporaryDirectory() as logdir:
        writer = create_writer(logdir)
        writer.write_scalars(1, {"smoke/loss": 0.5})
        writer.write_images(1, {"smoke/image": np.zeros((4, 4, 3), np.float32)})
        writer.close()
        acc = ea.EventAccumulator(logdir, size_guidance={ea.TENSORS: 0})
        acc.Reload()
        [event] = acc.Tensors("smoke/loss")
        assert event.step == 1 and float(tensor_util.make_ndarray(event.tensor_proto)) == 0.5
        assert acc.Tensors("smoke/image")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-extras", action="store_true", help="hide the extras first")
    args = parser.parse_args()
    if args.block_extras:
        for name in EXTRA_PACKAGES:
            sys.modules[name] = None  # type: ignore[assignment]
    failures = []
    names = core_modules()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - report every module that fails
            failures.append(f"import {name}: {type(err).__name__}: {err}")
    try:
        check_writer()
    except Exception as err:  # noqa: BLE001
        failures.append(
            f"TensorBoard scalar through adcsr_jax.writers: {type(err).__name__}: {err}"
        )
    try:
        from adcsr_jax.cli import build_parser

        build_parser()
    except Exception as err:  # noqa: BLE001
        failures.append(f"adcsr parser: {type(err).__name__}: {err}")
    loaded = sorted(p for p in EXTRA_PACKAGES if sys.modules.get(p) is not None)
    if loaded:
        failures.append(f"core modules imported extras: {', '.join(loaded)}")
    for line in failures:
        print(f"FAIL {line}", file=sys.stderr)
    print(f"core smoke test: {len(names)} modules imported, writer and parser checked, "
          f"{len(failures)} failure(s)")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
