"""`python -m persona_demo report RUNS...`: a Markdown table of `evaluate` runs (what the README shows).

Each figure in the README's results tables is printed by this command from the runs' metrics.json files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import PersonaDemoError

METRIC_COLUMNS = ("rouge1", "rougeL", "mae", "rmse", "accuracy", "f1")


def add_report_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="Markdown table of evaluate runs (metrics.json)")
    parser.add_argument("runs", type=Path, nargs="+", help="evaluate --out folders")
    parser.set_defaults(func=run_report)


def load_metrics(run: Path) -> dict:
    path = run / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PersonaDemoError(f"{path} not found: give `evaluate --out` folders") from None
    except json.JSONDecodeError as exc:
        raise PersonaDemoError(f"{path} is not valid JSON ({exc})") from None


def method_label(m: dict) -> str:
    label = str(m.get("method"))
    return f"{label} (k={m['k']})" if m.get("k") else label


def report(runs: list[Path]) -> str:
    rows = [load_metrics(r) for r in runs]
    metrics = [c for c in METRIC_COLUMNS if any(c in r for r in rows)]
    header = ["task", "split", "method", "n", *metrics, "prompt tokens", "s / example"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r.get("task")), str(r.get("split")), method_label(r), str(r.get("n"))]
        cells += [f"{r[c]:.4f}" if isinstance(r.get(c), int | float) else "" for c in metrics]
        cells += [f"{r.get('prompt_tokens_mean', 0):.1f}", f"{r.get('sec_per_example', 0):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_report(args: argparse.Namespace) -> int:
    print(report(args.runs))
    return 0
