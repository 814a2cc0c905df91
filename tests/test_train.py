"""Training on a tiny LaMP-format fixture written by the test: the loss falls, the checkpoint reloads."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from persona_demo.engine.checkpoint import read_metadata
from persona_demo.engine.generation import GenerationOptions
from persona_demo.errors import PersonaDemoError
from persona_demo.training.train import TrainConfig, history_dropout, train_plug
from tests.support import write_lamp4


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


def _fresh_plug(engine, seed: int = 0) -> None:
    from persona_demo.engine.checkpoint import untrained_plug

    engine.plug = untrained_plug(engine.default_plug_config(), seed=seed)


def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(engine, tmp_path):
    import torch

    from persona_demo.training.train import PlugTrainer, TrainingInterrupted, state_path

    write_lamp4(tmp_path)
    config = TrainConfig(max_steps=4, batch_size=2, lr=1e-2, eval_every=2, warmup_ratio=0.25)
    _fresh_plug(engine)
    train_plug(engine, tmp_path, tmp_path / "straight.safetensors", config)
    straight = {k: v.clone() for k, v in engine.plug.state_dict().items()}

    _fresh_plug(engine)
    out = tmp_path / "resumed.safetensors"
    trainer = PlugTrainer(engine, config)

    def stop_after_three(step: int) -> None:
        if step == 3:
            trainer.stop_requested = True

    with pytest.raises(TrainingInterrupted, match="--resume"):
        trainer.fit(*_splits(tmp_path), out, _metadata(engine, tmp_path), on_step=stop_after_three)
    assert state_path(out).is_file()
    _fresh_plug(engine, seed=123)  # a new process would start from scratch: the state must restore all
    train_plug(engine, tmp_path, out, config, resume=True)
    for name, value in engine.plug.state_dict().items():
        assert torch.equal(value, straight[name]), name
    assert not state_path(out).exists()
    assert (
        read_metadata(out).metrics["dev_nll"]
        == read_metadata(tmp_path / "straight.safetensors").metrics["dev_nll"]
    )


def test_resume_needs_a_matching_state(engine, tmp_path):
    from persona_demo.training.train import PlugTrainer, TrainingInterrupted

    write_lamp4(tmp_path)
    out = tmp_path / "plug.safetensors"
    config = TrainConfig(max_steps=3, batch_size=2, eval_every=1)
    with pytest.raises(PersonaDemoError, match="nothing to resume"):
        train_plug(engine, tmp_path, out, config, resume=True)
    trainer = PlugTrainer(engine, config)
    trainer.stop_requested = True
    with pytest.raises(TrainingInterrupted):
        train_plug(engine, tmp_path, out, config, trainer=trainer)
    with pytest.raises(PersonaDemoError, match="other training settings"):
        train_plug(engine, tmp_path, out, TrainConfig(max_steps=3, batch_size=2, lr=5e-4), resume=True)


def _splits(folder):
    from persona_demo.tasks.lamp import load_split
    from persona_demo.training.train import to_examples

    return to_examples(load_split(folder, "train")), to_examples(load_split(folder, "dev"))


def _metadata(engine, folder):
    from persona_demo.engine.checkpoint import PlugMetadata

    return PlugMetadata(
        llm_id=engine.loaded_llm.model_id,
        encoder_id=engine.encoder.encoder_id,
        config=engine.plug.config,
        task=folder.name,
    )


def test_train_cli_starts_from_a_shipped_plug_with_more_persona_tokens(tmp_path, settings):
    """`--init` copies the weights (k tokens add no parameters); the new plug says it has k tokens."""
    import torch

    from persona_demo.__main__ import main
    from persona_demo.engine.checkpoint import CENTRE_KEYS, load_plug

    write_lamp4(tmp_path)
    shipped = settings.plugs_dir / "huffpost_headline.safetensors"
    start = read_metadata(shipped)
    more = start.config.persona_tokens + 2
    out = tmp_path / "more.safetensors"
    args = ["train", "--data", str(tmp_path), "--out", str(out), "--max-steps", "1", "--batch-size", "2"]
    args += ["--lr", "1e-9", "--attention-lr", "1e-9", "--init", str(shipped), "--persona-tokens", str(more)]
    args += ["--config", str(shipped.with_suffix(".json"))]  # the shipped plug's own recipe, under the flags
    assert main(args) == 0
    metadata = read_metadata(out)
    assert metadata.config.persona_tokens == more and metadata.config.soft_tokens == more + 1
    assert dataclasses.replace(metadata.config, persona_tokens=start.config.persona_tokens) == start.config
    assert metadata.training["max_steps"] == 1 and metadata.training["seed"] == start.training["seed"]
    kwargs = {"llm_id": start.llm_id, "llm_dim": start.config.llm_dim}
    kwargs |= {"encoder_id": start.encoder_id, "encoder_dim": start.config.encoder_dim}
    before, _ = load_plug(shipped, **kwargs)
    after, _ = load_plug(out, **kwargs)
    weights = after.state_dict()
    assert set(weights) == set(before.state_dict())
    for name, a in before.state_dict().items():
        if name in CENTRE_KEYS:  # a running mean of the batch's P_u (like BatchNorm's), not a weight
            continue
        assert torch.allclose(a, weights[name], atol=1e-4), name  # lr 1e-9: the weights are the shipped ones


def test_retrieval_k_trains_on_the_hybrid_prompt(tmp_path):
    """--retrieval-k 1: the training prompt is pplug+bm25's (own top item as text, then the input)."""
    from persona_demo.tasks.lamp import load_split
    from persona_demo.tasks.retrieval import build_rag_prompt
    from persona_demo.training.train import to_examples

    write_lamp4(tmp_path)
    dataset = load_split(tmp_path, "train")
    plain, hybrid = to_examples(dataset), to_examples(dataset, retrieval_k=1)
    for p, h, e in zip(plain, hybrid, dataset.examples):
        assert p.prompt == e.input and h.prompt == build_rag_prompt(dataset.task, e, 1, "bm25")
        hobby = e.input.split("about ")[-1].rstrip(".")
        assert hobby.title() + " news" in h.prompt and e.target not in h.prompt
        assert (h.query, h.history, h.target) == (p.query, p.history, p.target)
    with pytest.raises(PersonaDemoError, match="retrieval-k"):
        TrainConfig(retrieval_k=-1).validated()


def test_retrieval_share_mixes_plain_and_hybrid_prompts_with_matching_negatives(tmp_path):
    """--retrieval-share 0.5: a seeded half of the prompts carry retrieved text, the rest are plain; each
    example's negative is built like its own prompt, so the contrast is only ever between histories."""
    from persona_demo.tasks.lamp import load_split
    from persona_demo.training.train import to_examples

    write_lamp4(tmp_path, n=8)
    dataset = load_split(tmp_path, "train")
    mixed = to_examples(dataset, retrieval_k=1, shuffle_seed=0, retrieval_share=0.5, share_seed=3)
    hybrid = [e.prompt != lamp.input for e, lamp in zip(mixed, dataset.examples)]
    assert 0 < sum(hybrid) < len(mixed)
    for e, lamp, is_hybrid in zip(mixed, dataset.examples, hybrid):
        assert (e.shuffled_prompt != lamp.input) == is_hybrid
        assert e.shuffled_prompt.endswith(lamp.input)
    again = to_examples(dataset, retrieval_k=1, shuffle_seed=0, retrieval_share=0.5, share_seed=3)
    assert [e.prompt for e in again] == [e.prompt for e in mixed]  # seeded
    with pytest.raises(PersonaDemoError, match="retrieval-share needs --retrieval-k"):
        TrainConfig(retrieval_share=0.5).validated()
    with pytest.raises(PersonaDemoError, match="retrieval-share must be"):
        TrainConfig(retrieval_k=1, retrieval_share=0).validated()


def test_contrastive_negatives_are_another_users_history_and_items(tmp_path):
    """--contrastive: each example's negative is another user's history; with retrieval, that user's items
    ranked against this example's own question (never its own items, never another question)."""
    from persona_demo.tasks.lamp import load_split
    from persona_demo.training.train import to_examples

    write_lamp4(tmp_path)
    dataset = load_split(tmp_path, "train")
    examples = to_examples(dataset, retrieval_k=1, shuffle_seed=0)
    for e, lamp in zip(examples, dataset.examples):
        own_hobby = e.prompt.split("about ")[-1].rstrip(".")
        assert e.shuffled_history and e.shuffled_history != e.history
        assert not any(own_hobby in text for text in e.shuffled_history)
        assert e.shuffled_prompt.endswith(lamp.input)  # this example's own question
        assert own_hobby.title() + " news" not in e.shuffled_prompt
    assert to_examples(dataset)[0].shuffled_history == []  # off unless asked


def test_contrastive_term_penalises_only_a_shortfall_and_has_gradients(engine, tmp_path):
    """The hinge is relu(margin − (NLL_shuffled − NLL_own)) per example: 0 when own beats shuffled by the
    margin, and otherwise it moves the plug (the term reaches the plug's parameters)."""

    from persona_demo.tasks.lamp import load_split
    from persona_demo.training.train import PlugTrainer, to_examples

    write_lamp4(tmp_path)
    _fresh_plug(engine)
    examples = to_examples(load_split(tmp_path, "train"), shuffle_seed=0)
    rng = random.Random(0)
    trainer = PlugTrainer(engine, TrainConfig(contrastive=1.0, contrastive_margin=100.0))
    own, counts = trainer.row_nll(examples, [e.history for e in examples])
    hinge, gap = trainer.contrastive_sum(examples, trainer.negatives(examples, rng), own, counts)
    assert hinge.item() == pytest.approx(len(examples) * 100.0 - gap * len(examples), rel=1e-4)
    hinge.backward()
    grads = [p.grad for p in engine.plug.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    engine.plug.zero_grad()
    lenient = PlugTrainer(engine, TrainConfig(contrastive=1.0, contrastive_margin=0.0))
    own, counts = lenient.row_nll(examples, [e.history for e in examples])
    hinge, gap = lenient.contrastive_sum(examples, lenient.negatives(examples, None), own, counts)
    assert float(hinge.detach()) >= 0
    with pytest.raises(PersonaDemoError, match="contrastive"):
        TrainConfig(contrastive=-1).validated()
    with pytest.raises(PersonaDemoError, match="another user's history"):
        trainer.negatives(to_examples(load_split(tmp_path, "train")), rng)


def test_contrastive_training_runs_and_records_its_settings(engine, tmp_path):
    write_lamp4(tmp_path)
    _fresh_plug(engine)
    out = tmp_path / "c.safetensors"
    config = TrainConfig(max_steps=2, batch_size=4, lr=1e-2, eval_every=1, warmup_ratio=0.0, contrastive=0.5)
    result = train_plug(engine, tmp_path, out, config)
    assert result["steps"] == 2
    metadata = read_metadata(out)
    assert metadata.training["contrastive"] == 0.5
    assert metadata.metrics["dev_score"] >= metadata.metrics["dev_nll"] > 0  # NLL + a hinge ≥ 0
    assert result["dev_score_best"] == pytest.approx(metadata.metrics["dev_score"])


def test_learned_attention_gets_its_own_learning_rate(engine):
    """--attention-lr: the query map and scale form their own AdamW group (no weight decay)."""
    from persona_demo.engine.checkpoint import untrained_plug
    from persona_demo.training.train import PlugTrainer

    engine.plug = untrained_plug(engine.default_plug_config(aggregation="learned-attention"))
    groups = PlugTrainer(engine, TrainConfig(attention_lr=0.03)).parameter_groups()
    assert len(groups) == 2 and groups[1]["lr"] == 0.03 and groups[1]["weight_decay"] == 0.0
    assert {id(p) for p in groups[1]["params"]} == {
        id(engine.plug.query_map.weight),
        id(engine.plug.attention_log_scale),
    }
    assert len(PlugTrainer(engine, TrainConfig()).parameter_groups()) == 1
    _fresh_plug(engine)
    assert len(PlugTrainer(engine, TrainConfig(attention_lr=0.03)).parameter_groups()) == 1
    with pytest.raises(PersonaDemoError, match="attention-lr"):
        TrainConfig(attention_lr=-1).validated()


def test_centred_training_starts_at_the_training_mean_and_logs_both_cosines(engine, tmp_path):
    """--centre-persona: the centre starts at the mean projected training item; the collapse detector
    reports the cosine the LLM sees and the one before the centre comes off."""
    from persona_demo.engine.checkpoint import untrained_plug
    from persona_demo.training.train import PlugTrainer

    write_lamp4(tmp_path)
    engine.plug = untrained_plug(engine.default_plug_config(centre_persona=True))
    train, dev = _splits(tmp_path)
    trainer = PlugTrainer(engine, TrainConfig(max_steps=1, batch_size=4, eval_every=1))
    trainer.start_centre(train)
    texts = sorted({t for e in train for t in e.history})
    with torch.no_grad():
        expected = engine.plug.history_proj(engine.encoder.encode(texts)).mean(0)
    assert torch.allclose(engine.plug.persona_centre, expected, atol=1e-5)
    diagnostics = trainer.dev_diagnostics(train + dev)
    assert diagnostics["persona_cosine"] < diagnostics["persona_cosine_uncentred"]
    out = tmp_path / "centred.safetensors"
    train_plug(engine, tmp_path, out, TrainConfig(max_steps=1, batch_size=4, eval_every=1))
    metadata = read_metadata(out)
    assert metadata.config.centre_persona
    assert {"persona_cosine_start", "persona_cosine_uncentred_start"} <= set(metadata.metrics)
    _fresh_plug(engine)


def test_diversity_penalty_is_the_cosine_excess_and_pushes_users_apart(engine, tmp_path):
    """--diversity: relu(mean cross-user cosine of P_u − target); zero below the target, and a gradient step
    on it lowers the cosine (the collapse target)."""
    from persona_demo.evaluation.collapse import mean_cross_user_cosine
    from persona_demo.training.train import PlugTrainer

    write_lamp4(tmp_path)
    _fresh_plug(engine)
    train, _ = _splits(tmp_path)
    histories = [e.history for e in train]
    users = [e.user for e in train]
    trainer = PlugTrainer(engine, TrainConfig(diversity=1.0, diversity_target=-1.0))

    def cosine() -> float:
        with torch.no_grad():
            out = engine.plug_output([e.query for e in train], histories)
        return mean_cross_user_cosine(out.soft_tokens[:, 1], out.soft_mask[:, 1], users)

    before = cosine()
    _, _, out = trainer.row_nll_and_plug(train, histories)
    penalty = trainer.diversity_penalty(out, train)
    assert float(penalty) == pytest.approx(before + 1.0, abs=1e-4)
    penalty.backward()
    with torch.no_grad():
        for p in engine.plug.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
    assert cosine() < before
    engine.plug.zero_grad()
    lenient = PlugTrainer(engine, TrainConfig(diversity=1.0, diversity_target=1.0))
    assert float(lenient.diversity_penalty(lenient.row_nll_and_plug(train, histories)[2], train)) == 0.0
    with pytest.raises(PersonaDemoError, match="diversity-target"):
        TrainConfig(diversity_target=2.0).validated()
    with pytest.raises(PersonaDemoError, match="--diversity"):
        TrainConfig(diversity=-0.1).validated()
    _fresh_plug(engine)


def test_diversity_training_adds_the_dev_cosine_excess_to_the_checkpoint_score(engine, tmp_path):
    write_lamp4(tmp_path)
    _fresh_plug(engine)
    out = tmp_path / "d.safetensors"
    config = TrainConfig(
        max_steps=1, batch_size=4, eval_every=1, warmup_ratio=0.0, diversity=2.0, diversity_target=-1.0
    )
    train_plug(engine, tmp_path, out, config)
    metadata = read_metadata(out)
    assert metadata.training["diversity"] == 2.0
    metrics = metadata.metrics
    cosine = metrics["persona_cosine_last" if metadata.training["step"] else "persona_cosine_start"]
    assert metrics["dev_score"] == pytest.approx(metrics["dev_nll"] + 2.0 * (cosine + 1.0), abs=1e-4)
    _fresh_plug(engine)
