"""LoRA with PEFT's semantics (``peft.tuners.lora.layer``), for any of our Flax modules.

PEFT (the ``LoraConfig(r, init_lora_weights="gaussian")`` that OSEDiff and AdcSR use):

* scaling ``lora_alpha / r`` (``lora_alpha`` defaults to 8, so 2.0 at r = 4);
* ``init_lora_weights="gaussian"``: ``A ~ N(0, std = 1/r)``, ``B = 0`` (no adapter biases);
* Linear: ``A`` is ``in -> r``, ``B`` is ``r -> out``; Conv: ``A`` is a conv with the base kernel
  size, stride and padding (``in -> r``; PEFT passes no dilation and no groups), ``B`` a 1x1 conv
  (``r -> out``);
* forward (unmerged): ``base(x) + scale * B(A(x))``, summed over every adapter on the layer;
  merged: ``W + scale * B @ A``.

Two halves live here:

* the numpy merge maths in torch layouts (``lora_delta``, ``merge_lora``), used to fold released
  PEFT weights into base weights (``weights/osediff_ckpt.py``);
* the Flax wrapper, in our layouts (Dense kernel ``(in, out)``, conv kernel HWIO). Adapters are
  described by :class:`LoraSpec` (a name, a rank, regexes over our param paths such as
  ``down_blocks_0/attentions_0/transformer_blocks_0/attn1/to_q/kernel``), drawn by
  :func:`init_lora` and run by :func:`apply_with_lora`, which intercepts the ``nn.Dense`` /
  ``nn.Conv`` calls of an unchanged module (``flax.linen.intercept_methods``) and reads the
  adapters from a ``"lora"`` variable collection, so jit, grad, remat and sharding see ordinary
  pytrees. The LoRA tree is ``{adapter: {<module path>: {"lora_A": A, "lora_B": B}}}`` with
  Dense ``A (in, r)``, ``B (r, out)`` and conv ``A (kh, kw, in, r)``, ``B (1, 1, r, out)``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import PartitionSpec

PEFT_DEFAULT_ALPHA = 8.0


def lora_scaling(rank: int, alpha: float = PEFT_DEFAULT_ALPHA) -> float:
    """PEFT's ``scaling = lora_alpha / r``."""
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    return float(alpha) / float(rank)


def lora_delta(lora_a: np.ndarray, lora_b: np.ndarray, scale: float) -> np.ndarray:
    """``scale * B @ A`` in the base weight's layout (dense (out, in) or conv (out, in, kh, kw))."""
    a = np.asarray(lora_a, np.float32)
    b = np.asarray(lora_b, np.float32)
    if a.ndim == 2 and b.ndim == 2:
        if b.shape[1] != a.shape[0]:
            raise ValueError(f"LoRA ranks disagree: A {a.shape}, B {b.shape}")
        return np.float32(scale) * (b @ a)
    if a.ndim == 4 and b.ndim == 4:
        if b.shape[2:] != (1, 1) or b.shape[1] != a.shape[0]:
            raise ValueError(
                f"conv LoRA needs A (r,in,kh,kw) and B (out,r,1,1), got {a.shape}, {b.shape}"
            )
        delta = b[:, :, 0, 0] @ a.reshape(a.shape[0], -1)
        return np.float32(scale) * delta.reshape(b.shape[0], *a.shape[1:])
    raise ValueError(f"LoRA A {a.shape} and B {b.shape} are neither dense nor conv")


def merge_lora(
    weight: np.ndarray, lora_a: np.ndarray, lora_b: np.ndarray, scale: float
) -> np.ndarray:
    """``W + scale * B @ A`` (PEFT ``merge_and_unload``), fp32, same layout as ``weight``."""
    w = np.asarray(weight, np.float32)
    delta = lora_delta(lora_a, lora_b, scale)
    if delta.shape != w.shape:
        raise ValueError(f"LoRA update {delta.shape} does not fit base weight {w.shape}")
    return w + delta


# ----------------------------------------------------------------------------- Flax wrapper

LORA_COLLECTION = "lora"
LORA_RANK_AXIS = "lora_rank"
Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """One named adapter (PEFT ``LoraConfig`` + ``adapter_name``).

    ``targets`` / ``exclude``: regexes, ``re.search``-ed against each ``.../kernel`` param path
    joined with ``/`` (e.g. ``up_blocks_1/resnets_0/conv1/kernel``); a kernel is adapted when
    some target matches and no exclusion does. Only ``nn.Dense`` and ``nn.Conv`` kernels qualify.
    """

    name: str
    rank: int
    alpha: float = PEFT_DEFAULT_ALPHA
    targets: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", self.name):
            raise ValueError(f"LoRA adapter name {self.name!r}: use letters, digits, _ or -")
        lora_scaling(self.rank, self.alpha)
        if not self.targets:
            raise ValueError(f"LoRA adapter {self.name!r} has no target patterns")

    @property
    def scale(self) -> float:
        return lora_scaling(self.rank, self.alpha)

    def matches(self, kernel_path: str) -> bool:
        hit = any(re.search(t, kernel_path) for t in self.targets)
        return hit and not any(re.search(e, kernel_path) for e in self.exclude)


def _check_specs(specs: Sequence[LoraSpec]) -> None:
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"LoRA adapter names repeat: {names}")


def _kernels(base_params: Any) -> dict[Path, Any]:
    flat = traverse_util.flatten_dict(nn.meta.unbox(base_params))
    return {k[:-1]: v for k, v in flat.items() if k[-1] == "kernel" and len(v.shape) >= 2}


def lora_targets(specs: Sequence[LoraSpec], base_params: Any) -> dict[str, list[Path]]:
    """Module paths each adapter wraps, in param order (raises if an adapter matches nothing)."""
    _check_specs(specs)
    kernels = _kernels(base_params)
    out = {}
    for spec in specs:
        paths = [p for p in kernels if spec.matches("/".join((*p, "kernel")))]
        if not paths:
            raise ValueError(
                f"LoRA adapter {spec.name!r}: no kernel matches targets {list(spec.targets)} "
                f"(exclude {list(spec.exclude)}); paths look like "
                f"{'/'.join((*next(iter(kernels), ('?',)), 'kernel'))}"
            )
        out[spec.name] = paths
    return out


def lora_shapes(kernel_shape: Sequence[int], rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes of ``(A, B)`` for a Dense ``(in, out)`` or conv ``(*k, in, out)`` kernel."""
    *spatial, cin, cout = (int(d) for d in kernel_shape)
    return (*spatial, cin, rank), (*([1] * len(spatial)), rank, cout)


def init_lora(specs: Sequence[LoraSpec], base_params: Any, rng: jax.Array) -> dict[str, Any]:
    """PEFT "gaussian" init: ``A ~ N(0, std=1/r)``, ``B = 0``; ``{adapter: {path: {A, B}}}``.

    fp32; one key per adapted layer (``fold_in`` over the layer's index), so it runs under
    ``jax.eval_shape`` and ``jit``.
    """
    kernels = _kernels(base_params)
    out: dict[str, Any] = {}
    for s_i, (spec, paths) in enumerate(zip(specs, lora_targets(specs, base_params).values())):
        key = jax.random.fold_in(rng, s_i)
        flat = {}
        for i, path in enumerate(paths):
            a_shape, b_shape = lora_shapes(kernels[path].shape, spec.rank)
            a = jax.random.normal(jax.random.fold_in(key, i), a_shape, jnp.float32) / spec.rank
            flat[(*path, "lora_A")] = a
            flat[(*path, "lora_B")] = jnp.zeros(b_shape, jnp.float32)
        out[spec.name] = traverse_util.unflatten_dict(flat)
    return out


def _layers(lora: Mapping[str, Any]) -> dict[str, dict[Path, tuple[Any, Any]]]:
    out = {}
    for name, tree in lora.items():
        flat = traverse_util.flatten_dict(tree)
        paths = dict.fromkeys(k[:-1] for k in flat)
        try:
            out[name] = {p: (flat[(*p, "lora_A")], flat[(*p, "lora_B")]) for p in paths}
        except KeyError as e:
            raise ValueError(f"LoRA adapter {name!r}: {'/'.join(e.args[0])} has no partner") from e
    return out


def _spec_map(specs: Sequence[LoraSpec], lora: Mapping[str, Any]) -> dict[str, LoraSpec]:
    _check_specs(specs)
    by_name = {s.name: s for s in specs}
    if set(by_name) != set(lora):
        raise ValueError(f"LoRA tree has adapters {sorted(lora)}, specs name {sorted(by_name)}")
    return by_name


def _check_rank(spec: LoraSpec, path: Path, a: Any, b: Any) -> None:
    if a.shape[-1] != spec.rank or b.shape[-2] != spec.rank:
        raise ValueError(
            f"LoRA adapter {spec.name!r} at {'/'.join(path)}: A {tuple(a.shape)} and "
            f"B {tuple(b.shape)} do not have rank {spec.rank}"
        )


def lora_delta_kernel(a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """``scale * B @ A`` in our kernel layout: Dense ``(in, out)``, conv ``(*k, in, out)``."""
    return jnp.float32(scale) * jnp.einsum("...ir,ro->...io", a, b.reshape(b.shape[-2:]))


def _fold(base_params: Any, lora: Mapping[str, Any], specs: Sequence[LoraSpec], sign: float):
    by_name = _spec_map(specs, lora)
    flat = dict(traverse_util.flatten_dict(base_params))
    for name, layers in _layers(lora).items():
        for path, (a, b) in layers.items():
            key = (*path, "kernel")
            if key not in flat:
                raise ValueError(f"LoRA adapter {name!r}: base params have no {'/'.join(key)}")
            _check_rank(by_name[name], path, a, b)
            delta = lora_delta_kernel(a, b, by_name[name].scale)
            if delta.shape != flat[key].shape:
                raise ValueError(
                    f"LoRA adapter {name!r} at {'/'.join(key)}: update {delta.shape} does not fit "
                    f"kernel {tuple(flat[key].shape)}"
                )
            flat[key] = (flat[key] + sign * delta).astype(flat[key].dtype)
    return traverse_util.unflatten_dict(flat)


def merge(base_params: Any, lora: Mapping[str, Any], specs: Sequence[LoraSpec]) -> Any:
    """Base params with every adapter folded in: ``W + scale * B @ A`` (PEFT ``merge``)."""
    return _fold(base_params, lora, specs, 1.0)


def unmerge(merged_params: Any, lora: Mapping[str, Any], specs: Sequence[LoraSpec]) -> Any:
    """Inverse of :func:`merge`: ``W - scale * B @ A`` (PEFT ``unmerge``)."""
    return _fold(merged_params, lora, specs, -1.0)


def _collection(lora: Mapping[str, Any], specs: Sequence[LoraSpec]) -> dict[str, Any]:
    """``{adapter: {path: ..}}`` -> the ``"lora"`` collection ``{path: {adapter: (A, B, scale)}}``."""
    by_name = _spec_map(specs, lora)
    flat = {}
    for name, layers in _layers(lora).items():
        for path, (a, b) in layers.items():
            _check_rank(by_name[name], path, a, b)
            flat[(*path, name)] = {"lora_A": a, "lora_B": b}
    return traverse_util.unflatten_dict(flat) if flat else {}


def _adapter_out(module: nn.Module, x: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """``B(A(x))`` with the base layer's dtype, precision and conv geometry (PEFT layout)."""
    if isinstance(module, nn.Dense):
        kw = dict(dtype=module.dtype, precision=module.precision, parent=None)
        if module.dot_general is not None:
            kw["dot_general"] = module.dot_general
        h = nn.Dense(a.shape[-1], use_bias=False, **kw).apply({"params": {"kernel": a}}, x)
        return nn.Dense(b.shape[-1], use_bias=False, **kw).apply({"params": {"kernel": b}}, h)
    dilated = any(d != 1 for d in np.atleast_1d(module.kernel_dilation or 1).tolist()) or any(
        d != 1 for d in np.atleast_1d(module.input_dilation or 1).tolist()
    )
    if module.feature_group_count != 1 or dilated:
        raise ValueError(
            f"LoRA at {'/'.join(module.path)}: PEFT's conv adapter has no groups or dilation, "
            "this conv has them"
        )
    kw = dict(dtype=module.dtype, precision=module.precision, use_bias=False, parent=None)
    if module.conv_general_dilated is not None:
        kw["conv_general_dilated"] = module.conv_general_dilated
    ones = (1,) * (a.ndim - 2)
    conv_a = nn.Conv(
        a.shape[-1], a.shape[:-2], strides=module.strides, padding=module.padding, **kw
    )
    h = conv_a.apply({"params": {"kernel": a}}, x)
    conv_b = nn.Conv(b.shape[-1], ones, strides=1, padding="VALID", **kw)
    return conv_b.apply({"params": {"kernel": b}}, h)


def apply_with_lora(
    module: nn.Module,
    base_params: Any,
    lora: Mapping[str, Any],
    specs: Sequence[LoraSpec],
    *args: Any,
    method: Callable[..., Any] | str | None = None,
    **kwargs: Any,
) -> Any:
    """``module.apply`` with the unmerged PEFT forward ``base(x) + scale * B(A(x))`` on every
    adapted ``nn.Dense`` / ``nn.Conv`` (summed over adapters, in ``specs`` order).

    Pure and jittable; differentiable w.r.t. ``base_params``, ``lora`` and the inputs. Raises if
    an adapter names a layer the module never calls as a Dense or Conv.
    """
    scales = {s.name: s.scale for s in specs}
    order = [s.name for s in specs]
    collection = _collection(lora, specs)
    expected = {(*p, n) for n, layers in _layers(lora).items() for p in layers}
    seen: set[tuple[str, ...]] = set()

    def interceptor(next_fun, call_args, call_kwargs, context):
        mod = context.module
        if context.method_name != "__call__" or not isinstance(mod, nn.Dense | nn.Conv):
            return next_fun(*call_args, **call_kwargs)
        names = [n for n in order if mod.scope.has_variable(LORA_COLLECTION, n)]
        if not names:
            return next_fun(*call_args, **call_kwargs)
        y = next_fun(*call_args, **call_kwargs)
        x = call_args[0] if call_args else call_kwargs["inputs"]
        for name in names:
            ab = mod.scope.get_variable(LORA_COLLECTION, name)
            seen.add((*mod.path, name))
            delta = _adapter_out(mod, x, ab["lora_A"], ab["lora_B"])
            y = y + (delta * jnp.asarray(scales[name], delta.dtype)).astype(y.dtype)
        return y

    variables = {"params": base_params}
    if collection:
        variables[LORA_COLLECTION] = collection
    with nn.intercept_methods(interceptor):
        out = module.apply(variables, *args, method=method, **kwargs)
    missed = sorted("/".join(k) for k in expected - seen)
    if missed:
        raise ValueError(
            f"LoRA adapters on layers that {type(module).__name__} never calls as nn.Dense / "
            f"nn.Conv: {missed[:5]}{' ...' if len(missed) > 5 else ''}"
        )
    return out


def lora_logical_axes(lora: Mapping[str, Any], base_axes: Any | None = None) -> dict[str, Any]:
    """``PartitionSpec`` tree of the LoRA tree: the base kernel's axes, rank on ``lora_rank``.

    ``base_axes``: the base params' logical specs (``adcsr_jax.models.logical_axes``); ``None``
    leaves the non-rank axes unnamed. Dense ``A (in, lora_rank)``, ``B (lora_rank, out)``;
    conv ``A (conv_h, conv_w, conv_in, lora_rank)``, ``B (conv_h, conv_w, lora_rank, conv_out)``.
    """
    axes = {} if base_axes is None else traverse_util.flatten_dict(base_axes)
    out = {}
    for name, layers in _layers(lora).items():
        flat = {}
        for path, (a, _) in layers.items():
            base = tuple(axes.get((*path, "kernel"), PartitionSpec()))
            base = base if len(base) == a.ndim else (None,) * a.ndim
            flat[(*path, "lora_A")] = PartitionSpec(*base[:-1], LORA_RANK_AXIS)
            flat[(*path, "lora_B")] = PartitionSpec(*base[:-2], LORA_RANK_AXIS, base[-1])
        out[name] = traverse_util.unflatten_dict(flat)
    return out


def path_mask(tree: Any, patterns: Iterable[str]) -> Any:
    """Bool tree like ``tree``: True where a regex ``re.search``-es the ``/``-joined leaf path.

    For ``optax.masked`` / ``optax.multi_transform`` over a tree that mixes frozen and trained
    leaves (e.g. ``{"base": ..., "lora": ...}`` with ``patterns=("^lora/", "^base/conv_in/")``).
    """
    pats = [re.compile(p) for p in patterns]
    flat = traverse_util.flatten_dict(tree)
    return traverse_util.unflatten_dict({k: any(p.search("/".join(k)) for p in pats) for k in flat})
