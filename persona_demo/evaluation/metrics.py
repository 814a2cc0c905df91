"""LaMP metrics with the official evaluator's semantics (LaMP eval/evaluation.py), without HF `evaluate`.

- classification (LaMP-1/2): str().strip(), label -> index else -1; accuracy on indices; macro F1 over
  labels range(n) (sklearn f1_score(labels=range(n), average="macro"), zero_division -> 0), so -1 is not a
  class of its own but still an error for the gold class.
- rating (LaMP-3): float(); a non-numeric prediction becomes whichever of 1.0 / 5.0 is farther from the gold.
- generation (LaMP-4..7): rouge-score, use_stemmer=False, default tokenizer, mean F-measure. The official
  `evaluate` rouge reports the median of 1000 unseeded bootstrap means (BootstrapAggregator "mid"); we
  report the plain mean it estimates, so numbers are deterministic (for a few hundred examples the two
  differ by up to ~1e-3, which is also how much the official number moves between runs).
Per-example scores feed `paired_bootstrap` for confidence intervals of differences between systems.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from persona_demo.errors import PersonaDemoError
from persona_demo.tasks.lamp import LampTask, get_task

Texts = Sequence[Any] | Mapping[str, Any]


def _check(preds: Sequence[Any], golds: Sequence[Any]) -> None:
    if len(preds) != len(golds):
        raise PersonaDemoError(f"{len(preds)} predictions for {len(golds)} golds")
    if not golds:
        raise PersonaDemoError("no examples to score")


def _align(preds: Texts, golds: Texts) -> tuple[list[Any], list[Any]]:
    """Lists in gold order; dicts keyed by id must cover the same ids (as the official evaluator asserts)."""
    if isinstance(golds, Mapping) or isinstance(preds, Mapping):
        if not (isinstance(golds, Mapping) and isinstance(preds, Mapping)):
            raise PersonaDemoError("give predictions and golds both as lists or both as id -> text dicts")
        missing, extra = sorted(golds.keys() - preds.keys()), sorted(preds.keys() - golds.keys())
        if missing or extra:
            raise PersonaDemoError(
                f"prediction ids do not match gold ids ({len(missing)} missing, e.g. {missing[:3]}; "
                f"{len(extra)} unknown, e.g. {extra[:3]})"
            )
        ids = list(golds)
        return [preds[i] for i in ids], [golds[i] for i in ids]
    return list(preds), list(golds)


# ---------------------------------------------------------------- classification (LaMP-1, LaMP-2)


def label_indices(texts: Sequence[Any], labels: Sequence[str]) -> np.ndarray:
    """Official mapping: str(x).strip() -> its index in labels, anything else -> -1 (case-sensitive)."""
    index = {label: i for i, label in reversed(list(enumerate(labels)))}  # first occurrence wins, like .index
    return np.array([index.get(str(t).strip(), -1) for t in texts], dtype=np.int64)


def classification_per_example(
    preds: Sequence[Any], golds: Sequence[Any], labels: Sequence[str]
) -> list[float]:
    """1.0 where the mapped prediction equals the mapped gold, else 0.0 (mean = accuracy)."""
    _check(preds, golds)
    return (label_indices(preds, labels) == label_indices(golds, labels)).astype(float).tolist()


def macro_f1(pred_idx: np.ndarray, gold_idx: np.ndarray, n_labels: int) -> float:
    """sklearn f1_score(labels=range(n_labels), average="macro") with ill-defined classes scored 0."""
    f1s = []
    for c in range(n_labels):
        tp = int(np.sum((pred_idx == c) & (gold_idx == c)))
        fp = int(np.sum((pred_idx == c) & (gold_idx != c)))
        fn = int(np.sum((pred_idx != c) & (gold_idx == c)))
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1s)) if f1s else 0.0


def classification_metrics(
    preds: Sequence[Any], golds: Sequence[Any], labels: Sequence[str]
) -> dict[str, float]:
    """{"accuracy", "f1"} as LaMP's evaluator computes them for LaMP-1/2."""
    _check(preds, golds)
    p, g = label_indices(preds, labels), label_indices(golds, labels)
    return {"accuracy": float(np.mean(p == g)), "f1": macro_f1(p, g, len(labels))}


# ---------------------------------------------------------------- rating (LaMP-3)


def _gold_value(gold: Any) -> float:
    try:
        value = float(str(gold).strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise PersonaDemoError(f"gold rating {gold!r} is not a number")
    return value


def rating_value(pred: Any, gold: Any) -> float:
    """Official parse of a rating prediction: float(), else the worse of 1.0 / 5.0 for this gold.

    Non-finite values ("nan", "inf") also count as unparsable: the official evaluator would crash on them.
    """
    g = _gold_value(gold)
    try:
        value = float(str(pred).strip())
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return value
    return 1.0 if abs(1 - g) > abs(5 - g) else 5.0


def rating_per_example(preds: Sequence[Any], golds: Sequence[Any]) -> dict[str, list[float]]:
    """{"abs_error", "sq_error"} per example (means = MAE and MSE)."""
    _check(preds, golds)
    errs = [rating_value(p, g) - _gold_value(g) for p, g in zip(preds, golds)]
    return {"abs_error": [abs(e) for e in errs], "sq_error": [e * e for e in errs]}


def rating_metrics(preds: Sequence[Any], golds: Sequence[Any]) -> dict[str, float]:
    """{"mae", "rmse"} as LaMP's evaluator computes them for LaMP-3."""
    per = rating_per_example(preds, golds)
    return {"mae": float(np.mean(per["abs_error"])), "rmse": float(math.sqrt(np.mean(per["sq_error"])))}


# ---------------------------------------------------------------- generation (LaMP-4..7)


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # deferred: pulls in nltk, only needed for generation tasks

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)


def rouge_per_example(preds: Sequence[Any], golds: Sequence[Any]) -> dict[str, list[float]]:
    """{"rouge1", "rougeL"} F-measure per example (stripped texts, no stemming)."""
    _check(preds, golds)
    scorer = _rouge_scorer()
    out: dict[str, list[float]] = {"rouge1": [], "rougeL": []}
    for p, g in zip(preds, golds):
        s = scorer.score(str(g).strip(), str(p).strip())  # (target, prediction)
        out["rouge1"].append(float(s["rouge1"].fmeasure))
        out["rougeL"].append(float(s["rougeL"].fmeasure))
    return out


def rouge_metrics(preds: Sequence[Any], golds: Sequence[Any]) -> dict[str, float]:
    """{"rouge1", "rougeL"}: mean per-example F-measure."""
    per = rouge_per_example(preds, golds)
    return {k: float(np.mean(v)) for k, v in per.items()}


# ---------------------------------------------------------------- dispatch


def compute_metrics(task: int | str | LampTask, preds: Texts, golds: Texts) -> dict[str, float]:
    """The task's official metrics; preds/golds as aligned lists or as id -> text dicts."""
    spec = get_task(task)
    p, g = _align(preds, golds)
    if spec.kind == "classification":
        return classification_metrics(p, g, spec.labels)
    if spec.kind == "rating":
        return rating_metrics(p, g)
    return rouge_metrics(p, g)


def per_example_scores(task: int | str | LampTask, preds: Texts, golds: Texts) -> dict[str, list[float]]:
    """Per-example scores for bootstrap: accuracy (0/1), abs/sq error, or rouge1/rougeL F."""
    spec = get_task(task)
    p, g = _align(preds, golds)
    if spec.kind == "classification":
        return {"accuracy": classification_per_example(p, g, spec.labels)}
    if spec.kind == "rating":
        return rating_per_example(p, g)
    return rouge_per_example(p, g)


# ---------------------------------------------------------------- significance


def paired_bootstrap(
    a_scores: Sequence[float],
    b_scores: Sequence[float],
    n_resamples: int = 1000,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Percentile-bootstrap CI of mean(a) - mean(b) over paired per-example scores.

    With `groups` (e.g. user ids) whole groups are resampled and the difference is the mean over all
    examples of the drawn groups — needed when a user contributes several correlated questions.
    """
    a, b = np.asarray(a_scores, dtype=float), np.asarray(b_scores, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise PersonaDemoError(f"paired scores must be two equal-length lists, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise PersonaDemoError("no scores to bootstrap")
    if n_resamples < 1 or not 0 < confidence < 1:
        raise PersonaDemoError("need n_resamples >= 1 and 0 < confidence < 1")
    d = a - b
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, d.size, size=(n_resamples, d.size))
        boot = d[idx].mean(axis=1)
    else:
        if len(groups) != d.size:
            raise PersonaDemoError(f"{len(groups)} group labels for {d.size} scores")
        _, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        sums = np.bincount(inverse, weights=d)
        counts = np.bincount(inverse).astype(float)
        idx = rng.integers(0, sums.size, size=(n_resamples, sums.size))
        boot = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return {"diff": float(d.mean()), "low": float(low), "high": float(high)}
