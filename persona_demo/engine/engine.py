"""PersonaEngine: the one object the CLI, the app, training, evaluation and the bench talk to.

It owns the frozen LLM, the frozen encoder (with its cache) and one plug, and turns
(prompt, persona history) into outputs with and without the plug.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import Settings
from ..errors import PersonaDemoError
from .cache import EmbeddingCache
from .checkpoint import PlugMetadata, load_plug, new_plug_metadata, untrained_plug
from .encoder import HistoryEncoder, QueryTokens
from .generation import FrozenLLM, GenerationOptions, Prompt, Row
from .models import LoadedEncoder, LoadedLLM, canonical_encoder_id, load_encoder, load_llm
from .plug import PersonaPlug, PlugConfig, PlugOutput, llm_token_norm

log = logging.getLogger(__name__)


PERSONA_REPLY_MIN_WORDS = 3
"""A persona's chat or free-prompt reply ends no sooner than this many words: it always says something."""


@dataclass
class Comparison:
    """Outputs for one prompt with and without the plug, plus why (attention over the history)."""

    with_plug: str
    without_plug: str
    weights: list[float]
    """Attention weight of each history item, in history order."""
    seconds: float = 0.0

    def top_items(self, history: Sequence[str], k: int = 5) -> list[tuple[float, str]]:
        ranked = sorted(zip(self.weights, history), key=lambda p: -p[0])
        return ranked[:k]


class PersonaEngine:
    """Frozen LLM + frozen history encoder + one PersonaPlug."""

    def __init__(
        self,
        llm: LoadedLLM,
        encoder: LoadedEncoder,
        plug: PersonaPlug | None = None,
        plug_metadata: PlugMetadata | None = None,
        cache: EmbeddingCache | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.loaded_llm = llm
        self.llm = FrozenLLM(llm)
        self.encoder = HistoryEncoder(
            encoder,
            cache,
            self.settings.encoder_batch_size,
            self.settings.encoder_max_length,
            self.settings.encoder_batch_tokens,
        )
        if plug is None:
            plug = untrained_plug(self.default_plug_config())
            plug_metadata = new_plug_metadata(plug, llm.model_id, encoder.encoder_id)
        self.plug = plug.to(llm.device)
        self.plug_metadata = plug_metadata or new_plug_metadata(plug, llm.model_id, encoder.encoder_id)

    @classmethod
    def from_settings(
        cls, settings: Settings, plug_path: str | Path | None = None, cache: EmbeddingCache | None = None
    ) -> PersonaEngine:
        llm = load_llm(settings)
        encoder = load_encoder(settings)
        engine = cls(llm, encoder, cache=cache, settings=settings)
        if plug_path is not None:
            engine.load_plug(plug_path)
        log.info(
            "LLM: %s; encoder: %s; plug: %s", llm.describe(), encoder.encoder_id, engine.plug_metadata.task
        )
        return engine

    # ----- plug management -----------------------------------------------------------------------------
    def default_plug_config(self, **overrides: object) -> PlugConfig:
        """Shapes for this LLM/encoder pair, with the soft-token scale measured on the LLM itself."""
        norm = llm_token_norm(self.llm.embedding, self.llm.vocab_size)
        values: dict[str, object] = {
            "encoder_dim": self.encoder.dim,
            "llm_dim": self.llm.hidden_size,
            "token_norm": round(norm, 6),
        }
        values.update(overrides)
        return PlugConfig.from_dict(values)

    def read_plug(self, path: str | Path) -> tuple[PersonaPlug, PlugMetadata]:
        """A plug checkpoint checked against this engine's LLM and encoder, on its device (not installed)."""
        plug, metadata = load_plug(
            path,
            llm_id=self.loaded_llm.model_id,
            llm_dim=self.llm.hidden_size,
            encoder_id=self.encoder.encoder_id,
            encoder_dim=self.encoder.dim,
            query_encoder=self.query_encoder_copy,
        )
        return plug.to(self.loaded_llm.device), metadata

    def query_encoder_copy(self) -> tuple[nn.Module, str]:
        """A trainable fp32 copy of the frozen encoder, and its pooling: the paper's input encoder starts as
        the history encoder. Reloaded in fp32 when it can be (the frozen one may run in bf16), so an untrained
        copy gives the frozen encoder's query vectors to float precision."""
        loaded = self.encoder.encoder
        if canonical_encoder_id(self.settings.encoder) == loaded.encoder_id:
            fresh = load_encoder(dataclasses.replace(self.settings, encoder_dtype="float32"))
            return fresh.model, loaded.pooling
        return copy.deepcopy(loaded.model).float(), loaded.pooling

    def load_plug(self, path: str | Path) -> PlugMetadata:
        self.plug, self.plug_metadata = self.read_plug(path)
        return self.plug_metadata

    # ----- the plug's inputs ---------------------------------------------------------------------------
    def history_tensor(self, histories: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and pad histories → (vectors [B, L, E], mask [B, L]); one encoder pass for all new texts."""
        flat = [t for h in histories for t in h]
        vectors = self.encoder.encode(flat)
        width = max([len(h) for h in histories] + [1])
        out = torch.zeros(len(histories), width, self.encoder.dim)
        mask = torch.zeros(len(histories), width, dtype=torch.long)
        start = 0
        for i, history in enumerate(histories):
            out[i, : len(history)] = vectors[start : start + len(history)]
            mask[i, : len(history)] = 1
            start += len(history)
        return out, mask

    def plug_output(
        self,
        queries: Sequence[str],
        histories: Sequence[Sequence[str]],
        strength: float = 1.0,
        history_vectors: tuple[torch.Tensor, torch.Tensor] | None = None,
        plug: PersonaPlug | None = None,
    ) -> PlugOutput:
        """Soft tokens for a batch of (query, history) pairs, from `plug` (default: the engine's own).

        Passing the plug per call lets one engine serve several task plugs from many threads without
        swapping `self.plug` under another request's feet.
        """
        history, mask = history_vectors if history_vectors is not None else self.history_tensor(histories)
        device = self.loaded_llm.device
        plug = self.plug if plug is None else plug
        if getattr(plug, "module", plug).config.query_encoder:  # (DDP wraps the plug as `.module`)
            query: torch.Tensor | QueryTokens = self.encoder.query_tokens(list(queries)).to(device)
        else:
            query = self.encoder.encode_queries(list(queries)).to(device)
        return plug(query, history.to(device), mask.to(device), strength=strength)

    def persona_vector(self, history: Sequence[str]) -> torch.Tensor:
        """Query-independent persona vector (for maps of the user space)."""
        clean = validate_history(history)
        return self.plug.persona_vector(self.encoder.encode(clean).to(self.loaded_llm.device)).cpu()

    # ----- generation ----------------------------------------------------------------------------------
    def rows(
        self,
        prompt: Prompt,
        history: Sequence[str],
        strength: float = 1.0,
        query: str | None = None,
        plug: PersonaPlug | None = None,
        plain_prompt: Prompt | None = None,
        soft_tokens: bool = True,
        reference_prompt: Prompt | None = None,
        avoid: Sequence[str] = (),
        persona_reply: bool = False,
        said_before: Sequence[str] = (),
    ) -> tuple[Row, Row, list[float]]:
        """(plugged row, plain row, attention weights) for one prompt and persona.

        `plain_prompt` lets the unpersonalized row follow its own conversation (chat side by side).
        `soft_tokens=False` leaves the plug's tokens out of the first row (its prompt alone: a user switching
        the plug off to see what the retrieved texts do by themselves); the weights are still computed.
        `reference_prompt`: the plugged request without the persona, for persona guidance (default: the
        plain row's prompt; a chat passes the persona's own thread without the persona context).
        `avoid`: texts neither reply may copy (`GenerationOptions.echo_ngram_size`).
        `persona_reply`: the plugged row speaks as the persona: it may not recite the history
        (`GenerationOptions.copy_word_run`) nor end before it says something (`PERSONA_REPLY_MIN_WORDS`), and
        it copies no `echo_ngram_size` words in a row of `avoid` or of `said_before` (its earlier replies in
        this chat: the second reply does not repeat the first).
        """
        clean = validate_history(history)
        ids = self.llm.prompt_ids(prompt)
        plain_ids = ids if plain_prompt is None else self.llm.prompt_ids(plain_prompt)
        with torch.no_grad():
            out = self.plug_output([query or prompt_text(prompt)], [clean], strength, plug=plug)
        plugged = Row(ids, out.soft_tokens[0], out.soft_mask[0]) if soft_tokens else Row(ids)
        plugged.reference_ids = (
            plain_ids if reference_prompt is None else self.llm.prompt_ids(reference_prompt)
        )
        plain = Row(plain_ids)
        plugged.avoid_ids = plain.avoid_ids = self.llm.echo_sources(avoid)
        if persona_reply:
            plugged.copy_sources = clean
            plugged.echo_texts = [*avoid, *said_before]
            plugged.min_words = PERSONA_REPLY_MIN_WORDS
        return plugged, plain, out.weights[0, : len(clean)].tolist()

    def compare(
        self,
        prompt: Prompt,
        history: Sequence[str],
        options: GenerationOptions | None = None,
        strength: float = 1.0,
        query: str | None = None,
    ) -> Comparison:
        """With and without the plug, in one batched generate call."""
        started = time.perf_counter()
        plugged, plain, weights = self.rows(prompt, history, strength, query)
        with_plug, without_plug = self.llm.generate([plugged, plain], options or self.default_options())
        return Comparison(with_plug, without_plug, weights, time.perf_counter() - started)

    def stream_compare(
        self,
        prompt: Prompt,
        history: Sequence[str],
        options: GenerationOptions | None = None,
        strength: float = 1.0,
        query: str | None = None,
        plug: PersonaPlug | None = None,
        plain_prompt: Prompt | None = None,
        soft_tokens: bool = True,
        reference_prompt: Prompt | None = None,
        avoid: Sequence[str] = (),
        persona_reply: bool = False,
        said_before: Sequence[str] = (),
    ) -> Iterator[Comparison]:
        """`compare`, yielding both texts after every generated token."""
        started = time.perf_counter()
        plugged, plain, weights = self.rows(
            prompt,
            history,
            strength,
            query,
            plug,
            plain_prompt,
            soft_tokens,
            reference_prompt,
            avoid,
            persona_reply,
            said_before,
        )
        for with_plug, without_plug in self.llm.stream([plugged, plain], options or self.default_options()):
            yield Comparison(with_plug, without_plug, weights, time.perf_counter() - started)

    def default_options(self) -> GenerationOptions:
        return GenerationOptions(max_new_tokens=self.settings.max_new_tokens)

    def describe(self) -> str:
        return (
            f"LLM {self.loaded_llm.describe()}; encoder {self.encoder.encoder_id}; "
            f"plug '{self.plug_metadata.task}' (τ={self.plug.config.tau}, {self.plug.config.aggregation}, "
            f"{self.plug.config.soft_tokens} soft tokens"
            f"{', own query encoder' if self.plug.config.query_encoder else ''})"
        )


def prompt_text(prompt: Prompt) -> str:
    """The text the plug attends with: the prompt, or the last user message of a chat."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else prompt[-1]["content"]


def validate_history(history: Sequence[str]) -> list[str]:
    """Non-empty texts only; an empty persona is refused with a message (the plug has nothing to read)."""
    if isinstance(history, str):
        raise PersonaDemoError("The history must be a list of texts, not one string.")
    clean = [t.strip() for t in history if isinstance(t, str) and t.strip()]
    if not clean:
        raise PersonaDemoError(
            "This persona has no history yet: add at least one text it wrote before generating with the plug."
        )
    return clean
