"""The persona prompt of chat and free prompts: which texts it picks, what the LLM reads, and the studio's
switches for each part. Real MiniLM and SmolLM2 throughout."""

from __future__ import annotations

import math

import torch

from persona_demo.engine.generation import PLAUSIBILITY, GenerationOptions, Row
from persona_demo.tasks.persona_prompt import (
    EARLIER_REQUESTS,
    PERSONA_SYSTEM,
    PersonaPromptConfig,
    cut_words,
    persona_messages,
    persona_prompt_builder,
    rank_texts,
)

BAKER = [
    "My sourdough starter finally doubled overnight; the crumb was open and glossy.",
    "Rye bread needs a wetter dough than I ever expected.",
    "Croissants again today: laminating butter in a warm kitchen is a battle.",
    "I cycled to the market for fresh flour this morning.",
]
CYCLIST = [
    "Climbed the pass in the rain; my legs are still shaking.",
    "New tubeless tyres: far fewer punctures on gravel.",
    "Group ride at dawn, fifty miles, coffee stop at the halfway village.",
]


def test_a_topical_message_picks_its_text_and_a_content_free_one_the_most_typical(engine):
    vectors = engine.encoder.encode(BAKER)
    topical = engine.encoder.encode_queries(["Which bike do you ride to the market?"])[0]
    assert rank_texts(topical, vectors)[0] == 3
    # A message that matches nothing (a zero query) gets the texts closest to the persona as a whole.
    typical = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.0, 1.0]]), dim=1)
    assert rank_texts(torch.zeros(2), typical)[2] == 2
    assert rank_texts(torch.tensor([0.0, 1.0]), typical)[0] == 2
    assert sorted(rank_texts(torch.zeros(2), typical)) == [0, 1, 2]


def test_messages_give_the_cut_texts_as_the_authors_earlier_turns():
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    long_text = " ".join(f"w{i}" for i in range(100))
    messages = persona_messages(
        turns, [long_text, "short one"], PersonaPromptConfig(texts=2, words_per_text=5)
    )
    assert messages[0] == {"role": "system", "content": PERSONA_SYSTEM}
    earlier = messages[1:5]
    assert [m["role"] for m in earlier] == ["user", "assistant", "user", "assistant"]
    assert all(m["content"] in EARLIER_REQUESTS for m in earlier[::2])  # requests carry no topic
    # the best-fitting text last, nearest the message; each cut to its words
    assert [m["content"] for m in earlier[1::2]] == ["short one", "w0 w1 w2 w3 w4 ..."]
    assert messages[5:] == turns
    assert PERSONA_SYSTEM == ""  # no instruction a small model could recite (and no default assistant line)
    assert persona_messages(turns, []) == [messages[0], *turns]  # texts switched off
    assert cut_words("  a\n b   c ", 2) == "a b ..."


def test_the_builder_reads_the_right_users_texts(engine):
    build = persona_prompt_builder(
        engine.encoder, ["Write a blog post.", "Tell me about your day."], [BAKER, CYCLIST]
    )
    own, other = build(0, 0), build(0, 1)
    assert own[-1] == {"role": "user", "content": "Write a blog post."}
    own_text = " ".join(m["content"] for m in own[:-1]).lower()
    other_text = " ".join(m["content"] for m in other[:-1])
    assert "sourdough" in own_text or "rye" in own_text
    assert not any(word in other_text for word in ("sourdough", "Rye", "Croissants"))
    assert build(1, 1)[-1]["content"] == "Tell me about your day."


def test_studio_chat_switches_each_part_off(studio_service):
    """With both parts off the persona column is the persona prompt alone, no texts, no soft tokens."""
    from persona_demo.app.service import PersonaParts

    pid = studio_service.create_persona("Baker")
    for text in BAKER:
        studio_service.add_text(pid, text)
    options = GenerationOptions(max_new_tokens=8)
    bare = PersonaParts(soft_tokens=False, retrieved_texts=False)
    *_, (persona_reply, _) = studio_service.stream_chat(
        pid, [], [], "What did you bake?", options, parts=bare
    )
    llm = studio_service.engine.llm
    messages = persona_messages([{"role": "user", "content": "What did you bake?"}], [])
    with torch.no_grad():
        (expected,) = llm.generate([Row(llm.prompt_ids(messages))], options)
    assert persona_reply == expected
    *_, (full_reply, _) = studio_service.stream_chat(pid, [], [], "What did you bake?", options)
    assert full_reply != persona_reply  # soft tokens and the baker's texts change the reply
    assert bare.describe() == "persona prompt only" and PersonaParts().describe() == "soft tokens + own texts"


def test_loop_stoppers_stop_loops(engine, bike_history):
    """No 3-token sequence twice in a reply with the studio's no-repeat setting (greedy 135M loops without)."""
    options = GenerationOptions(max_new_tokens=48, min_new_tokens=48, no_repeat_ngram_size=3)
    (reply,) = engine.llm._generate_tokens([Row(engine.llm.prompt_ids("Write a short post."))], options, None)
    grams = [tuple(reply[i : i + 3]) for i in range(len(reply) - 2)]
    assert len(grams) == len(set(grams))


def test_persona_guidance_decodes_against_the_reference_prompt(engine):
    """First token = argmax of (1 + g)·log p(·|persona) − g·log p(·|reference) over the tokens the persona
    row finds plausible, from two plain forward passes;
    a reference equal to the row's own prompt changes nothing; only the guided row of a batch changes."""
    llm = engine.llm
    persona = llm.prompt_ids(persona_messages([{"role": "user", "content": "Hi!"}], BAKER[:2]))
    reference = llm.prompt_ids("Hi!")
    g = 2.0
    with torch.no_grad():
        cond = llm.model(input_ids=torch.tensor([persona])).logits[0, -1].float().log_softmax(-1)
        uncond = llm.model(input_ids=torch.tensor([reference])).logits[0, -1].float().log_softmax(-1)
    guided = ((1 + g) * cond - g * uncond).masked_fill(cond < cond.max() + math.log(PLAUSIBILITY), -math.inf)
    expected_first = int(guided.argmax())
    options = GenerationOptions(max_new_tokens=6, persona_guidance=g)
    plain = GenerationOptions(max_new_tokens=6)
    tokens = llm._generate_tokens([Row(persona, reference_ids=reference), Row(reference)], options, None)
    assert tokens[0][0] == expected_first
    assert tokens[1] == llm._generate_tokens([Row(reference)], plain, None)[0]  # the plain row is untouched
    same = llm._generate_tokens([Row(persona, reference_ids=persona)], options, None)
    assert same == llm._generate_tokens([Row(persona)], plain, None)


def test_a_plug_is_read_in_the_persona_prompt_it_was_trained_on():
    from persona_demo.tasks.persona_prompt import DEFAULT_PROMPT, PersonaPromptConfig, trained_prompt

    assert trained_prompt(6, 80) == PersonaPromptConfig(6, 80)
    assert trained_prompt(6, None) == PersonaPromptConfig(6, DEFAULT_PROMPT.words_per_text)
    assert trained_prompt(0, 80) == DEFAULT_PROMPT  # a plug trained without texts: the studio's default


def test_the_nll_report_says_whose_questions_it_scored(tmp_path):
    from persona_demo.evaluation.evaluate_nll import authors_label

    blogs = tmp_path / "blogs.jsonl"
    blogs.write_text('{"user": "a", "posts": []}\n')
    assert authors_label(blogs, "dev", False) == "never trained on (dev bloggers)"
    assert authors_label(tmp_path, "dev", False) == "trained on"
    assert authors_label(tmp_path, "heldout", False) == "held out"
    assert authors_label(tmp_path, "dev", True) == "all"
