"""``filter2d_fft`` equals the direct ``filter2d``; banded-tap resizes equal the dense matrices;
the degradation's static tap counts hold for every draw of each preset."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax.data import degradations as D
from adcsr_jax.data import kernels as K
from adcsr_jax.data import ops
from adcsr_jax.data import taps as T
from adcsr_jax.resize import MODES, apply_resize, resize_matrix

RNG = np.random.default_rng(0)


def _kernels(n: int) -> np.ndarray:
    cfg = D.get_preset("adcsr")
    return np.stack(
        [
            K.sample_blur_kernel(
                RNG, cfg.kernel_prob, cfg.blur_sigma, cfg.betag_range, cfg.betap_range, 0.3
            )
            for _ in range(n)
        ]
    )


@pytest.mark.parametrize("hw", [(40, 56), (29, 37)])
def test_filter2d_fft_equals_direct(hw):
    x = RNG.random((3, *hw, 3)).astype(np.float32)
    k = _kernels(3)
    ref = np.asarray(ops.filter2d(x, k))
    out = np.asarray(ops.filter2d_fft(x, k))
    assert np.abs(out - ref).max() <= 1e-5
    # shared kernel, and a bucket with junk padding reflected at the true border
    shared = np.asarray(ops.filter2d_fft(x, k[0]))
    assert np.abs(shared - np.asarray(ops.filter2d(x, k[0]))).max() <= 1e-5
    padded = np.full((3, 64, 64, 3), 7.0, np.float32)
    padded[:, : hw[0], : hw[1]] = x
    valid = jnp.asarray([hw] * 3)
    out_p = np.asarray(ops.filter2d_fft(padded, k, valid))[:, : hw[0], : hw[1]]
    assert np.abs(out_p - ref).max() <= 1e-5


def test_fft_len_is_smooth_and_minimal():
    assert [ops._fft_len(n) for n in (1, 7, 180, 532, 788)] == [1, 8, 180, 540, 800]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "n_in,n_out,pad_in,pad_out", [(64, 96, None, 112), (64, 19, None, 32), (90, 23, 96, 32)]
)
def test_taps_equal_the_dense_matrix(mode, n_in, n_out, pad_in, pad_out):
    rows = np.stack([resize_matrix(n_in, n_out, mode, None, pad_in, pad_out)] * 2)
    cols = np.stack([resize_matrix(n_in - 5, n_out - 2, mode, None, pad_in or n_in, pad_out)] * 2)
    x = RNG.random((2, pad_in or n_in, pad_in or n_in, 3)).astype(np.float32)
    ref = np.asarray(apply_resize(jnp.asarray(x), jnp.asarray(rows), jnp.asarray(cols)))
    taps = T.max_taps(n_in, n_out - 2)
    ih, wh = T.matrix_taps(rows, taps)
    iw, ww = T.matrix_taps(cols, taps)
    out = np.asarray(T.apply_taps(jnp.asarray(x), ih, wh, iw, ww))
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-5


def test_matrix_taps_rejects_a_wide_band():
    m = resize_matrix(64, 8, "area")  # 8 taps per row
    with pytest.raises(ValueError, match="exceeds the bound 4"):
        T.matrix_taps(m, 4)


@pytest.mark.parametrize("preset,size", [("adcsr", 512), ("osediff", 512), ("realesrgan", 400)])
def test_tap_counts_hold_for_every_draw(preset, size):
    cfg = D.get_preset(preset)
    rng = np.random.default_rng(0)
    for _ in range(60):  # host only: device_args raises if a band is wider than its bound
        p = D.sample_params(cfg, rng, 2, (size, size))
        a1, a2, _ = D.device_args(cfg, p, (size, size))
        assert a1["ih1"].shape[-1] == D.tap_counts(cfg, size)[0]
