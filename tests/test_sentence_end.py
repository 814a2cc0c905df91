"""Replies end at a sentence end, and a chat longer than the model reads keeps working. Real SmolLM2, MiniLM,
the shipped plugs and a real SQLite store."""

from __future__ import annotations

import dataclasses

import pytest

from persona_demo.app import args as page
from persona_demo.app.service import PersonaParts
from persona_demo.engine.generation import Row
from persona_demo.engine.sentence_end import ends_sentence
from persona_demo.errors import PersonaDemoError


@pytest.mark.parametrize(
    ("text", "ends"),
    [
        ("I baked bread.", True),
        ("Really?! ", True),
        ('She said "go home."', True),
        ("(that was fun!)", True),
        ("I think I'll", False),
        ("the 3.5", False),
        ("a list:\n", True),
        ("", False),
    ],
)
def test_what_ends_a_sentence(text, ends):
    assert ends_sentence(text) is ends


PROMPTS = [
    "Tell me about your favourite holiday.",
    "What do you think about cooking at home?",
    "Describe your morning routine.",
    "Why do people like dogs?",
]


def test_replies_end_at_a_sentence_end_instead_of_mid_word(engine):
    """The page's decoding with 16 new tokens: cut there, most replies stop mid-sentence ("the Lunar New");
    with the room to finish, every reply ends a sentence."""
    llm = engine.llm
    rows = [Row(llm.prompt_ids(p)) for p in PROMPTS]
    finishing = page.reply_defaults(16)
    cut = llm.generate(rows, dataclasses.replace(finishing, sentence_room=0))
    finished = llm.generate(rows, finishing)
    assert sum(not ends_sentence(t) for t in cut) >= 3, cut
    for short, whole in zip(cut, finished):
        assert whole.startswith(short)  # the same reply, carried on to its sentence end
    assert all(ends_sentence(t) for t in finished), finished


def test_a_row_alone_or_beside_others_finishes_the_same(engine):
    llm = engine.llm
    rows = [Row(llm.prompt_ids(p)) for p in PROMPTS]
    options = page.reply_defaults(12)
    together = llm.generate(rows, options)
    assert [llm.generate([row], options)[0] for row in rows] == together


@pytest.fixture
def writer(studio_service) -> int:
    pid = studio_service.create_persona("Long-winded")
    studio_service.add_text(pid, "I write long letters to my sister about the garden and the weather.")
    return pid


def long_turn(n: int) -> str:
    return " ".join(f"Line {n}.{k}: the garden, the rain and the roses again." for k in range(90))


@pytest.mark.slow
def test_a_chat_longer_than_the_model_reads_drops_its_oldest_turns(studio_service, writer):
    """About 1,100 tokens a turn: eight turns are more than SmolLM2's 8,192 positions. The newest turns that
    fit are read, the rest are counted as left out, and the reply still comes."""
    thread = []
    for n in range(8):
        thread += [{"role": "user", "content": long_turn(n)}, {"role": "assistant", "content": "Noted."}]
    options = dataclasses.replace(page.reply_defaults(4), sentence_room=0, persona_guidance=0.0)
    window = studio_service.chat_window(writer, thread, thread, "And now?", options, PersonaParts())
    assert window.left_out > 0 and window.left_out % 2 == 0
    assert window.persona_thread[-1]["content"] == "And now?"
    assert window.persona_thread == thread[window.left_out :] + [{"role": "user", "content": "And now?"}]
    llm = studio_service.engine.llm
    assert len(llm.prompt_ids(window.persona_prompt)) <= llm.context_length
    *_, (persona, plain) = studio_service.stream_chat(writer, thread, thread, "And now?", options)
    assert persona.strip() and plain.strip()


def test_a_message_too_long_for_the_model_is_refused_with_a_clear_message(studio_service, writer):
    message = " ".join(long_turn(n) for n in range(8))
    with pytest.raises(PersonaDemoError, match="too long for the model.*still in the box"):
        studio_service.chat_window(writer, [], [], message, page.reply_defaults(48), PersonaParts())
