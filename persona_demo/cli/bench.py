"""`python -m persona_demo bench [--quick] [--out FILE.json]`: ratios measured side by side (see bench.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..bench import STEPS
from ..config import add_settings_arguments, settings_from_args
from ..engine.checkpoint import resolve_plug_path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "huffpost_headline"


def add_bench_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="measure plug overhead, scaling and throughput")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (a few minutes)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--repeats", type=int, default=0, help="timed repeats per figure (default 5, quick 3)"
    )
    parser.add_argument("--plug", default="huffpost_headline", help="plug checkpoint or task name")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LaMP folder for realistic inputs")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated figures to measure (default all): " + ", ".join(STEPS),
    )
    add_settings_arguments(parser)
    parser.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    from ..bench.bench import BenchConfig, run_bench, table
    from ..engine.engine import PersonaEngine
    from ..errors import PersonaDemoError

    if args.repeats < 0:
        raise PersonaDemoError("--repeats must be positive")
    only = [name.strip() for name in args.only.split(",") if name.strip()] or list(STEPS)
    unknown = sorted(set(only) - set(STEPS))
    if unknown:
        raise PersonaDemoError(
            f"--only: no figure named {', '.join(unknown)}; choose from {', '.join(STEPS)}"
        )
    settings = settings_from_args(args)
    engine = PersonaEngine.from_settings(settings, plug_path=resolve_plug_path(args.plug, settings))
    config = BenchConfig(
        quick=args.quick, repeats=args.repeats or (3 if args.quick else 5), data_dir=args.data
    )
    results = run_bench(engine, config, only=only)
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0
