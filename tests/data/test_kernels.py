"""Host-side kernel sampling: formulas, normalisation, padding, determinism, every type drawn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from adcsr_jax.data import kernels as K


def test_iso_gaussian_matches_closed_form():
    k = K.bivariate_kernel("gaussian", 11, 1.3, 1.3, 0.0)
    x = np.arange(11) - 5
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.3**2))
    np.testing.assert_allclose(k, g / g.sum(), rtol=1e-12)


def test_aniso_rotation_and_shapes():
    k = K.bivariate_kernel("gaussian", 21, 3.0, 0.5, math.pi / 2, isotropic=False)
    # rotated by 90 degrees: the long axis is vertical (rows), so rows vary slowly
    assert k[10, :].std() < k[:, 10].std()
    for kind, beta in (("generalized", 0.7), ("plateau", 1.3)):
        kk = K.bivariate_kernel(kind, 13, 1.0, 2.0, 0.3, beta, isotropic=False)
        assert kk.shape == (13, 13) and abs(kk.sum() - 1) < 1e-12 and (kk > 0).all()
    q = K._quadratic_form(9, K.sigma_matrix(1.5, 1.5, 0, True))
    np.testing.assert_allclose(
        K.bivariate_kernel("plateau", 9, 1.5, 1.5, 0, 1.2),
        (1 / (q**1.2 + 1)) / (1 / (q**1.2 + 1)).sum(),
    )


def test_sinc_kernel():
    k = K.circular_lowpass_kernel(np.pi / 2, 9, pad_to=21)
    assert k.shape == (21, 21) and abs(k.sum() - 1) < 1e-9
    r = np.hypot(*np.meshgrid(np.arange(9) - 4.0, np.arange(9) - 4.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.pi / 2 * special.j1(np.pi / 2 * r) / (2 * np.pi * r)
    raw[4, 4] = (np.pi / 2) ** 2 / (4 * np.pi)
    np.testing.assert_allclose(k[6:15, 6:15], raw / raw.sum(), rtol=1e-10)
    assert np.all(k[:6] == 0)


def test_sampling_is_seeded_normalised_and_padded():
    args = (
        K.KERNEL_TYPES and (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
        (0.2, 3),
        (0.5, 4),
        (1, 2),
        0.1,
    )
    a = [K.sample_blur_kernel(np.random.default_rng(5), *args) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = K.sample_blur_kernel(rng, *args)
        assert k.shape == (21, 21) and k.dtype == np.float32
        assert abs(float(k.sum()) - 1) < 1e-5


def test_every_kernel_type_is_drawn_with_its_probability():
    rng = np.random.default_rng(1)
    counts = dict.fromkeys(K.KERNEL_TYPES, 0)
    orig = K.bivariate_kernel

    def spy(kind, *a, isotropic=True, **kw):
        name = {"gaussian": "", "generalized": "generalized_", "plateau": "plateau_"}[kind]
        counts[name + ("iso" if isotropic else "aniso")] += 1
        return orig(kind, *a, isotropic=isotropic, **kw)

    K.bivariate_kernel = spy
    try:
        for _ in range(3000):
            K.random_mixed_kernel(
                rng, (0.45, 0.25, 0.12, 0.03, 0.12, 0.03), 7, (0.2, 3), (0.5, 4), (1, 2)
            )
    finally:
        K.bivariate_kernel = orig
    freq = {k: v / 3000 for k, v in counts.items()}
    for name, p in zip(K.KERNEL_TYPES, (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)):
        assert freq[name] == pytest.approx(p, abs=0.03), (name, freq)


def test_final_sinc_and_pulse():
    rng = np.random.default_rng(2)
    ks = [K.sample_final_sinc(rng, 0.8) for _ in range(400)]
    pulses = sum(np.array_equal(k, K.pulse_kernel()) for k in ks)
    assert 0.12 < pulses / 400 < 0.28


def test_usm_kernel_is_cv2_gaussian_sigma_8():
    k1 = K.gaussian_kernel_1d(51)
    x = np.arange(51) - 25
    ref = np.exp(-(x**2) / (2 * 8.0**2))
    np.testing.assert_allclose(k1, ref / ref.sum(), rtol=1e-12)
    assert K.usm_kernel(50).shape == (51, 51)
