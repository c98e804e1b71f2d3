"""``adcsr infer`` end to end with a tiny random student: sizes, odd inputs, tiling, batching."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from adcsr_jax import cli
from adcsr_jax.imageops import to_uint8
from adcsr_jax.infer import InferOptions, Upscaler, output_names, super_resolve_folder
from adcsr_jax.models.adcsr import AdcSR, AdcSRConfig, init_student
from adcsr_jax.weights.adcsr_ckpt import save_student


@pytest.fixture(scope="module")
def student():
    return init_student(AdcSRConfig.tiny(), seed=3)


@pytest.fixture(scope="module")
def weights_dir(student, tmp_path_factory) -> Path:
    module, params = student
    return save_student(tmp_path_factory.mktemp("weights"), module.config, params)


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth colourful test image (random low-frequency pattern), uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [
        np.sin(rng.uniform(2, 6) * yy + rng.uniform(2, 6) * xx + rng.uniform(0, 6))
        for _ in range(3)
    ]
    return ((np.stack(chans, -1) * 0.4 + 0.5) * 255).astype(np.uint8)


def test_one_tile_equals_the_one_pass_model(student) -> None:
    module, params = student
    lr = _rgb(48, 32, 0)[None].astype(np.float32) / 255
    ours = Upscaler(module, params, InferOptions(tile=48))(lr)
    one_pass = jax.jit(module.apply)({"params": params}, jnp.asarray(lr * 2 - 1))
    np.testing.assert_allclose(ours, np.asarray(one_pass), atol=1e-5)


def test_padding_and_tiling(student) -> None:
    module, params = student
    lr = _rgb(40, 24, 1)[None].astype(np.float32) / 255  # padded to 48 x 32
    seen = []
    upscaler = Upscaler(module, params, InferOptions(tile=32, overlap=16))
    raw = upscaler.raw

    def spy(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape)
        return raw(x)

    upscaler.raw = spy  # type: ignore[method-assign]
    tiled = upscaler(lr)
    assert tiled.shape == (1, 160, 96, 3)
    assert seen == [(1, 32, 32, 3)] * 2  # 48 rows -> tiles at 0 and 16; 32 columns -> one
    assert np.isfinite(tiled).all() and tiled.min() >= 0 and tiled.max() <= 1
    whole = Upscaler(module, params, InferOptions(tile=48))(lr)
    assert whole.shape == tiled.shape


def test_folder_with_every_kind_of_input(weights_dir: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb(32, 32, 2)).save(src / "rgb.png")
    Image.fromarray(_rgb(32, 32, 3)).save(src / "photo.jpg", quality=95)
    Image.fromarray(_rgb(32, 32, 4)[..., 0]).save(src / "grey.png")
    Image.fromarray(_rgb(32, 32, 5)).quantize(32).save(src / "palette.png")
    Image.fromarray(_rgb(32, 32, 6)[..., 1].astype(np.uint16) * 257).save(src / "deep16.png")
    rgba = np.concatenate([_rgb(40, 24, 7), np.full((40, 24, 1), 128, np.uint8)], -1)
    Image.fromarray(rgba).save(src / "alpha.png")
    rotated = Image.fromarray(_rgb(32, 48, 8))  # stored 48 wide, 32 high
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(src / "rotated.png", exif=exif.tobytes())
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (src / "notes.txt").write_text("ignored: not an image suffix")

    out = tmp_path / "out"
    code = cli.main(
        ["infer", "--weights", str(weights_dir), "--input", str(src), "--output", str(out),
         "--no-progress"]
    )  # fmt: skip
    assert code == 1  # one file failed
    err = capsys.readouterr().err
    assert "broken.png" in err and "notes.txt" not in err
    sizes = {p.name: Image.open(p).size for p in out.iterdir()}
    assert sizes == {
        "rgb.png": (128, 128), "photo.png": (128, 128), "grey.png": (128, 128),
        "palette.png": (128, 128), "deep16.png": (128, 128), "alpha.png": (96, 160),
        "rotated.png": (128, 192),
    }  # fmt: skip
    assert all(Image.open(p).mode == "RGB" for p in out.iterdir())
    # A 16-bit image is read at full range, not clipped to white: its output is not flat.
    assert np.asarray(Image.open(out / "deep16.png")).std() > 5


def test_batching_gives_the_same_images(weights_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_rgb(32, 32, 10 + i)).save(src / f"{i}.png")
    one = super_resolve_folder(weights_dir, src, tmp_path / "b1", batch_size=1, progress=False)
    two = super_resolve_folder(weights_dir, src, tmp_path / "b2", batch_size=2, progress=False)
    assert not one.failed and len(two.written) == 3
    for a, b in zip(one.written, two.written):
        diff = np.abs(np.asarray(Image.open(a), int) - np.asarray(Image.open(b), int))
        assert diff.max() <= 1, a.name


def test_single_file_and_bad_arguments(weights_dir: Path, tmp_path: Path, capsys) -> None:
    Image.fromarray(_rgb(32, 32, 20)).save(tmp_path / "x.png")
    assert cli.main(["infer", "--weights", str(weights_dir), "--input", str(tmp_path / "x.png"),
                     "--output", str(tmp_path / "o")]) == 0  # fmt: skip
    assert Image.open(tmp_path / "o" / "x.png").size == (128, 128)
    assert cli.main(["infer", "--weights", str(weights_dir), "--input", str(tmp_path / "nope"),
                     "--output", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "nope" in capsys.readouterr().err
    assert cli.main(["infer", "--weights", str(tmp_path), "--input", str(tmp_path / "x.png"),
                     "--output", str(tmp_path / "o")]) == 2  # fmt: skip
    with pytest.raises(ValueError, match="multiple of 16"):
        InferOptions(tile=40)
    with pytest.raises(ValueError, match="overlap"):
        InferOptions(tile=32, overlap=32)


def test_output_names_and_truncation() -> None:
    names = output_names([Path("a.jpg"), Path("a.png"), Path("b.tif")])
    assert names == {Path("a.jpg"): "a.jpg.png", Path("a.png"): "a.png.png", Path("b.tif"): "b.png"}
    assert to_uint8(np.array([0.999, 1.0, 0.0039])).tolist() == [254, 255, 0]


@pytest.mark.slow  # one more compile (bf16); the benchmark checks bf16 at full size
def test_bfloat16_option(student) -> None:
    module, params = student
    lr = _rgb(32, 32, 30)[None].astype(np.float32) / 255
    fp32 = Upscaler(module, params, InferOptions(tile=32, overlap=0))(lr)
    bf16 = Upscaler(module, params, InferOptions(tile=32, overlap=0, dtype="bfloat16"))(lr)
    assert bf16.dtype == np.float32
    assert -10 * np.log10(np.mean((bf16 - fp32) ** 2)) > 30
    assert AdcSR(module.config).config.dtype == "float32"


def _nearest4(x: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)


def test_pipeline_pads_crops_and_fixes_colour_with_any_network() -> None:
    from adcsr_jax.infer import super_resolve_array
    from adcsr_jax.resize import bicubic_resize

    lr = np.random.default_rng(40).uniform(0, 1, (2, 21, 37, 3)).astype(np.float32)
    calls = []

    def net(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape)
        return _nearest4(x)

    plain = super_resolve_array(net, lr, InferOptions(tile=48, overlap=16, colour_fix="none"))
    assert calls[0][1] % 16 == 0 and calls[0][2] % 16 == 0
    np.testing.assert_allclose(plain, _nearest4(lr), atol=1e-6)  # padding cropped away exactly
    adain = super_resolve_array(lambda x: 0.5 * _nearest4(x), lr, InferOptions(colour_fix="adain"))
    np.testing.assert_allclose(adain.mean((1, 2)), lr.mean((1, 2)), atol=1e-4)
    wave = super_resolve_array(lambda x: -_nearest4(x), lr, InferOptions(colour_fix="wavelet"))
    low = np.asarray(bicubic_resize(jnp.asarray(lr * 2 - 1), scale=4)) / 2 + 0.5
    assert np.abs(wave.mean((1, 2)) - low.mean((1, 2))).max() < 0.02  # low band from the LR


def test_teacher_prompts_each_image_with_its_tags_as_test_osediff_does(tmp_path: Path) -> None:
    """The teacher path: DAPE tags of the x4 bicubic input + ", PROMPT," -> text encoder ->
    OSEDiff one step -> AdaIN colour fix, image by image (a tiny random tagger and teacher)."""
    from adcsr_jax.infer import TeacherUpscaler, postprocess
    from adcsr_jax.models.adcsr import random_params
    from adcsr_jax.models.osediff import OSEDiff, OSEDiffConfig, abstract_params
    from adcsr_jax.models.text import encode_text
    from adcsr_jax.resize import bicubic_resize
    from adcsr_jax.weights.prompt_weights import random_prompt_weights

    cfg = OSEDiffConfig.tiny(half_decoder=False)
    params = random_params(abstract_params(cfg), 0)
    pw = random_prompt_weights(cfg.unet.cross_attention_dim, 0)
    encoder = (pw.text_module, pw.text_params)
    options = InferOptions(tile=32, overlap=8, progress=False)
    up = TeacherUpscaler(OSEDiff(cfg), params, encoder, pw.tagger, "sharp", options)
    lr = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
    lr[1] *= 0.2  # a darker image: other tags
    sr = up(lr)
    assert sr.shape == (2, 128, 128, 3) and len(up.prompts) == 2
    for i in range(2):
        x4 = np.clip(np.asarray(bicubic_resize(lr[i : i + 1], scale=4)), 0, 1)
        want = f"{pw.tagger.tags(x4)[0]}, sharp,"
        assert up.prompts[i] == want
        emb = encode_text(*encoder, [want])
        raw = OSEDiff(cfg).apply({"params": params}, lr[i : i + 1] * 2 - 1, emb)
        ref = postprocess(np.asarray(raw), lr[i : i + 1] * 2 - 1, "adain")
        np.testing.assert_allclose(sr[i], ref[0], atol=2e-5)
    assert up.prompts[0] != up.prompts[1]
    big = up(np.random.default_rng(1).random((1, 48, 40, 3), np.float32))  # 2 x 2 tiles
    assert big.shape == (1, 192, 160, 3) and np.isfinite(big).all()


def test_teacher_flags_are_checked(tmp_path: Path, capsys) -> None:
    from adcsr_jax.cli import main

    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    base = ["infer", "--input", str(img), "--output", str(tmp_path / "o")]
    assert main(base) == 2
    assert "either --weights DIR (the student) or --teacher DIR" in capsys.readouterr().err
    assert main([*base, "--teacher", str(tmp_path)]) == 2
    assert "--teacher needs --text-encoder" in capsys.readouterr().err
    assert main([*base, "--teacher", str(tmp_path), "--text-encoder", str(tmp_path),
                 "--dape", str(img)]) == 2  # fmt: skip
    assert "also give --ram" in capsys.readouterr().err
