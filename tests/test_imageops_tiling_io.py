"""Image maths, tiling and image I/O used by inference, checked against torch / Pillow."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from adcsr_jax import imageops, resize, tiling
from adcsr_jax.image_io import ImageReadError, list_images, read_image, write_png

torch = pytest.importorskip("torch")


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize(
    ("shape", "kwargs", "torch_kwargs"),
    [
        ((2, 13, 17, 3), {"scale": 4}, {"scale_factor": 4}),
        ((1, 32, 32, 3), {"scale": 4}, {"scale_factor": 4}),
        ((1, 9, 11, 2), {"size": (50, 23)}, {"size": (50, 23)}),
        ((1, 40, 36, 3), {"size": (15, 11)}, {"size": (15, 11)}),
    ],
)
def test_bicubic_matches_torch(shape, kwargs, torch_kwargs) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    ours = np.asarray(resize.bicubic_resize(jnp.asarray(x), **kwargs))
    ref = torch.nn.functional.interpolate(
        _nchw(x), mode="bicubic", align_corners=False, **torch_kwargs
    )
    np.testing.assert_allclose(ours, ref.numpy().transpose(0, 2, 3, 1), atol=1e-5)


def test_adain_colour_fix_matches_adcsr_and_osediff() -> None:
    rng = np.random.default_rng(1)
    sr = rng.uniform(-1, 1, (2, 32, 24, 3)).astype(np.float32)
    lr = rng.uniform(-0.5, 0.7, (2, 8, 6, 3)).astype(np.float32)
    t_sr, t_lr = _nchw(sr), _nchw(lr)
    # AdcSR test.py: torch.std (unbiased), no eps.
    ref = (t_sr - t_sr.mean(dim=[2, 3], keepdim=True)) / t_sr.std(dim=[2, 3], keepdim=True)
    ref = ref * t_lr.std(dim=[2, 3], keepdim=True) + t_lr.mean(dim=[2, 3], keepdim=True)
    ours = imageops.adain_colour_fix(jnp.asarray(sr), jnp.asarray(lr))
    np.testing.assert_allclose(np.asarray(ours), ref.numpy().transpose(0, 2, 3, 1), atol=1e-5)

    # OSEDiff calc_mean_std: var (unbiased) + 1e-5.
    def stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c = t.shape[:2]
        var = t.reshape(b, c, -1).var(dim=2) + 1e-5
        return t.reshape(b, c, -1).mean(dim=2)[..., None, None], var.sqrt()[..., None, None]

    (cm, cs), (sm, ss) = stats(t_sr), stats(t_lr)
    ref = (t_sr - cm) / cs * ss + sm
    ours = imageops.adain_colour_fix(jnp.asarray(sr), jnp.asarray(lr), eps=1e-5)
    np.testing.assert_allclose(np.asarray(ours), ref.numpy().transpose(0, 2, 3, 1), atol=1e-5)


def test_wavelet_colour_fix_matches_osediff() -> None:
    rng = np.random.default_rng(2)
    content = rng.uniform(0, 1, (1, 40, 36, 3)).astype(np.float32)
    style = rng.uniform(0, 1, (1, 40, 36, 3)).astype(np.float32)
    kernel = torch.tensor([[0.0625, 0.125, 0.0625], [0.125, 0.25, 0.125], [0.0625, 0.125, 0.0625]])
    kernel = kernel[None, None].repeat(3, 1, 1, 1)

    def decompose(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        high = torch.zeros_like(img)
        for i in range(5):
            r = 2**i
            low = torch.nn.functional.conv2d(
                torch.nn.functional.pad(img, (r, r, r, r), mode="replicate"),
                kernel,
                groups=3,
                dilation=r,
            )
            high += img - low
            img = low
        return high, low

    ref = decompose(_nchw(content))[0] + decompose(_nchw(style))[1]
    ours = imageops.wavelet_colour_fix(jnp.asarray(content), jnp.asarray(style))
    np.testing.assert_allclose(np.asarray(ours), ref.numpy().transpose(0, 2, 3, 1), atol=1e-5)


def test_to_uint8_truncates_like_to_pil_image() -> None:
    x = np.random.default_rng(3).uniform(-0.1, 1.1, (9, 7, 3)).astype(np.float32)
    x[0, 0] = [0.999, 1.0 / 255 - 1e-7, 0.5]
    # torchvision's ToPILImage on a float tensor: pic.mul(255).byte()
    ref = torch.from_numpy(x).clamp(0, 1).mul(255).byte().numpy()
    np.testing.assert_array_equal(imageops.to_uint8(x), ref)


# ---------------------------------------------------------------- tiling


def _upscale_pointwise(x: np.ndarray) -> np.ndarray:
    y = np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)
    return np.tanh(3 * y) + y**2


def test_pad_to_multiple() -> None:
    x = np.arange(2 * 5 * 7 * 3, dtype=np.float32).reshape(2, 5, 7, 3)
    y = tiling.pad_to_multiple(x, 16)
    assert y.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(y[:, :5, :7], x)
    np.testing.assert_array_equal(y[:, 5, :7], x[:, 3])  # reflect
    assert tiling.pad_to_multiple(y, 16) is y
    one = tiling.pad_to_multiple(np.ones((1, 1, 3, 1), np.float32), 4)
    assert one.shape == (1, 4, 4, 1)


@pytest.mark.parametrize(("size", "tile", "overlap"), [(64, 64, 16), (200, 64, 16), (97, 48, 40)])
def test_tile_starts_cover_with_overlap(size: int, tile: int, overlap: int) -> None:
    starts = tiling.tile_starts(size, tile, overlap)
    length = min(tile, size)
    assert starts[0] == 0 and starts[-1] + length == size
    for a, b in zip(starts, starts[1:]):
        assert a + length - b >= overlap


def test_one_tile_is_exactly_one_call() -> None:
    x = np.random.default_rng(4).uniform(-1, 1, (2, 32, 48, 3)).astype(np.float32)
    calls = []

    def fn(t: np.ndarray) -> np.ndarray:
        calls.append(t.shape)
        return _upscale_pointwise(t)

    out = tiling.tiled_apply(fn, x, scale=4, tile=48, overlap=16)
    assert calls == [x.shape]
    np.testing.assert_array_equal(out, _upscale_pointwise(x))


def test_tiles_of_a_local_function_reassemble_exactly() -> None:
    x = np.random.default_rng(5).uniform(-1, 1, (1, 80, 112, 3)).astype(np.float32)
    calls = []

    def fn(t: np.ndarray) -> np.ndarray:
        calls.append(t.shape)
        return _upscale_pointwise(t)

    out = tiling.tiled_apply(fn, x, scale=4, tile=32, overlap=8)
    assert len(calls) > 6
    np.testing.assert_allclose(out, _upscale_pointwise(x), atol=1e-5)


def test_tile_blending_has_no_seams() -> None:
    """Each tile adds its own constant offset: the blend must ramp between them, never jump."""
    x = np.zeros((1, 96, 96, 1), np.float32)
    offsets = iter(np.random.default_rng(6).uniform(-1, 1, 100))

    def fn(t: np.ndarray) -> np.ndarray:
        return np.full((t.shape[0], t.shape[1] * 4, t.shape[2] * 4, 1), next(offsets), np.float32)

    out = tiling.tiled_apply(fn, x, scale=4, tile=48, overlap=16)[0, ..., 0]
    # Offsets differ by up to 2; across a 64-pixel ramp a step is at most 2/64 (plus rounding).
    assert np.abs(np.diff(out, axis=0)).max() < 2.0 / 64 + 1e-4
    assert np.abs(np.diff(out, axis=1)).max() < 2.0 / 64 + 1e-4


# ---------------------------------------------------------------- image I/O


def _png16(path: Path, a: np.ndarray) -> None:
    """A 16-bit PNG (grey, RGB or RGBA) written by hand, since Pillow cannot write 16-bit RGB."""
    h, w, c = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_read_rgb_matches_to_tensor(tmp_path: Path) -> None:
    rgb = np.random.default_rng(7).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    # torchvision's ToTensor on an RGB PIL image: uint8 HWC -> float, div(255)
    pil = Image.open(tmp_path / "a.png").convert("RGB")
    ref = torch.from_numpy(np.array(pil)).float().div(255).numpy()
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), ref)


def test_read_greyscale_palette_16bit(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "l.png")
    out = read_image(tmp_path / "l.png")
    assert out.shape == (6, 5, 3)
    np.testing.assert_allclose(out, np.repeat(grey[..., None], 3, -1) / 255.0, atol=1e-7)

    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).quantize(16).save(tmp_path / "p.png")
    pal = Image.open(tmp_path / "p.png")
    assert pal.mode == "P"
    np.testing.assert_allclose(
        read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")) / 255.0, atol=1e-7
    )

    g16 = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_allclose(out[..., 1], g16 / 65535.0, atol=1e-6)  # not clipped to white

    rgb16 = rng.integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    _png16(tmp_path / "rgb16.png", rgb16)
    out = read_image(tmp_path / "rgb16.png")  # Pillow keeps the high byte
    np.testing.assert_allclose(out, rgb16 / 65535.0, atol=1 / 255 + 1e-6)


def test_read_rgba_composites_over_background(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    rgba = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "a.png")
    a = rgba[..., 3:] / 255.0
    expect = rgba[..., :3] / 255.0 * a + 1.0 * (1 - a)
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), expect, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "a.png", background=0.0)[0, 0], 0.0)
    rgba16 = rng.integers(0, 65536, (6, 5, 4), dtype=np.uint16)
    _png16(tmp_path / "rgba16.png", rgba16)
    assert read_image(tmp_path / "rgba16.png").shape == (6, 5, 3)
    la = Image.fromarray(rgba[..., 0]).convert("LA")
    la.putalpha(Image.fromarray(rgba[..., 3]))
    la.save(tmp_path / "la.png")
    grey, alpha = rgba[..., :1] / 255.0, rgba[..., 3:] / 255.0
    np.testing.assert_allclose(
        read_image(tmp_path / "la.png"), np.repeat(grey * alpha + (1 - alpha), 3, -1), atol=1e-6
    )


def test_read_applies_exif_orientation(tmp_path: Path) -> None:
    rgb = np.random.default_rng(10).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise for display
    img.save(tmp_path / "r.png", exif=exif.tobytes())
    out = read_image(tmp_path / "r.png")
    assert out.shape == (6, 4, 3)
    np.testing.assert_allclose(out, np.rot90(rgb, k=-1) / 255.0, atol=1e-7)


def test_unreadable_files_raise_with_name(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image(tmp_path / "broken.png")
    good = np.zeros((4, 4, 3), np.uint8)
    Image.fromarray(good).save(tmp_path / "trunc.png")
    data = (tmp_path / "trunc.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="trunc.png"):
        read_image(tmp_path / "trunc.png")


def test_list_images_and_write_png(tmp_path: Path) -> None:
    (tmp_path / "b.PNG").write_bytes(b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]
    assert list_images(tmp_path / "a.jpg") == [tmp_path / "a.jpg"]
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")
    x = np.random.default_rng(11).uniform(0, 1, (5, 4, 3)).astype(np.float32)
    write_png(tmp_path / "out" / "x.png", x)
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "out" / "x.png")), (x * 255).astype(np.uint8)
    )
