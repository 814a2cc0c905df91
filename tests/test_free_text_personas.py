"""Studio personas are free texts, and plugs are judged on people they never saw.

Items typed or uploaded in the studio have no titles or scores: the task plugs must read them as training did
(`free_text_profile`, the untitled rendering), and a LaMP folder keeps a share of its authors out of training
(`user_split`'s `heldout`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persona_demo.app.hybrid import hybrid_prompt, persona_history_texts
from persona_demo.data.ingest import HistoryItem
from persona_demo.errors import PersonaDemoError
from persona_demo.tasks.lamp import (
    HELDOUT_SHARE,
    get_task,
    is_heldout_user,
    load_split,
    user_split,
)
from persona_demo.training.train import TrainConfig, to_examples
from tests.support import shared_data, write_lamp4


def write_authors(folder: Path, n: int) -> None:
    """write_lamp4 with a test split too (the held-out split reads dev and test)."""
    write_lamp4(folder, n=n)
    for name in ("questions", "outputs"):
        (folder / f"test_{name}.json").write_text((folder / f"dev_{name}.json").read_text())


def test_an_item_without_a_title_reads_and_renders_as_its_text():
    headline = get_task(4)
    titled = {"id": "1", "text": "Rain all week.", "title": "Wet Week"}
    untitled = {"id": "2", "text": "Rain all week.", "title": ""}
    assert headline.history_text(titled) == "Rain all week. Wet Week"
    assert headline.history_text(untitled) == "Rain all week."
    assert headline.render_item(titled) == '"Wet Week" is the title for "Rain all week." '
    assert headline.render_item(untitled) == '"Rain all week." '
    rating = get_task(3)
    assert rating.render_item({"id": "3", "text": "Broke fast.", "score": ""}) == '"Broke fast." '
    free = headline.free_text_profile([titled, {**titled, "score": "4", "date": "2020"}])
    assert [item["title"] for item in free] == ["", ""] and free[1]["score"] == ""
    assert free[1]["date"] == "2020" and titled["title"] == "Wet Week"  # a copy; the profile is untouched


def test_the_studio_gives_a_task_plug_its_items_as_training_rendered_them():
    items = [
        HistoryItem(text="Sourdough rises slowly in winter.", title="Winter Bread", id=1),
        HistoryItem(text="Cycling to the bakery every morning.", id=2),
    ]
    assert persona_history_texts(4, items) == [
        "Sourdough rises slowly in winter. Winter Bread",
        "Cycling to the bakery every morning.",
    ]
    prompt = hybrid_prompt(4, "Generate a headline for the following article: bakery", "bakery", items, 2)
    assert '""' not in prompt and '"Cycling to the bakery every morning." ' in prompt
    assert '"Winter Bread" is the title for' in prompt


def test_free_text_share_trains_a_seeded_share_on_untitled_histories(tmp_path):
    write_lamp4(tmp_path, n=12)
    dataset = load_split(tmp_path, "train")
    mixed = to_examples(dataset, retrieval_k=1, free_text_share=0.5, share_seed=3)
    untitled = [not any("news" in text for text in e.history) for e in mixed]
    assert 0 < sum(untitled) < len(mixed)
    for example, free in zip(mixed, untitled):
        assert ("is the title for" in example.prompt) != free  # retrieved items rendered like the history
    again = to_examples(dataset, retrieval_k=1, free_text_share=0.5, share_seed=3)
    assert [e.history for e in again] == [e.history for e in mixed]
    assert all(any("news" in t for t in e.history) for e in to_examples(dataset, retrieval_k=1))
    with pytest.raises(PersonaDemoError, match="free-text-share"):
        TrainConfig(free_text_share=1.5).validated()


def test_held_out_authors_never_reach_training_and_make_their_own_split(tmp_path):
    write_authors(tmp_path, 60)
    users = {name: {e.user_id for e in user_split(tmp_path, name)} for name in ("train", "dev", "heldout")}
    everyone = {e.user_id for e in load_split(tmp_path, "dev")}
    assert users["heldout"] and not users["heldout"] & (users["train"] | users["dev"])
    assert users["heldout"] | users["dev"] == everyone
    assert users["heldout"] == {u for u in everyone if is_heldout_user(u)}
    assert len(user_split(tmp_path, "heldout")) == 2 * len(users["heldout"])  # its dev and test questions
    assert {e.user_id for e in user_split(tmp_path, "dev", all_authors=True)} == everyone
    with pytest.raises(PersonaDemoError, match="cannot take every author"):
        user_split(tmp_path, "heldout", all_authors=True)
    small = tmp_path / "small"
    small.mkdir()
    write_authors(small, 4)  # a toy folder keeps every author
    assert len(user_split(small, "train")) == 4
    with pytest.raises(PersonaDemoError, match="no held-out authors"):
        user_split(small, "heldout")


def test_real_headline_authors_split_about_their_share():
    folder = shared_data("huffpost_headline")
    train = {e.user_id for e in user_split(folder, "train")}
    heldout = {e.user_id for e in user_split(folder, "heldout")}
    everyone = train | {e.user_id for e in load_split(folder, "train")}
    assert heldout and not heldout & train
    assert abs(len(everyone - train) / len(everyone) - HELDOUT_SHARE) < 0.1


def test_evaluate_refuses_held_out_figures_for_a_plug_that_saw_every_author(engine, tmp_path, capsys):
    from persona_demo.__main__ import main
    from persona_demo.engine.checkpoint import new_plug_metadata, save_plug

    write_authors(tmp_path, 40)
    plug = tmp_path / "plug.safetensors"
    metadata = new_plug_metadata(engine.plug, engine.loaded_llm.model_id, engine.encoder.encoder_id)
    save_plug(plug, engine.plug, metadata)
    args = [
        "evaluate",
        "--data",
        str(tmp_path),
        "--split",
        "heldout",
        "--method",
        "pplug",
        "--plug",
        str(plug),
    ]
    assert main([*args, "--out", str(tmp_path / "out"), "--limit", "2"]) == 2
    assert "trained on every author" in capsys.readouterr().err
    metadata.training = {"user_holdout": True}
    save_plug(plug, engine.plug, metadata)
    assert main([*args, "--out", str(tmp_path / "out"), "--limit", "2", "--max-new-tokens", "2"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["split"] == "heldout" and metrics["n"] == 2
