"""`python -m persona_demo generate`: one prompt, one persona, outputs with and without the plug."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import add_settings_arguments, settings_from_args
from ..engine.checkpoint import resolve_plug_path
from ..errors import PersonaDemoError


def read_history_file(path: Path) -> list[str]:
    """History texts from a file: the upload parser of the store (txt/md/csv/tsv/json/jsonl/LaMP)."""
    from ..data.ingest import parse_upload

    parsed = parse_upload(path, path.name)
    texts = [item.text if hasattr(item, "text") else str(item) for item in parsed.items]
    if not texts and getattr(parsed, "personas", None):
        texts = [item.text for item in parsed.personas[0].items]
    return texts


def add_generate_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="print outputs with and without the plug for a persona",
        description="Generate for one prompt twice in one batched call: with the persona plug and without.",
    )
    parser.add_argument(
        "--history", type=Path, required=True, help="the persona's texts (.txt blocks, .json, .csv...)"
    )
    parser.add_argument("--prompt", required=True, help="the input to answer")
    parser.add_argument("--plug", help="plug checkpoint (.safetensors) or a task name in assets/plugs")
    parser.add_argument("--max-new-tokens", type=int, help="length of each output (default 48)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--strength", type=float, default=1.0, help="scale of the persona token (default 1.0)"
    )
    parser.add_argument("--json", action="store_true", help='print {"with_plug": ..., "without_plug": ...}')
    add_settings_arguments(parser)
    parser.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from ..engine.engine import PersonaEngine
    from ..engine.generation import GenerationOptions

    settings = settings_from_args(args, max_new_tokens=args.max_new_tokens)
    if not args.history.is_file():
        raise PersonaDemoError(f"History file not found: {args.history}")
    history = read_history_file(args.history)
    if not args.prompt.strip():
        raise PersonaDemoError("The prompt is empty: pass --prompt with some text.")
    if not 0 <= args.strength <= 10:
        raise PersonaDemoError("--strength must be between 0 and 10")
    engine = PersonaEngine.from_settings(settings, plug_path=resolve_plug_path(args.plug, settings))
    if engine.plug_metadata.task == "untrained":
        print("note: no trained plug given (--plug); using an untrained, seeded plug.", file=sys.stderr)
    options = GenerationOptions(max_new_tokens=settings.max_new_tokens, do_sample=args.sample, seed=args.seed)
    result = engine.compare(args.prompt, history, options, strength=args.strength)
    if args.json:
        print(
            json.dumps(
                {"with_plug": result.with_plug, "without_plug": result.without_plug}, ensure_ascii=False
            )
        )
        return 0
    print(f"# {engine.describe()}\n# {len(history)} history items, {result.seconds:.2f} s\n")
    print(f"--- without plug ---\n{result.without_plug}\n")
    print(f"--- with plug ---\n{result.with_plug}\n")
    print("--- most attended history items ---")
    for weight, text in result.top_items(history, k=3):
        print(f"{weight:.3f}  {text[:100]}")
    return 0
