"""The persona prompt for chat and free prompts: the paper's hybrid (soft tokens + retrieved texts), made
for conversation.

A message like "What have you been up to?" says nothing about the person, so the plug's two soft tokens
alone leave a 135M model to invent a generic reply. The prompt therefore also carries the persona's few
texts that best match the message *and* the persona as a whole (cosine to the message plus cosine to the
history's centroid, so a content-free message still gets the person's most typical texts), each cut short.

The texts go in as the author's own earlier turns of the conversation (a content-free request, then the
text as the reply), not under a meta-instruction: asked to be "the person who wrote the texts below", a 135M
model recited that instruction ("You are the one that wrote texts below ...") and answered about the set-up;
shown earlier replies in a voice, it goes on in that voice. The voice plug is trained on exactly this prompt
with content-free instructions (`CONTENT_FREE_INSTRUCTIONS`), so topic, tone and vocabulary have to come
from the person, not from the instruction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..engine.encoder import HistoryEncoder
from .limits import PERSONA_TEXT_WORDS

Messages = list[dict[str, str]]

PERSONA_SYSTEM = ""
"""Empty on purpose: who is speaking comes from the earlier turns. Any line here is something a 135M model
recites when the persona gives it little to say ("You write a personal blog." came back as "you write a
personal log."); an empty system message also keeps the chat template from adding its default assistant
line."""

CONTENT_FREE_INSTRUCTIONS = (
    "Write a blog post.",
    "What have you been up to?",
    "Tell me about your day.",
    "What's on your mind?",
    "Write something for your blog.",
    "How are things going with you?",
    "Share a few thoughts from the last few days.",
    "Write a new post for your readers.",
)
"""Instructions that carry no topic: training on them makes the persona, not the prompt, carry the reply."""

EARLIER_REQUESTS = (
    "What's on your mind?",
    "How are things going with you?",
    "Tell me about your day.",
    "What have you been up to?",
    "Share a few thoughts from the last few days.",
)
"""The requests before the persona's texts in the prompt: conversational, so the texts read as the person's
replies. A request about blogs came back as the reply of a persona with little to say ("writing a blog post")."""


@dataclass(frozen=True)
class PersonaPromptConfig:
    """How many of the persona's texts go into the prompt, and how much of each."""

    texts: int = 3
    words_per_text: int = PERSONA_TEXT_WORDS
    """Each text is cut to this many words (`tasks.limits.PERSONA_TEXT_WORDS`)."""


DEFAULT_PROMPT = PersonaPromptConfig()


def trained_prompt(texts: int, words_per_text: int | None) -> PersonaPromptConfig:
    """The persona prompt a plug was trained on (`train --retrieval-k`, `--words-per-text`, read from its
    metadata), so chat, evaluation and the bench ask it what it learned to read; the default for a plug trained
    without texts."""
    if texts <= 0:
        return DEFAULT_PROMPT
    return PersonaPromptConfig(texts, words_per_text or DEFAULT_PROMPT.words_per_text)


def not_to_echo(message: str) -> tuple[str, ...]:
    """What a reply in the persona prompt must not copy (`GenerationOptions.echo_ngram_size`): the message
    itself and the requests of the earlier turns. Without the rule the voice plug answered "Write a short post
    about your weekend." with that sentence for most of the studio's seeded personas, and a persona with
    little to say answered an emoji with "write a blog post."."""
    return (message, *EARLIER_REQUESTS)


def rank_texts(query: torch.Tensor, items: torch.Tensor) -> list[int]:
    """Item indices, best first, by cos(item, query) + cos(item, centroid of all items).

    `query` [E] and `items` [N, E] are L2-normalised encoder vectors. The centroid term keeps a content-free
    message from picking texts at random: it then gets the persona's most typical texts."""
    centroid = torch.nn.functional.normalize(items.float().mean(0), dim=0)
    scores = items.float() @ query.float() + items.float() @ centroid
    return scores.argsort(descending=True).tolist()


def cut_words(text: str, words: int) -> str:
    parts = " ".join(text.split()).split(" ")
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def persona_messages(
    conversation: Sequence[dict[str, str]],
    texts: Sequence[str],
    config: PersonaPromptConfig = DEFAULT_PROMPT,
) -> Messages:
    """`conversation` (user/assistant turns) after the persona's system line and `texts` (already ranked and
    chosen, best first) as earlier turns of the same author, the best-fitting one last, nearest the message;
    with no texts, the system line alone (the soft tokens carry the person)."""
    earlier: Messages = []
    for n, text in enumerate(reversed(list(texts))):
        request = EARLIER_REQUESTS[n % len(EARLIER_REQUESTS)]
        earlier += [
            {"role": "user", "content": request},
            {"role": "assistant", "content": cut_words(text, config.words_per_text)},
        ]
    return [{"role": "system", "content": PERSONA_SYSTEM}, *earlier, *conversation]


def chosen_texts(
    history: Sequence[str],
    query_vector: torch.Tensor,
    item_vectors: torch.Tensor,
    config: PersonaPromptConfig = DEFAULT_PROMPT,
) -> list[str]:
    """The persona's `config.texts` texts for this message, best first."""
    if not history or config.texts <= 0:
        return []
    return [history[i] for i in rank_texts(query_vector, item_vectors)[: config.texts]]


def persona_prompt_builder(
    encoder: HistoryEncoder,
    instructions: Sequence[str],
    histories: Sequence[Sequence[str]],
    config: PersonaPromptConfig = DEFAULT_PROMPT,
) -> Callable[[int, int], Messages]:
    """`build(i, j)`: instruction i in the persona prompt made of history j's texts, chosen for instruction i
    exactly as the studio chooses them. j = i is the example's own persona; j ≠ i is another user's (the
    shuffled control of evaluation and the contrastive negative of training)."""
    queries = encoder.encode_queries(list(instructions))
    encoder.encode(
        sorted({t for h in histories for t in h})
    )  # one batched pass; `build` then reads the cache
    vectors: dict[int, torch.Tensor] = {}

    def build(i: int, j: int) -> Messages:
        if j not in vectors:
            vectors[j] = encoder.encode(list(histories[j]))
        texts = chosen_texts(histories[j], queries[i], vectors[j], config)
        return persona_messages([{"role": "user", "content": instructions[i]}], texts, config)

    return build
