"""Padding and overlapping tiling for any image-to-image function (LR -> xS), on the host.

A network that sees the whole image in one pass needs memory that grows with the image (the
student's attention is quadratic in the number of latent tokens), so large inputs are cut into
overlapping tiles. Each tile's output is weighted by a separable ramp that rises linearly across
the overlap with its neighbours (and is flat at the image border), and the weighted outputs are
normalised by the summed weights: a partition of unity, so there are no seams. An image that fits
one tile is processed in exactly one call, which gives the one-pass result bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

TileFn = Callable[[np.ndarray], np.ndarray]


def pad_to_multiple(x: np.ndarray, multiple: int, mode: str = "reflect") -> np.ndarray:
    """Pad NHWC ``x`` at the bottom and right so H and W are multiples of ``multiple``.

    ``mode`` is a numpy pad mode; 'reflect' falls back to 'edge' on a side of length 1.
    """
    h, w = x.shape[-3], x.shape[-2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    if mode == "reflect" and min(h, w) < 2:
        mode = "edge"
    pad = [(0, 0)] * (x.ndim - 3) + [(0, ph), (0, pw), (0, 0)]
    return np.pad(x, pad, mode=mode)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``min(tile, size)`` covering ``size``, evenly spread.

    Neighbouring tiles overlap by at least ``overlap`` (the first starts at 0, the last ends at
    ``size``).
    """
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def _axis_weights(starts: list[int], length: int, scale: int) -> list[np.ndarray]:
    """1-D blending weights (output pixels) of each tile along one axis."""
    out_len = length * scale
    weights = []
    for k, start in enumerate(starts):
        pos = np.arange(out_len, dtype=np.float64) + 0.5
        w = np.ones(out_len, np.float64)
        if k > 0:  # ramp up across the overlap with the previous tile
            ramp = (starts[k - 1] + length - start) * scale
            w = np.minimum(w, pos / ramp)
        if k + 1 < len(starts):  # ramp down across the overlap with the next tile
            ramp = (start + length - starts[k + 1]) * scale
            w = np.minimum(w, (out_len - pos) / ramp)
        weights.append(w.astype(np.float32))
    return weights


def tiled_apply(
    fn: TileFn,
    x: np.ndarray,
    *,
    scale: int,
    tile: int,
    overlap: int,
) -> np.ndarray:
    """Apply ``fn`` (B,h,w,C) -> (B, scale*h, scale*w, C') over overlapping tiles of NHWC ``x``.

    ``tile`` and ``overlap`` are in input pixels; a tile side is ``min(tile, side)``, so callers
    that need a size multiple (16 for AdcSR) pad ``x`` and pick ``tile`` as multiples of it. When
    ``x`` fits one tile this is exactly ``fn(x)``.
    """
    b, h, w = x.shape[:3]
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return np.asarray(fn(x))
    wy, wx = _axis_weights(ys, th, scale), _axis_weights(xs, tw, scale)
    out: np.ndarray | None = None
    total = np.zeros((h * scale, w * scale, 1), np.float32)
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            pred = np.asarray(fn(x[:, y0 : y0 + th, x0 : x0 + tw]), np.float32)
            if pred.shape[1:3] != (th * scale, tw * scale):
                raise ValueError(
                    f"tile function returned {pred.shape}, expected spatial size "
                    f"{(th * scale, tw * scale)} for scale {scale}"
                )
            if out is None:
                out = np.zeros((b, h * scale, w * scale, pred.shape[-1]), np.float32)
            weight = (wy[i][:, None] * wx[j][None, :])[..., None]
            ry, rx = slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale)
            out[:, ry, rx] += pred * weight
            total[ry, rx] += weight
    assert out is not None
    return out / total
