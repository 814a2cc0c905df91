"""`python -m persona_demo bench [--quick] [--out FILE.json]`: ratios measured side by side (see bench.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli_generate import add_settings_arguments, resolve_plug_path, settings_from_args

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
    add_settings_arguments(parser)
    parser.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    from .bench.bench import BenchConfig, run_bench, table
    from .engine.engine import PersonaEngine
    from .errors import PersonaDemoError

    if args.repeats < 0:
        raise PersonaDemoError("--repeats must be positive")
    settings = settings_from_args(args)
    engine = PersonaEngine.from_settings(settings, plug_path=resolve_plug_path(args.plug, settings))
    config = BenchConfig(
        quick=args.quick, repeats=args.repeats or (3 if args.quick else 5), data_dir=args.data
    )
    results = run_bench(engine, config)
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0
