"""Blur kernels of the Real-ESRGAN degradation, sampled on the host in numpy.

The same formulas and sampling rules as BasicSR ``basicsr/data/degradations.py`` and the datasets
that use it (``realesrgan_dataset.py``, AdcSR ``dataset.py``): isotropic / anisotropic Gaussian,
generalized Gaussian (``exp(-0.5 * q**beta)``), plateau (``1 / (1 + q**beta)``), where
``q = x^T Sigma^-1 x`` on a centred grid, the circular low-pass (2-D sinc, ``J1``) filter, kernel
sizes 7..21 (odd) zero-padded to 21. Randomness comes from an explicit ``np.random.Generator``
instead of the global ``random``/``np.random`` state, so a batch's kernels are a pure function of
its seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
KERNEL_SIZES = tuple(2 * v + 1 for v in range(3, 11))  # 7 .. 21
PAD_TO = 21


def mesh_grid(kernel_size: int) -> np.ndarray:
    """``(k, k, 2)`` grid of (x, y) offsets centred on zero."""
    ax = np.arange(-kernel_size // 2 + 1.0, kernel_size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    return np.stack([xx, yy], axis=-1)


def sigma_matrix(sig_x: float, sig_y: float, theta: float, isotropic: bool) -> np.ndarray:
    """Covariance ``U diag(sx^2, sy^2) U^T`` (``diag(sx^2, sx^2)`` when isotropic)."""
    if isotropic:
        return np.array([[sig_x**2, 0.0], [0.0, sig_x**2]])
    d = np.array([[sig_x**2, 0.0], [0.0, sig_y**2]])
    u = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return u @ d @ u.T


def _quadratic_form(kernel_size: int, sigma: np.ndarray) -> np.ndarray:
    grid = mesh_grid(kernel_size)
    inv = np.linalg.inv(sigma)
    return np.sum((grid @ inv) * grid, axis=2)


def bivariate_kernel(
    kind: str,
    kernel_size: int,
    sig_x: float,
    sig_y: float,
    theta: float,
    beta: float = 1.0,
    isotropic: bool = True,
) -> np.ndarray:
    """One normalized kernel: ``kind`` in ``gaussian``, ``generalized``, ``plateau``."""
    q = _quadratic_form(kernel_size, sigma_matrix(sig_x, sig_y, theta, isotropic))
    if kind == "gaussian":
        k = np.exp(-0.5 * q)
    elif kind == "generalized":
        k = np.exp(-0.5 * np.power(q, beta))
    elif kind == "plateau":
        k = np.reciprocal(np.power(q, beta) + 1)
    else:
        raise ValueError(f"unknown kernel kind {kind!r}")
    return k / np.sum(k)


def circular_lowpass_kernel(cutoff: float, kernel_size: int, pad_to: int = 0) -> np.ndarray:
    """2-D sinc (circularly symmetric low-pass) filter, normalized, optionally zero-padded."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel size must be odd, got {kernel_size}")
    c = (kernel_size - 1) / 2
    x, y = np.meshgrid(np.arange(kernel_size), np.arange(kernel_size), indexing="ij")
    r = np.sqrt((x - c) ** 2 + (y - c) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    k[int(c), int(c)] = cutoff**2 / (4 * np.pi)
    k = k / np.sum(k)
    if pad_to > kernel_size:
        p = (pad_to - kernel_size) // 2
        k = np.pad(k, ((p, p), (p, p)))
    return k


def _beta(rng: np.random.Generator, beta_range: Sequence[float]) -> float:
    # BasicSR: half the time below 1, half the time above (assumes range[0] <= 1 <= range[1]).
    if rng.uniform() < 0.5:
        return float(rng.uniform(beta_range[0], 1))
    return float(rng.uniform(1, beta_range[1]))


def random_mixed_kernel(
    rng: np.random.Generator,
    kernel_prob: Sequence[float],
    kernel_size: int,
    sigma_range: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
    rotation_range: Sequence[float] = (-math.pi, math.pi),
) -> np.ndarray:
    """BasicSR ``random_mixed_kernels`` with sigma_x and sigma_y both from ``sigma_range``."""
    kind = KERNEL_TYPES[rng.choice(len(KERNEL_TYPES), p=np.asarray(kernel_prob) / sum(kernel_prob))]
    isotropic = kind.endswith("iso") and not kind.endswith("aniso")
    sig_x = float(rng.uniform(sigma_range[0], sigma_range[1]))
    if isotropic:
        sig_y, theta = sig_x, 0.0
    else:
        sig_y = float(rng.uniform(sigma_range[0], sigma_range[1]))
        theta = float(rng.uniform(rotation_range[0], rotation_range[1]))
    if kind in ("iso", "aniso"):
        return bivariate_kernel("gaussian", kernel_size, sig_x, sig_y, theta, isotropic=isotropic)
    if kind.startswith("generalized"):
        beta = _beta(rng, betag_range)
        return bivariate_kernel(
            "generalized", kernel_size, sig_x, sig_y, theta, beta, isotropic=isotropic
        )
    beta = _beta(rng, betap_range)
    return bivariate_kernel("plateau", kernel_size, sig_x, sig_y, theta, beta, isotropic=isotropic)


def sample_blur_kernel(
    rng: np.random.Generator,
    kernel_prob: Sequence[float],
    sigma_range: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
    sinc_prob: float,
) -> np.ndarray:
    """A first/second-stage blur kernel (sinc with ``sinc_prob``), zero-padded to 21x21."""
    size = int(KERNEL_SIZES[rng.integers(len(KERNEL_SIZES))])
    if rng.uniform() < sinc_prob:
        omega = rng.uniform(np.pi / 3, np.pi) if size < 13 else rng.uniform(np.pi / 5, np.pi)
        k = circular_lowpass_kernel(omega, size)
    else:
        k = random_mixed_kernel(rng, kernel_prob, size, sigma_range, betag_range, betap_range)
    p = (PAD_TO - size) // 2
    return np.pad(k, ((p, p), (p, p))).astype(np.float32)


def pulse_kernel(size: int = PAD_TO) -> np.ndarray:
    """The identity (delta) kernel: filtering with it leaves the image unchanged."""
    k = np.zeros((size, size), np.float32)
    k[size // 2, size // 2] = 1
    return k


def sample_final_sinc(rng: np.random.Generator, prob: float) -> np.ndarray:
    """The final sinc filter (``omega ~ U(pi/3, pi)``) with probability ``prob``, else a pulse."""
    if rng.uniform() < prob:
        size = int(KERNEL_SIZES[rng.integers(len(KERNEL_SIZES))])
        omega = rng.uniform(np.pi / 3, np.pi)
        return circular_lowpass_kernel(omega, size, pad_to=PAD_TO).astype(np.float32)
    return pulse_kernel()


def gaussian_kernel_1d(ksize: int, sigma: float = 0.0) -> np.ndarray:
    """``cv2.getGaussianKernel``: sigma <= 0 means ``0.3 * ((ksize - 1) * 0.5 - 1) + 0.8``."""
    if sigma <= 0:
        sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize) - (ksize - 1) / 2
    k = np.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def usm_kernel(radius: int = 50) -> np.ndarray:
    """Real-ESRGAN ``USMSharp``'s 2-D Gaussian (radius 50 -> 51 taps, sigma 8), float32."""
    if radius % 2 == 0:
        radius += 1
    k = gaussian_kernel_1d(radius)
    return np.outer(k, k).astype(np.float32)
