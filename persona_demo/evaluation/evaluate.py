"""Evaluate a method on a LaMP split: predictions in the official format + metrics.json.

Methods: `none` (the LaMP input alone), `bm25`/`recency` (LaMP's retrieval-augmented prompts, k items),
`pplug`, `pplug-shuffled` (the plug fed another user's history: what is left is task adaptation) and
`pplug-no-history` (instruction token only), `pplug+bm25-shuffled` (plug history AND retrieved items from
another user, ranked against this user's own query: the shuffled control of the hybrid).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..engine.distributed import Single
from ..engine.engine import PersonaEngine
from ..engine.generation import GenerationOptions, Row, soft_len
from ..errors import PersonaDemoError
from ..tasks.labels import choose_label, label_log_probs
from ..tasks.lamp import LampDataset, LampExample, user_split, write_predictions
from ..tasks.nll import derangement
from ..tasks.retrieval import rag_prompt_builder
from .metrics import compute_metrics

METHODS = (
    "none",
    "bm25",
    "recency",
    "pplug",
    "pplug+bm25",
    "pplug-shuffled",
    "pplug+bm25-shuffled",
    "pplug-no-history",
    "always-5",
    "profile-mean",
    "profile-median",
)
RATING_BASELINES = ("always-5", "profile-mean", "profile-median")
"""LaMP-3 reference points that need no model: the top star, and the user's mean or median past score
(rounded). The median is the constant with the least absolute error on the user's own past: what a model that
knew the reviewer's rating habit, and nothing about the review, would answer."""
DECODES = ("auto", "generate", "labels")
"""auto: score the label set on label tasks (LaMP-1/2/3), generate free text otherwise (see labels.py)."""
RAG_METHODS = {"bm25": "bm25", "recency": "recency", "pplug+bm25": "bm25", "pplug+bm25-shuffled": "bm25"}
"""Methods whose prompt carries k retrieved history items, and the ranker that picks them."""


def rating_baseline(method: str, profile: list[dict]) -> str:
    """'5', or the user's mean or median profile score rounded to a star (3 when the profile has no scores)."""
    if method == "always-5":
        return "5"
    scores = []
    for item in profile:
        try:
            scores.append(float(item.get("score")))
        except (TypeError, ValueError):
            continue
    if not scores:
        return "3"
    centre = statistics.median(scores) if method == "profile-median" else statistics.fmean(scores)
    return str(int(centre + 0.5))  # half rounds up


def method_inputs(
    dataset: LampDataset, examples: list[LampExample], method: str, k: int, seed: int
) -> tuple[list[str], list[list[str]]]:
    """Each example's prompt and the history its plug reads, as `method` defines them.

    The shuffled controls take another user's history (a seeded derangement over users); the hybrid's also
    retrieves from that user's items, ranked against this example's own query."""
    spec = dataset.spec
    histories = [spec.history_texts(e.profile) for e in examples]
    users = [e.user_id or e.id for e in examples]
    source = list(range(len(examples)))  # whose items each example's plug (and retrieval) reads
    if method in {"pplug-shuffled", "pplug+bm25-shuffled"}:
        source = derangement(users, seed)
        histories = [histories[j] for j in source]
    if method == "pplug-no-history":
        histories = [[] for _ in examples]
    if method in RAG_METHODS:
        build = rag_prompt_builder(dataset.task, examples, k, RAG_METHODS[method])
        return [build(i, j) for i, j in enumerate(source)], histories
    return [e.input for e in examples], histories


def gold_examples(
    data_dir: Path, split: str, limit: int = 0, free_text: bool = False, all_authors: bool = False
) -> tuple[LampDataset, list[LampExample]]:
    """The split (`user_split`: held-out authors apart) and its first `limit` examples that have a gold output
    (what every metric scores); `free_text` reads every profile as the studio holds a typed persona."""
    dataset = user_split(data_dir, split, all_authors)
    examples = [e for e in dataset.examples if e.target is not None][: limit or None]
    if free_text:
        examples = [replace(e, profile=dataset.spec.free_text_profile(e.profile)) for e in examples]
    if not examples:
        raise PersonaDemoError(f"{data_dir}: the {split} split has no examples with gold outputs")
    return dataset, examples


def evaluate(
    engine: PersonaEngine,
    data_dir: Path,
    split: str,
    method: str,
    out_dir: Path,
    *,
    k: int = 1,
    limit: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 24,
    seed: int = 0,
    decode: str = "auto",
    dist: Single | None = None,
    free_text: bool = False,
    all_authors: bool = False,
) -> dict[str, object]:
    """Score `method`; with `dist` (several processes), each generates whole batches, the main one writes."""
    dist = dist or Single()
    if method not in METHODS:
        raise PersonaDemoError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if decode not in DECODES:
        raise PersonaDemoError(f"unknown decode {decode!r}; choose one of {', '.join(DECODES)}")
    dataset, examples = gold_examples(data_dir, split, limit, free_text, all_authors)
    spec = dataset.spec
    if decode == "auto":
        decode = "labels" if spec.labels else "generate"
    if decode == "labels" and not spec.labels:
        raise PersonaDemoError(f"{spec.official_name} has no label set to score; use --decode generate")
    if method in RATING_BASELINES and spec.kind != "rating":
        raise PersonaDemoError(f"{method} is a baseline for rating tasks (LaMP-3), not {spec.official_name}")
    prompts, histories = method_inputs(dataset, examples, method, k, seed)
    options = GenerationOptions(max_new_tokens=max_new_tokens)
    preds: dict[str, str] = {}
    prompt_tokens = 0
    started = time.perf_counter()
    if method in RATING_BASELINES:  # no model: each row's answer is a constant or the profile mean
        preds, prompts = {e.id: rating_baseline(method, e.profile) for e in examples}, []
    starts = dist.round_robin(range(0, len(prompts), batch_size))  # whole batches: outputs as on 1 process
    for start in tqdm(starts, desc=f"evaluate {method}", unit="batch", disable=not dist.is_main):
        chunk = range(start, min(start + batch_size, len(examples)))
        rows = [Row(engine.llm.prompt_ids(prompts[i])) for i in chunk]
        if method.startswith("pplug"):
            with torch.no_grad():
                out = engine.plug_output([examples[i].query for i in chunk], [histories[i] for i in chunk])
            for j, row in enumerate(rows):
                row.soft_tokens, row.soft_mask = out.soft_tokens[j], out.soft_mask[j]
        prompt_tokens += sum(len(r.prompt_ids) + soft_len(r) for r in rows)
        if decode == "labels":
            soft = None if rows[0].soft_tokens is None else torch.stack([r.soft_tokens for r in rows])
            mask = None if rows[0].soft_mask is None else torch.stack([r.soft_mask for r in rows])
            log_probs = label_log_probs(engine, [prompts[i] for i in chunk], spec.labels, soft, mask)
            answers = choose_label(log_probs, spec.labels, spec.kind)
        else:
            answers = engine.llm.generate(rows, options)
        for i, text in zip(chunk, answers):
            preds[examples[i].id] = text
    if dist.num_processes > 1:  # every process's predictions, back in the split's order, each id once
        index = {e.id: i for i, e in enumerate(examples)}
        gathered = dist.gather([(index[key], key, text) for key, text in preds.items()])
        preds = {key: text for _, key, text in sorted(gathered, key=lambda g: g[0])}
        prompt_tokens = int(dist.sum(torch.tensor([prompt_tokens])).item())
    seconds = time.perf_counter() - started
    golds = {e.id: e.target for e in examples}
    metrics = {
        "task": spec.official_name,
        "split": split,
        "method": method,
        "profile": "free-text" if free_text else "as stored",
        "authors": "all" if all_authors else ("held out" if split == "heldout" else "trained on"),
        "n": len(examples),
        **compute_metrics(dataset.task, preds, golds),
        "sec_per_example": seconds / len(examples),
        "prompt_tokens_mean": prompt_tokens / len(examples),
        "plug": engine.plug_metadata.task if method.startswith("pplug") else None,
        "k": k if method in RAG_METHODS else None,
        "decode": None if method in RATING_BASELINES else decode,
    }
    if not dist.is_main:
        return metrics
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "predictions.json", dataset.task, preds)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics
