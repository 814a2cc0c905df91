"""`evaluate --metric nll` (any LaMP folder) and the persona-voice task (per-user JSONL): metrics.json with
the four NLL conditions, perplexity, the personal share and user-level intervals (see nll.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..data.voice import TYPED_EVAL, is_voice_file, load_voice_split, typed_history
from ..engine.engine import PersonaEngine
from ..errors import PersonaDemoError
from ..tasks.limits import PERSONA_TEXT_WORDS
from ..tasks.nll import METHOD_CONDITION, ScoringItem, nll_report, prompt_fit
from ..tasks.persona_prompt import PersonaPromptConfig, persona_prompt_builder
from ..tasks.retrieval import rag_prompt_builder
from .collapse import split_persona_cosines
from .evaluate import gold_examples

VOICE_TASK = "persona-voice"
VOICE_METHODS = ("none", "pplug", "pplug-shuffled", "pplug-no-history", "pplug+texts", "texts")
"""`pplug+texts` is the studio's chat mode (soft tokens + the persona's K most fitting posts in the persona
prompt); `texts` is the same prompt without the plug; `pplug` the soft tokens with the bare instruction."""
PERSONA_PROMPT_METHODS = ("pplug+texts", "texts")


def lamp_items(
    data_dir: Path, split: str, limit: int, free_text: bool = False, all_authors: bool = False
) -> tuple[list, list[ScoringItem], int]:
    dataset, examples = gold_examples(data_dir, split, limit, free_text, all_authors)
    spec = dataset.spec
    items = [
        ScoringItem(e.user_id or e.id, e.query or e.input, spec.history_texts(e.profile), e.target, e.input)
        for e in examples
    ]
    return examples, items, dataset.task


def voice_items(path: Path, split: str, limit: int, typed: bool = False) -> list[ScoringItem]:
    """Each dev blogger's newest post after its earlier ones; `typed`: only what a person would type of them
    (`data.voice.TYPED_EVAL`)."""
    if split != "dev":
        raise PersonaDemoError("the persona-voice task has train and dev users; evaluate on --split dev")
    return [
        ScoringItem(
            e.user,
            e.prompt,
            typed_history(e.history, *TYPED_EVAL) if typed else e.history,
            e.target,
            e.prompt,
        )
        for e in load_voice_split(path, "dev", limit_users=limit)
    ]


def authors_label(data: Path, split: str, all_authors: bool) -> str:
    """Whose questions a split holds, for the report: a blog file's dev bloggers are never trained on; a LaMP
    folder's dev/test authors are the ones its plugs train on, unless `all_authors` or the held-out split."""
    if is_voice_file(data):
        return "never trained on (dev bloggers)"
    return "all" if all_authors else ("held out" if split == "heldout" else "trained on")


def evaluate_nll(
    engine: PersonaEngine,
    data: Path,
    split: str,
    method: str,
    out_dir: Path,
    *,
    k: int = 1,
    limit: int = 0,
    batch_size: int = 8,
    seed: int = 0,
    shuffles: int = 3,
    max_target_tokens: int = 64,
    free_text: bool = False,
    all_authors: bool = False,
    words_per_text: int = PERSONA_TEXT_WORDS,
) -> dict[str, object]:
    """Score one method (and the controls it needs) and write `out_dir/metrics.json`."""
    own_prompt = None
    if is_voice_file(data):
        if method not in VOICE_METHODS:
            raise PersonaDemoError(f"{VOICE_TASK} supports {', '.join(VOICE_METHODS)}, not {method!r}")
        items, task_name = voice_items(data, split, limit, typed=free_text), VOICE_TASK
        if method in PERSONA_PROMPT_METHODS:
            own_prompt = persona_prompt_builder(
                engine.encoder,
                [str(it.prompt) for it in items],
                [it.history for it in items],
                PersonaPromptConfig(k, words_per_text),
            )
    else:
        if method not in METHOD_CONDITION or method in PERSONA_PROMPT_METHODS:
            lamp = [m for m in METHOD_CONDITION if m not in PERSONA_PROMPT_METHODS]
            raise PersonaDemoError(f"--metric nll on LaMP supports {', '.join(lamp)}, not {method!r}")
        examples, items, task = lamp_items(data, split, limit, free_text, all_authors)
        task_name = Path(data).name
        if method in {"pplug+bm25", "bm25"}:
            own_prompt = rag_prompt_builder(task, examples, k, fit=prompt_fit(engine))

    started = time.perf_counter()
    report = nll_report(
        engine,
        items,
        method,
        own_prompt=own_prompt,
        shuffles=shuffles,
        batch_size=batch_size,
        seed=seed,
        max_target_tokens=max_target_tokens,
    )
    if method.startswith("pplug"):  # the collapse detector on the whole split (the cosine target)
        queries, histories = [it.query for it in items], [it.history for it in items]
        report |= split_persona_cosines(engine, queries, histories, [it.user for it in items])
    report = {
        "task": task_name,
        "split": split,
        "profile": ("typed" if is_voice_file(data) else "free-text") if free_text else "as stored",
        "authors": authors_label(data, split, all_authors),
        **report,
        "shuffles": shuffles if method != "none" else 0,
        "k": k if method in {"pplug+bm25", "bm25", *PERSONA_PROMPT_METHODS} else None,
        "words_per_text": words_per_text if method in PERSONA_PROMPT_METHODS else None,
        "plug": engine.plug_metadata.task if method.startswith("pplug") else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
