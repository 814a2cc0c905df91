"""Training on a tiny LaMP-format fixture written by the test: the loss falls, the checkpoint reloads."""

from __future__ import annotations

import json
import random

import pytest

from persona_demo.engine.checkpoint import read_metadata
from persona_demo.engine.generation import GenerationOptions
from persona_demo.errors import PersonaDemoError
from persona_demo.experiments.train import TrainConfig, history_dropout, train_plug


def write_lamp4(folder, n: int = 4) -> None:
    """A LaMP-4-style folder: each user writes headlines about one hobby; dev = train (a memorisation check)."""
    hobbies = ["cycling", "baking", "chess", "sailing"]
    questions, golds = [], []
    for i in range(n):
        hobby = hobbies[i % len(hobbies)]
        profile = [
            {
                "id": f"{i}-{j}",
                "text": f"An article about {hobby} number {j}.",
                "title": f"{hobby.title()} news {j}",
            }
            for j in range(3)
        ]
        questions.append(
            {
                "id": str(i),
                "user_id": f"u{i}",
                "input": f"Generate a headline for the following article: A new story about {hobby}.",
                "profile": profile,
            }
        )
        golds.append({"id": str(i), "output": f"{hobby.title()} lovers rejoice"})
    for split in ("train", "dev"):
        (folder / f"{split}_questions.json").write_text(json.dumps(questions))
        (folder / f"{split}_outputs.json").write_text(json.dumps({"task": "LaMP_4", "golds": golds}))


def test_history_dropout_keeps_a_random_subset():
    rng = random.Random(0)
    history = [str(i) for i in range(10)]
    outputs = [history_dropout(history, rng) for _ in range(50)]
    assert all(set(o) <= set(history) and 5 <= len(o) <= 10 for o in outputs)
    assert any(len(o) < 10 for o in outputs) and any(o == history for o in outputs)
    assert history_dropout(["a", "b"], rng) == ["a", "b"]


def test_two_step_training_lowers_dev_loss_and_reloads_identically(engine, tmp_path):
    write_lamp4(tmp_path)
    out = tmp_path / "plug.safetensors"
    config = TrainConfig(max_steps=2, batch_size=4, lr=1e-2, eval_every=1, warmup_ratio=0.0)
    result = train_plug(engine, tmp_path, out, config)
    assert result["dev_nll_best"] < result["dev_nll_start"]
    metadata = read_metadata(out)
    assert metadata.task == tmp_path.name and metadata.metrics["dev_nll"] == pytest.approx(
        result["dev_nll_best"]
    )
    history = ["An article about cycling number 0."]
    options = GenerationOptions(max_new_tokens=8)
    trained = engine.compare("Generate a headline for the following article: bikes.", history, options)
    engine.load_plug(out)
    reloaded = engine.compare("Generate a headline for the following article: bikes.", history, options)
    if result["steps"] == metadata.training["step"]:  # the best checkpoint is the last step
        assert trained.with_plug == reloaded.with_plug
    assert engine.plug_metadata.task == tmp_path.name


def test_bad_training_settings_are_refused():
    with pytest.raises(PersonaDemoError):
        TrainConfig(batch_size=0).validated()
    with pytest.raises(PersonaDemoError):
        TrainConfig(lr=5).validated()
