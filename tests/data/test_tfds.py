"""TFDS builders from local folders, the TFDS source in the pipeline, the sample HR set, the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    from adcsr_jax.data.sample_set import SAMPLE_NAMES, write_sample_images

    pytest.importorskip("skimage.data")
    root = tmp_path_factory.mktemp("sample")
    paths = write_sample_images(root)
    assert [p.stem for p in paths] == list(SAMPLE_NAMES)
    return root


def test_sample_set_images(sample_dir):
    for p in sample_dir.iterdir():
        w, h = Image.open(p).size
        assert min(w, h) >= 300 and Image.open(p).mode == "RGB"


def test_hr_builder_and_pipeline_from_tfds(tmp_path, sample_dir):
    from adcsr_jax.data.pipeline import DataIterator, PipelineConfig
    from adcsr_jax.data.sources import TfdsSource
    from adcsr_jax.data.tfds_builders import build_hr_dataset

    manual = tmp_path / "manual"
    (manual / "0001000").mkdir(parents=True)  # LSDIR-like nesting
    for p in sorted(sample_dir.iterdir())[:3]:
        Image.open(p).resize((80, 64)).save(manual / "0001000" / p.name)
    (manual / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    builder = build_hr_dataset(manual, tmp_path / "tfds")
    assert builder.info.splits["train"].num_examples == 3
    assert [name for name, _ in builder.skipped] == ["broken.png"]
    src = TfdsSource(tmp_path / "tfds")
    assert sorted(src.name(i) for i in range(len(src))) == sorted(
        f"0001000/{p.name}" for p in sorted(sample_dir.iterdir())[:3]
    )
    cfg = PipelineConfig(batch_size=2, crop=32, degradation=None, prefetch=0)
    it = DataIterator(f"tfds:{tmp_path / 'tfds'}", cfg, process_index=0, process_count=1)
    b = next(it)["gt"]
    assert b.shape == (2, 32, 32, 3) and b.min() >= 0 and b.max() <= 1


def test_paired_builder_matches_by_name(tmp_path):
    from adcsr_jax.data.tfds_builders import build_paired_dataset, read_pairs
    from adcsr_jax.image_io import find_pair_dirs, match_pairs

    root = tmp_path / "set"
    for sub, size in (("test_LR", 16), ("test_HR", 64)):
        (root / sub).mkdir(parents=True)
        for i, name in enumerate(("x1", "x2", "x3")):
            Image.fromarray(np.full((size, size, 3), 40 * i, np.uint8)).save(
                root / sub / f"{name}.png"
            )
    assert [n for n, _, _ in match_pairs(*find_pair_dirs(root))] == ["x1", "x2", "x3"]
    build_paired_dataset(root, tmp_path / "tfds")
    pairs = sorted(read_pairs(tmp_path / "tfds"))
    assert [n for n, _, _ in pairs] == ["x1", "x2", "x3"]
    for i, (_, lr, hr) in enumerate(pairs):
        assert (
            lr.shape == (16, 16, 3)
            and hr.shape == (64, 64, 3)
            and lr[0, 0, 0] == hr[0, 0, 0] == 40 * i
        )
    (root / "test_HR" / "x3.png").unlink()
    with pytest.raises(ValueError, match="unmatched"):
        match_pairs(*find_pair_dirs(root))
    shutil.rmtree(root / "test_HR")
    with pytest.raises(FileNotFoundError, match="LR"):
        match_pairs(*find_pair_dirs(root))


def test_realsr_layout(realsr):
    from adcsr_jax.image_io import find_pair_dirs, match_pairs

    pairs = match_pairs(*find_pair_dirs(realsr))
    assert len(pairs) == 100 and pairs[0][1].parent.name == "test_LR"


def test_cli_prepare(tmp_path, sample_dir):
    from adcsr_jax.cli import main

    assert (
        main(
            ["data", "prepare", "hr", "--manual-dir", str(sample_dir), "--data-dir", str(tmp_path)]
        )
        == 0
    )
    assert (tmp_path / "hr_images" / "1.0.0" / "dataset_info.json").is_file()
    with pytest.raises(SystemExit):
        main(["data", "prepare", "paired", "--data-dir", str(tmp_path)])
