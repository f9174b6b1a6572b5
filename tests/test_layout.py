"""The layout holds: each folder of core/ is a room with one job, and imports run one way.

Read from the source (nothing is imported): every import counts, those inside functions too.
- No import cycle among the project's modules.
- Room to room, imports go only to a lower layer (`LAYERS`); a new room must be placed here.
- core/ never imports gradio; the memory arithmetic never imports torch (only memory/device.py
  reads the device, and only inside its function); no other module of core/ reads free GPU memory.
- No file of core/, bench/, ui/, scripts/, kernels/ or reward_presets/ is over 500 lines.
    python -m pytest -q tests/test_layout.py
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "ui", "scripts", "kernels", "reward_presets", "bench")
MAX_LINES = 500

# Each room's layer: a room imports only rooms of a lower layer (and its own modules).
LAYERS = {
    "errors": 0, "kernels": 0, "reward_presets": 0,  # leaves
    "config": 1,  # core/config.py, core/config_text.py
    "data": 2, "memory": 2, "models": 2, "rewards": 2,
    "runs": 3,
    "engines": 4,
    "rl": 5,
    "evaluation": 6,
    "export": 7,
    "app": 8,  # the run manager, split by job
    "scripts": 9, "ui": 9,  # thin command lines; the page
    "app.py": 10,
    "bench": 10,
}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    out["app"] = ROOT / "app.py"
    return out


def room(module: str) -> str:
    """core.rl.trainer -> rl; core.config_text -> config; ui.tabs.train -> ui; app -> app.py."""
    if module == "app":
        return "app.py"
    parts = module.split(".")
    if parts[0] != "core":
        return parts[0]
    if len(parts) == 1:
        return "core"
    return {"config_text": "config"}.get(parts[1], parts[1])


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project's modules it imports, at any depth of its code."""
    graph = {}
    for name, f in mods.items():
        found = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    found.add(t)
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


MODS = modules()
GRAPH = imports(MODS)


def test_the_layout_reader_sees_what_it_should():
    """The reader itself: function-level imports count, and a cycle is found when there is one."""
    assert "core.engines.registry" in GRAPH["core.rl.trainer"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert room("core.config_text") == "config" and room("ui.tabs.train") == "ui" and room("app") == "app.py"


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_imports_run_one_way():
    unplaced = sorted({room(m) for m in MODS} - set(LAYERS) - {"core"})
    assert unplaced == [], f"rooms with no layer in LAYERS: {unplaced}"
    upward = sorted(f"{m} -> {t}" for m, ts in GRAPH.items() for t in ts
                    if room(m) != room(t) and room(t) != "core" and LAYERS[room(t)] >= LAYERS[room(m)])
    assert upward == []


def test_core_never_imports_gradio_and_memory_arithmetic_never_torch():
    def third_party(f: Path) -> set[str]:
        out = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                out |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                out.add(node.module.split(".")[0])
        return out

    assert [m for m, f in MODS.items() if m.startswith("core") and "gradio" in third_party(f)] == []
    arithmetic = [m for m in MODS if room(m) == "memory" and m != "core.memory.device"]
    assert len(arithmetic) >= 4 and [m for m in arithmetic if {"torch", "transformers"} & third_party(MODS[m])] == []


def test_device_memory_is_read_in_one_place():
    """core/memory/device.py is the one reader of a GPU's free memory: no other module of core/
    calls torch.cuda.mem_get_info or memory_reserved (each reader used to count it its own way)."""
    readers = sorted(m for m, f in MODS.items() if m.startswith("core") for node in ast.walk(ast.parse(f.read_text()))
                     if isinstance(node, ast.Attribute) and node.attr in ("mem_get_info", "memory_reserved"))
    assert set(readers) == {"core.memory.device"}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_file_over_500_lines(package):
    long = {str(f.relative_to(ROOT)): n for f in (ROOT / package).rglob("*.py")
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}
