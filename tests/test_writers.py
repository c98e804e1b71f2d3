"""adcsr_jax.writers: TensorBoard summaries without TensorFlow, read back with TensorBoard's reader."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs with TensorFlow made unimportable, as on a core-only install.
_SCRIPT = r"""
import io, json, sys
sys.modules["tensorflow"] = None
import numpy as np
from adcsr_jax.writers import create_writer

logdir = sys.argv[1]
w = create_writer(logdir, asynchronous=True)
w.write_hparams({"lr": 1e-4, "model": {"rank": 16}, "name": "x"})
w.write_scalars(3, {"loss": 0.5, "psnr": np.float32(25.25)})
w.write_scalars(7, {"loss": 0.25})
img = np.zeros((2, 5, 4, 3), np.float32); img[0, 1, 2] = [1.0, 0.5, 0.0]
w.write_images(7, {"grid": img})
w.write_texts(7, {"note": "hello"})
w.write_histograms(7, {"weights": np.arange(100.0)}, num_buckets={"weights": 10})
w.close()

from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.util import tensor_util
acc = ea.EventAccumulator(logdir, size_guidance={ea.TENSORS: 0}); acc.Reload()
tensors = {t: [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(t)]
           for t in acc.Tags()["tensors"]}
pngs = tensors["grid"][0][1]
decoded = [np.asarray(Image.open(io.BytesIO(b))).tolist() for b in pngs[2:]]
print(json.dumps({
    "tf": sys.modules.get("tensorflow") is None,
    "loss": [(s, float(v)) for s, v in tensors["loss"]],
    "psnr": [(s, float(v)) for s, v in tensors["psnr"]],
    "grid_size": [int(pngs[0]), int(pngs[1])], "grid_step": tensors["grid"][0][0],
    "pixel": decoded[0][1][2], "n_images": len(decoded),
    "note": tensors["note"][0][1].item().decode(),
    "histogram_shape": list(tensors["weights"][0][1].shape),
    "hparams": "_hparams_/session_start_info" in tensors,
}))
"""


def test_tensorboard_without_tensorflow(tmp_path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "tb")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["tf"], "TensorFlow got imported"
    assert got["loss"] == [[3, 0.5], [7, 0.25]]
    assert got["psnr"] == [[3, 25.25]]
    assert got["grid_size"] == [4, 5] and got["grid_step"] == 7 and got["n_images"] == 2
    assert got["pixel"] == [255, 128, 0]
    assert got["note"] == "hello"
    assert got["histogram_shape"] == [10, 3]
    assert got["hparams"]


def test_just_logging_writes_no_files(tmp_path) -> None:
    from adcsr_jax.writers import create_writer

    w = create_writer(tmp_path / "tb", just_logging=True, asynchronous=False)
    w.write_scalars(1, {"loss": 1.0})
    w.close()
    assert not (tmp_path / "tb").exists()
