"""`python -m persona_demo evaluate`: one method on one LaMP split → predictions.json + metrics.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli_generate import add_settings_arguments, resolve_plug_path, settings_from_args
from .errors import PersonaDemoError


def add_evaluate_command(subparsers: argparse._SubParsersAction) -> None:
    from .experiments.evaluate import METHODS

    parser = subparsers.add_parser("evaluate", help="evaluate a method on a LaMP-format split")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", choices=["dev", "test"], default="dev")
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--k", type=int, default=1, help="retrieved items for bm25/recency")
    parser.add_argument("--plug", help="plug checkpoint or task name (pplug methods)")
    parser.add_argument("--limit", type=int, default=0, help="first N examples (0 = all)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--record",
        action="store_true",
        help="pplug on a whole split: store the scores in the plug's metadata (the app's status line shows them)",
    )
    add_settings_arguments(parser)
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from .engine.engine import PersonaEngine
    from .experiments import distributed
    from .experiments.evaluate import evaluate

    dist = distributed.current()  # Accelerate only under `accelerate launch`
    settings = distributed.settings_for(settings_from_args(args), dist)
    plug = resolve_plug_path(args.plug, settings) if args.method.startswith("pplug") else None
    if args.record and (args.method != "pplug" or plug is None or args.limit):
        raise PersonaDemoError("--record needs --method pplug, a --plug and the whole split (no --limit)")
    engine = PersonaEngine.from_settings(settings, plug_path=plug)
    metrics = evaluate(
        engine,
        args.data,
        args.split,
        args.method,
        args.out,
        k=args.k,
        limit=args.limit,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        dist=dist,
    )
    if not dist.is_main:
        return 0
    if args.record:
        record_in_plug(engine, plug, metrics, args)
    print(json.dumps(metrics))
    return 0


def record_in_plug(engine, plug: Path, metrics: dict, args: argparse.Namespace) -> None:
    """Add `<split>_<metric>` (e.g. dev_rouge1) to the plug's metadata; only for a full-split pplug run."""
    from .cli_report import METRIC_COLUMNS
    from .engine.checkpoint import save_plug

    metadata = engine.plug_metadata
    metadata.metrics.update({f"{args.split}_{k}": metrics[k] for k in METRIC_COLUMNS if k in metrics})
    metadata.metrics[f"{args.split}_n"] = metrics["n"]
    save_plug(plug, engine.plug, metadata)
