"""Teacher-forced NLL of gold outputs under four conditions, and how much of the plug's gain is *personal*.

    none        the prompt alone, no plug
    no_history  the plug's instruction token only (P_u masked)
    shuffled    the plug (and, for pplug+bm25, the retrieved text) from *another* user's history, averaged
                over several derangements
    own         the plug with the user's own history (+ retrieved own items for pplug+bm25)

personal share = (NLL_shuffled − NLL_own) ÷ (NLL_none − NLL_own): the part of the gain over no plug that
depends on whose history the plug sees. Everything is aggregated per *user* (token-weighted mean NLL of
the user's targets), and intervals come from a bootstrap that resamples users, since one user's questions
are correlated.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..engine.engine import PersonaEngine
from ..engine.generation import Prompt, Row
from ..errors import PersonaDemoError
from .limits import PROMPT_TOKENS

CONDITIONS = ("none", "no_history", "shuffled", "own")
METHOD_CONDITION = {
    "none": "none",
    "pplug-no-history": "no_history",
    "pplug-shuffled": "shuffled",
    "pplug": "own",
    "pplug+bm25": "own",
    "bm25": "own",
    "pplug+texts": "own",
    "texts": "own",
}
"""Which condition's NLL is the headline `nll` of an `evaluate --metric nll --method M` run."""


@dataclass
class ScoringItem:
    """What one NLL evaluation needs of an example (RAG methods rebuild the prompt through `own_prompt`)."""

    user: str
    query: str
    history: list[str]
    target: str
    prompt: Prompt
    """The prompt for the `none` / `no_history` conditions."""


def prompt_fit(engine: PersonaEngine, limit: int = PROMPT_TOKENS) -> tuple[Callable[[str], int], int]:
    """(the LLM's token counter, limit): what `rag_prompt_builder(fit=...)` needs to keep the question in."""
    tokenizer = engine.llm.tokenizer
    return (lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])), limit


def scoring_row(
    engine: PersonaEngine,
    prompt: Prompt,
    target: str,
    soft: torch.Tensor | None = None,
    soft_mask: torch.Tensor | None = None,
    max_prompt_tokens: int = PROMPT_TOKENS,
    max_target_tokens: int = 64,
) -> Row:
    """A teacher-forcing row: the (cut) chat-templated prompt, then the (cut) target and EOS.

    Chat messages (the persona prompt) are kept whole: their builder bounds their length, and a cut from the
    right would take the question."""
    tokenizer = engine.llm.tokenizer
    if isinstance(prompt, str):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][:max_prompt_tokens]
        prompt_ids = engine.llm.prompt_ids(tokenizer.decode(ids))
    else:
        prompt_ids = engine.llm.prompt_ids(prompt)
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"][:max_target_tokens]
    return Row(prompt_ids, soft, soft_mask, target_ids + [engine.llm.eos_token_id])


def derangement(users: Sequence[str], seed: int) -> list[int]:
    """Index j(i) of another user's example for every i (seeded; best effort when one user dominates)."""
    rng = random.Random(seed)
    order = list(range(len(users)))
    for _ in range(200):
        rng.shuffle(order)
        if all(users[i] != users[j] for i, j in enumerate(order)):
            return order
    # Rare (one user owns most examples): swap each remaining clash with a position that removes it.
    for i in range(len(order)):
        j = order[i]
        if users[i] == users[j]:
            swap = next(
                (k for k in range(len(order)) if users[order[k]] != users[i] and users[j] != users[k]), None
            )
            if swap is not None:
                order[i], order[swap] = order[swap], order[i]
    return order


@torch.no_grad()
def score(
    engine: PersonaEngine,
    prompts: Sequence[Prompt],
    targets: Sequence[str],
    *,
    queries: Sequence[str] | None = None,
    histories: Sequence[Sequence[str]] | None = None,
    batch_size: int = 8,
    max_prompt_tokens: int = PROMPT_TOKENS,
    max_target_tokens: int = 64,
    desc: str = "scoring",
) -> tuple[np.ndarray, np.ndarray]:
    """Summed target NLL (nats) and target token counts per example; with `histories`, through the plug."""
    engine.plug.eval()
    sums, counts = np.zeros(len(prompts)), np.zeros(len(prompts))
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch", leave=False):
        chunk = range(start, min(start + batch_size, len(prompts)))
        out = None
        if histories is not None:
            assert queries is not None
            out = engine.plug_output([queries[i] for i in chunk], [histories[i] for i in chunk])
        rows = [
            scoring_row(
                engine,
                prompts[i],
                targets[i],
                None if out is None else out.soft_tokens[j],
                None if out is None else out.soft_mask[j],
                max_prompt_tokens,
                max_target_tokens,
            )
            for j, i in enumerate(chunk)
        ]
        nll, n = engine.llm.token_nll(rows)
        sums[start : start + len(rows)] = nll.float().cpu().numpy()
        counts[start : start + len(rows)] = n.cpu().numpy()
    return sums, counts


def per_user_nll(sums: np.ndarray, counts: np.ndarray, users: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Token-weighted mean NLL of each user's targets, users in first-seen order."""
    order = list(dict.fromkeys(users))
    index = {u: k for k, u in enumerate(order)}
    ids = np.array([index[u] for u in users])
    s = np.bincount(ids, weights=sums, minlength=len(order))
    c = np.bincount(ids, weights=counts, minlength=len(order))
    return order, s / np.maximum(c, 1)


def share(none: float, shuffled: float, own: float) -> float:
    """(shuffled − own) ÷ (none − own); nan when the plug gains nothing over no plug."""
    gain = none - own
    return (shuffled - own) / gain if gain > 0 else math.nan


def user_bootstrap(
    per_user: dict[str, np.ndarray],
    statistic: Callable[[dict[str, float]], float],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of `statistic(means of each condition)` over resampled *users*."""
    n = len(next(iter(per_user.values())))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    means = {k: v[idx].mean(axis=1) for k, v in per_user.items()}
    stats = np.array([statistic({k: float(m[r]) for k, m in means.items()}) for r in range(n_resamples)])
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(low), float(high)


def nll_report(
    engine: PersonaEngine,
    items: Sequence[ScoringItem],
    method: str,
    *,
    own_prompt: Callable[[int, int], Prompt] | None = None,
    shuffles: int = 3,
    batch_size: int = 8,
    max_prompt_tokens: int = PROMPT_TOKENS,
    max_target_tokens: int = 64,
    seed: int = 0,
    n_resamples: int = 1000,
) -> dict[str, object]:
    """Score `items` under the conditions `method` needs and summarise per user.

    `own_prompt(i, j)`: the prompt for example i built from example j's history (RAG methods); default: the
    plain prompt. For a plug method all four conditions are scored, so one run yields the personal share.
    """
    if method not in METHOD_CONDITION:
        raise PersonaDemoError(f"--metric nll supports {', '.join(METHOD_CONDITION)}, not {method!r}")
    if len({it.user for it in items}) < 2 and method != "none":
        raise PersonaDemoError("the shuffled-history control needs examples from at least two users")
    users = [it.user for it in items]
    targets = [it.target for it in items]
    queries = [it.query for it in items]
    plain = [it.prompt for it in items]
    build = own_prompt or (lambda i, _j: plain[i])
    kwargs = {
        "batch_size": batch_size,
        "max_prompt_tokens": max_prompt_tokens,
        "max_target_tokens": max_target_tokens,
    }
    raw: dict[str, np.ndarray] = {}
    raw["none"], counts = score(engine, plain, targets, desc="nll none", **kwargs)
    plugged = method.startswith("pplug")  # bm25: retrieved text only, no soft tokens
    if plugged:
        raw["no_history"], _ = score(
            engine,
            plain,
            targets,
            queries=queries,
            histories=[[] for _ in items],
            desc="nll no history",
            **kwargs,
        )
    if method != "none":
        own_prompts = [build(i, i) for i in range(len(items))]
        raw["own"], _ = score(
            engine,
            own_prompts,
            targets,
            queries=queries,
            histories=[it.history for it in items] if plugged else None,
            desc="nll own",
            **kwargs,
        )
        shuffled = np.zeros(len(items))
        for s in range(shuffles):
            other = derangement(users, seed + s)
            prompts = [build(i, other[i]) for i in range(len(items))]
            histories = [items[other[i]].history for i in range(len(items))]
            sums_s, _ = score(
                engine,
                prompts,
                targets,
                queries=queries,
                histories=histories if plugged else None,
                desc=f"nll shuffled {s + 1}",
                **kwargs,
            )
            shuffled += sums_s / shuffles
        raw["shuffled"] = shuffled
    per_user = {k: per_user_nll(v, counts, users)[1] for k, v in raw.items()}
    means = {k: float(v.mean()) for k, v in per_user.items()}
    headline = means[METHOD_CONDITION[method]]
    report: dict[str, object] = {
        "metric": "nll",
        "method": method,
        "n": len(items),
        "users": len(per_user["none"]),
        "target_tokens_mean": float(counts.mean()),
        "nll": headline,
        "ppl": math.exp(headline),
        **{f"nll_{k}": means[k] for k in CONDITIONS if k in means},
    }
    cond = METHOD_CONDITION[method]
    if cond != "none":
        report["vs_none"] = _diff_interval(per_user[cond], per_user["none"], n_resamples, seed)
        report["own_vs_shuffled"] = _diff_interval(per_user["own"], per_user["shuffled"], n_resamples, seed)
        report["personal_share"] = share(means["none"], means["shuffled"], means["own"])
        low, high = user_bootstrap(
            per_user, lambda m: share(m["none"], m["shuffled"], m["own"]), n_resamples, seed
        )
        report["personal_share_ci"] = [low, high]
    return report


def _diff_interval(a: np.ndarray, b: np.ndarray, n_resamples: int, seed: int) -> dict[str, float]:
    """Mean per-user difference a − b (negative = a is better) with its user-bootstrap interval."""
    low, high = user_bootstrap({"a": a, "b": b}, lambda m: m["a"] - m["b"], n_resamples, seed)
    return {"diff": float((a - b).mean()), "low": low, "high": high}
