"""LaMP's retrieval baselines: BM25 / recency ranking of a user's profile and the RAG prompt built from it.

Mirrors LaMP/prompts/prompts.py so our RAG baseline numbers are comparable with LaMP's: BM25 is rank_bm25's
BM25Okapi (k1=1.5, b=0.75, epsilon=0.25 idf floor) over case-sensitive whitespace tokens (`str.split()`,
no lower-casing — LaMP does none); recency sorts by the integer parts of `date`, newest first.
Ties (e.g. all-zero BM25 scores) go to the later profile item, which is what LaMP's
`np.argsort(scores)[::-1]` yields with a stable sort; we fix that order rather than inherit numpy's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from persona_demo.errors import PersonaDemoError
from persona_demo.tasks.lamp import LampExample, LampTask, get_task

Ranker = Literal["bm25", "recency"]
JOIN = ", and "


def bm25_scores(
    query: Sequence[str],
    corpus: Sequence[Sequence[str]],
    k1: float = 1.5,
    b: float = 0.75,
    epsilon: float = 0.25,
) -> list[float]:
    """Okapi BM25 score of each tokenized document for a tokenized query, as rank_bm25.BM25Okapi computes it.

    idf = ln(N - n + 0.5) - ln(n + 0.5); negative idfs are replaced by epsilon * mean idf (the ATIRE floor).
    """
    n_docs = len(corpus)
    if n_docs == 0:
        return []
    doc_freqs: list[dict[str, int]] = []
    doc_len = [len(doc) for doc in corpus]
    nd: dict[str, int] = {}
    for doc in corpus:
        freqs: dict[str, int] = {}
        for word in doc:
            freqs[word] = freqs.get(word, 0) + 1
        doc_freqs.append(freqs)
        for word in freqs:
            nd[word] = nd.get(word, 0) + 1
    avgdl = sum(doc_len) / n_docs
    if not nd or avgdl == 0:
        return [0.0] * n_docs
    idf: dict[str, float] = {}
    negative = []
    for word, freq in nd.items():
        idf[word] = math.log(n_docs - freq + 0.5) - math.log(freq + 0.5)
        if idf[word] < 0:
            negative.append(word)
    floor = epsilon * (sum(idf.values()) / len(idf))
    for word in negative:
        idf[word] = floor
    scores = [0.0] * n_docs
    for q in query:
        q_idf = idf.get(q, 0.0)
        for i, freqs in enumerate(doc_freqs):
            tf = freqs.get(q, 0)
            scores[i] += q_idf * (tf * (k1 + 1) / (tf + k1 * (1 - b + b * doc_len[i] / avgdl)))
    return scores


def extract_strings_between_quotes(text: str) -> list[str]:
    """LaMP's parser for LaMP-1 inputs: every "..." span, toggling on each double quote."""
    out, current, inside = [], [], False
    for ch in text:
        if ch == '"':
            if inside:
                out.append("".join(current))
                current = []
            inside = not inside
        elif inside:
            current.append(ch)
    return out


def bm25_query(task: int | str | LampTask, example: LampExample) -> str:
    """LaMP's BM25 query: the payload, except LaMP-1 where it is the two reference titles."""
    spec = get_task(task)
    if spec.number != 1:
        return example.query
    quoted = extract_strings_between_quotes(example.input)
    if len(quoted) < 3:
        raise PersonaDemoError(f"LaMP-1 input {example.id!r} does not quote a title and two references")
    return f"{quoted[1]} {quoted[2]}"


def _date_key(item: Mapping[str, Any]) -> tuple[int, ...]:
    """LaMP's recency key (integer parts of "YYYY-MM-DD"); a missing or odd date sorts as oldest."""
    try:
        return tuple(int(part) for part in str(item["date"]).split("-"))
    except (KeyError, ValueError):
        return ()


def rank_profile(
    task: int | str | LampTask, example: LampExample, ranker: Ranker = "bm25"
) -> list[dict[str, Any]]:
    """The whole profile, most relevant (bm25) or newest (recency) first."""
    profile = list(example.profile)
    if ranker == "recency":
        return sorted(profile, key=_date_key)[::-1]  # stable ascending, reversed: LaMP's order
    if ranker != "bm25":
        raise PersonaDemoError(f"unknown ranker {ranker!r} (use 'bm25' or 'recency')")
    spec = get_task(task)
    scores = bm25_scores(bm25_query(spec, example).split(), [spec.bm25_text(p).split() for p in profile])
    order = sorted(range(len(profile)), key=lambda i: (scores[i], i), reverse=True)
    return [profile[i] for i in order]


def retrieve(
    task: int | str | LampTask, example: LampExample, k: int, ranker: Ranker = "bm25"
) -> list[dict[str, Any]]:
    """Top-k profile items for the example."""
    if k < 0:
        raise PersonaDemoError(f"k must be >= 0, got {k}")
    return rank_profile(task, example, ranker)[:k]


def _truncate(text: str, budget: int, count: Callable[[str], int] | None) -> str:
    """Longest prefix of `text` within `budget`: characters, or whole words when a token counter is given."""
    if budget <= 0:
        return ""
    if count is None:
        return text[:budget]
    if count(text) <= budget:
        return text
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    lo, hi = 0, len(ends)  # invariant: prefix of `lo` words fits (0 words = "")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(text[: ends[mid - 1]]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[: ends[lo - 1]] if lo else ""


def fit_items(
    spec: LampTask,
    inp: str,
    items: Sequence[Mapping[str, Any]],
    max_length: int,
    tokenizer_len: Callable[[str], int] | None = None,
    input_factor: float = 0.6,
) -> str | None:
    """LaMP's budgeted RAG prompt, or None when an item's fixed frame does not fit its share.

    Budget (LaMP's scheme, units = characters or `tokenizer_len` tokens): items get
    max_length - min(len(input), input_factor * max_length), minus the glue and the ", and " joins,
    split evenly; each item's rag_field is cut to its share minus its fixed frame, and what an item
    leaves unused carries over to the next. The input itself is never cut.
    """
    count = tokenizer_len or len
    n = len(items)
    room = max_length - min(count(inp), int(input_factor * max_length))
    per_item = (room - count(spec.glue_text()) - (n - 1) * count(JOIN)) // n
    saved = 0
    rendered = []
    for item in items:
        needed = count(spec.render_item(item, text=""))
        budget = per_item + saved - needed
        if budget < 0:  # LaMP's tokenizer call fails here, and it retries with a smaller input share
            return None
        text = _truncate(spec.item_field(item, spec.rag_field), budget, tokenizer_len)
        saved += per_item - count(text) - needed
        rendered.append(spec.render_item(item, text=text))
    return spec.compose(rendered, inp)


def build_rag_prompt(
    task: int | str | LampTask,
    example: LampExample,
    k: int,
    ranker: Ranker = "bm25",
    tokenizer_len: Callable[[str], int] | None = None,
    max_length: int | None = None,
    input_factor: float = 0.6,
) -> str:
    """LaMP's retrieval-augmented prompt: top-k items rendered with the task template, joined by ", and ".

    Without `max_length` nothing is cut. With it, the items are truncated to LaMP's budget (see
    `fit_items`), counting characters or, when `tokenizer_len` is given, what it returns for a string
    (e.g. `lambda s: len(tok(s).input_ids)`). The prompt then fits max_length whenever the input fits its
    share (input_factor * max_length). As in LaMP, when an item's fixed frame does not fit, the input
    share is lowered by 0.1 until it does (the bare input is returned if it never does); the input itself
    is never cut, so a longer input gives a prompt over max_length, which LaMP leaves to the model
    tokenizer's truncation.
    """
    spec = get_task(task)
    items = retrieve(spec, example, k, ranker)
    if not items:
        return example.input
    if max_length is None:
        return spec.compose([spec.render_item(p) for p in items], example.input)
    factor = input_factor
    while factor >= 0:
        prompt = fit_items(spec, example.input, items, max_length, tokenizer_len, factor)
        if prompt is not None:
            return prompt
        factor = round(factor - 0.1, 10)
    return example.input


def rag_prompt_builder(
    task: int | str | LampTask,
    examples: Sequence[LampExample],
    k: int,
    ranker: Ranker = "bm25",
    fit: tuple[Callable[[str], int], int] | None = None,
) -> Callable[[int, int], str]:
    """prompt(i, j): example i's input with the top-k items of example j's profile — the user's own (j = i) or
    another user's (the shuffled controls), always ranked against example i's own query.

    `fit` = (token counter, limit): a prompt over the limit is rebuilt with LaMP's item budget (`fit_items`),
    so cutting it to the limit later (training, NLL scoring) takes retrieved text, not the question. Prompts
    within the limit are left exactly as they were."""

    def prompt(i: int, j: int) -> str:
        example = replace(examples[i], profile=examples[j].profile)
        full = build_rag_prompt(task, example, k, ranker)
        if fit is None or fit[0](full) <= fit[1]:
            return full
        return build_rag_prompt(task, example, k, ranker, tokenizer_len=fit[0], max_length=fit[1])

    return prompt
