"""The package's import graph: no cycles, imports only point down the layers, torch only lazily.

Every module under ``adcsr_jax/`` is parsed with ``ast`` (imports inside functions count too) and
placed in a layer by its first name under the package. A module may import its own package and
anything in a lower layer, or another package of its own layer (never in a cycle):

    0  errors, writers, resize, imageops, image_io, tiling, sharding, xla_cpu   (top-level
       helpers: import nothing of the package but each other; sharding is the one mesh /
       batch-placement module used by data, train, infer and export; xla_cpu the XLA:CPU flags)
    1  nn (layers)
    2  models (every network, metric networks included)
    3  weights (foreign checkpoints -> models), data
    4  infer, eval, train
    5  export
    6  cli (and __main__)
    7  testing (torch references for tests and benchmarks; nothing in the package imports it)

torch, diffusers, peft and taming are imported only inside functions, and only in ``weights/``
and ``testing/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "adcsr_jax"

LAYERS: dict[str, int] = {
    "__init__": 0,
    "errors": 0,
    "writers": 0,
    "resize": 0,
    "imageops": 0,
    "image_io": 0,
    "tiling": 0,
    "sharding": 0,
    "xla_cpu": 0,
    "nn": 1,
    "lora": 1,  # the LoRA wrapper (a layer; moving into nn/)
    "models": 2,
    "weights": 3,
    "data": 3,
    "infer": 4,
    "eval": 4,
    "train": 4,
    "export": 5,
    "cli": 6,
    "__main__": 6,
    "testing": 7,
}
TORCH = ("torch", "torchvision", "diffusers", "peft", "taming", "transformers")
TORCH_ALLOWED = ("weights", "testing")


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        out[".".join(rel.parts).removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], list[tuple]]:
    """(package modules ``name`` imports, [(line, torch-like module, at module level)])."""
    base = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    found: set[str] = set()
    foreign: list[tuple] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                parts = base.split(".")[: len(base.split(".")) - node.level + 1]
                mod = ".".join(parts + ([mod] if mod else []))
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n.split(".")[0] in TORCH:
                foreign.append((node.lineno, n, id(node) in top_level))
            if not n.startswith("adcsr_jax."):
                continue
            while n and n not in modules:
                n = n.rpartition(".")[0]
            if n and n != name and n != "adcsr_jax" and not name.startswith(n + "."):
                found.add(n)
    return found, foreign


def _layer_key(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = _modules(package)
    return {m: _imports(m, p, modules)[0] for m, p in modules.items()}


def test_every_module_has_a_layer() -> None:
    unplaced = sorted({_layer_key(m) for m in _modules()} - set(LAYERS))
    assert not unplaced, f"place these in LAYERS (tests/test_layering.py): {unplaced}"


def _upward(graph: dict[str, set[str]]) -> list[str]:
    up = []
    for a, targets in sorted(graph.items()):
        for b in sorted(targets):
            la, lb = LAYERS.get(_layer_key(a), -1), LAYERS.get(_layer_key(b), -1)
            if lb > la:
                up.append(f"{a} (layer {la}) imports {b} (layer {lb})")
    return up


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every strongly connected component (Tarjan), as ``a <-> b`` pairs and the member list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    lines = []
    for comp in comps:
        members = set(comp)
        lines += [f"{a} <-> {b}" for a in comp for b in sorted(graph[a] & members) if a in graph[b]]
        lines.append("cycle through: " + ", ".join(comp))
    return lines


def test_imports_point_down() -> None:
    up = _upward(_graph())
    assert not up, "imports that point up:\n" + "\n".join(up)


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_torch_only_lazily_in_weights_and_testing() -> None:
    bad = []
    modules = _modules()
    for name, path in modules.items():
        for line, mod, top in _imports(name, path, modules)[1]:
            where = _layer_key(name)
            if where not in TORCH_ALLOWED or (top and where != "testing"):
                bad.append(f"{name}:{line} imports {mod}{' at module level' if top else ''}")
    assert not bad, "torch-stack imports outside weights/ (lazy) and testing/:\n" + "\n".join(bad)


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path) -> None:
    """The rules can fail: a fake package with nn -> models (inside a function) and back."""
    pkg = tmp_path / "adcsr_jax"
    (pkg / "nn").mkdir(parents=True)
    (pkg / "models").mkdir()
    for f in ("__init__.py", "nn/__init__.py", "models/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "nn" / "a.py").write_text("def f():\n    from adcsr_jax.models import b\n")
    (pkg / "models" / "b.py").write_text("import adcsr_jax.nn.a\n")
    graph = _graph(pkg)
    assert "adcsr_jax.models.b" in graph["adcsr_jax.nn.a"]
    assert "adcsr_jax.nn.a (layer 1) imports adcsr_jax.models.b (layer 2)" in _upward(graph)
    assert "adcsr_jax.models.b <-> adcsr_jax.nn.a" in _cycles(graph)
