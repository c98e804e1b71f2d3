"""The Flax LoRA wrapper against PEFT on torch Linear and Conv2d layers (forward, merge, grads)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adcsr_jax.nn.lora import (
    LoraSpec,
    apply_with_lora,
    init_lora,
    lora_logical_axes,
    lora_targets,
    merge,
    path_mask,
    unmerge,
)

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

# (name, in, out, kernel, stride, padding): a Linear and three convs, incl. stride 2 and padding.
CONVS = [
    ("c3", 3, 6, 3, 1, 1),
    ("c3s2", 6, 5, 3, 2, 1),
    ("c1", 5, 4, 1, 1, 0),
    ("c5p0", 4, 3, 5, 2, 0),
]


class TorchNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(7, 9)
        self.convs = torch.nn.ModuleDict(
            {n: torch.nn.Conv2d(i, o, k, stride=s, padding=p) for n, i, o, k, s, p in CONVS}
        )

    def forward(self, v, x):
        for n, *_ in CONVS:
            x = self.convs[n](x)
        return self.lin(v), x


class FlaxNet(nn.Module):
    @nn.compact
    def __call__(self, v, x):
        for n, _, o, k, s, p in CONVS:
            x = nn.Conv(o, (k, k), strides=s, padding=((p, p), (p, p)), name=f"convs_{n}")(x)
        return nn.Dense(9, name="lin")(v), x


SPECS = (
    LoraSpec("first", 4, targets=(r"^lin/", r"convs_c3s2/", r"convs_c1/")),
    LoraSpec("second", 2, alpha=3.0, targets=(r"convs_",), exclude=(r"c1/",)),
)


def _flax_name(torch_module: str) -> tuple[str, ...]:
    return ("lin",) if torch_module == "lin" else (f"convs_{torch_module.split('.')[1]}",)


def _to_flax(w: np.ndarray) -> np.ndarray:
    return w.T if w.ndim == 2 else w.transpose(2, 3, 1, 0)


def _build(seed: int = 0):
    torch.manual_seed(seed)
    net = TorchNet().double()
    for spec in SPECS:
        targets = [m for m in ("lin", *(f"convs.{n}" for n, *_ in CONVS))]
        targets = [t for t in targets if spec.matches("/".join((*_flax_name(t), "kernel")))]
        cfg = peft.LoraConfig(
            r=spec.rank, lora_alpha=spec.alpha, init_lora_weights="gaussian", target_modules=targets
        )
        peft.inject_adapter_in_model(cfg, net, adapter_name=spec.name)
    layers = [m for m in net.modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    for m in layers:
        m.set_adapter([s.name for s in SPECS])
        for name in m.lora_B:  # B = 0 at init: give it values so the adapters matter
            torch.nn.init.normal_(m.lora_B[name].weight, std=0.3)
    params, lora = {}, {s.name: {} for s in SPECS}
    for name, p in net.named_parameters():
        w = p.detach().numpy().astype(np.float32)
        parts = name.split(".")
        if "lora_A" in parts or "lora_B" in parts:
            i = parts.index("lora_A") if "lora_A" in parts else parts.index("lora_B")
            path = _flax_name(".".join(parts[:i]))
            lora[parts[i + 1]].setdefault(path[0], {})[parts[i]] = _to_flax(w)
        else:
            module = ".".join(p for p in parts[:-1] if p != "base_layer")
            leaf = "kernel" if parts[-1] == "weight" else "bias"
            params.setdefault(_flax_name(module)[0], {})[leaf] = (
                _to_flax(w) if leaf == "kernel" else w
            )
    return net, params, lora


def _inputs(seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(2, 7)).astype(np.float32), rng.normal(size=(2, 3, 17, 15)).astype(
        np.float32
    )


def _torch_out(net, v, x):
    ty, tx = net(torch.from_numpy(v).double(), torch.from_numpy(x).double())
    return ty, tx


def test_targets_follow_the_patterns() -> None:
    _, params, _ = _build()
    got = {k: set(v) for k, v in lora_targets(SPECS, params).items()}
    assert got == {
        "first": {("convs_c3s2",), ("convs_c1",), ("lin",)},
        "second": {("convs_c3",), ("convs_c3s2",), ("convs_c5p0",)},
    }
    with pytest.raises(ValueError, match="no kernel matches"):
        lora_targets([LoraSpec("x", 2, targets=("nothing",))], params)


def test_unmerged_forward_and_merged_weights_equal_peft() -> None:
    net, params, lora = _build()
    v, x = _inputs()
    ty, tx = _torch_out(net, v, x)
    y, out = jax.jit(lambda p, lo, v, x: apply_with_lora(FlaxNet(), p, lo, SPECS, v, x))(
        params, lora, v, x.transpose(0, 2, 3, 1)
    )
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out, tx.detach().numpy().transpose(0, 2, 3, 1), atol=1e-5, rtol=1e-5)
    # no adapters -> the base module
    _, plain = apply_with_lora(FlaxNet(), params, {}, (), v, x.transpose(0, 2, 3, 1))
    _, base = FlaxNet().apply({"params": params}, v, x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(plain, base)

    merged = merge(params, lora, SPECS)
    for layer in [m for m in net.modules() if isinstance(m, peft.tuners.lora.LoraLayer)]:
        layer.merge(adapter_names=[s.name for s in SPECS])
    for name, p in net.named_parameters():
        if name.endswith("base_layer.weight"):
            module = name[: -len(".base_layer.weight")]
            got = merged[_flax_name(module)[0]]["kernel"]
            np.testing.assert_allclose(got, _to_flax(p.detach().numpy()), atol=1e-5, rtol=1e-5)
    y2, out2 = FlaxNet().apply({"params": merged}, v, x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(out2, out, atol=1e-5, rtol=1e-5)
    back = unmerge(merged, lora, SPECS)
    for k in params:
        np.testing.assert_allclose(back[k]["kernel"], params[k]["kernel"], atol=1e-6)


def test_gradients_wrt_a_and_b_equal_peft() -> None:
    net, params, lora = _build()
    v, x = _inputs()
    ty, tx = _torch_out(net, v, x)
    w = np.random.default_rng(2).normal(size=tx.shape)
    ((ty**2).sum() + (tx * torch.from_numpy(w)).sum()).backward()

    def loss(lo):
        y, out = apply_with_lora(FlaxNet(), params, lo, SPECS, v, x.transpose(0, 2, 3, 1))
        return (y**2).sum() + (out * w.transpose(0, 2, 3, 1)).sum()

    grads = jax.grad(loss)(lora)
    n = 0
    for name, p in net.named_parameters():
        parts = name.split(".")
        for ab in ("lora_A", "lora_B"):
            if ab in parts:
                i = parts.index(ab)
                path = _flax_name(".".join(parts[:i]))[0]
                want = _to_flax(p.grad.numpy())
                got = grads[parts[i + 1]][path][ab]
                np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=name)
                n += 1
    assert n == 12


def test_init_is_peft_gaussian_and_axes_name_the_rank() -> None:
    _, params, _ = _build()
    lora = init_lora(SPECS, params, jax.random.key(0))
    big = init_lora([LoraSpec("g", 4, targets=("lin",))], {"lin": {"kernel": jnp.zeros((4000, 9))}},
                    jax.random.key(1))  # fmt: skip
    a = np.asarray(big["g"]["lin"]["lora_A"])
    assert a.shape == (4000, 4) and abs(a.std() - 0.25) < 0.01  # std = 1 / r
    assert not np.any(np.asarray(lora["first"]["lin"]["lora_B"]))
    assert lora["second"]["convs_c3"]["lora_A"].shape == (3, 3, 3, 2)
    assert lora["second"]["convs_c3"]["lora_B"].shape == (1, 1, 2, 6)
    axes = lora_logical_axes(lora)
    assert axes["first"]["lin"]["lora_A"] == jax.sharding.PartitionSpec(None, "lora_rank")
    assert axes["second"]["convs_c3"]["lora_B"][2] == "lora_rank"
    mask = path_mask({"base": params, "lora": lora}, ["^lora/", "^base/lin/bias"])
    assert mask["base"]["lin"] == {"kernel": False, "bias": True}
    assert all(jax.tree.leaves(mask["lora"]))


def test_wrong_layers_are_named() -> None:
    _, params, lora = _build()
    v, x = _inputs()
    bad = {"first": {**lora["first"], "nowhere": lora["first"]["lin"]}, "second": lora["second"]}
    with pytest.raises(ValueError, match="nowhere"):
        apply_with_lora(FlaxNet(), params, bad, SPECS, v, x.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="rank"):
        apply_with_lora(FlaxNet(), params, lora, (SPECS[0], LoraSpec("second", 3, targets=("c",))),
                        v, x.transpose(0, 2, 3, 1))  # fmt: skip
