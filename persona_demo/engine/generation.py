"""Soft-token injection into a frozen LLM: batched with/without generation, streaming, NLL scoring.

Rows are built as embeddings: `[I; P_u] ++ embed(prompt)` for a plugged row, `embed(prompt)` for a plain row.
Decoder-only rows are left-padded for generation (pads first, so every row ends at the same position) and
right-padded for teacher forcing; encoder-decoder rows feed the same embeddings to the encoder.
"""

from __future__ import annotations

import math
import queue
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import (
    DynamicCache,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from ..errors import PersonaDemoError
from .half_copies import generating
from .kv_cache import roomy_cache, zeros_with_room
from .models import LoadedLLM
from .reply_guards import NoEarlyEnd, ReplyRepetitionPenalty, WordRunGuard
from .sentence_end import FinishSentence

# Intended: with soft tokens the prompt goes in as embeddings, so the n-gram rule sees only the reply.
warnings.filterwarnings("ignore", message=r"Passing `no_repeat_ngram_size` with `inputs_embeds`")

Prompt = str | Sequence[dict[str, str]]
"""A plain prompt, or chat messages ({"role", "content"}) for models with a chat template."""


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings shared by every row of one batched call."""

    max_new_tokens: int = 48
    sentence_room: int = 0
    """After `max_new_tokens`, a row may go on for up to this many tokens until it ends a sentence
    (`sentence_end.FinishSentence`; 0 = stop at the limit wherever it falls)."""
    min_new_tokens: int = 0
    """Suppress end-of-sequence before this many tokens (the bench uses it to compare equal lengths)."""
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    repetition_penalty: float = 1.0
    """> 1 makes tokens already generated less likely (1 = off). With soft tokens the prompt is passed as
    embeddings, so only the reply's own tokens are penalised, never the persona's words in the prompt."""
    no_repeat_ngram_size: int = 0
    """Never generate the same n-gram of tokens twice in one reply (0 = off): a 135M model loops without it."""
    echo_ngram_size: int = 0
    """Never copy this many tokens in a row from a row's `avoid_ids` (0 = off): asked "Write a short post about
    your weekend." in a persona prompt, a 135M model often answers with that very sentence, or with the
    prompt's instruction line."""
    copy_word_run: int = 8
    """Never reproduce this many words in a row of a row's `copy_sources`, compared as lower-cased words
    without punctuation (`reply_guards.WordRunGuard`; 0 = off): a reply may borrow a person's words, not
    recite their texts."""
    persona_guidance: float = 0.0
    """> 0: rows with a `reference_ids` prompt (the same request without the persona) decode with
    log p(t | persona) + g · (log p(t | persona) − log p(t | reference)), context-aware decoding: what the
    persona changes is amplified g-fold (0 = off). Greedy decoding runs each reference as one more row of the
    batch; sampling runs it as its own single-row forward per token."""
    prefill_each_row: bool = True
    """Run each row's prompt through the model on its own before decoding the batch (`FrozenLLM.prefilled`),
    instead of padding every row to the longest prompt (False: the studio before; the bench's baseline)."""
    reference_in_batch: bool = True
    """Greedy guidance's reference as a row of the batch (False: its own forward per token, as sampling does
    and as the studio did before bf16; `bench` times it as the baseline of its chat_reply figure)."""

    def validated(self) -> GenerationOptions:
        if not 1 <= self.max_new_tokens <= 4096:
            raise PersonaDemoError("max new tokens must be between 1 and 4096")
        if not 0 <= self.sentence_room <= 256:
            raise PersonaDemoError("the room to finish a sentence must be from 0 (off) to 256 tokens")
        if self.do_sample and not 0 < self.temperature <= 5:
            raise PersonaDemoError("temperature must be above 0 and at most 5")
        if self.do_sample and not 0 < self.top_p <= 1:
            raise PersonaDemoError("top-p must be above 0 and at most 1")
        if not 1 <= self.repetition_penalty <= 2:
            raise PersonaDemoError("repetition penalty must be from 1 (off) to 2")
        if not 0 <= self.no_repeat_ngram_size <= 16:
            raise PersonaDemoError("no-repeat n-gram size must be from 0 (off) to 16")
        if self.echo_ngram_size == 1 or not 0 <= self.echo_ngram_size <= 16:
            raise PersonaDemoError("no-echo n-gram size must be 0 (off) or from 2 to 16")
        if self.copy_word_run == 1 or not 0 <= self.copy_word_run <= 64:
            raise PersonaDemoError("the copied-run guard must be 0 (off) or from 2 to 64 words")
        if not 0 <= self.persona_guidance <= 5:
            raise PersonaDemoError("persona guidance must be from 0 (off) to 5")
        return self


@dataclass
class Row:
    """One sequence of a batch: prompt token ids, optionally preceded by soft tokens."""

    prompt_ids: list[int]
    soft_tokens: torch.Tensor | None = None
    """[k, D] vectors placed before the prompt."""
    soft_mask: torch.Tensor | None = None
    """[k] 1/0: a 0 hides that soft position from attention (a persona with no history)."""
    target_ids: list[int] = field(default_factory=list)
    """Teacher-forced continuation (scoring/training only)."""
    reference_ids: list[int] | None = None
    """The same request without the persona (no soft tokens, no persona texts): what `persona_guidance`
    decodes against."""
    avoid_ids: list[list[int]] = field(default_factory=list)
    """Token sequences the reply must not copy `echo_ngram_size` tokens in a row from (see `echo_sources`)."""
    copy_sources: list[str] = field(default_factory=list)
    """Texts the reply must not reproduce `copy_word_run` words in a row of (the persona's own texts)."""
    echo_texts: list[str] = field(default_factory=list)
    """Texts the reply must not copy `echo_ngram_size` *words* in a row of, whatever their case and
    punctuation (the token-level `avoid_ids` miss "write a blog post" for "Write a blog post.")."""
    min_words: int = 0
    """End-of-sequence is forbidden until the reply holds this many words (a persona's reply says something)."""


class FrozenLLM:
    """The adapter between rows of (soft tokens, token ids) and a frozen Hugging Face model."""

    def __init__(self, llm: LoadedLLM) -> None:
        self.llm = llm
        self.model = llm.model
        self.tokenizer = llm.tokenizer
        self.embedding = self.model.get_input_embeddings()

    @property
    def hidden_size(self) -> int:
        return int(self.embedding.embedding_dim)

    @property
    def vocab_size(self) -> int:
        return int(self.embedding.num_embeddings)

    def count_tokens(self, text: str) -> int:
        """How many tokens the LLM's tokenizer makes of `text` (no special tokens)."""
        return len(self.tokenizer(text, add_special_tokens=False).input_ids) if text else 0

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def uses_chat_template(self) -> bool:
        return not self.llm.is_encoder_decoder and bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def context_length(self) -> int | None:
        """Positions the model accepts, or None when it has no hard limit (relative positions, e.g. T5)."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        return int(limit) if limit else None

    # ----- prompts ---------------------------------------------------------------------------------------
    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt, through the chat template when the model has one."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if not any(str(m.get("content", "")).strip() for m in messages):
            raise PersonaDemoError("The prompt is empty: type something for the model to answer.")
        if self.uses_chat_template:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return list(ids)
        text = "\n".join(str(m["content"]) for m in messages)
        return list(self.tokenizer(text)["input_ids"])

    def echo_sources(self, texts: Sequence[str]) -> list[list[int]]:
        """`texts` as token sequences for `Row.avoid_ids`, tokenized both at the start of a text and after a
        space, since a copied phrase may sit either way in the reply, and in lower case too (a persona with
        little to say opened "write a blog post" after the request "Write a blog post.")."""
        variants = {
            v for t in texts if t.strip() for c in {t.strip(), t.strip().lower()} for v in (c, " " + c)
        }
        return [self.tokenizer(v, add_special_tokens=False).input_ids for v in sorted(variants)]

    def check_fits(self, rows: Sequence[Row], max_new_tokens: int = 0) -> None:
        limit = self.context_length
        if limit is None:
            return
        longest = max(len(r.prompt_ids) + len(r.target_ids) + soft_len(r) for r in rows) + max_new_tokens
        if longest > limit:
            raise PersonaDemoError(
                f"The prompt is too long for this model: {longest} tokens with the persona and the answer, "
                f"but the model reads at most {limit}. Shorten the prompt or lower max new tokens."
            )

    # ----- batching ------------------------------------------------------------------------------------
    def _row_embeddings(self, row: Row, with_target: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ids = row.prompt_ids + (row.target_ids if with_target else [])
        token_emb = self.embedding(torch.tensor(ids, dtype=torch.long, device=self.llm.device))
        if row.soft_tokens is None:
            return token_emb, torch.ones(len(ids), dtype=torch.long, device=token_emb.device)
        soft = row.soft_tokens.to(device=token_emb.device, dtype=token_emb.dtype)
        soft_mask = row.soft_mask if row.soft_mask is not None else torch.ones(len(soft), dtype=torch.long)
        mask = torch.cat(
            [
                soft_mask.to(token_emb.device).long(),
                torch.ones(len(ids), dtype=torch.long, device=token_emb.device),
            ]
        )
        return torch.cat([soft, token_emb]), mask

    def batch(
        self, rows: Sequence[Row], *, left_pad: bool, with_target: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad rows into (inputs_embeds [B, T, D], attention_mask [B, T])."""
        parts = [self._row_embeddings(r, with_target) for r in rows]
        width = max(e.shape[0] for e, _ in parts)
        pad_vector = self.embedding(torch.tensor([self.pad_token_id], device=self.llm.device))[0]
        embeds, masks = [], []
        for emb, mask in parts:
            n = width - emb.shape[0]
            pad_emb = pad_vector.expand(n, -1)
            pad_mask = torch.zeros(n, dtype=torch.long, device=mask.device)
            embeds.append(torch.cat([pad_emb, emb] if left_pad else [emb, pad_emb]))
            masks.append(torch.cat([pad_mask, mask] if left_pad else [mask, pad_mask]))
        return torch.stack(embeds), torch.stack(masks)

    # ----- teacher forcing -----------------------------------------------------------------------------
    def logits(self, rows: Sequence[Row]) -> torch.Tensor:
        """Next-token logits [B, T, V] over right-padded rows (prompt and targets)."""
        self.check_fits(rows)
        embeds, mask = self.batch(rows, left_pad=False, with_target=True)
        if self.llm.is_encoder_decoder:
            raise PersonaDemoError(
                "logits() is for decoder-only models; use token_nll() for encoder-decoders"
            )
        return self.model(inputs_embeds=embeds, attention_mask=mask).logits

    def logits_at(self, rows: Sequence[Row], positions: Sequence[int]) -> torch.Tensor:
        """Next-token logits [B, V] at one position per row: the LM head runs only there.

        Label scoring reads one position per prompt; `logits` projects every position onto the 49k-token
        vocabulary and keeps a [B, T, 49k] tensor, all but one row of it unread."""
        self.check_fits(rows)
        if self.llm.is_encoder_decoder:
            raise PersonaDemoError(
                "logits_at() is for decoder-only models; use token_nll() for encoder-decoders"
            )
        hidden, _ = self._last_hidden(rows)
        picked = hidden[
            torch.arange(len(rows), device=hidden.device), torch.tensor(positions, device=hidden.device)
        ]
        return self.model.get_output_embeddings()(picked)

    def _last_hidden(self, rows: Sequence[Row]) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's last hidden states [B, T, H] over right-padded rows, before the LM head.

        Decoder-only LMs here compute logits = lm_head(hidden) (Llama, Qwen, Mistral, GPT-2 families), so
        callers can apply the head to the positions they read instead of to all B × T of them."""
        embeds, mask = self.batch(rows, left_pad=False, with_target=True)
        hidden = self.model.get_decoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return hidden, mask

    def token_nll(self, rows: Sequence[Row]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row summed NLL of the target tokens and their counts (differentiable w.r.t. soft tokens).

        Decoder-only: the LM head runs on the target positions only. A hybrid prompt has ~225 positions
        for ~18 target tokens; skipping the full [B, T, 49k] logits and their float copy made a training
        forward + backward 1.28x faster (6.87 → 5.48 s for 8 rows, bf16 autocast, 2 CPU threads)."""
        if any(not r.target_ids for r in rows):
            raise PersonaDemoError("Every scored example needs a non-empty target text.")
        self.check_fits(rows)
        if self.llm.is_encoder_decoder:
            enc_rows = [Row(r.prompt_ids, r.soft_tokens, r.soft_mask) for r in rows]
            embeds, mask = self.batch(enc_rows, left_pad=False)
            width = max(len(r.target_ids) for r in rows)
            labels = torch.full((len(rows), width), -100, dtype=torch.long, device=embeds.device)
            for i, r in enumerate(rows):
                labels[i, : len(r.target_ids)] = torch.tensor(r.target_ids)
            logits = self.model(inputs_embeds=embeds, attention_mask=mask, labels=labels).logits
            nll = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none"
            ).view(labels.shape)
        else:
            hidden, mask = self._last_hidden(rows)
            labels = torch.full(mask.shape, -100, dtype=torch.long, device=hidden.device)
            for i, r in enumerate(rows):
                start = soft_len(r) + len(r.prompt_ids)
                labels[i, start : start + len(r.target_ids)] = torch.tensor(r.target_ids)
            labels = labels[:, 1:]  # position t predicts token t + 1
            scored = labels != -100
            logits = self.model.get_output_embeddings()(hidden[:, :-1][scored])
            picked = F.cross_entropy(logits.float(), labels[scored], reduction="none")
            nll = torch.zeros(labels.shape, dtype=picked.dtype, device=picked.device).masked_scatter(
                scored, picked
            )
        counts = (labels != -100).sum(-1)
        return nll.sum(-1), counts

    # ----- generation ----------------------------------------------------------------------------------
    def generate(self, rows: Sequence[Row], options: GenerationOptions) -> list[str]:
        """All rows in ONE batched `generate` call; returns each row's decoded new text."""
        token_lists = self._generate_tokens(rows, options, streamer=None)
        return [self.decode(t) for t in token_lists]

    def stream(self, rows: Sequence[Row], options: GenerationOptions) -> Iterator[list[str]]:
        """Like `generate`, yielding every row's text so far after each decoding step.

        Closing the iterator (a Stop button, a client that left) ends the generation at the next step instead
        of letting it run to `max_new_tokens` for nobody."""
        streamer = _BatchStreamer(len(rows))
        stop = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                self._generate_tokens(rows, options, streamer=streamer, stop=stop)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer thread
                errors.append(exc)
            finally:
                streamer.end()

        worker = threading.Thread(target=run, daemon=True, name="persona-demo-generate")
        worker.start()
        try:
            for tokens in streamer:
                yield [self.decode(t) for t in tokens]
        finally:
            stop.set()
            worker.join()
        if errors:
            raise errors[0]

    def decode(self, tokens: Sequence[int]) -> str:
        """Text up to the first end-of-sequence token."""
        tokens = list(tokens)
        if self.eos_token_id in tokens:
            tokens = tokens[: tokens.index(self.eos_token_id)]
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()

    @torch.inference_mode()
    def _generate_tokens(
        self,
        rows: Sequence[Row],
        options: GenerationOptions,
        streamer: _BatchStreamer | None,
        stop: threading.Event | None = None,
    ) -> list[list[int]]:
        options = options.validated()
        budget = options.max_new_tokens + options.sentence_room
        self.check_fits(rows, budget)
        guided_rows = [
            i
            for i, r in enumerate(rows)
            if options.persona_guidance and r.reference_ids and not self.llm.is_encoder_decoder
        ]
        processors: list[LogitsProcessor] = []
        if options.repetition_penalty != 1:  # not generate's own: it skips the first tokens of padded rows
            processors.append(ReplyRepetitionPenalty(options.repetition_penalty))
        if options.echo_ngram_size and any(r.avoid_ids for r in rows):  # first: guidance sees the bans
            processors.append(EchoGuard([r.avoid_ids for r in rows], options.echo_ngram_size))
        sources = [word_runs(r, options) for r in rows]
        if any(sources):
            processors.append(WordRunGuard(self.tokenizer, sources))
        if any(r.min_words for r in rows):
            processors.append(NoEarlyEnd(self.tokenizer, [r.min_words for r in rows], self.eos_token_id))
        batch_rows = list(rows)
        if guided_rows and not options.do_sample and options.reference_in_batch:  # one more row each
            batch_rows += [Row(list(rows[i].reference_ids or [])) for i in guided_rows]
            processors += [
                ReferenceRowGuidance(i, len(rows) + n, options.persona_guidance)
                for n, i in enumerate(guided_rows)
            ]
        elif guided_rows:
            processors += [
                PersonaGuidance(self.model, i, list(rows[i].reference_ids or []), options.persona_guidance)
                for i in guided_rows
            ]
        embeds, mask = self.batch(batch_rows, left_pad=not self.llm.is_encoder_decoder)
        kwargs: dict[str, object] = {
            "max_new_tokens": budget,
            "do_sample": options.do_sample,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
        }
        if options.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = options.no_repeat_ngram_size
        if options.min_new_tokens:
            kwargs["min_new_tokens"] = min(options.min_new_tokens, options.max_new_tokens)
        if options.do_sample:
            kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=0)
            torch.manual_seed(options.seed)
        else:  # explicit, so a model's sampling defaults in generation_config never leak into greedy runs
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if processors:
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        criteria: list[StoppingCriteria] = [] if stop is None else [StopRequested(stop)]
        if options.sentence_room:
            criteria.append(
                FinishSentence(self.tokenizer, options.max_new_tokens, len(rows), self.eos_token_id)
            )
        if criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
        with generating():  # prompt and steps may read half-precision weight copies (half_copies.py)
            if not self.llm.is_encoder_decoder:  # a cache with room for the reply: steps do not copy it
                room = budget
                cache = self.prefilled(embeds, mask, room) if options.prefill_each_row else None
                kwargs["past_key_values"] = (
                    cache if cache is not None else roomy_cache(self.model.config, room)
                )
            out = self.model.generate(inputs_embeds=embeds, attention_mask=mask, streamer=streamer, **kwargs)
        if self.llm.is_encoder_decoder:
            out = out[:, 1:]  # drop the decoder start token
        return [row.tolist() for row in out[: len(rows)]]

    def prefilled(self, embeds: torch.Tensor, mask: torch.Tensor, room: int) -> DynamicCache | None:
        """The batch's key/value cache for every position but the last, each row run on its own and the results
        left-padded into one cache; None for a prompt of one position.

        A chat turn batches the persona prompt (up to ~700 tokens with 6 texts of 80 words) with two short rows
        (the plain reply, guidance's reference); padded to the longest, the prefill computes all three at the
        persona prompt's length, while alone the short rows cost almost nothing. `generate` then runs only the
        last position, with positions from the attention mask as before, so the replies are the same.
        Every row takes this path, a batch of one too: a row's prompt is then computed the same way whatever
        shares its batch, so the plain column is what the plain model says alone, whatever the persona side
        holds (a padded prefill rounded differently once the persona prompt got shorter)."""
        length = mask.shape[1] - 1
        starts = [int(row.nonzero()[0]) for row in mask]  # leading pads (and hidden soft positions) skipped
        if max(starts) >= length:
            return None
        buffers: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer, written row by row, room included
        for row, start in enumerate(starts):
            row_mask = mask[row : row + 1, start:length]
            out = self.model(
                inputs_embeds=embeds[row : row + 1, start:length],
                attention_mask=row_mask,
                position_ids=(row_mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True,
                logits_to_keep=1,
            )
            for n, layer in enumerate(out.past_key_values.layers):
                if n == len(buffers):
                    size = (len(starts), length + room)
                    buffers.append((zeros_with_room(layer.keys, *size), zeros_with_room(layer.values, *size)))
                buffers[n][0][row, ..., start:length, :] = layer.keys[0]
                buffers[n][1][row, ..., start:length, :] = layer.values[0]
        return roomy_cache(self.model.config, room, buffers, length)


class EchoGuard(LogitsProcessor):
    """Forbid each row's reply from copying `size` tokens in a row from that row's avoided sequences, or from
    opening the way one of them opens.

    `no_repeat_ngram_size` only looks at the reply itself: the prompt goes in as embeddings. This is the same
    rule against given text (the user's message, the persona prompt's instruction line). The opening rule
    exists because n-grams alone let "Write a short post about your weekend." come back as "Write a short
    story about yourself." Rows past the avoided rows (guidance's reference rows) are left alone; guidance
    forces them to the guided row's token anyway."""

    def __init__(self, avoided: Sequence[Sequence[Sequence[int]]], size: int) -> None:
        self.size = size
        self.next_banned: list[dict[tuple[int, ...], set[int]]] = []
        """Per row: the last `size` - 1 tokens (or the whole reply while shorter) → tokens that may not follow."""
        for sequences in avoided:
            table: dict[tuple[int, ...], set[int]] = {}
            for ids in sequences:
                for start in range(len(ids) - size + 1):
                    gram = tuple(ids[start : start + size])
                    table.setdefault(gram[:-1], set()).add(gram[-1])
                for length in range(min(size - 1, len(ids))):  # openings: (), (t0,), (t0, t1), ...
                    table.setdefault(tuple(ids[:length]), set()).add(ids[length])
            self.next_banned.append(table)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        context = min(input_ids.shape[1], self.size - 1)
        scores = scores.clone()
        for row, table in enumerate(self.next_banned):
            banned = table.get(tuple(input_ids[row, input_ids.shape[1] - context :].tolist()))
            if banned:
                scores[row, list(banned)] = -math.inf
        return scores


PLAUSIBILITY = 0.1
"""Persona guidance picks only among tokens with at least this share of the likeliest token's probability."""


def guided_scores(persona_logits: torch.Tensor, reference_logits: torch.Tensor, scale: float) -> torch.Tensor:
    """log p(t | persona) + g · (log p(t | persona) − log p(t | reference)) over the tokens the persona row
    finds plausible. Adaptive plausibility (Li et al. 2023): only tokens the persona row itself finds likely
    may win, so guidance re-ranks fluent continuations instead of promoting junk the reference dislikes."""
    persona = persona_logits.float().log_softmax(-1)
    reference = reference_logits.float().log_softmax(-1)
    guided = persona + scale * (persona - reference)
    return guided.masked_fill(persona < persona.max() + math.log(PLAUSIBILITY), -math.inf)


class PersonaGuidance(LogitsProcessor):
    """Context-aware decoding for one row of a batch (Shi et al. 2023; classifier-free guidance for LMs).

    The reference prompt (the request without the persona) runs beside the batch with its own KV cache and is
    fed the tokens the guided row generates, so both score the same continuation; only that row changes."""

    def __init__(self, model: torch.nn.Module, row: int, reference_ids: list[int], scale: float) -> None:
        self.model = model
        self.row = row
        self.scale = scale
        device = next(model.parameters()).device
        self.reference = torch.tensor([reference_ids], dtype=torch.long, device=device)
        self.cache: object | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[self.row : self.row + 1].to(self.reference.device)
        feed = torch.cat([self.reference, generated], dim=1) if self.cache is None else generated[:, -1:]
        out = self.model(input_ids=feed, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        reference = out.logits[0, -1].to(scores.device)
        scores = scores.clone()
        scores[self.row] = guided_scores(scores[self.row], reference, self.scale).to(scores.dtype)
        return scores


class ReferenceRowGuidance(LogitsProcessor):
    """Persona guidance for greedy decoding with the reference prompt as one more row of the same batch.

    Each step the guided row takes the argmax of the guided scores and the reference row is forced to that
    same token, so both score the same continuation, as in PersonaGuidance; but the reference costs no forward
    pass of its own: where bf16 batches rows almost for free, a guided 64-token chat turn on 2 CPU cores took
    5.1 s instead of 6.7 s (`bench --only chat_reply`). Both rows see the same repetition rules (the same
    generated tokens), so those cancel in the difference."""

    def __init__(self, row: int, reference_row: int, scale: float) -> None:
        self.row = row
        self.reference_row = reference_row
        self.scale = scale

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        guided = guided_scores(scores[self.row], scores[self.reference_row], self.scale)
        forced = torch.full_like(guided, -math.inf)
        forced[guided.argmax()] = 0.0
        scores = scores.clone()
        scores[self.row] = guided.to(scores.dtype)
        scores[self.reference_row] = forced.to(scores.dtype)
        return scores


def word_runs(row: Row, options: GenerationOptions) -> list[tuple[str, int, bool]]:
    """The row's (text, run length, persona) triples for `WordRunGuard`: its persona texts and its echo texts."""
    runs = [(t, options.copy_word_run, True) for t in row.copy_sources] if options.copy_word_run else []
    if options.echo_ngram_size:
        runs += [(t, options.echo_ngram_size, False) for t in row.echo_texts]
    return runs


class StopRequested(StoppingCriteria):
    """Ends every row of the batch once `event` is set (the consumer of `FrozenLLM.stream` went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def soft_len(row: Row) -> int:
    """Positions the row's soft tokens take in front of its prompt (0 without a plug)."""
    return 0 if row.soft_tokens is None else int(row.soft_tokens.shape[0])


class _BatchStreamer:
    """A `generate` streamer for batches: collects each step's tokens per row, yields snapshots."""

    _DONE = object()

    def __init__(self, batch_size: int) -> None:
        self.tokens: list[list[int]] = [[] for _ in range(batch_size)]
        self._queue: queue.Queue[object] = queue.Queue()
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:  # generate() first hands over the prompt ids (empty for inputs_embeds)
            self._seen_prompt = True
            return
        width = value.shape[-1] if value.dim() > 1 else 1
        step = value.reshape(-1, width)[
            : len(self.tokens)
        ]  # the rows asked for, not guidance's reference rows
        for row, new in zip(self.tokens, step.tolist()):
            row.extend(new)
        self._queue.put([list(r) for r in self.tokens])

    def end(self) -> None:
        self._queue.put(self._DONE)

    def __iter__(self) -> Iterator[list[list[int]]]:
        while (item := self._queue.get()) is not self._DONE:
            yield item  # type: ignore[misc]
