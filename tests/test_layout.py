"""The package's layout rules (issue #18): no import cycles, data flows one way, modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "sb3_vla"
MAX_LINES = 500
#: deprecated aliases of moved modules: they import their new home on purpose
ALIASES = {
    "sb3_vla.vla",
    "sb3_vla.wrappers.adapters",
    "sb3_vla.wrappers.residual_map",
    "sb3_vla.wrappers.residual_math",
    "sb3_vla.pretrain",
}
#: lower layers must not import higher ones (index = layer; a module may import its own layer and below)
LAYERS = [
    (
        "sb3_vla.core",
        "sb3_vla.deprecation",
        "sb3_vla.sb3_adapter",
        "sb3_vla.literal",
        "sb3_vla.threads",
        "sb3_vla.frames",
    ),
    ("sb3_vla.bases", "sb3_vla.models", "sb3_vla.ray.base_server", "sb3_vla.ray._common"),
    ("sb3_vla.wrappers", "sb3_vla.envs"),
    ("sb3_vla.extractor", "sb3_vla.policies", "sb3_vla.buffers", "sb3_vla.finetune_policy"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """sb3_vla modules ``name`` imports anywhere (module level, functions, TYPE_CHECKING blocks excluded)."""
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for child in node.body for n in ast.walk(child))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets.add(mod)
            targets.update(f"{mod}.{a.name}" for a in node.names)
    out = set()
    for t in targets:
        while t and t not in known:
            t = t.rpartition(".")[0]
        if t and t != name and t.startswith("sb3_vla"):
            out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items() if name not in ALIASES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_is_read_correctly() -> None:
    graph = _graph()
    assert "sb3_vla.bases.base" in graph["sb3_vla.bases.registry"]
    assert "sb3_vla.core.imports" in graph["sb3_vla.bases.registry"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_lazy_imports_included() -> None:
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles (each list is a strongly connected group of modules): {cycles}"


def _layer(name: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    return None


def test_data_flows_one_way_through_the_layers() -> None:
    upward = []
    for name, deps in _graph().items():
        here = _layer(name)
        if here is None:
            continue
        for dep in deps:
            there = _layer(dep)
            if dep == "sb3_vla" or there is None or there > here:
                upward.append(f"{name} -> {dep}")
    assert not upward, "lower layers import higher ones (core -> bases -> wrappers/envs -> policies):\n" + "\n".join(
        sorted(upward)
    )


@pytest.mark.parametrize("name", sorted(_modules()))
def test_library_modules_stay_small(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by concern (limit {MAX_LINES})"
