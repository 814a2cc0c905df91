"""`python -m persona_demo import FILE [--db PATH]`: bulk-load personas from a file into the store.

The whole import is one transaction (all or nothing, even if the process is killed), so the progress bar
shows work that becomes visible only when the summary line is printed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from persona_demo.data.ingest import IngestLimits, display_label, parse_upload
from persona_demo.data.store import DB_ENV, PersonaStore, default_db_path
from persona_demo.errors import PersonaDemoError


def add_import_command(subparsers: Any) -> None:
    """Register the `import` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "import",
        help="import personas from a file (LaMP *_questions.json, exported persona, .txt/.csv/.json/...)",
        description=(
            "Import personas into the persona database. LaMP questions files make one persona per user_id "
            "(or per question without one), exported personas and blog-style JSONL files make theirs; any "
            "other file becomes one persona (named by --name or the file name). Existing personas with the "
            "same name get the new items; duplicate texts are skipped. All or nothing: a failed import "
            "changes nothing."
        ),
    )
    parser.add_argument("file", type=Path, help="the file to import (.gz compressed files are accepted)")
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        help=f"database file (default: ${DB_ENV}, else {default_db_path()})",
    )
    parser.add_argument("--name", default=None, help="persona name for plain text/CSV/JSON item files")
    parser.add_argument("--text-column", default=None, help="CSV/TSV column (or JSON field) holding the text")
    parser.add_argument(
        "--max-mb",
        type=float,
        default=IngestLimits().max_bytes / 1_048_576,
        help="largest file accepted, in MB (default: %(default)g)",
    )
    parser.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    """Parse first (nothing written on a bad file), then store everything in one transaction."""
    if not args.max_mb > 0:
        raise PersonaDemoError("--max-mb must be a positive number.")
    limits = replace(IngestLimits(), max_bytes=int(args.max_mb * 1_048_576))
    parsed = parse_upload(args.file, text_column=args.text_column, limits=limits)
    for notice in parsed.notices:
        print(f"note: {notice}", file=sys.stderr)
    store = PersonaStore(args.db, limits=limits)
    try:
        total = max(len(parsed.personas), 1)
        with tqdm(total=total, unit="persona", desc="importing", file=sys.stderr, disable=None) as bar:

            def progress(done: int, _total: int) -> None:
                bar.n = done  # assignment, not update(): a retried transaction restarts from zero
                bar.refresh()

            result = store.store_parsed(parsed, persona_name=args.name, merge=True, progress=progress)
    finally:
        store.close()
    if result.empty_skipped:
        print(f"note: skipped {result.empty_skipped:,} empty item(s)", file=sys.stderr)
    print(f"{result.summary()} into {display_label(str(store.path), 300)}")
    return 0
