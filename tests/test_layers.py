"""The package's folders are its layers: a module imports only from its own layer or the ones below.

engine (models, encoder, plug, generation, checkpoint, device placement) → tasks (LaMP specs, retrieval, label
scoring, NLL, the persona prompt) → data (store, ingest, voice) → evaluation (metrics, NLL report, collapse
detector) → training (it keeps the checkpoint that evaluates best) → app (the studio) → bench, reliability
(they time and load the studio) → cli (one module per command; `__main__` builds the parser). `config` and
`errors` sit below everything; nothing imports `cli`."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "persona_demo"
LAYERS = {
    "config": 0,
    "errors": 0,
    "engine": 1,
    "tasks": 2,
    "data": 3,
    "evaluation": 4,
    "training": 5,
    "app": 6,
    "bench": 7,
    "reliability": 7,
    "cli": 8,
}
TOP = 9  # __main__, __init__


def layer(parts: list[str]) -> int:
    """The layer of a module given as path parts under the package (['engine', 'plug'])."""
    return LAYERS.get(parts[0], TOP) if parts else TOP


def imported_modules(path: Path) -> list[list[str]]:
    """Every persona_demo module a file imports (at the top or inside a function), as parts."""
    here = list(path.relative_to(PACKAGE).with_suffix("").parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("persona_demo"):
                target = node.module.split(".")[1:]
            else:
                continue
            found += [target + [alias.name] if not node.module else target for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name.split(".")[1:] for a in node.names if a.name.startswith("persona_demo.")]
    return found


def test_imports_only_go_down_the_layers():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        own = layer(parts)
        for target in imported_modules(path):
            if target and target[0] != parts[0] and layer(target) > own:
                upward.append(f"{'/'.join(parts)} imports {'.'.join(target)}")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_every_folder_has_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(LAYERS), folders - set(LAYERS)


def module_name(parts: list[str]) -> str | None:
    """The module a target of `imported_modules` names: `engine.plug` for ['engine', 'plug', 'PlugOutput']."""
    for end in range(len(parts), 0, -1):
        path = PACKAGE.joinpath(*parts[:end])
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return ".".join(parts[:end])
    return None


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        here = ".".join(parts)
        targets = {module_name(t) for t in imported_modules(path)}
        graph[here] = {t for t in targets if t and t != here and t != here.rsplit(".", 1)[0]}
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
