"""`train --train-query-encoder`: the plug trains its own copy of the input encoder, as the paper does.

Real MiniLM and SmolLM2 on a tiny LaMP-format fixture; the history side must stay frozen and cached.
"""

from __future__ import annotations

import pytest
import torch

from persona_demo.engine.checkpoint import copy_plug_weights, read_metadata, untrained_plug
from persona_demo.errors import PersonaDemoError
from persona_demo.training.train import PlugTrainer, TrainConfig, train_plug
from tests.support import write_lamp4

QUERIES = ["Generate a headline for the following article: bikes.", "A story about sourdough."]
HISTORIES = [["An article about cycling number 0.", "An article about chess number 1."]] * 2


def query_encoder_plug(engine, seed: int = 0):
    config = engine.default_plug_config(query_encoder=True)
    return untrained_plug(config, seed, engine.query_encoder_copy)


def test_an_untrained_query_encoder_gives_the_frozen_encoders_soft_tokens(engine):
    """The copy starts as the history encoder (fp32 where the frozen one may run bf16): same plug output."""
    plain = untrained_plug(engine.default_plug_config(), seed=3)
    copied = query_encoder_plug(engine, seed=3)
    assert copied.config.query_encoder and any(p.requires_grad for p in copied.query_encoder.parameters())
    with torch.no_grad():
        a = engine.plug_output(QUERIES, HISTORIES, plug=plain)
        b = engine.plug_output(QUERIES, HISTORIES, plug=copied)
    assert torch.allclose(a.weights, b.weights, atol=1e-3)
    assert torch.allclose(a.soft_tokens, b.soft_tokens, atol=1e-3 * a.soft_tokens.abs().max())


def test_training_moves_the_query_encoder_but_not_the_history_encoder(engine, tmp_path):
    write_lamp4(tmp_path)
    engine.plug = query_encoder_plug(engine)
    frozen = {k: v.clone() for k, v in engine.encoder.encoder.model.state_dict().items()}
    start = {k: v.clone() for k, v in engine.plug.query_encoder.state_dict().items()}
    out = tmp_path / "plug.safetensors"
    config = TrainConfig(max_steps=2, batch_size=4, lr=1e-2, query_encoder_lr=1e-3, eval_every=1)
    result = train_plug(engine, tmp_path, out, config)
    assert result["dev_nll_best"] < result["dev_nll_start"]
    moved = [k for k, v in engine.plug.query_encoder.state_dict().items() if not torch.equal(v, start[k])]
    assert moved, "the query encoder got no update"
    for name, value in engine.encoder.encoder.model.state_dict().items():
        assert torch.equal(value, frozen[name]), name

    # The checkpoint carries the encoder and reproduces the trained plug's output exactly.
    metadata = read_metadata(out)
    assert metadata.config.query_encoder and metadata.training["query_encoder_lr"] == 1e-3
    engine.plug.eval()
    with torch.no_grad():
        trained = engine.plug_output(QUERIES, HISTORIES)
        reloaded_plug, _ = engine.read_plug(out)
        if metadata.training["step"] == result["steps"]:
            reloaded = engine.plug_output(QUERIES, HISTORIES, plug=reloaded_plug)
            assert torch.equal(trained.soft_tokens, reloaded.soft_tokens)
    assert any(k.startswith("query_encoder.") for k in reloaded_plug.state_dict())


def test_the_query_encoder_gets_its_own_learning_rate(engine):
    engine.plug = query_encoder_plug(engine)
    groups = PlugTrainer(engine, TrainConfig(query_encoder_lr=3e-5)).parameter_groups()
    assert len(groups) == 2 and groups[1]["lr"] == 3e-5
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in engine.plug.query_encoder.parameters()}
    assert not {id(p) for p in groups[0]["params"]} & {id(p) for p in groups[1]["params"]}
    with pytest.raises(PersonaDemoError, match="query-encoder-lr"):
        TrainConfig(query_encoder_lr=0).validated()


def test_init_adds_a_query_encoder_but_never_drops_one(engine):
    """--init from a plain plug starts the copy as the frozen encoder; the reverse would lose weights."""
    plain = untrained_plug(engine.default_plug_config(), seed=1)
    with_encoder = query_encoder_plug(engine, seed=2)
    copy_plug_weights(with_encoder, plain, "plain.safetensors")
    assert torch.equal(with_encoder.history_proj[0].weight, plain.history_proj[0].weight)
    with pytest.raises(PersonaDemoError, match="--train-query-encoder"):
        copy_plug_weights(untrained_plug(engine.default_plug_config()), with_encoder, "big.safetensors")


def test_a_query_encoder_plug_needs_an_engine_to_load(engine, tmp_path):
    """Loading one without the encoder to copy says what to do instead of failing on missing weights."""
    from persona_demo.engine.checkpoint import load_plug, new_plug_metadata, save_plug

    plug = query_encoder_plug(engine)
    path = save_plug(
        tmp_path / "q.safetensors",
        plug,
        new_plug_metadata(plug, engine.loaded_llm.model_id, engine.encoder.encoder_id),
    )
    kwargs = {"llm_id": engine.loaded_llm.model_id, "llm_dim": engine.llm.hidden_size}
    kwargs |= {"encoder_id": engine.encoder.encoder_id, "encoder_dim": engine.encoder.dim}
    with pytest.raises(PersonaDemoError, match="query encoder"):
        load_plug(path, **kwargs)
    loaded, _ = engine.read_plug(path)
    assert loaded.config.query_encoder
    engine.plug = loaded
    assert "own query encoder" in engine.describe()


def test_train_cli_trains_a_query_encoder_and_says_so_in_the_plug(tmp_path):
    from persona_demo.__main__ import main

    write_lamp4(tmp_path)
    out = tmp_path / "q.safetensors"
    args = ["train", "--data", str(tmp_path), "--out", str(out), "--max-steps", "1", "--batch-size", "2"]
    assert main([*args, "--train-query-encoder", "--query-encoder-lr", "2e-5"]) == 0
    metadata = read_metadata(out)
    assert metadata.config.query_encoder and metadata.training["query_encoder_lr"] == 2e-5
    # Bad settings: a message, no traceback.
    assert main([*args, "--train-query-encoder", "--query-encoder-lr", "0"]) == 2
    assert main([*args, "--query-encoder-lr", "1e-4"]) == 2  # nothing to train it on
