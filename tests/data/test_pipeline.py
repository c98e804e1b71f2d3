"""The input pipeline: determinism, epochs, host shards, resume with the pair pool, bad files,
placement on the mesh."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from adcsr_jax.data import degradations as D
from adcsr_jax.data.pipeline import DataIterator, PairPool, PipelineConfig, crop_image
from adcsr_jax.data.sources import FolderSource
from adcsr_jax.image_io import ImageReadError, decode_image_cv2
from adcsr_jax.testing.degradation import cheap_preset


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    skimage_data = pytest.importorskip("skimage.data")
    root = tmp_path_factory.mktemp("imgs")
    (root / "sub" / "deeper").mkdir(parents=True)
    imgs = {
        "a.png": skimage_data.astronaut(),
        "b.jpg": skimage_data.coffee(),
        "sub/c.png": skimage_data.chelsea(),
        "sub/deeper/d.webp": skimage_data.rocket(),
        "e.png": skimage_data.astronaut()[::-1],
        "f.png": skimage_data.coffee()[:, ::-1],
    }
    for name, img in imgs.items():
        Image.fromarray(img).resize((96, 72)).save(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def degrader() -> D.Degrader:
    # one resize bucket and Gaussian noise only: the pipeline logic, cheaply compiled
    return D.Degrader(cheap_preset(pool_size=4))


def _it(src, **kw) -> DataIterator:
    hosts = {
        k: kw.pop(k) for k in ("process_index", "process_count", "mesh", "degradation") if k in kw
    }
    cfg = PipelineConfig(**{"batch_size": 2, "crop": 32, "degradation": None, "prefetch": 0, **kw})
    return DataIterator(str(src), cfg, **{"process_index": 0, "process_count": 1, **hosts})


def test_folder_source_is_recursive_and_sorted(image_dir):
    src = FolderSource(image_dir)
    assert src.files == ["a.png", "b.jpg", "e.png", "f.png", "sub/c.png", "sub/deeper/d.webp"]


def test_stage1_batches_deterministic_per_seed(image_dir):
    a = [next(_it(image_dir, seed=3)) for _ in range(1)][0]
    it1, it2, it3 = _it(image_dir, seed=3), _it(image_dir, seed=3), _it(image_dir, seed=4)
    b1 = [next(it1)["gt"] for _ in range(4)]
    b2 = [next(it2)["gt"] for _ in range(4)]
    b3 = [next(it3)["gt"] for _ in range(4)]
    np.testing.assert_array_equal(a["gt"], b1[0])
    for x, y in zip(b1, b2):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(b1, b3))
    assert b1[0].shape == (2, 32, 32, 3) and b1[0].dtype == np.float32
    assert b1[0].min() >= 0 and b1[0].max() <= 1


def test_every_file_once_per_epoch_and_disjoint_host_shards(image_dir):
    it = _it(image_dir, seed=1)
    n = len(it.files)
    for epoch in range(2):
        files = [it._file_for(g) for g in range(epoch * n, (epoch + 1) * n)]
        assert sorted(files) == list(range(n))
    hosts = [
        _it(image_dir, seed=1, batch_size=2, process_index=i, process_count=2) for i in range(2)
    ]
    shards = [set(h.files.tolist()) for h in hosts]
    assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == set(range(n))
    assert hosts[0].local_batch == 1
    seen = [{h._file_for(g) for g in range(6)} for h in hosts]
    assert seen[0] <= shards[0] and seen[1] <= shards[1]


def test_resume_gives_the_same_batches_with_the_pair_pool(image_dir, degrader):
    def make(prefetch):
        return _it(image_dir, seed=5, degradation=degrader, prefetch=prefetch, output_dtype="uint8")

    it = make(prefetch=2)
    batches, state = [], None
    for i in range(7):
        batches.append(next(it))
        if i == 3:
            state = json.loads(json.dumps(it.get_state()))  # must survive JSON
    it.close()
    assert state["step"] == 4 and state["pool_ptr"] == 4 and len(state["pool_origin"]) == 4
    assert batches[0]["lr"].shape == (2, 8, 8, 3) and batches[0]["lr"].dtype == np.uint8
    # After the pool filled (2 batches of 2), batches come out of the pool.
    resumed = make(prefetch=0)
    resumed.set_state(state)
    for i in range(4, 7):
        b = next(resumed)
        for k in ("gt", "lr"):
            np.testing.assert_array_equal(b[k], batches[i][k], err_msg=f"batch {i} {k}")
    with pytest.raises(ValueError, match="seed"):
        _it(image_dir, seed=6, degradation=degrader).set_state(state)


def test_train_crop_is_one_paired_window_of_the_degraded_pair(image_dir):
    # Real-ESRGAN's paired_random_crop (400 -> 256), here 32 -> 16 on a batch of 2.
    whole = next(_it(image_dir, seed=3, degradation=D.Degrader(cheap_preset(pool_size=0))))
    deg = D.Degrader(cheap_preset(pool_size=0, train_crop=16))
    part = next(_it(image_dir, seed=3, degradation=deg))
    assert part["gt"].shape == (2, 16, 16, 3) and part["lr"].shape == (2, 4, 4, 3)
    windows = [
        (top, left)
        for top in range(5)
        for left in range(5)
        if np.array_equal(whole["lr"][:, top : top + 4, left : left + 4], part["lr"])
        and np.array_equal(
            whole["gt"][:, 4 * top : 4 * top + 16, 4 * left : 4 * left + 16], part["gt"]
        )
    ]
    assert windows, "the cropped pair is not one aligned window of the whole pair"
    with pytest.raises(ValueError, match="train_crop 18 must be a multiple of 4"):
        _it(image_dir, degradation=D.Degrader(cheap_preset(pool_size=0, train_crop=18)))


def test_pair_pool_mixes_and_tracks_origins():
    pool = PairPool(6, 2)
    rng = np.random.default_rng(0)
    outs = []
    for s in range(8):
        fresh = {"x": np.full((2, 1), s)}
        outs.append(pool.step(fresh, s, rng)["x"][:, 0].tolist())
    assert outs[:3] == [[0, 0], [1, 1], [2, 2]]  # filling: pass-through
    assert any(o != [s, s] for s, o in enumerate(outs[3:], 3))  # then mixed
    np.testing.assert_array_equal(pool.arrays["x"][:, 0], pool.origin[:, 0])
    with pytest.raises(ValueError, match="divisible"):
        PairPool(5, 2)


def test_batches_placed_on_the_mesh(image_dir):
    from adcsr_jax.sharding import make_mesh

    mesh = make_mesh(data=-1, fsdp=2)
    n = jax.device_count()
    b = next(_it(image_dir, seed=0, batch_size=n, mesh=mesh))["gt"]
    assert isinstance(b, jax.Array) and b.shape == (n, 32, 32, 3)
    assert b.sharding.spec[0] == ("data", "fsdp")
    assert len(b.addressable_shards) == n


def test_crop_reflect101_pads_small_images():
    img = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    out = crop_image(img, 32, np.random.default_rng(0), flip=False)
    assert out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out[:20, :30], img)
    np.testing.assert_array_equal(out[20, :30], img[18])  # reflect-101: edge row not repeated
    np.testing.assert_array_equal(out[:20, 30], img[:, 28])


# ------------------------------------------------------------------------------- bad data
def _png16_rgb(a: np.ndarray) -> bytes:
    """A 48-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[i].astype(">u2").tobytes() for i in range(h))

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def test_decode_converts_odd_formats():
    rgb = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    grey = decode_image_cv2(_encode(Image.fromarray(rgb[..., 0]), "PNG"))
    assert grey.shape == (40, 50, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    rgba = decode_image_cv2(_encode(Image.fromarray(np.dstack([rgb, rgb[..., :1]])), "PNG"))
    np.testing.assert_array_equal(rgba, rgb)  # alpha dropped
    cmyk = decode_image_cv2(_encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"))
    assert cmyk.shape == (40, 50, 3) and np.abs(cmyk.astype(int) - rgb).mean() < 20
    pal = decode_image_cv2(_encode(Image.fromarray(rgb).convert("P"), "PNG"))
    assert pal.shape == (40, 50, 3)
    a16 = (np.arange(40 * 50 * 3).reshape(40, 50, 3) * 9).astype(np.uint16)
    np.testing.assert_array_equal(decode_image_cv2(_png16_rgb(a16)), (a16 >> 8).astype(np.uint8))
    g16 = decode_image_cv2(_encode(Image.fromarray(a16[..., 0]), "PNG"))
    np.testing.assert_array_equal(g16[..., 1], (a16[..., 0] >> 8).astype(np.uint8))
    with pytest.raises(ImageReadError, match="cannot decode"):
        decode_image_cv2(b"definitely not an image", "junk.png")
    with pytest.raises(ImageReadError, match="smaller"):
        decode_image_cv2(_encode(Image.fromarray(rgb[:4, :4]), "PNG"), "tiny.png")


def test_bad_files_are_skipped_and_counted(tmp_path, image_dir, caplog):
    for f in FolderSource(image_dir).files[:3]:
        (tmp_path / Path(f).name).write_bytes((image_dir / f).read_bytes())
    good = (tmp_path / "a.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(tmp_path / "tiny.png")
    Image.fromarray(np.full((20, 24), 128, np.uint8)).save(tmp_path / "small_grey.png")  # padded
    it = _it(tmp_path, seed=0, batch_size=4)
    n = len(it.files)
    for _ in range(2 * n // 4 + 1):  # two epochs
        b = next(it)
        assert b["gt"].shape == (4, 32, 32, 3) and np.isfinite(b["gt"]).all()
    assert it.bad_count == 3 and it.get_state()["bad_count"] == 3
    assert "skipping bad image" in caplog.text


def test_core_data_modules_import_without_tensorflow_or_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('tensorflow', 'tensorflow_datasets', 'torch'): sys.modules[m] = None\n"
        "import adcsr_jax.data.degradations, adcsr_jax.data.pipeline, adcsr_jax.data.sources\n"
        "import adcsr_jax.cli.data, adcsr_jax.sharding\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_degradation_split_over_local_devices(image_dir):
    """8 (fake) local devices: the sharded programs give the unsharded result (noise off)."""
    cfg = D.get_preset(
        "adcsr",
        gaussian_noise_prob=1.0,
        gaussian_noise_prob2=1.0,
        noise_range=(0.0, 0.0),
        noise_range2=(0.0, 0.0),
        pool_size=0,
    )
    n = jax.local_device_count()
    outs = []
    for local in (True, False):
        it = _it(image_dir, seed=2, batch_size=n, degradation=cfg, degrade_on_local_devices=local)
        assert (it.degrader.sharding is not None) == (local and n > 1)
        outs.append(next(it))
    assert outs[0]["lr"].shape == (n, 8, 8, 3)
    np.testing.assert_array_equal(outs[0]["gt"], outs[1]["gt"])
    assert np.abs(outs[0]["lr"] - outs[1]["lr"]).max() <= 1 / 255 + 1e-6


@pytest.mark.slow
def test_full_size_stage2_pipeline(tmp_path):
    """AdcSR's setting: 512 crops of real photos, batch 12, LR 128, values in [0, 1], seeded."""
    from adcsr_jax.data.sample_set import write_sample_images

    write_sample_images(tmp_path)
    deg = D.Degrader("adcsr")
    cfg = PipelineConfig(batch_size=12, crop=512, seed=0, prefetch=1, pool_size=24)
    firsts = []
    for _ in range(2):
        it = DataIterator(str(tmp_path), cfg, process_index=0, process_count=1, degradation=deg)
        firsts.append([next(it) for _ in range(3)])
        it.close()
    b = firsts[0][2]  # a batch out of the (full) pool
    assert b["gt"].shape == (12, 512, 512, 3) and b["lr"].shape == (12, 128, 128, 3)
    for k in ("gt", "lr"):
        assert b[k].dtype == np.float32 and b[k].min() >= 0 and b[k].max() <= 1
        for x, y in zip(firsts[0], firsts[1]):
            np.testing.assert_array_equal(x[k], y[k])
