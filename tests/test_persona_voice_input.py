"""Chat as a persona with odd personas and messages: each gets a reply or a clear message, never a crash, a
loop, a recited persona text or the set-up. Real SmolLM2, MiniLM, the shipped voice plug and the studio's
default settings."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow

from persona_demo.app import args as page
from persona_demo.app.tasks import FREE_PROMPT
from persona_demo.engine.reply_guards import longest_copied_run, words
from persona_demo.errors import PersonaDemoError

SET_UP = re.compile(
    r"texts? below|word for word|own voice|personal blog|as a chatbot|as an ai", re.IGNORECASE
)

ODD_PERSONAS = {
    "one word": ["hello"],
    "another language": [
        "Hier soir je suis allée au marché avec ma sœur, on a acheté des fraises et du fromage.",
        "Le dimanche je lis des romans policiers dans le jardin quand il fait beau.",
    ],
    "one repeated line": ["I love my cat so much."] * 6,
}


def repeated_3grams(text: str) -> float:
    ws = words(text)
    grams = [tuple(ws[i : i + 3]) for i in range(len(ws) - 2)]
    return 0.0 if not grams else 1 - len(set(grams)) / len(grams)


def assert_a_sane_reply(reply: str, texts: list[str]) -> None:
    assert reply.strip(), "an empty reply"
    assert not SET_UP.search(reply), f"the reply talks about the set-up: {reply!r}"
    assert longest_copied_run(reply, texts) < 8, f"the reply recites a persona text: {reply!r}"
    assert repeated_3grams(reply) <= 0.2, f"the reply loops: {reply!r}"


@pytest.mark.parametrize("kind", sorted(ODD_PERSONAS))
def test_odd_personas_get_a_sane_reply_in_chat_and_free_prompt(studio_service, kind):
    texts = ODD_PERSONAS[kind]
    pid = studio_service.create_persona(kind)
    for text in texts:
        studio_service.add_text(pid, text)
    options = page.reply_defaults(48)
    *_, (persona, plain) = studio_service.stream_chat(
        pid, [], [], "What have you been up to lately?", options
    )
    assert_a_sane_reply(persona, texts)
    assert plain.strip()
    *_, (result, _) = studio_service.stream_compare(
        pid, FREE_PROMPT, "Write a short post about your week.", options
    )
    assert_a_sane_reply(result.with_plug, texts)


def test_an_emoji_message_gets_a_reply(studio_service):
    pid = studio_service.create_persona("Runner")
    texts = ["Ran 10k along the canal this morning, legs still sore.", "Trying a new pasta recipe tonight."]
    for text in texts:
        studio_service.add_text(pid, text)
    *_, (persona, _) = studio_service.stream_chat(pid, [], [], "🙂", page.reply_defaults(32))
    assert_a_sane_reply(persona, texts)


def test_an_empty_persona_gets_a_clear_message(studio_service):
    pid = studio_service.create_persona("Nobody yet")
    with pytest.raises(PersonaDemoError, match="no history yet"):
        list(studio_service.stream_chat(pid, [], [], "Hi!", page.reply_defaults(16)))


def test_the_second_reply_does_not_repeat_the_first(studio_service):
    """Asked twice, a persona says something new: no 4 words in a row of its earlier reply."""
    pid = studio_service.create_persona("Runner")
    texts = ["Ran 10k along the canal this morning, legs still sore.", "Trying a new pasta recipe tonight."]
    for text in texts:
        studio_service.add_text(pid, text)
    options = page.reply_defaults(32)
    message = "What have you been up to lately?"
    *_, (first, plain) = studio_service.stream_chat(pid, [], [], message, options)
    thread = [{"role": "user", "content": message}, {"role": "assistant", "content": first}]
    plain_thread = [{"role": "user", "content": message}, {"role": "assistant", "content": plain}]
    *_, (second, _) = studio_service.stream_chat(pid, thread, plain_thread, message, options)
    assert_a_sane_reply(second, texts)
    assert longest_copied_run(second, [first]) < 4, (first, second)
