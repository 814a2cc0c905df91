"""`python -m persona_demo soak [--users N] [--minutes M] [--out FILE.json]`: load the real studio (soak.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_soak_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("soak", help="drive the running studio with concurrent simulated users")
    parser.add_argument("--users", type=int, default=20, help="concurrent simulated users (default 20)")
    parser.add_argument("--minutes", type=float, default=5.0, help="how long they work (default 5)")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="per generation (default 8)")
    parser.add_argument("--max-requests", type=int, help="stop each user after this many actions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    parser.set_defaults(func=run_soak_command)


def run_soak_command(args: argparse.Namespace) -> int:
    from ..errors import PersonaDemoError
    from ..reliability.report import format_report, write_json
    from ..reliability.soak import SoakConfig, run_soak

    if not 1 <= args.users <= 200:
        raise PersonaDemoError("--users must be between 1 and 200")
    if not 0 < args.minutes <= 120:
        raise PersonaDemoError("--minutes must be above 0 and at most 120")
    if not 1 <= args.max_new_tokens <= 256:
        raise PersonaDemoError("--max-new-tokens must be between 1 and 256")
    config = SoakConfig(
        users=args.users, minutes=args.minutes, max_new_tokens=args.max_new_tokens,
        max_requests=args.max_requests, seed=args.seed,
    )  # fmt: skip
    report = run_soak(config)
    print(format_report(report), flush=True)
    if args.out:
        write_json(report, args.out)
    return 0 if report["errors"] == 0 else 1
