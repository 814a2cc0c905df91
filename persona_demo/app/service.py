"""StudioService: everything the studio does, as plain methods over the store and the engine.

No gradio here: the UI (`ui.py`) only wires widgets to these methods, so every action is unit-tested
without a browser. Errors a person caused raise `PersonaDemoError` with a message meant for them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.ingest import HistoryItem, split_note, split_text
from ..data.store import ImportResult, PersonaStore, PersonaSummary
from ..engine.checkpoint import PlugMetadata
from ..engine.engine import Comparison, PersonaEngine
from ..engine.generation import GenerationOptions
from ..engine.plug import PersonaPlug
from ..errors import PersonaDemoError
from ..tasks.labels import choose_label, label_log_probs
from ..tasks.persona_prompt import (
    Messages,
    PersonaPromptConfig,
    chosen_texts,
    not_to_echo,
    persona_messages,
    trained_prompt,
)
from .args import row_id
from .hybrid import hybrid_prompt, persona_history_texts
from .tasks import FREE_TASK, VOICE_PLUG, StudioTask, shipped_tasks

log = logging.getLogger(__name__)

ChatMessages = list[dict[str, str]]
Progress = Callable[[int, int], None]
"""progress(done, total), for gradio progress bars on long work."""


@dataclass(frozen=True)
class PersonaUpdate:
    """What one history edit did to the persona's embedding; `status` is shown to the user."""

    persona_id: int
    items: int
    new_texts_encoded: int
    milliseconds: float
    notes: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        text = (
            f"persona updated: {self.items} item{'s' if self.items != 1 else ''}, "
            f"{self.milliseconds:.0f} ms ({self.new_texts_encoded} new text"
            f"{'s' if self.new_texts_encoded != 1 else ''} encoded)"
        )
        return "; ".join([text, *self.notes])


@dataclass(frozen=True)
class PersonaParts:
    """Which parts of the persona the plugged side gets: a user switches each off to see what it adds."""

    soft_tokens: bool = True
    """The plug's soft tokens [I; P_u] in front of the prompt."""
    retrieved_texts: bool = True
    """The persona's most fitting texts, as text in the prompt (chat, free prompts, hybrid task plugs)."""

    def describe(self) -> str:
        on = [
            name
            for name, used in (("soft tokens", self.soft_tokens), ("own texts", self.retrieved_texts))
            if used
        ]
        return " + ".join(on) if on else "persona prompt only"


@dataclass(frozen=True)
class ChatWindow:
    """What the model reads in one chat turn: each side's newest turns that fit its context."""

    history: list[str]
    """The persona's texts (what the plug reads)."""
    chosen: list[str]
    """Those of its texts the persona prompt carries, best first (none with own texts off)."""
    persona_prompt: Messages
    """The persona side's thread under its persona prompt (the chosen texts as earlier turns)."""
    persona_thread: ChatMessages
    plain_thread: ChatMessages
    left_out: int
    """Older messages of the persona thread the model no longer reads (0 while everything fits)."""


@dataclass(frozen=True)
class LoadedTask:
    task: StudioTask
    plug: PersonaPlug
    metadata: PlugMetadata


@dataclass
class SpaceData:
    """Everything the embedding map needs: one vector per persona (+ optional extra points)."""

    ids: list[int]
    names: list[str]
    item_counts: list[int]
    samples: list[list[str]]
    vectors: np.ndarray
    item_vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    item_texts: list[str] = field(default_factory=list)
    without_items: int = 0
    """Personas left off the map because they have no history yet."""


class StudioService:
    """Persona CRUD, live persona embeddings, side-by-side generation and chat for one engine + store."""

    def __init__(self, engine: PersonaEngine, store: PersonaStore, plugs_dir: Path | None = None) -> None:
        self.engine = engine
        self.store = store
        self.tasks: dict[str, LoadedTask] = {}
        for task, path in shipped_tasks(plugs_dir or engine.settings.plugs_dir):
            try:
                plug, metadata = engine.read_plug(path)
            except PersonaDemoError as exc:  # a plug for another model: skip it, say so in the log
                log.warning("plug %s not offered: %s", path.name, exc)
                continue
            self.tasks[task.key] = LoadedTask(task, plug.eval(), metadata)
        # Free prompts and chat use the engine's own plug (--plug), else the persona-voice plug (trained for
        # open-ended writing), else the first shipped task plug. The voice plug is not a task of its own.
        voice = self.tasks.pop(VOICE_PLUG, None)
        if engine.plug_metadata.task == "untrained" and (voice or self.tasks):
            chosen = voice or next(iter(self.tasks.values()))
            engine.plug, engine.plug_metadata = chosen.plug, chosen.metadata
        self.tasks[FREE_TASK.key] = LoadedTask(FREE_TASK, engine.plug, engine.plug_metadata)

    # ----------------------------------------------------------------------------------------- status
    def describe(self) -> str:
        """One status line: what runs, and how good each plug measured on dev."""
        plugs = []
        for key, loaded in self.tasks.items():
            name = f"free prompt & chat: {loaded.metadata.task}" if key == FREE_TASK.key else key
            if (k := loaded.metadata.retrieval_k) and loaded.task.lamp_task:
                name += f" [plug + {k} retrieved item{'s' if k > 1 else ''}]"
            if key == FREE_TASK.key:
                name += f" [plug + the persona's {self.prompt_config().texts} most fitting texts]"
            shown = _shown_metrics(loaded.metadata)
            plugs.append(name + (f" ({shown})" if shown else ""))
        return f"{self.engine.describe()} · plugs: {'; '.join(plugs)}"

    def plain_status(self) -> str:
        """The status in plain words for a first visit: the model, and per plug what it was shown to do on
        people it never saw (markdown bullets; `describe` keeps the technical line)."""
        lines = [
            f"**Model:** {self.engine.loaded_llm.describe()}, frozen; the plugs are what personalizes it."
        ]
        for key, loaded in self.tasks.items():
            lines.append(f"- **{loaded.task.label}**: {self.task_note(key)}")
        return "\n".join(lines)

    def task_note(self, key: str) -> str:
        """What a task's output means and what its plug was shown to do, in a sentence or two."""
        loaded = self.task(key)
        personal = personal_on_unseen(loaded.metadata)
        if personal is not None:
            split, share, _ = personal
            who = "authors" if split == "heldout" else "bloggers"
            effect = (
                f"on {who} it never saw, {share:.0%} of what the plug adds is personal "
                "(it predicts their real text better with their own history than with someone else's)."
            )
        elif unseen_split(loaded.metadata) is None:
            effect = "not measured on people it never saw: treat any difference as task adaptation."
        else:
            effect = "on people it never saw it is not shown to be personal: it adapts the model to the task."
        if loaded.task.labels:
            effect = (
                "the answer is the star the model finds likeliest, with its probability for each star; "
                + effect
            )
        return effect

    def task_choices(self) -> list[tuple[str, str]]:
        return [(loaded.task.label, key) for key, loaded in self.tasks.items()]

    def task(self, key: str) -> LoadedTask:
        if key not in self.tasks:
            raise PersonaDemoError(f"Unknown task {key!r}; choose one of {', '.join(self.tasks)}.")
        return self.tasks[key]

    # --------------------------------------------------------------------------------------- personas
    def personas(self, search: str = "") -> list[PersonaSummary]:
        return self.store.list_personas(search or "")

    def persona(self, persona_id: int | None) -> PersonaSummary:
        """One persona's name and item count (the page's status lines)."""
        return self.store.get_persona(self._require(persona_id))

    def item_text(self, item_id: int | None) -> str:
        """A history item's text, for the edit box; "" when none is picked."""
        return "" if item_id is None else self.store.get_item(int(item_id)).text

    def persona_vector(self, persona_id: int | None) -> np.ndarray | None:
        """The persona's stored map embedding (None before the first text): the map's "moved from" marker."""
        if persona_id is None:
            return None
        return self.store.get_persona_vector(int(persona_id), self.embedding_id())

    def create_persona(self, name: str) -> int:
        return self.store.create_persona(name)

    def rename_persona(self, persona_id: int | None, name: str) -> None:
        self.store.rename_persona(self._require(persona_id), name)

    def duplicate_persona(self, persona_id: int | None) -> int:
        return self.store.duplicate_persona(self._require(persona_id))

    def delete_persona(self, persona_id: int | None) -> None:
        self.store.delete_persona(self._require(persona_id))

    def export_persona(self, persona_id: int | None, folder: Path) -> Path:
        """Write the persona as a JSON file (importable again) and return its path."""
        import json
        import re

        data = self.store.export_persona(self._require(persona_id))
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(data.get("name", "persona"))).strip("._") or "persona"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{safe[:60]}.json"
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        return path

    def import_file(self, path: str | Path, progress: Progress | None = None) -> ImportResult:
        """Import personas from an export, a LaMP file or blog-style JSONL (all or nothing)."""
        return self.store.ingest_upload(Path(path), Path(path).name, progress=progress)

    def history(self, persona_id: int | None) -> list[HistoryItem]:
        return self.store.list_items(self._require(persona_id))

    # ----------------------------------------------------------------------------- history + embedding
    def add_text(self, persona_id: int | None, text: str) -> PersonaUpdate:
        if not (text or "").strip():
            raise PersonaDemoError("Write some text first: an empty history item can't describe anyone.")
        pid = self._require(persona_id)
        started = time.perf_counter()
        before = self.store.get_persona(pid)
        old = self.persona_vector(pid)
        pieces = split_text(text, self.store.limits.max_chars)  # nothing typed is lost: a long text is split
        result = self.store.add_items(pid, pieces)
        notes = tuple(result.messages)
        if len(pieces) > 1:
            notes = (split_note(len(pieces)), *(m for m in notes if not m.startswith("Added")))
        if result.added == 1 and old is not None and before.item_count:
            return self._add_to_mean(pid, old, before.item_count, started, notes)
        return self.refresh_embedding(pid, notes=notes)

    def _add_to_mean(
        self, pid: int, old: np.ndarray, count: int, started: float, notes: tuple[str, ...]
    ) -> PersonaUpdate:
        """O(1) in the history size: mean' = (mean·n + v) / (n + 1); only the new text is read and encoded."""
        encoded_before = self.engine.encoder.texts_encoded
        (item,) = self.store.newest_items(pid, 1)
        vector = self.engine.encoder.encode([item.text])[0].numpy()
        mean = (np.asarray(old, dtype=np.float64) * count + vector) / (count + 1)
        revision = self.store.get_persona(pid).revision
        self.store.put_persona_vector(pid, self.embedding_id(), mean.astype(np.float32), revision=revision)
        elapsed = (time.perf_counter() - started) * 1000
        encoded = self.engine.encoder.texts_encoded - encoded_before
        return PersonaUpdate(pid, count + 1, encoded, elapsed, notes)

    def edit_item(self, persona_id: int | None, item_id: int | None, text: str) -> PersonaUpdate:
        if item_id is None:
            raise PersonaDemoError("Pick the history item to edit first.")
        if not (text or "").strip():
            raise PersonaDemoError("An item can't be empty; delete it instead.")
        self._require_own_item(persona_id, item_id)
        self.store.update_item(int(item_id), text)
        return self.refresh_embedding(persona_id)

    def delete_item(self, persona_id: int | None, item_id: int | None) -> PersonaUpdate:
        if item_id is None:
            raise PersonaDemoError("Pick the history item to delete first.")
        self._require_own_item(persona_id, item_id)
        self.store.delete_item(int(item_id))
        return self.refresh_embedding(persona_id)

    def upload(self, persona_id: int | None, path: str | Path) -> PersonaUpdate:
        """Add an uploaded file's texts (txt, md, csv, json, jsonl) to this persona."""
        result = self.store.ingest_upload(Path(path), Path(path).name, persona_id=self._require(persona_id))
        added = (
            f"added {result.items_added} item{'s' if result.items_added != 1 else ''} from {Path(path).name}"
        )
        if result.duplicates_skipped:
            added += f" ({result.duplicates_skipped} duplicates skipped)"
        extra = tuple(m for m in result.messages if not m.lower().startswith("imported"))
        return self.refresh_embedding(persona_id, notes=(added, *extra))

    def embedding_id(self) -> str:
        """Cache key of the map's persona embedding (it depends only on the encoder)."""
        return f"mean:{self.engine.encoder.encoder_id}"

    def refresh_embedding(self, persona_id: int | None, notes: tuple[str, ...] = ()) -> PersonaUpdate:
        """Recompute the persona embedding; only texts the encoder never saw are encoded."""
        pid = self._require(persona_id)
        started = time.perf_counter()
        before = self.engine.encoder.texts_encoded
        persona = self.store.get_persona(pid)
        texts = [item.text for item in self.store.list_items(pid)]
        if texts:
            vector = self.engine.encoder.encode(texts).mean(0).numpy()
            self.store.put_persona_vector(pid, self.embedding_id(), vector, revision=persona.revision)
        elapsed = (time.perf_counter() - started) * 1000
        return PersonaUpdate(pid, len(texts), self.engine.encoder.texts_encoded - before, elapsed, notes)

    def persona_embedding(self, persona_id: int) -> np.ndarray | None:
        """The stored embedding if current, else computed now (None for an empty persona)."""
        vector = self.store.get_persona_vector(persona_id, self.embedding_id())
        if vector is None:
            self.refresh_embedding(persona_id)
            vector = self.store.get_persona_vector(persona_id, self.embedding_id())
        return vector

    def space(
        self,
        current_id: int | None = None,
        with_items: bool = False,
        progress: Progress | None = None,
        plug_query: str | None = None,
    ) -> SpaceData:
        """Every non-empty persona's embedding (and the current persona's items if asked).

        With `plug_query`, each persona is its persona token P_u from the chat plug for that input: what the
        LLM receives, rather than the mean of its history vectors (items are then left out: they live in the
        encoder's space). After a big import this encodes thousands of texts once (minutes on a CPU):
        `progress(done, total)`."""
        ids, names, counts, samples, vectors = [], [], [], [], []
        summaries = self.store.list_personas()
        for done, summary in enumerate(summaries, 1):
            if progress is not None:
                progress(done, len(summaries))
            vector = self.persona_embedding(summary.id) if summary.item_count else None
            if vector is None:
                continue
            ids.append(summary.id)
            names.append(summary.name)
            counts.append(summary.item_count)
            samples.append([item.text for item in self.store.newest_items(summary.id, 2)])
            vectors.append(vector)
        data = SpaceData(ids, names, counts, samples, np.asarray(vectors, dtype=np.float32))
        data.without_items = len(summaries) - len(ids)
        if plug_query is not None and ids:
            data.vectors = self.persona_tokens(ids, plug_query)
            return data
        if with_items and current_id is not None and current_id in ids:
            texts = [item.text for item in self.store.list_items(current_id)]
            data.item_vectors = self.engine.encoder.encode(texts).numpy()
            data.item_texts = texts
        return data

    def persona_tokens(self, persona_ids: Sequence[int], query: str) -> np.ndarray:
        """Each persona's P_u (the first persona token) from the chat plug for `query`, in batches."""
        rows = []
        with torch.no_grad():
            for start in range(0, len(persona_ids), PLUG_MAP_BATCH):
                chunk = persona_ids[start : start + PLUG_MAP_BATCH]
                histories = [[item.text for item in self.history(pid)] for pid in chunk]
                out = self.engine.plug_output([query] * len(chunk), histories)
                rows.append(out.soft_tokens[:, 1].float().cpu().numpy())
        return np.concatenate(rows).astype(np.float32)

    # ------------------------------------------------------------------------------------- generation
    def _persona_items(self, persona_id: int | None) -> list[HistoryItem]:
        items = self.history(persona_id)
        if not items:
            raise PersonaDemoError(
                "This persona has no history yet: add at least one text it wrote, then generate."
            )
        return items

    def stream_compare(
        self,
        persona_id: int | None,
        task_key: str,
        user_input: str,
        options: GenerationOptions,
        strength: float = 1.0,
        parts: PersonaParts | None = None,
    ) -> Iterator[tuple[Comparison, list[str]]]:
        """Without/with the task's plug, one batched call, streamed; yields (comparison, history).

        A free prompt is answered in the persona prompt (see `persona_prompt`), with the parts in `parts`."""
        parts = parts or PersonaParts()
        if not (user_input or "").strip():
            raise PersonaDemoError("Type an input first.")
        loaded = self.task(task_key)
        items = self._persona_items(persona_id)
        texts = [item.text for item in items]
        if loaded.task.lamp_task:  # a task plug reads each item as training rendered it (text + title)
            texts = persona_history_texts(loaded.task.lamp_task, items)
        prompt = plain_prompt = loaded.task.prompt(user_input)
        k = loaded.metadata.retrieval_k
        if task_key == FREE_TASK.key:
            turn = [{"role": "user", "content": user_input.strip()}]
            prompt = self.persona_prompt(texts, turn, user_input.strip(), parts.retrieved_texts)
        else:  # guidance is for open-ended writing; a task plug answers in its trained format
            options = dataclasses.replace(options, persona_guidance=0.0)
        if k and loaded.task.lamp_task and parts.retrieved_texts:  # hybrid plug: + top-k items as text
            prompt = hybrid_prompt(loaded.task.lamp_task, plain_prompt, user_input.strip(), items, k)
        last = None
        with torch.no_grad():
            if loaded.task.labels:  # ratings: score the stars, as evaluate does, instead of parsing free text
                comparisons = self._label_comparison(
                    loaded, prompt, plain_prompt, texts, user_input, strength
                )
            else:
                comparisons = self.engine.stream_compare(
                    prompt,
                    texts,
                    options.validated(),
                    strength,
                    query=user_input.strip(),
                    plug=loaded.plug,
                    plain_prompt=plain_prompt,
                    soft_tokens=parts.soft_tokens,
                    avoid=not_to_echo(user_input) if task_key == FREE_TASK.key else (),
                    persona_reply=task_key == FREE_TASK.key,
                )
            for last in comparisons:
                yield last, texts
        if last is not None:
            self.store.log_generation(
                persona_id=persona_id,
                task=task_key,
                prompt=user_input,
                output_base=last.without_plug,
                output_personal=last.with_plug,
                settings={"max_new_tokens": options.max_new_tokens, "strength": strength},
            )

    def _label_comparison(
        self,
        loaded: LoadedTask,
        prompt: str,
        plain_prompt: str,
        texts: list[str],
        user_input: str,
        strength: float,
    ) -> Iterator[Comparison]:
        """Both columns as the chosen label and the distribution over the labels (one batched pass)."""
        started = time.perf_counter()
        plugged, _, weights = self.engine.rows(prompt, texts, strength, user_input.strip(), loaded.plug)
        labels, kind = loaded.task.labels, loaded.task.kind
        both = label_log_probs(
            self.engine,
            [prompt, plain_prompt],
            labels,
            [plugged.soft_tokens, None],
            [plugged.soft_mask, None],
        )
        with_plug, without_plug = both[:1], both[1:]

        def shown(log_probs: torch.Tensor) -> str:
            answer = choose_label(log_probs, labels, kind)[0]
            spread = " · ".join(f"{label}: {p:.0%}" for label, p in zip(labels, log_probs[0].exp().tolist()))
            return f"{answer}   ({spread})"

        yield Comparison(shown(with_plug), shown(without_plug), weights, time.perf_counter() - started)

    def stream_chat(
        self,
        persona_id: int | None,
        persona_chat: ChatMessages,
        plain_chat: ChatMessages,
        message: str,
        options: GenerationOptions,
        strength: float = 1.0,
        parts: PersonaParts | None = None,
        window: ChatWindow | None = None,
    ) -> Iterator[tuple[str, str]]:
        """One chat turn as the persona and, beside it, unpersonalized; each side keeps its own thread.

        The persona side is the paper's hybrid made for conversation: the plug's soft tokens plus the
        persona's most fitting texts in a persona prompt (`parts` switches either off). A thread longer than
        the model reads loses its oldest turns: `window`, from `chat_window` for these same arguments (the
        page checks it before it empties the message box), else worked out here."""
        parts = parts or PersonaParts()
        window = window or self.chat_window(persona_id, persona_chat, plain_chat, message, options, parts)
        with torch.no_grad():
            for result in self.engine.stream_compare(
                window.persona_prompt,
                window.history,
                options.validated(),
                strength,
                query=message.strip(),
                plain_prompt=window.plain_thread,
                soft_tokens=parts.soft_tokens,
                reference_prompt=window.persona_thread,
                avoid=not_to_echo(message),
                persona_reply=True,
                said_before=[m["content"] for m in window.persona_thread if m["role"] == "assistant"],
            ):
                yield result.with_plug, result.without_plug

    def chat_window(
        self,
        persona_id: int | None,
        persona_chat: ChatMessages,
        plain_chat: ChatMessages,
        message: str,
        options: GenerationOptions,
        parts: PersonaParts,
    ) -> ChatWindow:
        """The turns of each thread the model reads this turn: the newest that fit its context with the
        persona and the reply; a message that cannot fit even alone is refused (it stays in the box)."""
        if not (message or "").strip():
            raise PersonaDemoError("Type a message first.")
        texts = [item.text for item in self._persona_items(persona_id)]
        turn = {"role": "user", "content": message.strip()}
        chosen = self.prompt_texts(texts, message.strip()) if parts.retrieved_texts else []
        reply = options.max_new_tokens + options.sentence_room
        soft = self.engine.plug.config.soft_tokens if parts.soft_tokens else 0
        persona_thread = self._newest_that_fit(
            [*_clean_chat(persona_chat), turn],
            lambda thread: persona_messages(thread, chosen, self.prompt_config()),
            soft + reply,
        )
        plain_thread = self._newest_that_fit([*_clean_chat(plain_chat), turn], lambda thread: thread, reply)
        left_out = len(_clean_chat(persona_chat)) + 1 - len(persona_thread)
        prompt = persona_messages(persona_thread, chosen, self.prompt_config())
        return ChatWindow(texts, chosen, prompt, persona_thread, plain_thread, left_out)

    def _newest_that_fit(
        self, thread: ChatMessages, prompt: Callable[[ChatMessages], Messages], extra: int
    ) -> ChatMessages:
        limit = self.engine.llm.context_length
        if limit is None:
            return thread
        while True:
            needed = len(self.engine.llm.prompt_ids(prompt(thread))) + extra
            if needed <= limit:
                return thread
            if len(thread) == 1:
                raise PersonaDemoError(
                    f"That message is too long for the model: with the persona and the reply it needs "
                    f"{needed} tokens, and the model reads at most {limit}. Your message is still in the box: "
                    "shorten it, or send it in parts."
                )
            thread = thread[2:] if thread[0]["role"] == "user" and len(thread) > 2 else thread[1:]

    def persona_prompt(
        self, texts: list[str], conversation: ChatMessages, query: str, retrieved_texts: bool = True
    ) -> Messages:
        """The conversation under the persona's system message, with its texts that best fit `query`."""
        chosen = self.prompt_texts(texts, query) if retrieved_texts else []
        return persona_messages(conversation, chosen, self.prompt_config())

    def prompt_texts(self, texts: list[str], query: str) -> list[str]:
        """The persona's texts that go into the persona prompt for this message, best first."""
        encoder = self.engine.encoder
        query_vector = encoder.encode_queries([query])[0]
        return chosen_texts(texts, query_vector, encoder.encode(texts), self.prompt_config())

    def prompt_config(self) -> PersonaPromptConfig:
        """As many texts as the chat plug was trained with (`train --retrieval-k`), else the default."""
        metadata = self.tasks[FREE_TASK.key].metadata
        return trained_prompt(metadata.retrieval_k, metadata.words_per_text)

    def _require(self, persona_id: int | None) -> int:
        pid = row_id(persona_id)
        if pid is None:
            raise PersonaDemoError("Pick a persona first (or create one).")
        return pid

    def _require_own_item(self, persona_id: int | None, item_id: int) -> None:
        """An item id from one browser tab must never edit another persona's history."""
        if self.store.get_item(int(item_id)).persona_id != self._require(persona_id):
            raise PersonaDemoError(
                "That history item belongs to another persona; pick one of this persona's."
            )


PLUG_MAP_BATCH = 32
"""Personas per plug pass when the map shows plug space."""

STATUS_METRICS = {
    "dev_nll": "dev nll {:.3f}",
    "dev_rouge1": "dev rouge1 {:.3f}",
    "heldout_rouge1": "unseen authors rouge1 {:.3f}",
    "dev_mae": "dev mae {:.3f}",
    "dev_ppl": "dev ppl {:.1f}",
}
"""Plug metadata shown on the status line (recorded by `evaluate --record`), and how."""


def unseen_split(metadata: PlugMetadata) -> str | None:
    """The recorded split whose people the plug never saw: the held-out authors of a LaMP folder, or the dev
    bloggers of the persona-voice file (its users are split, so dev users are never trained on)."""
    if "heldout_personal_share" in metadata.metrics:
        return "heldout"
    return "dev" if metadata.task == VOICE_PLUG else None


def _shown_metrics(metadata: PlugMetadata) -> str:
    """A plug is called personal only when its personal share on people it never saw has an interval (users
    resampled) above zero; otherwise the line says it adapts to the task, whatever its dev estimate."""
    metrics = metadata.metrics
    shown = [
        fmt.format(metrics[k])
        for k, fmt in STATUS_METRICS.items()
        if isinstance(metrics.get(k), int | float) and math.isfinite(metrics[k])
    ]
    personal = personal_on_unseen(metadata)
    if personal is not None:
        _, share, (low, high) = personal
        shown.append(f"personal share on unseen people {share:.0%} [{low:.0%}, {high:.0%}]")
    elif unseen_split(metadata) is None and "dev_personal_share" in metrics:
        shown.append("not shown to be personal: never measured on people it did not see")
    elif unseen_split(metadata) is not None:
        shown.append("not shown to be personal: adapts to the task")
    return ", ".join(shown)


def personal_on_unseen(metadata: PlugMetadata) -> tuple[str, float, tuple[float, float]] | None:
    """(split, personal share, its interval) when the share on people the plug never saw has an interval
    above zero; None otherwise: only then does the studio call a plug personal."""
    split = unseen_split(metadata)
    if split is None:
        return None
    share, interval = (
        metadata.metrics.get(f"{split}_personal_share"),
        metadata.metrics.get(f"{split}_personal_share_ci"),
    )
    if not isinstance(share, int | float) or not _above_zero(interval):
        return None
    low, high = interval  # type: ignore[misc]
    return split, float(share), (float(low), float(high))


def _above_zero(interval: object) -> bool:
    return isinstance(interval, list | tuple) and len(interval) == 2 and interval[0] > 0


def _clean_chat(messages: Sequence[dict] | None) -> ChatMessages:
    """Gradio chat history → plain {role, content} text messages (drops anything else)."""
    out = []
    for m in messages or []:
        if not isinstance(m, dict):
            continue
        role, content = m.get("role"), m.get("content")
        if isinstance(content, list):  # gradio 6 may wrap text in [{"type": "text", "text": ...}]
            content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        if role in {"user", "assistant"} and isinstance(content, str) and content.strip():
            out.append({"role": role, "content": content})
    return out
