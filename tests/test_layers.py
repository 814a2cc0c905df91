"""The package's folders are its layers: a module imports only from its own layer or the ones below.

engine (models, encoder, plug, generation, checkpoint) → tasks (LaMP specs, retrieval, label scoring, NLL, the
persona prompt) → data (store, ingest, voice) → experiments (training, evaluation) → app (the studio) →
bench, reliability (they time and load the studio) → the command line (`cli_*.py`, `__main__`). `config` and
`errors` sit below everything."""

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
    "experiments": 4,
    "app": 5,
    "bench": 6,
    "reliability": 6,
}
TOP = 7  # cli_*.py, __main__, __init__


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
