"""Super-resolve real photos of any size with the AdcSR student (x4).

Per batch of same-size images (floats in [0, 1], NHWC):

    LR -> [-1, 1] -> pad bottom/right to a multiple of 16 (reflect) -> network (one pass, or
    overlapping tiles blended without seams when larger than ``tile``) -> crop to 4H x 4W ->
    colour fix against the unpadded LR with whole-image statistics (AdcSR's, by default) ->
    [0, 1], clamp -> 8-bit PNG with torchvision's truncating conversion.

Only the network runs per tile; the colour fix always sees the whole image, so an image that
fits one tile gives exactly the one-pass result of ``AdcSR.__call__``.
Public entry points: :class:`Upscaler` (arrays), :func:`super_resolve_files`,
:func:`super_resolve_folder` (what ``adcsr infer`` and ``adcsr eval --model`` call).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from adcsr_jax.image_io import ImageReadError, list_images, read_image, write_png
from adcsr_jax.imageops import adain_colour_fix, to_unit_range, wavelet_colour_fix
from adcsr_jax.models.adcsr import SCALE, SIZE_MULTIPLE, AdcSR
from adcsr_jax.models.osediff import OSEDiff
from adcsr_jax.resize import bicubic_resize
from adcsr_jax.tiling import pad_to_multiple, tiled_apply

COLOUR_FIXES = ("adain", "wavelet", "none")


@dataclasses.dataclass(frozen=True)
class InferOptions:
    """How to run the student on photos.

    ``tile``/``overlap`` are in LR pixels (``tile`` a multiple of 16; 128 is the training crop
    and keeps the level-0 attention at 4096 tokens). ``colour_fix``: ``adain`` = AdcSR's
    (per image and channel mean/std of the LR, unbiased std, no epsilon), ``wavelet`` =
    OSEDiff's low band of the x4 bicubic LR, ``none``. ``background`` is the grey level images
    with alpha are composited over. ``dtype`` is the compute dtype (``bfloat16`` casts the
    params once). ``attention_chunk``: exact attention this many queries at a time (faster on
    XLA:CPU); ``None`` = 512 on CPU and off on accelerators, ``0`` = off.
    ``conv_matmul_pixels``: UNet convs with output maps of at most this many pixels run as one
    matmul (exact, faster on XLA:CPU); ``None`` = 256 on CPU and off on accelerators, ``0`` = off.
    """

    tile: int = 128
    overlap: int = 32
    batch_size: int = 1
    colour_fix: str = "adain"
    pad_mode: str = "reflect"
    background: float = 1.0
    dtype: str = "float32"
    progress: bool = True
    attention_chunk: int | None = None
    conv_matmul_pixels: int | None = None

    def resolved_attention_chunk(self) -> int | None:
        """The chunk the student runs with on the current backend (see the class doc)."""
        return _cpu_default(self.attention_chunk, 512)

    def resolved_conv_matmul_pixels(self) -> int | None:
        """The im2col-matmul threshold on the current backend (see the class doc)."""
        return _cpu_default(self.conv_matmul_pixels, 256)

    def __post_init__(self) -> None:
        if self.tile <= 0 or self.tile % SIZE_MULTIPLE:
            raise ValueError(
                f"tile must be a positive multiple of {SIZE_MULTIPLE}, got {self.tile}"
            )
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap must be in [0, tile), got {self.overlap} (tile {self.tile})")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.colour_fix not in COLOUR_FIXES:
            raise ValueError(f"colour_fix must be one of {COLOUR_FIXES}, got {self.colour_fix!r}")


def _cpu_default(value: int | None, on_cpu: int) -> int | None:
    """``None`` -> ``on_cpu`` on the CPU backend, off elsewhere; ``0`` -> off; else ``value``."""
    if value is None:
        return on_cpu if jax.default_backend() == "cpu" else None
    return value or None


def postprocess(raw: np.ndarray, lr: np.ndarray, colour_fix: str = "adain") -> np.ndarray:
    """Raw output (B,4H,4W,3) and LR (B,H,W,3), both in [-1, 1] -> image in [0, 1] (fp32)."""
    raw_j, lr_j = jnp.asarray(raw, jnp.float32), jnp.asarray(lr, jnp.float32)
    if colour_fix == "adain":
        raw_j = adain_colour_fix(raw_j, lr_j)
    elif colour_fix == "wavelet":
        raw_j = wavelet_colour_fix(raw_j, bicubic_resize(lr_j, size=raw_j.shape[1:3]))
    return np.asarray(to_unit_range(raw_j))


def super_resolve_array(
    raw_fn: Callable[[np.ndarray], np.ndarray], lr: np.ndarray, options: InferOptions
) -> np.ndarray:
    """LR batch (B,H,W,3) in [0, 1] -> SR (B,4H,4W,3) in [0, 1] with any network ``raw_fn``.

    ``raw_fn`` maps (B,h,w,3) in [-1, 1] with h, w multiples of 16 to (B,4h,4w,3).
    """
    lr = np.asarray(lr, np.float32)
    if lr.ndim != 4 or lr.shape[-1] != 3:
        raise ValueError(f"expected LR images (B, H, W, 3), got {lr.shape}")
    h, w = lr.shape[1:3]
    x = lr * 2 - 1
    padded = pad_to_multiple(x, SIZE_MULTIPLE, options.pad_mode)
    raw = tiled_apply(raw_fn, padded, scale=SCALE, tile=options.tile, overlap=options.overlap)
    return postprocess(raw[:, : SCALE * h, : SCALE * w], x, options.colour_fix)


@functools.partial(jax.jit, static_argnums=0)
def _apply_raw(module: AdcSR, params: Any, x: jax.Array) -> jax.Array:
    """``module.raw`` jitted; equal modules (same config) share compiled code."""
    return module.apply({"params": params}, x, method=AdcSR.raw)


class Upscaler:
    """The student with its params and a jitted raw network, for arrays of any size."""

    def __init__(self, module: AdcSR, params: Any, options: InferOptions | None = None) -> None:
        self.options = options or InferOptions()
        config = module.config.replace(
            dtype=self.options.dtype,
            attention_query_chunk=self.options.resolved_attention_chunk(),
            conv_matmul_max_pixels=self.options.resolved_conv_matmul_pixels(),
        )
        if config != module.config:
            module = AdcSR(config)
        if jnp.dtype(self.options.dtype) != jnp.float32:  # cast once, not on every call
            params = jax.tree.map(lambda a: jnp.asarray(a, self.options.dtype), params)
        self.module, self.params = module, params

    @classmethod
    def from_weights(cls, weights_dir: str | Path, options: InferOptions | None = None) -> Upscaler:
        """Load a converted student folder (``adcsr convert adcsr``)."""
        from adcsr_jax.weights.adcsr_ckpt import load_student

        options = options or InferOptions()
        module, params, _ = load_student(weights_dir, dtype=options.dtype)
        return cls(module, params, options)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The network alone: (B,h,w,3) in [-1, 1] -> (B,4h,4w,3) fp32, batch padded to a
        multiple of ``batch_size`` so a folder compiles once per image size."""
        n, size = x.shape[0], self.options.batch_size
        extra = (-n) % size
        if extra:
            x = np.concatenate([x, np.repeat(x[-1:], extra, axis=0)])
        out = [
            np.asarray(
                _apply_raw(self.module, self.params, jnp.asarray(x[i : i + size])), np.float32
            )
            for i in range(0, x.shape[0], size)
        ]
        return np.concatenate(out)[:n]

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        """LR batch (B,H,W,3) in [0, 1] -> SR (B,4H,4W,3) in [0, 1]."""
        return super_resolve_array(self.raw, lr, self.options)


@functools.partial(jax.jit, static_argnums=0)
def _apply_teacher(module: OSEDiff, params: Any, x: jax.Array, text: jax.Array) -> jax.Array:
    return module.apply(
        {"params": params}, x, jnp.broadcast_to(text, (x.shape[0], *text.shape[1:]))
    )


class TeacherUpscaler:
    """OSEDiff, the teacher, prompted per image as OSEDiff's ``test_osediff.py`` prompts it.

    Per image: DAPE's tags of the x4 bicubic input (the tagger resizes it to 384) ->
    ``f"{tags}, {user_prompt},"`` -> SD 2.1's text encoder; then the one step at t = 999 on the
    whole image or in tiles (the prompt stays the whole image's) and the colour fix
    (``options.colour_fix``; OSEDiff's default is ``adain``). Differences from the reference, on
    purpose: the VAE posterior mean instead of a sample (deterministic), torch-style bicubic x4
    instead of PIL's, and no LANCZOS crop to a multiple of 8 (the LR is padded to 16 instead).
    Without a tagger (``prompt.tagger`` None) every image gets ``user_prompt`` alone.
    """

    def __init__(
        self,
        module: OSEDiff,
        params: Any,
        text_encoder: tuple[Any, Any],
        tagger: Any | None = None,
        user_prompt: str = "",
        options: InferOptions | None = None,
    ) -> None:
        self.module, self.params = module, params
        self.text_encoder, self.tagger = text_encoder, tagger
        self.user_prompt = user_prompt
        self.options = options or InferOptions(colour_fix="adain")
        self.prompts: list[str] = []  # of every image so far, in order

    @classmethod
    def from_weights(
        cls,
        teacher_dir: str | Path,
        text_encoder: str | Path,
        ram: str | Path | None = None,
        dape: str | Path | None = None,
        user_prompt: str = "",
        options: InferOptions | None = None,
    ) -> TeacherUpscaler:
        """A converted teacher folder (``adcsr convert osediff``), SD 2.1's ``text_encoder/``,
        and RAM (+ ``DAPE.pth``) for the tags."""
        from adcsr_jax.weights import load_tagger, load_text_encoder
        from adcsr_jax.weights.osediff_ckpt import load_teacher

        options = options or InferOptions()
        module, params, _ = load_teacher(teacher_dir, dtype=options.dtype)
        tagger = load_tagger(ram, dape) if ram else None
        return cls(module, params, load_text_encoder(text_encoder), tagger, user_prompt, options)

    def prompt(self, lr01: np.ndarray) -> str:
        """The prompt of one LR image (1,H,W,3) in [0, 1]."""
        from adcsr_jax.models.tagger import osediff_prompt

        if self.tagger is None:
            return osediff_prompt("", self.user_prompt).removeprefix(", ")
        up = np.clip(np.asarray(bicubic_resize(jnp.asarray(lr01), scale=SCALE)), 0.0, 1.0)
        return osediff_prompt(self.tagger.tags(up)[0], self.user_prompt)

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        """LR batch (B,H,W,3) in [0, 1] -> SR (B,4H,4W,3) in [0, 1], one prompt per image."""
        from adcsr_jax.models.text import encode_text

        out = []
        for i in range(lr.shape[0]):
            image = np.asarray(lr[i : i + 1], np.float32)
            text = self.prompt(image)
            self.prompts.append(text)
            emb = encode_text(*self.text_encoder, [text])

            def raw(x: np.ndarray, emb: jax.Array = emb) -> np.ndarray:
                return np.asarray(_apply_teacher(self.module, self.params, jnp.asarray(x), emb))

            out.append(super_resolve_array(raw, image, self.options))
        return np.concatenate(out)


@dataclasses.dataclass
class Report:
    """What a run did: written outputs and the inputs that failed, with the reason."""

    written: list[Path] = dataclasses.field(default_factory=list)
    failed: list[tuple[Path, str]] = dataclasses.field(default_factory=list)


def _upright_size(path: Path) -> tuple[int, int]:
    """(H, W) after EXIF orientation, from the header only."""
    with Image.open(path) as img:
        w, h = img.size
        orientation = img.getexif().get(0x0112, 1)
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def output_names(paths: Sequence[Path]) -> dict[Path, str]:
    """``stem.png`` per input; inputs sharing a stem keep their full name (``a.jpg.png``)."""
    stems: dict[str, int] = {}
    for p in paths:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    return {p: (p.stem if stems[p.stem] == 1 else p.name) + ".png" for p in paths}


def _chunks(items: Sequence[Path], size: int) -> Iterable[Sequence[Path]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def super_resolve_files(
    upscaler: Upscaler | TeacherUpscaler,
    paths: Sequence[Path],
    output_dir: str | Path,
    report: Report | None = None,
) -> Report:
    """Super-resolve ``paths`` into ``output_dir`` as PNG, batching images of the same size.

    Unreadable files are recorded in the report and skipped.
    """
    from tqdm import tqdm

    report = report or Report()
    output_dir = Path(output_dir)
    names = output_names(paths)
    groups: dict[tuple[int, int], list[Path]] = {}
    for path in paths:
        try:
            groups.setdefault(_upright_size(path), []).append(path)
        except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
            report.failed.append((path, f"cannot read image ({type(e).__name__}: {e})"))
    opts = upscaler.options
    total = sum(len(g) for g in groups.values())
    with tqdm(
        total=total, unit="img", disable=not opts.progress or total < 2, file=sys.stderr
    ) as bar:
        for group in groups.values():
            for chunk in _chunks(group, opts.batch_size):
                images, ok = [], []
                for path in chunk:
                    try:
                        images.append(read_image(path, background=opts.background))
                        ok.append(path)
                    except ImageReadError as e:
                        report.failed.append((path, e.reason))
                if images:
                    for path, sr in zip(ok, upscaler(np.stack(images))):
                        write_png(output_dir / names[path], sr)
                        report.written.append(output_dir / names[path])
                bar.update(len(chunk))
    return report


def super_resolve_folder(
    weights_dir: str | Path, input_path: str | Path, output_dir: str | Path, **options: Any
) -> Report:
    """Super-resolve a file or every image in a folder with a converted student.

    ``options`` are :class:`InferOptions` fields (tile, overlap, batch_size, colour_fix, ...).
    """
    upscaler = Upscaler.from_weights(weights_dir, InferOptions(**options))
    return super_resolve_files(upscaler, list_images(input_path), output_dir)


__all__ = [
    "COLOUR_FIXES",
    "InferOptions",
    "Report",
    "TeacherUpscaler",
    "Upscaler",
    "output_names",
    "postprocess",
    "super_resolve_array",
    "super_resolve_files",
    "super_resolve_folder",
]
