"""Quantisation-friendly rewrite of a JAX function: same float math, ops TFLite W8A16 can run.

TFLite's int16-activation kernels break on a few ops the networks use (measured here, see
``tests/export/test_rewrite.py``): ``SUM``/``MEAN`` in int16 lose most of their precision (a
3-GroupNorm net drops from 53 dB to 21 dB PSNR against float), and ``DIV``, ``NEG``, ``LESS``
and ``SELECT`` (inside exact-erf GELU) have no 16x8 kernel at all, so conversion fails.
:func:`quant_friendly` re-traces a function and replaces, primitive by primitive:

- ``reduce_sum`` (GroupNorm / LayerNorm means and variances, colour-fix statistics) ->
  a matmul with a constant ones vector (``FULLY_CONNECTED``; int8 weights hold 1 exactly),
  in two stages when the reduced size is large, to keep the constants small;
- softmax (``exp(a) / sum(exp(a))``) is left alone, so that the converter fuses it into
  TFLite's ``SOFTMAX`` (over one token it is the constant 1, which the converter would leave
  as a ``DIV``), whose int16 kernel normalises in fixed point. The decomposed form
  needs a LOG (or RSQRT) table over the denominator's [1, tokens] range, and int16 tables are
  coarse at the bottom of their range (measured: LOG off by 1.8 near 1 over [0.5, 300]);
- ``rsqrt`` of a statistic (anything computed from a rewritten reduction: GroupNorm /
  LayerNorm variances) -> int16 RSQRT then two Newton steps (:func:`rsqrt_refined`), since
  the RSQRT table is 17% off at 1/4000 of its range and group variances span 4000x;
- ``div`` by a constant -> multiply by its reciprocal; any other ``x / y`` with ``y`` known
  positive -> ``x * rsqrt(y)**2``;
- ``erf`` / ``erfc`` -> Abramowitz-Stegun 7.1.26 (abs error < 1.5e-7; 6e-7 in fp32), branch-free
  as ``E(max(x, 0)) - E(max(-x, 0))``, its reciprocal through ``rsqrt``;
- ``x / sqrt(v)`` -> ``x * rsqrt(v)``; ``sqrt(v)`` -> ``v * rsqrt(max(v, 1e-30))`` (no int16
  SQRT kernel);
- ``min(x, c)`` / ``clamp`` with constant bounds -> ``c - max(c - x, 0)`` (the converter would
  fuse max-then-min into RELU_0_TO_1, which has no int16 kernel);
- ``max(x, -inf)`` (softmax's ``initial``) / ``min(x, inf)`` -> ``x``: the int16 MAXIMUM
  against the infinite constant (quantised with a scale of 1e34) returned garbage, measured as
  a 400% error on the softmax row maxima of the tiny student;
- ``neg`` -> ``x * -1``; ``square`` / ``integer_pow(2)`` -> ``x * x``; ``select_n`` with a
  constant predicate (``jnp.var``'s ddof guard) -> the chosen branch.

Positivity is tracked through the trace (``exp``, ``rsqrt``, ``sqrt``, squares, sums and
products of positives, positive constants) so divisions are only rewritten where valid.
The rewrite runs only on the export path (``adcsr_jax.export.tflite`` at W8A16); the models
themselves are untouched. Nested ``jit`` / ``custom_jvp`` / ``custom_vjp`` / ``remat`` calls are
inlined; control flow (``scan``, ``while``, ``cond``) is left as is.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

# A-S 7.1.26: erf(t) = 1 - t_poly(s) * exp(-t^2), s = 1 / (1 + P t), t >= 0.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
# Reductions over more elements than this are done in two matmuls (small ones-constants).
_TWO_STAGE_ABOVE = 4096
# Newton steps after RSQRT of a statistic (each squares the relative error of int16's table).
_NEWTON_STEPS = 2
# Primitives whose sub-jaxpr is inlined (param holding it).
_INLINE = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "remat": "jaxpr",
    "checkpoint": "jaxpr",
}
_SHAPE_OPS = {
    "broadcast_in_dim",
    "reshape",
    "transpose",
    "squeeze",
    "expand_dims",
    "convert_element_type",
    "copy",
    "copy_p",
    "reduce_max",
    "slice",
    "dynamic_slice",
    "concatenate",
    "pad",
}


@dataclasses.dataclass(frozen=True)
class _Info:
    """What the rewrite knows about a value: strictly positive, ``exp(exp_arg)``, ``sqrt(sqrt_arg)``,
    a statistic (computed from a reduction: per-group / per-token, wide dynamic range), the sum
    of the exp tensor ``softmax_of`` (a softmax denominator)."""

    positive: bool = False
    exp_arg: Any = None
    sqrt_arg: Any = None
    reduced: bool = False
    softmax_of: Any = None


_UNKNOWN = _Info()


def _concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _positive_const(x: Any) -> bool:
    return _concrete(x) and bool(np.all(np.asarray(x) > 0))


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


# ----------------------------------------------------------------------------- building blocks
def sum_matmul(x: jax.Array, axes: Sequence[int]) -> jax.Array:
    """``x.sum(axes)`` as matmuls with constant ones (no SUM op); two stages above 4096 elements."""
    axes = sorted(a % x.ndim for a in axes)
    keep = [i for i in range(x.ndim) if i not in axes]
    xt = jnp.transpose(x, keep + axes) if keep + axes != list(range(x.ndim)) else x
    kept_shape = tuple(x.shape[i] for i in keep)
    sizes = [x.shape[a] for a in axes]
    # Two stages: trailing reduced axes first, then the leading one.
    if len(sizes) > 1 and math.prod(sizes) > _TWO_STAGE_ABOVE:
        stages = [math.prod(sizes[1:]), sizes[0]]
        flat = xt.reshape(*kept_shape, sizes[0], stages[0])
        flat = _dot_ones(flat)
        return _dot_ones(flat)
    flat = xt.reshape(*kept_shape, math.prod(sizes))
    return _dot_ones(flat)


def _dot_ones(x: jax.Array) -> jax.Array:
    """Sum over the last axis as ``x @ ones((n, 1))``, dropping the unit axis."""
    n = x.shape[-1]
    ones = jnp.ones((n, 1), x.dtype)
    out = jax.lax.dot_general(
        x, ones, (((x.ndim - 1,), (0,)), ((), ())), precision=jax.lax.Precision.HIGHEST
    )
    return out.reshape(x.shape[:-1])


def reciprocal(y: jax.Array) -> jax.Array:
    """``1 / y`` for ``y > 0`` as ``rsqrt(y)**2`` (int16 has RSQRT but no DIV)."""
    r = jax.lax.rsqrt(y)
    return r * r


def rsqrt_refined(v: jax.Array, steps: int = _NEWTON_STEPS) -> jax.Array:
    """``rsqrt(v)`` followed by Newton steps ``r <- r * (1.5 - 0.5 * (v * r) * r)``.

    TFLite's int16 RSQRT is a 513-entry lookup table over the input's whole int16 range, so its
    relative error grows towards the bottom of the range (measured: 17% at 1/4000 of the range
    max, 2% at 1/80). Variances of GroupNorm groups / LayerNorm tokens span 1000x within one
    tensor. Each Newton step squares the relative error (17% -> 4% -> 0.3%), and every
    intermediate is well scaled: ``v * r`` is about ``sqrt(v)`` and ``(v * r) * r`` about 1.
    In float the steps leave an exact ``rsqrt`` unchanged (to rounding).
    """
    r = jax.lax.rsqrt(v)
    for _ in range(steps):
        r = r * (1.5 - 0.5 * ((v * r) * r))
    return r


def _erf_nonneg(t: jax.Array) -> jax.Array:
    """erf(t) for t >= 0 (A-S 7.1.26), with no division, negation or branch."""
    s = reciprocal(1.0 + _AS_P * t)
    a1, a2, a3, a4, a5 = _AS_A
    poly = s * (a1 + s * (a2 + s * (a3 + s * (a4 + s * a5))))
    return 1.0 - poly * jnp.exp((t * t) * np.float32(-1.0))


def erf_friendly(x: jax.Array) -> jax.Array:
    """erf for any sign, branch-free: ``E(max(x, 0)) - E(max(-x, 0))`` (E(0) = 0 to 1e-7)."""
    return _erf_nonneg(jnp.maximum(x, 0.0)) - _erf_nonneg(jnp.maximum(x * np.float32(-1.0), 0.0))


# ----------------------------------------------------------------------------- rules
def _rule_reduce_sum(vals, infos, params):
    (x,) = vals
    if not _is_float(x):
        return None
    if infos[0].exp_arg is not None:
        # Sum of exp: a softmax denominator. Kept (with the division below) so that the
        # converter fuses the pattern into TFLite's SOFTMAX, whose int16 kernel normalises in
        # fixed point; the decomposed form needs a LOG or RSQRT table over a [1, tokens] range.
        out = jax.lax.reduce_sum_p.bind(x, **params)
        return out, _Info(positive=True, softmax_of=x)
    return sum_matmul(x, params["axes"]), _Info(positive=infos[0].positive, reduced=True)


def _rule_div(vals, infos, params):
    x, y = vals
    if not _is_float(x) or not _is_float(y):
        return None
    if _concrete(y):
        inverse = (1.0 / np.asarray(y, dtype=np.float64)).astype(jnp.result_type(y))
        keep = _Info(
            positive=infos[0].positive and bool(np.all(inverse > 0)), reduced=infos[0].reduced
        )
        return x * inverse, keep
    if infos[1].softmax_of is not None and infos[1].softmax_of is x:
        if x.shape == y.shape:
            # A softmax over one token (attention at 1 x 1 latent pixels): exp(a) / exp(a) is
            # exactly 1, and the converter cannot fuse a one-element SOFTMAX, leaving a DIV.
            return jnp.ones_like(x), _Info(positive=True)
        return None  # exp(a) / sum(exp(a)): left for the converter's SOFTMAX fusion
    if not infos[1].positive:
        return None
    if infos[1].sqrt_arg is not None:
        r = _rsqrt(infos[1].sqrt_arg, infos[1].reduced)
        return x * r, _Info(positive=infos[0].positive)
    if infos[0].exp_arg is not None:
        return jnp.exp(infos[0].exp_arg - jnp.log(y)), _Info(positive=True)
    return x * reciprocal(y), _Info(positive=infos[0].positive)


def _rule_erf(vals, infos, params):
    return erf_friendly(vals[0]), _UNKNOWN


def _rule_erfc(vals, infos, params):
    return 1.0 - erf_friendly(vals[0]), _UNKNOWN


def _rule_neg(vals, infos, params):
    if not _is_float(vals[0]):
        return None
    return vals[0] * np.float32(-1.0), _UNKNOWN


def _rule_square(vals, infos, params):
    return vals[0] * vals[0], _Info(positive=True)


def _rule_integer_pow(vals, infos, params):
    if params["y"] != 2 or not _is_float(vals[0]):
        return None
    return vals[0] * vals[0], _Info(positive=True)


def _rule_select_n(vals, infos, params):
    pred, *cases = vals
    if not _concrete(pred) or np.ndim(pred) != 0:
        return None
    idx = int(np.asarray(pred))
    return cases[idx], infos[1 + idx]


def _rule_sqrt(vals, infos, params):
    (v,) = vals
    if not _is_float(v):
        return None
    tiny = np.float32(1e-30)
    r = _rsqrt(jnp.maximum(v, tiny), infos[0].reduced)
    return v * r, _Info(positive=True, sqrt_arg=v, reduced=infos[0].reduced)


def _rsqrt(v: Any, statistic: bool) -> Any:
    return rsqrt_refined(v) if statistic else jax.lax.rsqrt(v)


def _rule_rsqrt(vals, infos, params):
    (v,) = vals
    if not (_is_float(v) and infos[0].reduced):
        return None
    return rsqrt_refined(v), _Info(positive=True)


def _min_const(x: Any, c: Any) -> Any:
    """``min(x, c)`` for a constant ``c`` as ``c - max(c - x, 0)``: no MINIMUM after MAXIMUM for
    the converter to fuse into RELU_0_TO_1 / RELU_N1_TO_1, which have no int16 kernels."""
    return c - jnp.maximum(c - x, 0.0)


def _infinite_const(x: Any, sign: float) -> bool:
    """``x`` is a constant equal to ``sign * inf`` everywhere."""
    return _concrete(x) and bool(np.all(np.asarray(x) == sign * np.inf))


def _identity_bound(a: Any, b: Any, infos: Sequence[_Info], sign: float) -> Any:
    """``max(x, -inf)`` / ``min(x, inf)`` -> ``x`` (as broadcast), else None."""
    for const, other, info in ((a, b, infos[1]), (b, a, infos[0])):
        if _infinite_const(const, sign) and not _concrete(other):
            shape = jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b))
            return jnp.broadcast_to(other, shape), info
    return None


def _rule_max(vals, infos, params):
    return _identity_bound(*vals, infos, -1.0)


def _rule_min(vals, infos, params):
    a, b = vals
    if not (_is_float(a) and _is_float(b)):
        return None
    same = _identity_bound(a, b, infos, 1.0)
    if same is not None:
        return same
    if _concrete(b) and not _concrete(a):
        return _min_const(a, b), _UNKNOWN
    if _concrete(a) and not _concrete(b):
        return _min_const(b, a), _UNKNOWN
    return None


def _rule_clamp(vals, infos, params):
    lo, x, hi = vals
    if not (_is_float(x) and _concrete(lo) and _concrete(hi)):
        return None
    return _min_const(jnp.maximum(x, lo), hi), _UNKNOWN


_RULES: dict[str, Callable[..., Any]] = {
    "sqrt": _rule_sqrt,
    "min": _rule_min,
    "max": _rule_max,
    "rsqrt": _rule_rsqrt,
    "clamp": _rule_clamp,
    "reduce_sum": _rule_reduce_sum,
    "div": _rule_div,
    "erf": _rule_erf,
    "erfc": _rule_erfc,
    "neg": _rule_neg,
    "square": _rule_square,
    "integer_pow": _rule_integer_pow,
    "select_n": _rule_select_n,
}


def _infer_info(name: str, vals: list[Any], infos: list[_Info], out: Any) -> _Info:
    """Positivity / exp-origin of a primitive's result that the rewrite leaves as is."""
    if name == "exp":
        return _Info(positive=True, exp_arg=vals[0])
    if name in ("rsqrt", "sqrt", "logistic"):
        return _Info(positive=True)
    pos = [i.positive or _positive_const(v) for v, i in zip(vals, infos)]
    # A statistic stays one through arithmetic with constants and shape ops.
    reduced = any(i.reduced for i in infos) and all(
        i.reduced or _concrete(v) for v, i in zip(vals, infos)
    )
    if name in ("add", "sub", "mul") and len(pos) == 2:
        positive = name != "sub" and (all(pos) or (name == "mul" and vals[0] is vals[1]))
        return _Info(positive=positive, reduced=reduced)
    if name == "max":
        return _Info(positive=any(pos), reduced=reduced)
    if name in _SHAPE_OPS:
        return _Info(positive=bool(pos) and all(pos), reduced=reduced)
    return _UNKNOWN


_UNARY_SHAPE_OPS = ("broadcast_in_dim", "reshape", "transpose", "squeeze", "expand_dims")


def _carry_args(eqn: Any, info: _Info, vals: list[Any], infos: list[_Info]) -> _Info:
    """Replay a one-operand shape op on the ``exp`` / ``sqrt`` argument the input came from."""
    src = infos[0] if infos else _UNKNOWN
    if eqn.primitive.name not in _UNARY_SHAPE_OPS or len(vals) != 1:
        return info
    if src.softmax_of is not None:  # the denominator broadcast back for the division
        info = dataclasses.replace(info, softmax_of=src.softmax_of)
    if src.exp_arg is None and src.sqrt_arg is None:
        return info
    replay = lambda a: None if a is None else _bind(eqn, [a])  # noqa: E731
    return dataclasses.replace(info, exp_arg=replay(src.exp_arg), sqrt_arg=replay(src.sqrt_arg))


# ----------------------------------------------------------------------------- interpreter
def _bind(eqn: Any, vals: list[Any]) -> Any:
    """Apply ``eqn``'s primitive; all-constant inputs are folded eagerly (so that e.g. the
    ``n - ddof`` of ``jnp.var`` stays a constant the division rule can see)."""
    params = eqn.primitive.get_bind_params(eqn.params)
    if all(_concrete(v) for v in vals):
        with jax.ensure_compile_time_eval():
            return eqn.primitive.bind(*vals, **params)
    with eqn.ctx.manager:
        return eqn.primitive.bind(*vals, **params)


def _eval_jaxpr(
    jaxpr: jcore.Jaxpr, consts: Sequence[Any], args: Sequence[Any], infos: Sequence[_Info]
) -> tuple[list[Any], list[_Info]]:
    env: dict[Any, Any] = {}
    meta: dict[Any, _Info] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jcore.Literal) else env[v]

    def info(v: Any) -> _Info:
        if isinstance(v, jcore.Literal):
            return _Info(positive=_positive_const(v.val))
        return meta.get(v, _UNKNOWN)

    for var, val in zip(jaxpr.constvars, consts):
        env[var], meta[var] = val, _Info(positive=_positive_const(val))
    for var, val, inf in zip(jaxpr.invars, args, infos):
        env[var], meta[var] = val, inf

    for eqn in jaxpr.eqns:
        vals = [read(v) for v in eqn.invars]
        infs = [info(v) for v in eqn.invars]
        name = eqn.primitive.name
        outs: list[Any]
        out_infos: list[_Info]
        key = _INLINE.get(name)
        sub = eqn.params.get(key) if key else None
        if sub is not None:
            if isinstance(sub, jcore.ClosedJaxpr):
                sub_jaxpr, sub_consts = sub.jaxpr, sub.consts
            else:
                sub_jaxpr, sub_consts = sub, ()
            n_in = len(sub_jaxpr.invars)
            outs, out_infos = _eval_jaxpr(sub_jaxpr, sub_consts, vals[-n_in:], infs[-n_in:])
        else:
            rewritten = _RULES[name](vals, infs, eqn.params) if name in _RULES else None
            if rewritten is not None:
                out, inf = rewritten
                outs, out_infos = [out], [inf]
            else:
                out = _bind(eqn, vals)
                outs = list(out) if eqn.primitive.multiple_results else [out]
                out_infos = (
                    [_UNKNOWN] * len(outs)
                    if eqn.primitive.multiple_results
                    else [_carry_args(eqn, _infer_info(name, vals, infs, out), vals, infs)]
                )
        for var, val, inf in zip(eqn.outvars, outs, out_infos):
            env[var], meta[var] = val, inf
    return [read(v) for v in jaxpr.outvars], [info(v) for v in jaxpr.outvars]


def quant_friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` re-traced with the W8A16-friendly replacements above (same float results)."""

    def rewritten(*args: Any) -> Any:
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        flat_args = jax.tree.leaves(args)
        outs, _ = _eval_jaxpr(closed.jaxpr, closed.consts, flat_args, [_UNKNOWN] * len(flat_args))
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    rewritten.__name__ = f"quant_friendly_{getattr(fn, '__name__', 'fn')}"
    return rewritten


def primitive_counts(fn: Callable[..., Any], *args: Any) -> dict[str, int]:
    """How often each primitive occurs in ``fn``'s jaxpr (sub-jaxprs included); for checks."""
    counts: dict[str, int] = {}

    def walk(jaxpr: jcore.Jaxpr) -> None:
        for eqn in jaxpr.eqns:
            counts[eqn.primitive.name] = counts.get(eqn.primitive.name, 0) + 1
            for sub in jcore.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return counts
