"""Convolution as one im2col matmul: the fast form of small-feature-map convs on XLA:CPU.

XLA:CPU's convolution is slow when the feature map is small and the channels are many: the
pruned UNet's 3x3 convs at 8x8 and 16x16 with 960-1920 input channels run 1.2-3x slower than
PyTorch (8x8, 1920 -> 960: 46 ms against 30 ms in torch and 14 ms as one matmul over the
9 x 1920 gathered columns, on this project's 2-core CPU). Gathering the ``kh x kw`` shifted
copies of a map of at most a few hundred pixels costs little, and the single matmul then runs at
the machine's matmul speed. Same math as the convolution (the sums are only reordered).

A 1x1 conv (stride 1, no padding) is a plain matmul at any map size, and XLA:CPU runs it
1.1-2x faster as one (256x256, 256 -> 128: 35 ms as a conv, 17 ms as a matmul).

Used through :func:`conv_general_dilated_for`, which picks the matmul form per call shape and
falls back to ``lax.conv_general_dilated`` for large maps and for anything not NHWC/HWIO.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def im2col_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    precision: Any = None,
) -> jax.Array:
    """NHWC input, HWIO kernel, explicit padding -> the convolution as one matmul."""
    kh, kw, cin, cout = kernel.shape
    sh, sw = strides
    (pt, pb), (pl, pr) = padding
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh = (xp.shape[1] - kh) // sh + 1
    ow = (xp.shape[2] - kw) // sw + 1
    cols = jnp.concatenate(
        [
            xp[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )  # (B, oh, ow, kh*kw*cin), the column order of kernel.reshape(kh*kw*cin, cout)
    return jnp.einsum(
        "bhwk,ko->bhwo", cols, kernel.reshape(kh * kw * cin, cout), precision=precision
    )


def conv_general_dilated_for(max_pixels: int | None) -> Callable[..., jax.Array] | None:
    """A drop-in ``lax.conv_general_dilated`` for ``flax.linen.Conv`` (its ``conv_general_dilated``).

    Convs whose output map has at most ``max_pixels`` pixels, and 1x1 convs (stride 1, no
    padding) of any size, run as :func:`im2col_conv`; the rest, and any dilated, grouped,
    non-NHWC or string-padded call, use XLA's convolution.
    ``None`` or ``0`` returns ``None`` (Flax's default, XLA's convolution everywhere).
    """
    if not max_pixels:
        return None

    def conv_general_dilated(
        lhs: jax.Array,
        rhs: jax.Array,
        window_strides: Sequence[int],
        padding: Any,
        lhs_dilation: Sequence[int] | None = None,
        rhs_dilation: Sequence[int] | None = None,
        dimension_numbers: Any = None,
        feature_group_count: int = 1,
        precision: Any = None,
        preferred_element_type: Any = None,
    ) -> jax.Array:
        plain = (
            lhs.ndim == 4
            and not isinstance(padding, str)
            and feature_group_count == 1
            and preferred_element_type is None
            and all(d == 1 for d in (lhs_dilation or (1, 1)))
            and all(d == 1 for d in (rhs_dilation or (1, 1)))
            and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
        )
        if plain:
            (pt, pb), (pl, pr) = padding
            kh, kw = rhs.shape[:2]
            oh = (lhs.shape[1] + pt + pb - kh) // window_strides[0] + 1
            ow = (lhs.shape[2] + pl + pr - kw) // window_strides[1] + 1
            unpadded = pt == pb == pl == pr == 0
            pointwise = (kh, kw) == (1, 1) and tuple(window_strides) == (1, 1) and unpadded
            if pointwise or oh * ow <= max_pixels:
                return im2col_conv(lhs, rhs, window_strides, padding, precision)
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )

    return conv_general_dilated


def late_backward(conv: Callable[..., jax.Array] | None) -> Callable[..., jax.Array]:
    """``conv`` (default ``lax.conv_general_dilated``) whose backward pass builds its kernel and
    input copies from its cotangent.

    XLA:CPU materialises a transposed / reversed copy of the kernel for the input gradient. A
    frozen kernel's copy depends on the parameter alone, so XLA computes it once for every pass
    through the network and keeps it alive between them (stage 2 backpropagates three times
    through the discriminator: 2 GiB of its transposed kernels live at the step's peak). Here the
    operands enter the backward multiplied by ``1 + 0 * ct[0]``: exactly 1 for a finite
    cotangent (``x * 1 == x`` bitwise), a runtime value XLA can neither fold nor share, so each
    pass copies its kernels when its cotangent arrives and frees them after. (An
    ``optimization_barrier`` would say the same, but XLA:CPU expands barriers before CSE.) A
    non-finite cotangent makes the gradients non-finite, as it would anyway.
    """
    conv = conv or lax.conv_general_dilated

    def wrapped(lhs: jax.Array, rhs: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
        def f(a: jax.Array, b: jax.Array) -> jax.Array:
            return conv(a, b, *args, **kwargs)

        @jax.custom_vjp
        def g(a: jax.Array, b: jax.Array) -> jax.Array:
            return f(a, b)

        def fwd(a: jax.Array, b: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
            return f(a, b), (a, b)

        def bwd(res: tuple[jax.Array, jax.Array], ct: jax.Array) -> tuple[jax.Array, jax.Array]:
            a, b = res
            one = 1 + 0 * ct.reshape(-1)[0]
            return jax.vjp(f, a * one.astype(a.dtype), b * one.astype(b.dtype))[1](ct)

        g.defvjp(fwd, bwd)
        return g(lhs, rhs)

    return wrapped
