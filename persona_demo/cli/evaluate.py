"""`python -m persona_demo evaluate`: one method on one LaMP split → predictions.json + metrics.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import add_settings_arguments, settings_from_args
from ..engine.cache import disk_embedding_cache
from ..engine.checkpoint import resolve_plug_path
from ..errors import PersonaDemoError
from ..tasks.lamp import SPLITS
from ..tasks.persona_prompt import DEFAULT_PROMPT


def add_evaluate_command(subparsers: argparse._SubParsersAction) -> None:
    from ..evaluation.evaluate import METHODS
    from ..evaluation.evaluate_nll import VOICE_METHODS

    parser = subparsers.add_parser("evaluate", help="evaluate a method on a LaMP-format split")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="dev",
        help="LaMP: dev/test hold the authors a plug trains on, heldout the dev and test questions of the "
        "authors kept out of training (people the plug never saw); train: the questions a plug was trained on "
        "(a fit check), or the model-free rating baselines on ~5x the users of dev",
    )
    parser.add_argument(
        "--all-authors",
        action="store_true",
        help="LaMP dev/test: score every author's questions, the held-out ones too (for a plug trained with "
        "`train --all-authors`)",
    )
    parser.add_argument(
        "--profile",
        choices=["as-stored", "free-text", "typed"],
        default="as-stored",
        help="free-text (LaMP): read every history without titles or scores, as the studio holds a typed or "
        "uploaded persona; typed (blog file): each history as a person types it, the last 6 posts cut to 40 "
        "words",
    )
    parser.add_argument(
        "--task",
        choices=["auto", "persona-voice"],
        default="auto",
        help="auto: a LaMP folder's task, or persona-voice for a per-user .jsonl(.gz) file",
    )
    parser.add_argument(
        "--metric",
        choices=["auto", "nll"],
        default="auto",
        help="auto: the task's official metric (persona-voice: nll); nll: teacher-forced NLL of the gold "
        "under none / no-history / shuffled / own history, with the personal share",
    )
    parser.add_argument(
        "--shuffles", type=int, default=3, help="derangements averaged for the shuffled control"
    )
    parser.add_argument("--method", choices=list(dict.fromkeys([*METHODS, *VOICE_METHODS])), required=True)
    parser.add_argument(
        "--k",
        type=int,
        default=None,
        help="retrieved items for bm25/recency/pplug+bm25 (default: what the plug was trained with "
        "(`train --retrieval-k`), else 1)",
    )
    parser.add_argument(
        "--words-per-text",
        type=int,
        default=None,
        help="persona voice (texts, pplug+texts): words each persona text keeps in the prompt (default: what "
        "the plug was trained with, else the studio's default)",
    )
    parser.add_argument("--plug", help="plug checkpoint or task name (pplug methods)")
    parser.add_argument("--limit", type=int, default=0, help="first N examples (0 = all)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument(
        "--decode",
        choices=["auto", "generate", "labels"],
        default="auto",
        help="auto: score each label on label tasks (LaMP-1/2/3: the median star for ratings, the likeliest "
        "class otherwise), generate free text on generation tasks",
    )
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
    from ..data.voice import is_voice_file
    from ..engine import distributed
    from ..engine.engine import PersonaEngine
    from ..evaluation.evaluate import evaluate
    from ..evaluation.evaluate_nll import VOICE_METHODS, VOICE_TASK, evaluate_nll

    voice = is_voice_file(args.data)
    if args.task == VOICE_TASK and not voice:
        raise PersonaDemoError(
            f"--task {VOICE_TASK} reads a per-user .jsonl or .jsonl.gz file, not {args.data}"
        )
    if voice and args.metric == "auto":
        args.metric = "nll"
    if voice and args.method not in VOICE_METHODS:
        raise PersonaDemoError(f"{VOICE_TASK} supports {', '.join(VOICE_METHODS)}, not {args.method!r}")
    if args.shuffles < 1:
        raise PersonaDemoError("--shuffles must be at least 1")
    dist = distributed.current()  # Accelerate only under `accelerate launch`
    settings = distributed.settings_for(settings_from_args(args), dist)
    plug = resolve_plug_path(args.plug, settings) if args.method.startswith("pplug") else None
    if args.record and (args.method not in RECORD_METHODS or plug is None or args.limit):
        raise PersonaDemoError(
            "--record needs --method pplug (or pplug+bm25 / pplug+texts for a plug trained with --retrieval-k), "
            "a --plug and the whole split (no --limit)"
        )
    if args.record and args.split == "train":
        raise PersonaDemoError("--record stores held-out scores: use --split dev or test, not train")
    if args.profile != "as-stored" and (args.profile == "typed") != voice:
        raise PersonaDemoError(
            "--profile typed is for a blog file (persona voice), --profile free-text for a LaMP folder"
        )
    if args.record and args.profile != "as-stored":
        raise PersonaDemoError("--record stores the figures on the data as stored: leave out --profile")
    if args.metric == "nll" and dist.num_processes > 1:
        raise PersonaDemoError("--metric nll runs in one process: start it without `accelerate launch`")
    engine = PersonaEngine.from_settings(settings, plug_path=plug, cache=disk_embedding_cache(settings))
    if args.split == "heldout" and plug is not None and engine.plug_metadata.saw_every_author:
        raise PersonaDemoError(
            f"{plug.name} was trained on every author, so the held-out authors are not unseen for it; "
            "evaluate it on --split dev or test, or retrain it without --all-authors"
        )
    k = args.k if args.k is not None else default_k(engine, args.method)
    common = {
        "k": k,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "free_text": args.profile in {"free-text", "typed"},
        "all_authors": args.all_authors,
    }
    if args.metric == "nll":
        words = args.words_per_text or default_words(engine, args.method)
        metrics = evaluate_nll(
            engine,
            args.data,
            args.split,
            args.method,
            args.out,
            shuffles=args.shuffles,
            words_per_text=words,
            **common,
        )
    else:
        metrics = evaluate(
            engine,
            args.data,
            args.split,
            args.method,
            args.out,
            max_new_tokens=args.max_new_tokens,
            decode=args.decode,
            dist=dist,
            **common,
        )
    if not dist.is_main:
        return 0
    if args.record:
        record_in_plug(engine, plug, metrics, args)
    print(json.dumps(metrics))
    return 0


RECORD_METHODS = ("pplug", "pplug+bm25", "pplug+texts")
"""What the studio runs: the plug alone, or with its retrieved items for a hybrid plug (LaMP: BM25 items in
the task template; persona voice: the persona prompt)."""


def default_k(engine, method: str) -> int:
    """A hybrid plug is read with the retrieved items it was trained with; everything else retrieves 1."""
    trained_k = engine.plug_metadata.retrieval_k
    if method in {"pplug+texts", "texts"}:  # the persona prompt: as trained, else the studio's default
        return trained_k if method == "pplug+texts" and trained_k > 0 else DEFAULT_PROMPT.texts
    return trained_k if method.startswith("pplug+") and trained_k > 0 else 1


def default_words(engine, method: str) -> int:
    """The persona prompt's words per text: as the plug was trained (pplug+texts), else the studio's default."""
    trained = engine.plug_metadata.words_per_text if method == "pplug+texts" else None
    return trained or DEFAULT_PROMPT.words_per_text


NLL_RECORD_KEYS = (
    "ppl",
    "nll_none",
    "nll_no_history",
    "nll_shuffled",
    "nll_own",
    "personal_share",
    "personal_share_ci",
    "persona_cosine",
)
"""What `--metric nll --record` keeps in the plug (the studio's status line shows the personal share)."""


def record_in_plug(engine, plug: Path, metrics: dict, args: argparse.Namespace) -> None:
    """Add `<split>_<metric>` (e.g. dev_rouge1) and the method to the plug's metadata (full-split runs only)."""
    from ..engine.checkpoint import save_plug
    from .report import METRIC_COLUMNS

    metadata = engine.plug_metadata
    keys = (*METRIC_COLUMNS, *NLL_RECORD_KEYS)
    metadata.metrics.update({f"{args.split}_{k}": metrics[k] for k in keys if k in metrics})
    if "nll_own" in metrics:  # the whole split's NLL replaces training's estimate on its first dev examples
        metadata.metrics[f"{args.split}_nll"] = metrics["nll_own"]
    metadata.metrics[f"{args.split}_n"] = metrics["n"]
    metadata.metrics[f"{args.split}_method"] = args.method
    save_plug(plug, engine.plug, metadata)
