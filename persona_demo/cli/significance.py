"""`python -m persona_demo significance`: is method A better than method B? Paired bootstrap over users.

Reads two `evaluate` output folders on the same split and prints, per metric, mean(A) − mean(B) with a 95%
interval. Users (not questions) are resampled: one author's questions are correlated.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import PersonaDemoError
from ..tasks.lamp import SPLITS


def add_significance_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("significance", help="paired bootstrap CI between two evaluate runs")
    parser.add_argument("--data", type=Path, required=True, help="the LaMP folder both runs used")
    parser.add_argument("--split", choices=SPLITS, default="dev")
    parser.add_argument(
        "--all-authors", action="store_true", help="dev/test: every author, as `evaluate --all-authors`"
    )
    parser.add_argument("run_a", type=Path, help="evaluate --out folder of method A")
    parser.add_argument("run_b", type=Path, help="evaluate --out folder of method B (the baseline)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run_significance)


def read_predictions(run: Path) -> dict[str, str]:
    path = run / "predictions.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(g["id"]): g["output"] for g in data["golds"]}
    except FileNotFoundError:
        raise PersonaDemoError(f"{path} not found: give an `evaluate --out` folder") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PersonaDemoError(f"{path} is not a LaMP predictions file ({exc})") from None


def significance(
    data: Path, split: str, run_a: Path, run_b: Path, resamples: int, seed: int, all_authors: bool = False
) -> dict:
    from ..evaluation.metrics import paired_bootstrap, per_example_scores
    from ..tasks.lamp import user_split

    dataset = user_split(data, split, all_authors)
    preds_a, preds_b = read_predictions(run_a), read_predictions(run_b)
    common = [e for e in dataset.examples if e.target is not None and e.id in preds_a and e.id in preds_b]
    if not common:
        raise PersonaDemoError(f"{run_a} and {run_b} share no questions of {data.name}/{split}")
    golds = {e.id: e.target for e in common}
    scores_a = per_example_scores(dataset.task, {e.id: preds_a[e.id] for e in common}, golds)
    scores_b = per_example_scores(dataset.task, {e.id: preds_b[e.id] for e in common}, golds)
    users = [e.user_id or e.id for e in common]
    result: dict[str, object] = {"a": str(run_a), "b": str(run_b), "n": len(common), "users": len(set(users))}
    for metric in scores_a:
        ci = paired_bootstrap(scores_a[metric], scores_b[metric], resamples, seed, groups=users)
        result[metric] = {k: round(v, 5) for k, v in ci.items()}
    return result


def run_significance(args: argparse.Namespace) -> int:
    print(
        json.dumps(
            significance(
                args.data, args.split, args.run_a, args.run_b, args.resamples, args.seed, args.all_authors
            )
        )
    )
    return 0
