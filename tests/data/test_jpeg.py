"""DiffJPEG: against PIL's libjpeg, against an independent quantisation reference, padding."""

from __future__ import annotations

import io

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy.fft import dctn

from adcsr_jax.data import jpeg


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()[100:260, 120:344]  # 160 x 224, multiples of 16


def _pil_jpeg(img: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=q, subsampling=2)  # 4:2:0
    return np.asarray(Image.open(buf)).astype(np.float32) / 255


@pytest.mark.parametrize("q", [30, 50, 75, 95])
def test_close_to_libjpeg_at_integer_quality(photo, q):
    x = photo[None].astype(np.float32) / 255
    ours = np.asarray(jpeg.diff_jpeg(x, q))[0]
    ref = _pil_jpeg(photo, q)
    err_ours = np.abs(ours - x[0]).mean()
    err_ref = np.abs(ref - x[0]).mean()
    assert np.abs(ours - ref).mean() < 3.5 / 255
    assert err_ours == pytest.approx(err_ref, rel=0.2)  # same amount of compression
    assert ours.min() >= 0 and ours.max() <= 1


def test_quality_100(photo):
    x = photo[None].astype(np.float32) / 255
    ours = np.asarray(jpeg.diff_jpeg(x, 100.0))[0]
    assert np.isfinite(ours).all()
    # Without quantisation only 4:2:0 chroma averaging remains: exactly an independent YCbCr
    # round trip with 2x2-mean chroma, and close to libjpeg's quality 100.
    m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    ycc = x[0].astype(np.float64) * 255 @ m.T
    h, w = ycc.shape[:2]
    ch = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3)).repeat(2, 0).repeat(2, 1)
    ycc = np.concatenate([ycc[..., :1], ch], axis=-1)
    inv = np.array([[1.0, 0.0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]])
    ref = np.clip(ycc @ inv.T, 0, 255) / 255
    assert np.abs(ours - ref).max() < 1e-4
    assert np.abs(ours - _pil_jpeg(photo, 100)).mean() < 1.2 / 255
    # and the limit is continuous: quality 99.999 is the same picture
    near = np.asarray(jpeg.diff_jpeg(x, 99.999))[0]
    assert np.abs(near - ours).max() < 2e-3


def _reference_levels(plane: np.ndarray, table: np.ndarray, factor: float) -> np.ndarray:
    """Independent JPEG quantisation: orthonormal 8x8 DCT-II (scipy) of value-128, / (T f)."""
    h, w = plane.shape
    blocks = plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3) - 128.0
    coef = dctn(blocks, type=2, norm="ortho", axes=(2, 3))
    return coef / (table * factor)


def test_quantisation_step_matches_independent_reference(photo):
    x = photo[None].astype(np.float32) / 255
    for q in (37.5, 60.0, 88.3):
        f = (5000 / q if q < 50 else 200 - 2 * q) / 100
        levels = jpeg.quantised_coefficients(jnp.asarray(x), jnp.asarray([q]))
        m = np.array(
            [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
        )
        ycc = x[0].astype(np.float64) * 255 @ m.T + [0, 128, 128]
        h, w = ycc.shape[:2]
        cb = ycc[..., 1].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        cr = ycc[..., 2].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        # BasicSR's tables: the standard tables transposed (kept for parity).
        refs = (
            _reference_levels(ycc[..., 0], jpeg._Y_STD.T, f),
            _reference_levels(cb, jpeg.C_TABLE, f),
            _reference_levels(cr, jpeg.C_TABLE, f),
        )
        for ours, ref in zip(levels, refs):
            ours = np.asarray(ours)[0]
            rounded = np.round(ref)
            # identical except where float32 vs float64 straddles a .5 boundary
            mismatch = ours != rounded
            assert mismatch.mean() < 1e-3
            assert np.all(
                np.abs(ref[mismatch] - np.trunc(ref[mismatch]) - 0.5 * np.sign(ref[mismatch]))
                < 1e-3
            )


def test_per_sample_float_quality_and_padding(photo):
    x = np.stack([photo[:37, :50], photo[50:87, 60:110]]).astype(np.float32) / 255
    both = np.asarray(jpeg.diff_jpeg(x, jnp.asarray([40.5, 90.0])))
    one = np.asarray(jpeg.diff_jpeg(x[1:], 90.0))
    assert both.shape == x.shape
    np.testing.assert_allclose(both[1], one[0], atol=1e-6)
    assert np.abs(both[0] - x[0]).mean() > np.abs(both[1] - x[1]).mean()
    # padded form: zeros beyond the true size reproduce the pad-to-16 of the reference
    padded = np.zeros((2, 48, 64, 3), np.float32)
    padded[:, :37, :50] = x
    out = np.asarray(jpeg.diff_jpeg_padded(jnp.asarray(padded), jnp.asarray([40.5, 90.0])))
    np.testing.assert_allclose(out[:, :37, :50], both, atol=1e-5)


def test_quality_to_factor():
    f = np.asarray(jpeg.quality_to_factor(jnp.asarray([10.0, 49.5, 50.0, 75.0, 100.0])))
    np.testing.assert_allclose(f, [5.0, 5000 / 49.5 / 100, 1.0, 0.5, 0.0], rtol=1e-6)
