"""The studio's hybrid mode (the paper's PPlug + retrieval): the plug's soft tokens plus the persona's top-k
BM25 items as text, rendered with the LaMP template the plug was trained on.

Only the persona's own items are ranked, against what the user typed; the input itself is never an item.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data.ingest import HistoryItem
from ..tasks.lamp import LampExample, get_task
from ..tasks.retrieval import build_rag_prompt


def lamp_profile(items: Sequence[HistoryItem]) -> list[dict[str, Any]]:
    """Persona items as LaMP profile entries; missing titles or scores become empty strings."""
    profile = []
    for item in items:
        entry: dict[str, Any] = {k: v for k, v in item.fields.items() if isinstance(v, str | int | float)}
        entry.update(id=str(item.id), text=item.text, title=item.title or "", date=item.date or "")
        entry.setdefault("abstract", item.text)
        entry["score"] = "" if item.score is None else str(item.score)
        profile.append(entry)
    return profile


def persona_history_texts(lamp_task: int, items: Sequence[HistoryItem]) -> list[str]:
    """What a task plug reads from a persona: each item joined with its title as training joined it (LaMP-4:
    text + title), or its text alone when it has none (typed and uploaded items)."""
    return get_task(lamp_task).history_texts(lamp_profile(items))


def hybrid_prompt(lamp_task: int, prompt: str, user_input: str, items: Sequence[HistoryItem], k: int) -> str:
    """`prompt` with the persona's k items most similar to `user_input` (BM25) in front, LaMP style."""
    example = LampExample(
        id="studio", user_id=None, input=prompt, query=user_input, profile=lamp_profile(items)
    )
    return build_rag_prompt(get_task(lamp_task), example, k, "bm25")
