"""Guards on a reply, applied per row while decoding.

`ReplyRepetitionPenalty`: the repetition penalty over each row's own reply.

`WordRunGuard`: a reply may borrow a person's words, never a whole run of them: no `n` words in a row of a
source text.

Token n-gram bans (`EchoGuard`) miss copies that differ only in case, punctuation or tokenization: with its
commas dropped, a persona's own text came back as the free-prompt reply almost word for word. This guard
compares *words* the way a reader does: lower-cased, punctuation dropped (`words`). Each step, for each
guarded row, it looks at the reply's last `n - 1` words; where they continue one of the sources, it bans
every token that would spell that source's next word (or start it), so the reply must leave the run.
Shorter common phrases ("I don't know what to") stay allowed; a text shorter than `n` words may not be
reproduced whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

WORD = re.compile(r"[a-z0-9']+")
"""A word as the guard (and the voice check) reads one: lower-case letters, digits and apostrophes."""

OPENING_WORDS = 3
"""A reply may not open with a persona text's first this many words."""
NEAR_COPY_MIN_RUN = 6
"""Runs at least this long (a persona's texts) also count with one word changed."""
ANY_WORD = "\x00"
"""Stands for any one word in a near-copy key (no real word holds it)."""

MIN_WHOLE_TEXT = 4
"""A text shorter than the run length may not be reproduced whole either, from this many words ("I love my
cat so much." came back as the free-prompt reply); a shorter one ("hello") may be said."""


def _any_at(before: tuple[str, ...], k: int) -> tuple[str, ...]:
    return (*before[:k], ANY_WORD, *before[k + 1 :])


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def longest_copied_run(reply: str, texts: Sequence[str]) -> int:
    """The longest run of the reply's words found in one of `texts` (what `WordRunGuard` bounds)."""
    rw, sources = words(reply), [words(t) for t in texts]
    for n in range(len(rw), 0, -1):
        grams = {tuple(rw[i : i + n]) for i in range(len(rw) - n + 1)}
        if any(tuple(h[j : j + n]) in grams for h in sources for j in range(len(h) - n + 1)):
            return n
    return 0


def _is_word_char(char: str) -> bool:
    return bool(WORD.fullmatch(char.lower()))


@dataclass(frozen=True)
class TokenPiece:
    """What one vocabulary token adds to a text, word-wise."""

    opens_word: bool
    """It starts with a separator (a space, punctuation), so its first word is a new word."""
    fragment: str
    """Its first word's letters (lower-cased); empty for a token of separators only."""
    closed: bool
    """A separator follows the fragment inside the token, so that word ends there."""


def token_pieces(tokenizer: PreTrainedTokenizerBase) -> dict[str, list[tuple[int, bool, bool]]]:
    """fragment → [(token id, opens_word, closed)] over the whole vocabulary, built once per tokenizer."""
    cached = getattr(tokenizer, "_persona_demo_pieces", None)
    if cached is not None:
        return cached
    table: dict[str, list[tuple[int, bool, bool]]] = {}
    for token_id in range(len(tokenizer)):
        piece = _piece(tokenizer.decode([token_id]))
        if piece.fragment:
            table.setdefault(piece.fragment, []).append((token_id, piece.opens_word, piece.closed))
    tokenizer._persona_demo_pieces = table  # type: ignore[attr-defined]
    return table


def _piece(text: str) -> TokenPiece:
    if not text:
        return TokenPiece(False, "", False)
    lowered = text.lower()
    opens = not _is_word_char(lowered[0])
    match = WORD.search(lowered)
    if match is None or (not opens and match.start() != 0):
        return TokenPiece(opens, "", False)
    return TokenPiece(opens, match.group(0), match.end() < len(lowered))


class WordRunGuard(LogitsProcessor):
    """Ban, per row, the tokens that would complete a copied run of words from that row's sources.

    `sources[row]` is that row's list of (text, run length, persona) triples (empty: the row is not guarded,
    e.g. the plain column and guidance's reference rows, which follow the guided row anyway). A text shorter
    than its run length may not be reproduced whole, from `MIN_WHOLE_TEXT` words. A persona's text (persona
    True) is guarded harder, since a 135M model shown short texts re-types them with one word changed ("new
    gpu finally arrived!!! 144fps on ultra, am never going outside again"): a run also counts with one of its
    words changed, and the reply may not open with the text's first `OPENING_WORDS` words."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, sources: Sequence[Sequence[tuple[str, int, bool]]]
    ) -> None:
        self.tokenizer = tokenizer
        self.pieces = token_pieces(tokenizer)
        self.next_words: list[dict[tuple[str, ...], set[str]]] = []
        """Per row: the words before a run's last word (one of them may be `ANY_WORD`) → words that may not
        follow them."""
        self.lengths: list[set[int]] = []
        """Per row: the run lengths its table holds."""
        self.openings: list[dict[tuple[str, ...], set[str]]] = []
        """Per row: a persona text's first words but the last → the word the reply may not open with next."""
        for texts in sources:
            table: dict[tuple[str, ...], set[str]] = {}
            openings: dict[tuple[str, ...], set[str]] = {}
            lengths: set[int] = set()
            for text, size, persona in texts:
                ws = words(text)
                if persona and len(ws) > OPENING_WORDS:
                    openings.setdefault(tuple(ws[: OPENING_WORDS - 1]), set()).add(ws[OPENING_WORDS - 1])
                run = min(size, len(ws))  # a whole short text is a run of its own
                if run < min(size, MIN_WHOLE_TEXT) or run < 2:
                    continue
                lengths.add(run)
                for start in range(len(ws) - run + 1):
                    before, last = tuple(ws[start : start + run - 1]), ws[start + run - 1]
                    table.setdefault(before, set()).add(last)
                    if persona and run >= NEAR_COPY_MIN_RUN:
                        for k in range(len(before)):
                            table.setdefault(_any_at(before, k), set()).add(last)
            self.next_words.append(table)
            self.lengths.append(lengths)
            self.openings.append(openings)

    def banned_tokens(self, reply: str, row: int) -> set[int]:
        """Tokens that, appended to `reply`, would make the reply end in a run of one of the row's sources (or
        open as a persona text opens)."""
        table, openings = self.next_words[row], self.openings[row]
        if not table and not openings:
            return set()
        ws = words(reply)
        in_word = bool(reply) and _is_word_char(reply[-1])
        banned: set[int] = set()
        for run in self.lengths[row]:
            # a token that opens a new word (or any token after a separator): the run is its n - 1 words before
            if len(ws) >= run - 1:
                for word in self._next(table, tuple(ws[len(ws) - run + 1 :])):
                    banned |= self._spelling(word, opens_only=in_word)
            # a token that continues the reply's unfinished last word: the run is ws[-n:-1] + that longer word
            if in_word and len(ws) >= run:
                banned |= self._continuing(ws[-1], self._next(table, tuple(ws[len(ws) - run : -1])))
        if len(ws) == OPENING_WORDS - 1:
            for word in openings.get(tuple(ws), ()):
                banned |= self._spelling(word, opens_only=in_word)
        if in_word and len(ws) == OPENING_WORDS:
            banned |= self._continuing(ws[-1], openings.get(tuple(ws[:-1]), ()))
        return banned

    @staticmethod
    def _next(table: dict[tuple[str, ...], set[str]], before: tuple[str, ...]) -> set[str]:
        """Words that may not follow `before`: exact runs, and runs with one word changed."""
        found = set(table.get(before, ()))
        for k in range(len(before)):
            found |= table.get(_any_at(before, k), set())
        return found

    def _continuing(self, current: str, banned_words: set[str]) -> set[int]:
        out: set[int] = set()
        for word in banned_words:
            if word.startswith(current) and len(word) > len(current):
                out |= self._spelling(word[len(current) :], continuing=True)
        return out

    def _spelling(self, word: str, *, opens_only: bool = False, continuing: bool = False) -> set[int]:
        """Tokens whose first fragment is `word`, or a prefix of it left open (it could still become `word`)."""
        out: set[int] = set()
        for end in range(1, len(word) + 1):
            prefix = word[:end]
            for token_id, opens, closed in self.pieces.get(prefix, ()):
                if continuing and opens or opens_only and not opens:
                    continue
                if end == len(word) or not closed:
                    out.add(token_id)
        return out

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = [row for row, table in enumerate(self.next_words) if table]
        if not rows:
            return scores
        scores = scores.clone()
        for row in rows:
            reply = self.tokenizer.decode(input_ids[row].tolist(), skip_special_tokens=True)
            banned = self.banned_tokens(reply, row)
            if banned:
                scores[row, sorted(banned)] = -math.inf
        return scores


class NoEarlyEnd(LogitsProcessor):
    """Forbid end-of-sequence in each row until its reply holds `min_words[row]` words (0: no rule).

    A persona of one short text ("hello") taught the model that a turn may be a word or none: with persona
    guidance, end-of-sequence won the first step and the chat showed an empty reply. Other rows (the plain
    column) are left alone."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, min_words: Sequence[int], eos_token_id: int
    ) -> None:
        self.tokenizer = tokenizer
        self.min_words = list(min_words)
        self.eos_token_id = eos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        short = [
            row
            for row, least in enumerate(self.min_words)
            if least
            and len(words(self.tokenizer.decode(input_ids[row].tolist(), skip_special_tokens=True))) < least
        ]
        if not short:
            return scores
        scores = scores.clone()
        scores[short, self.eos_token_id] = -math.inf
        return scores


class ReplyRepetitionPenalty(LogitsProcessor):
    """The repetition penalty (CTRL's: positive scores divided, negative multiplied) on the tokens each row has
    generated so far.

    transformers' own processor, given `inputs_embeds`, skips as many of a row's *generated* tokens as the row
    has left padding (it takes the pads for prompt tokens), so a short row beside the ~700-token persona prompt
    was never penalised: the plain column changed with the persona side's prompt length."""

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] == 0:
            return scores
        picked = scores.gather(1, input_ids)
        picked = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return scores.scatter(1, input_ids, picked)
