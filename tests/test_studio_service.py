"""The studio's service layer and map maths, without a browser (real models, real SQLite file)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from persona_demo.app.service import StudioService
from persona_demo.app.space import MapLayouts, attention_figure, map_csv, pca_2d, space_figure
from persona_demo.app.tasks import FREE_PROMPT, VOICE_PLUG, shipped_tasks
from persona_demo.engine.checkpoint import new_plug_metadata, save_plug
from persona_demo.engine.generation import GenerationOptions
from persona_demo.errors import PersonaDemoError

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def test_shipped_plugs_become_tasks_plus_a_free_prompt(studio_service, settings):
    keys = [key for _, key in studio_service.task_choices()]
    assert keys[-1] == FREE_PROMPT
    shipped = [task.key for task, _ in shipped_tasks(settings.plugs_dir) if task.key != VOICE_PLUG]
    assert keys[:-1] == shipped
    assert "huffpost_headline" in keys
    # The free prompt uses a trained plug (the persona-voice one when shipped), not the untrained placeholder.
    expected = VOICE_PLUG if (settings.plugs_dir / f"{VOICE_PLUG}.safetensors").is_file() else keys[0]
    assert studio_service.engine.plug_metadata.task == expected


def test_free_prompt_and_chat_default_to_the_persona_voice_plug(engine, studio_store, tmp_path):
    """With a persona-voice plug among the shipped ones, it drives free prompts and chat, and is no task."""
    plugs = tmp_path / "plugs"
    plugs.mkdir()
    shares = {
        "huffpost_headline": {"heldout_personal_share": 0.125, "heldout_personal_share_ci": [-0.01, 0.2]},
        "acl_title": {"dev_personal_share": 0.125, "dev_personal_share_ci": [0.05, 0.2]},
        VOICE_PLUG: {"dev_personal_share": 0.125, "dev_personal_share_ci": [0.05, 0.2]},
    }
    for name, share in shares.items():
        metadata = new_plug_metadata(engine.plug, engine.loaded_llm.model_id, engine.encoder.encoder_id)
        metadata.task = name
        metadata.metrics = {"dev_ppl": 41.5, **share}
        save_plug(plugs / f"{name}.safetensors", engine.plug, metadata)
    service = StudioService(engine, studio_store, plugs)
    assert [key for _, key in service.task_choices()] == ["huffpost_headline", "acl_title", FREE_PROMPT]
    assert service.task(FREE_PROMPT).metadata.task == VOICE_PLUG
    assert engine.plug_metadata.task == VOICE_PLUG  # chat uses the engine's plug
    described = service.describe()
    assert (  # the voice file's dev bloggers are never trained on
        "persona_voice [plug + the persona's 3 most fitting texts] (dev ppl 41.5, "
        "personal share on unseen people 12% [5%, 20%])" in described
    )
    # an interval on the held-out authors that reaches zero is not called personal
    assert "huffpost_headline (dev ppl 41.5, not shown to be personal: adapts to the task)" in described
    # nor is a dev figure for authors the plug was trained on
    assert "acl_title (dev ppl 41.5, not shown to be personal: never measured on people it did not see)" in (
        described
    )
    # the same verdicts in plain words, for a first visit
    plain = service.plain_status()
    assert "12% of what the plug adds is personal" in service.task_note(FREE_PROMPT)
    assert "not shown to be personal" in service.task_note("huffpost_headline")
    assert "not measured on people it never saw" in service.task_note("acl_title")
    assert plain.count("\n- **") == 3 and "frozen" in plain


def test_adding_a_text_encodes_only_that_text(studio_service):
    pid = studio_service.create_persona("Ada")
    first = studio_service.add_text(pid, "I write compilers for fun.")
    assert (first.items, first.new_texts_encoded) == (1, 1)
    second = studio_service.add_text(pid, "Garbage collectors keep me up at night.")
    assert (second.items, second.new_texts_encoded) == (2, 1)
    assert second.status.startswith("persona updated: 2 items, ")
    vector = studio_service.store.get_persona_vector(pid, studio_service.embedding_id())
    expected = studio_service.engine.encoder.encode(
        ["I write compilers for fun.", "Garbage collectors keep me up at night."]
    ).mean(0)
    np.testing.assert_allclose(vector, expected.numpy(), atol=1e-6)


def test_edit_and_delete_items_move_the_embedding(studio_service):
    pid = studio_service.create_persona("Bo")
    studio_service.add_text(pid, "Sourdough every Sunday.")
    studio_service.add_text(pid, "Rye starter, 80% hydration.")
    before = studio_service.persona_embedding(pid).copy()
    item = studio_service.history(pid)[1]
    edited = studio_service.edit_item(pid, item.id, "Marathon training, week 6.")
    assert edited.items == 2 and edited.new_texts_encoded == 1
    assert not np.allclose(before, studio_service.persona_embedding(pid))
    deleted = studio_service.delete_item(pid, item.id)
    assert deleted.items == 1 and deleted.new_texts_encoded == 0
    assert [i.text for i in studio_service.history(pid)] == ["Sourdough every Sunday."]


def test_upload_adds_texts_and_bad_upload_changes_nothing(studio_service, tmp_path):
    pid = studio_service.create_persona("Cy")
    good = tmp_path / "posts.txt"
    good.write_text("First post about trains.\n\nSecond post about timetables.\n", encoding="utf-8")
    update = studio_service.upload(pid, good)
    assert update.items == 2
    bad = tmp_path / "broken.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(PersonaDemoError):
        studio_service.upload(pid, bad)
    assert len(studio_service.history(pid)) == 2


def test_persona_crud_export_and_reimport(studio_service, tmp_path):
    pid = studio_service.create_persona("Dana")
    studio_service.add_text(pid, "Notes from the climbing gym.")
    studio_service.rename_persona(pid, "Dana the climber")
    copy = studio_service.duplicate_persona(pid)
    assert studio_service.store.get_persona(copy).item_count == 1
    exported = studio_service.export_persona(pid, tmp_path / "out")
    assert json.loads(exported.read_text(encoding="utf-8"))["name"] == "Dana the climber"
    studio_service.delete_persona(pid)
    assert studio_service.personas("Dana the climber") == [] or all(
        p.id != pid for p in studio_service.personas("Dana")
    )
    result = studio_service.import_file(exported)
    assert result.personas_added == 1
    assert [p.name for p in studio_service.personas("climber")].count("Dana the climber") == 1


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda s: s.add_text(None, "x"), "Pick a persona"),
        (lambda s: s.add_text(1, "   "), "empty history item"),
        (lambda s: s.create_persona(""), "name"),
        (lambda s: s.edit_item(1, None, "x"), "Pick the history item"),
        (lambda s: s.task("nope"), "Unknown task"),
    ],
)
def test_bad_input_gets_a_message(studio_service, action, message):
    with pytest.raises(PersonaDemoError, match=message):
        action(studio_service)


def test_compare_streams_both_columns_and_logs_them(studio_service):
    pid = studio_service.personas("botanist")[0].id
    options = GenerationOptions(max_new_tokens=8)
    steps = list(
        studio_service.stream_compare(pid, "huffpost_headline", "Rare orchid found in a car park.", options)
    )
    result, texts = steps[-1]
    assert len(steps) > 1 and result.with_plug and result.without_plug
    assert len(result.weights) == len(texts) == studio_service.store.get_persona(pid).item_count
    assert studio_service.store.list_generations(pid)[0].output_personal == result.with_plug


def test_compare_refuses_an_empty_persona(studio_service):
    pid = studio_service.create_persona("Empty")
    with pytest.raises(PersonaDemoError, match="no history"):
        list(studio_service.stream_compare(pid, FREE_PROMPT, "Hello", GenerationOptions(max_new_tokens=4)))


def test_chat_keeps_two_threads(studio_service):
    pid = studio_service.personas("pastry")[0].id
    options = GenerationOptions(max_new_tokens=6)
    *_, (persona_reply, plain_reply) = studio_service.stream_chat(pid, [], [], "What did you bake?", options)
    assert persona_reply and plain_reply
    persona_chat = [
        {"role": "user", "content": "What did you bake?"},
        {"role": "assistant", "content": persona_reply},
    ]
    plain_chat = [
        {"role": "user", "content": "What did you bake?"},
        {"role": "assistant", "content": plain_reply},
    ]
    *_, (second, _) = studio_service.stream_chat(pid, persona_chat, plain_chat, "And tomorrow?", options)
    assert second


def test_space_has_every_non_empty_persona(studio_service):
    empty = studio_service.create_persona(HOSTILE)
    data = studio_service.space(current_id=1, with_items=True)
    assert empty not in data.ids
    assert len(data.ids) == len([p for p in studio_service.personas() if p.item_count])
    assert (
        data.item_vectors.shape[0] == len(data.item_texts) == studio_service.store.get_persona(1).item_count
    )


def test_pca_is_centred_and_sign_stable():
    x = np.random.default_rng(0).normal(size=(10, 6))
    a, b = pca_2d(x), pca_2d(x * 1.0)
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a.mean(0), 0, atol=1e-9)
    assert pca_2d(x[:1]).shape == (1, 2) and pca_2d(np.zeros((0, 6))).shape == (0, 2)


def test_figures_escape_user_text(studio_service):
    pid = studio_service.create_persona(HOSTILE)
    studio_service.add_text(pid, HOSTILE)
    data = studio_service.space(current_id=pid)
    fig = space_figure(data, "pca", current_id=pid, previous=data.vectors[0])
    dumped = fig.to_json()
    assert "<script>" not in dumped and "<img" not in dumped
    assert "this persona" in dumped and "previous position" in dumped
    assert "<script>" not in attention_figure([(0.7, HOSTILE)]).to_json()


@pytest.mark.parametrize("method", ["pca", "umap"])
def test_the_map_holds_still_while_one_persona_changes(method):
    """An edit moves only the edited persona; its previous position lands where it was drawn; a big change of
    population refits, rotated onto the old layout (the personas that stay keep roughly their places)."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(12, 16))
    ids = list(range(12))
    layouts = MapLayouts()
    before, _ = layouts.place(method, ids, vectors, np.zeros((0, 16)))
    edited = vectors.copy()
    edited[3] += rng.normal(size=16)
    after, previous = layouts.place(method, ids, edited, vectors[3:4])
    others = [i for i in ids if i != 3]
    np.testing.assert_allclose(after[others], before[others])
    assert not np.allclose(after[3], before[3])
    if method == "pca":  # a linear map: the old vector is placed exactly where it was drawn
        np.testing.assert_allclose(previous[0], before[3], atol=1e-9)
    grown = np.vstack([vectors, rng.normal(size=(6, 16))])  # +50%: refit, aligned to the old layout
    refit, _ = layouts.place(method, list(range(18)), grown, np.zeros((0, 16)))
    spread = np.linalg.norm(before - before.mean(0), axis=1).mean()
    if method == "pca":
        assert np.linalg.norm(refit[:12] - before, axis=1).mean() < spread


def test_the_map_names_its_points_and_counts_empty_personas(studio_service, tmp_path):
    empty = studio_service.create_persona("Nobody yet")
    data = studio_service.space()
    fig = space_figure(data, "pca", current_id=data.ids[0])
    names = [t for trace in fig.data for t in (trace.text or [])]
    assert len(names) == len(data.ids) and any(data.names[0].split(",")[0] in n for n in names)
    assert data.without_items >= 1 and "without items not shown" in fig.layout.title.text
    star = next(trace for trace in fig.data if trace.name == "this persona")
    assert "nearest (cosine, full space)" in star.hovertext[0] and data.names[1].split(",")[0] in str(
        fig.data
    )
    layouts = MapLayouts()
    shown = space_figure(data, "pca", layouts=layouts)
    rows = list(csv.reader(map_csv(data, "pca", layouts, tmp_path / "map.csv").open(encoding="utf-8")))
    assert rows[0][:4] == ["persona_id", "name", "x", "y"] and len(rows) == len(data.ids) + 1
    assert float(rows[1][2]) == pytest.approx(shown.data[0].x[0], abs=1e-4)  # the layout the page shows
    # plug space: what the LLM receives, one P_u per persona for this input
    plug_space = studio_service.space(plug_query="Write a post.")
    assert plug_space.ids == data.ids
    assert plug_space.vectors.shape == (len(data.ids), studio_service.engine.plug.config.llm_dim)
    fig = space_figure(plug_space, "pca", space="plug (P_u)")
    assert "plug (P_u)" in fig.layout.title.text
    studio_service.delete_persona(empty)


def test_umap_map_of_the_seed_personas(studio_service):
    data = studio_service.space()
    fig = space_figure(data, "umap", current_id=data.ids[0])
    assert "UMAP" in fig.layout.title.text
    xs = [x for trace in fig.data for x in trace.x]
    assert len(xs) == len(data.ids) and np.isfinite(xs).all()


def test_auth_option_parses_and_refuses_bad_values():
    from persona_demo.app.launch import parse_auth

    assert parse_auth(None) is None
    assert parse_auth("ann:s3cret,bob:pw:with:colons") == [("ann", "s3cret"), ("bob", "pw:with:colons")]
    for bad in ("nopassword", ":pw", "ann:"):
        with pytest.raises(PersonaDemoError, match="user:password"):
            parse_auth(bad)


def test_callbacks_turn_any_failure_into_a_readable_message():
    import gradio as gr
    import torch

    from persona_demo.app.panels.common import user_errors

    @user_errors
    def crash(kind):
        if kind == "user":
            raise PersonaDemoError(HOSTILE)
        if kind == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory")  # what a GPU raises; none here to fill
        raise RuntimeError("internal detail")

    with pytest.raises(gr.Error) as user:
        crash("user")
    assert "<script>" not in str(user.value.message) and "&lt;script&gt;" in str(user.value.message)
    with pytest.raises(gr.Error, match="out of memory"):
        crash("oom")
    with pytest.raises(gr.Error, match="RuntimeError.*keeps running") as other:
        crash("other")
    assert "internal detail" not in str(other.value.message)


def test_incremental_updates_match_a_full_recompute(studio_service):
    pid = studio_service.create_persona("Eve")
    studio_service.store.add_items(pid, [f"Field note {i}: the heron came back." for i in range(30)])
    studio_service.refresh_embedding(pid)
    for i in range(3):
        update = studio_service.add_text(pid, f"Later note {i}: two herons now.")
        assert update.new_texts_encoded == 1 and update.items == 31 + i
    incremental = studio_service.store.get_persona_vector(pid, studio_service.embedding_id()).copy()
    studio_service.refresh_embedding(pid)
    full = studio_service.store.get_persona_vector(pid, studio_service.embedding_id())
    np.testing.assert_allclose(incremental, full, atol=1e-5)


def test_hybrid_plug_reads_its_own_personas_top_item_as_text(studio_service, monkeypatch):
    """A plug trained with --retrieval-k gets the persona's best BM25 item in front of the task prompt; the
    plain column keeps the plain prompt. Items come from this persona only, never the input itself."""
    from dataclasses import replace

    loaded = studio_service.task("huffpost_headline")
    metadata = replace(loaded.metadata, training={**loaded.metadata.training, "retrieval_k": 1})
    studio_service.tasks["huffpost_headline"] = replace(loaded, metadata=metadata)
    assert "[plug + 1 retrieved item]" in studio_service.describe()
    seen = {}
    real = studio_service.engine.stream_compare

    def spy(prompt, *args, **kwargs):
        seen["prompt"], seen["plain"] = prompt, kwargs["plain_prompt"]
        return real(prompt, *args, **kwargs)

    monkeypatch.setattr(studio_service.engine, "stream_compare", spy)
    botanist = studio_service.personas("botanist")[0].id
    article = "Frost came early, yet the hellebores bloomed under the plum tree."
    list(
        studio_service.stream_compare(
            botanist, "huffpost_headline", article, GenerationOptions(max_new_tokens=2)
        )
    )
    plain = studio_service.task("huffpost_headline").task.prompt(article)
    assert seen["plain"] == plain and seen["prompt"].endswith(plain)
    retrieved = seen["prompt"].removesuffix(plain)
    assert '"The hellebores do not mind the frost" is the title for' in retrieved
    assert retrieved.count(" is the title for ") == 1 and article not in retrieved
    others = [
        item.title
        for p in studio_service.personas()
        if p.id != botanist
        for item in studio_service.history(p.id)
        if item.title
    ]
    assert others and not any(f'"{title}"' in retrieved for title in others)


def test_rating_task_answers_with_a_star_and_its_distribution(studio_service):
    """The rating task scores the five stars (as evaluate does) instead of parsing free text like "1. 1"."""
    pid = studio_service.personas("botanist")[0].id
    review = "Sturdy trowel, the handle fits my hand and it survived a season of clay soil."
    steps = list(
        studio_service.stream_compare(pid, "amazon_mi_rating", review, GenerationOptions(max_new_tokens=4))
    )
    result, texts = steps[-1]
    for column in (result.with_plug, result.without_plug):
        answer, spread = column.split("   ", 1)
        assert answer in {"1", "2", "3", "4", "5"}
        assert [part.split(":")[0] for part in spread.strip("()").split(" · ")] == ["1", "2", "3", "4", "5"]
    assert len(result.weights) == len(texts)
    assert studio_service.store.list_generations(pid)[0].output_personal == result.with_plug


def test_chat_prompt_is_the_one_its_plug_was_trained_on(studio_service):
    """Texts and words per text come from the chat plug's own training record (`--retrieval-k`,
    `--words-per-text`), so the studio asks the plug what it learned to read."""
    from dataclasses import replace

    from persona_demo.app.tasks import FREE_TASK

    loaded = studio_service.tasks[FREE_TASK.key]
    try:
        training = {**loaded.metadata.training, "retrieval_k": 2, "words_per_text": 5}
        studio_service.tasks[FREE_TASK.key] = replace(
            loaded, metadata=replace(loaded.metadata, training=training)
        )
        config = studio_service.prompt_config()
        assert (config.texts, config.words_per_text) == (2, 5)
        texts = ["one two three four five six seven", "alpha beta gamma delta epsilon zeta", "x y z"]
        conversation = [{"role": "user", "content": "Tell me about your day."}]
        messages = studio_service.persona_prompt(texts, conversation, "Tell me about your day.")
        earlier = [m["content"] for m in messages[1:-1] if m["role"] == "assistant"]  # the texts, as turns
        assert len(earlier) == 2 and all(len(t.removesuffix(" ...").split()) <= 5 for t in earlier)
    finally:
        studio_service.tasks[FREE_TASK.key] = loaded


def test_a_long_typed_text_becomes_several_items_and_nothing_is_lost(studio_service):
    text = "\n\n".join(f"Paragraph {n}: " + "the river was high again today. " * 30 for n in range(20))
    pid = studio_service.create_persona("Long writer")
    update = studio_service.add_text(pid, text)
    items = [item.text for item in studio_service.history(pid)]
    assert len(items) > 1 and all(len(t) <= studio_service.store.limits.max_chars for t in items)
    assert "".join("".join(items).split()) == "".join(text.split())  # every character, in order
    assert any("added as" in note for note in update.notes) and update.items == len(items)
