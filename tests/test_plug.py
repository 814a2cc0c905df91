"""PersonaPlug in isolation (aggregator maths) and plug checkpoints on the real models."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from persona_demo.engine.checkpoint import load_plug, read_metadata, save_plug
from persona_demo.engine.generation import GenerationOptions
from persona_demo.engine.plug import PersonaPlug, PlugConfig
from persona_demo.errors import PersonaDemoError


def make_plug(**overrides) -> PersonaPlug:
    torch.manual_seed(0)
    return PersonaPlug(PlugConfig(encoder_dim=8, llm_dim=12, token_norm=3.0, **overrides))


def batch(b: int = 3, length: int = 5, dim: int = 8):
    torch.manual_seed(1)
    query = F.normalize(torch.randn(b, dim), dim=-1)
    history = F.normalize(torch.randn(b, length, dim), dim=-1)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[1, 3:] = 0  # row 1 has 3 real items and 2 padding slots
    mask[2, :] = 0  # row 2 has no history
    return query, history, mask


def test_weights_sum_to_one_and_padding_gets_zero():
    query, history, mask = batch()
    weights = make_plug().attention_weights(query, history, mask)
    assert weights[0].sum().item() == pytest.approx(1.0, abs=1e-6)
    assert weights[1].sum().item() == pytest.approx(1.0, abs=1e-6)
    assert weights[1, 3:].tolist() == [0.0, 0.0]
    assert weights[2].tolist() == [0.0] * 5
    assert torch.isfinite(weights).all()


def test_weights_are_softmax_of_dot_products():
    query, history, mask = batch()
    weights = make_plug(tau=0.5).attention_weights(query, history, mask)
    expected = torch.softmax((history[0] @ query[0]) / 0.5, dim=-1)
    assert torch.allclose(weights[0], expected, atol=1e-6)


def test_mean_mode_equals_the_plain_mean():
    query, history, mask = batch()
    plug = make_plug(aggregation="mean")
    out = plug(query, history, mask)
    projected = plug.history_proj(history[1, :3]).mean(0)
    expected = F.normalize(projected, dim=-1) * 3.0
    assert torch.allclose(out.soft_tokens[1, 1], expected, atol=1e-5)
    assert out.weights[1, :3].tolist() == pytest.approx([1 / 3] * 3)


def test_lower_tau_sharpens_the_attention():
    query, history, mask = batch()
    soft = make_plug(tau=1.0).attention_weights(query, history, mask)[0]
    sharp = make_plug(tau=0.05).attention_weights(query, history, mask)[0]
    assert sharp.max() > soft.max()
    entropy = lambda w: -(w * w.clamp_min(1e-12).log()).sum()
    assert entropy(sharp) < entropy(soft)


def test_soft_tokens_are_scaled_and_empty_rows_mask_the_persona():
    query, history, mask = batch()
    out = make_plug()(query, history, mask, strength=2.0)
    assert out.soft_tokens.shape == (3, 2, 12)
    assert out.soft_tokens[0, 0].norm().item() == pytest.approx(3.0, rel=1e-5)
    assert out.soft_tokens[0, 1].norm().item() == pytest.approx(6.0, rel=1e-5)
    assert out.soft_mask.tolist() == [[1, 1], [1, 1], [1, 0]]


def test_k_token_plug_adds_the_most_attended_items_in_order():
    query, history, mask = batch()
    plug = make_plug(persona_tokens=4)  # I, P_u, then the top 3 items
    out = plug(query, history, mask)
    assert out.soft_tokens.shape == (3, 5, 12)
    # row 0: 5 items, all three item slots filled; row 1: 3 real items; row 2: no history at all
    assert out.soft_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    order = out.weights[0].argsort(descending=True)[:3]
    expected = F.normalize(plug.history_proj(history[0, order]), dim=-1) * 3.0
    assert torch.allclose(out.soft_tokens[0, 2:], expected, atol=1e-5)
    # k = 1 is exactly the paper's plug: the first two tokens don't depend on k
    assert torch.allclose(make_plug()(query, history, mask).soft_tokens, out.soft_tokens[:, :2], atol=1e-6)


def test_k_token_plug_masks_slots_beyond_a_short_history_and_trains_every_token():
    query, history, mask = batch(length=2)
    plug = make_plug(persona_tokens=5)
    out = plug(query, history, mask)
    assert out.soft_tokens.shape == (3, 6, 12)
    assert out.soft_mask[0].tolist() == [1, 1, 1, 1, 0, 0]  # 2 items fill 2 of the 4 item slots
    (out.soft_tokens * out.soft_mask.unsqueeze(-1)).sum().backward()
    grads = [p.grad for p in plug.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_bad_plug_config_is_refused():
    with pytest.raises(ValueError):
        PlugConfig(encoder_dim=8, llm_dim=12, token_norm=3.0, aggregation="max")
    with pytest.raises(ValueError):
        PlugConfig(encoder_dim=8, llm_dim=12, token_norm=3.0, tau=0)
    with pytest.raises(ValueError):
        PlugConfig(encoder_dim=8, llm_dim=12, token_norm=3.0, persona_tokens=0)
    with pytest.raises(ValueError, match="learned attention"):
        PlugConfig.from_dict(
            {
                "encoder_dim": 8,
                "llm_dim": 12,
                "token_norm": 3.0,
                "aggregation": "mean",
                "learned_attention": True,
            }
        )


def test_learned_attention_starts_as_the_papers_and_trains():
    """W = 0 and s = 0 at start: the same weights and tokens as the fixed attention; then the query map and
    the scale get gradients, and a larger scale sharpens the weights."""
    query, history, mask = batch()
    fixed, learned = make_plug(persona_tokens=2), make_plug(persona_tokens=2, aggregation="learned-attention")
    a, b = fixed(query, history, mask), learned(query, history, mask)
    assert torch.allclose(a.weights, b.weights) and torch.allclose(a.soft_tokens, b.soft_tokens)
    b.soft_tokens[:, 1:].pow(3).sum().backward()  # any loss that depends on which items are attended
    assert float(learned.query_map.weight.grad.abs().sum()) > 0
    assert learned.attention_log_scale.grad is not None and learned.attention_log_scale.grad != 0
    with torch.no_grad():
        learned.attention_log_scale.fill_(2.0)
    sharper = learned.attention_weights(query, history, mask)
    assert sharper[0].max() > a.weights[0].max()


def test_init_from_a_plug_without_learned_attention(engine):
    """train --init: a plain plug seeds a learned-attention one; the reverse would drop weights."""
    from persona_demo.engine.checkpoint import copy_plug_weights, untrained_plug

    plain = untrained_plug(engine.default_plug_config(), seed=3)
    learned = untrained_plug(engine.default_plug_config(aggregation="learned-attention"), seed=0)
    copy_plug_weights(learned, plain, "plain.safetensors")
    assert torch.equal(learned.history_proj[0].weight, plain.history_proj[0].weight)
    assert float(learned.query_map.weight.abs().sum()) == 0
    with pytest.raises(PersonaDemoError, match="--aggregation learned-attention"):
        copy_plug_weights(untrained_plug(engine.default_plug_config()), learned, "learned.safetensors")


def test_centred_plug_pools_items_minus_the_centre():
    """P_u = normalise(Σ w_i (Proj(h_i) − c)) and item tokens are Proj(h_j) − c: the centre comes off every
    persona position, never the instruction token."""
    query, history, mask = batch()
    plain, centred = make_plug(persona_tokens=2), make_plug(persona_tokens=2, centre_persona=True)
    centred.eval()
    centred.set_centre(history[0])
    centre = centred.history_proj(history[0]).mean(0)
    assert torch.allclose(centred.persona_centre, centre.detach())
    a, b = plain(query, history, mask), centred(query, history, mask)
    projected = plain.history_proj(history) - centre
    pooled = torch.einsum("bl,bld->bd", a.weights, projected)
    assert torch.allclose(b.soft_tokens[0, 1], F.normalize(pooled[0], dim=-1) * 3.0, atol=1e-5)
    top = int(a.weights[0].argmax())
    assert torch.allclose(b.soft_tokens[0, 2], F.normalize(projected[0, top], dim=-1) * 3.0, atol=1e-5)
    assert torch.allclose(b.soft_tokens[:, 0], a.soft_tokens[:, 0])
    assert b.soft_mask.tolist() == a.soft_mask.tolist()


def test_partial_centring_takes_off_only_its_share_of_the_centre():
    """centre_strength β: every persona position is built from Proj(h_i) − β·c (β = 1 is full centring)."""
    query, history, mask = batch()
    plain = make_plug(persona_tokens=2)
    partial = make_plug(persona_tokens=2, centre_persona=True, centre_strength=0.25)
    partial.eval()
    partial.set_centre(history[0])
    a, b = plain(query, history, mask), partial(query, history, mask)
    projected = plain.history_proj(history) - 0.25 * partial.persona_centre
    pooled = torch.einsum("bl,bld->bd", a.weights, projected)
    assert torch.allclose(b.soft_tokens[0, 1], F.normalize(pooled[0], dim=-1) * 3.0, atol=1e-5)
    top = int(a.weights[0].argmax())
    assert torch.allclose(b.soft_tokens[0, 2], F.normalize(projected[0, top], dim=-1) * 3.0, atol=1e-5)
    assert not torch.allclose(b.soft_tokens[0, 1], a.soft_tokens[0, 1])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"centre_persona": True, "centre_strength": 0.0}, "in \\(0, 1\\]"),
        ({"centre_persona": True, "centre_strength": 1.5}, "in \\(0, 1\\]"),
        ({"centre_strength": 0.5}, "needs centre_persona"),
    ],
)
def test_centre_strength_outside_its_range_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        PlugConfig(encoder_dim=8, llm_dim=12, token_norm=3.0, **overrides)


def test_centre_follows_training_batches_only_and_is_not_a_weight():
    query, history, mask = batch()
    plug = make_plug(centre_persona=True)
    assert "persona_centre" not in dict(plug.named_parameters())
    plug.eval()
    plug(query, history, mask)
    assert float(plug.persona_centre.abs().sum()) == 0  # evaluation never moves it
    plug.train()
    out = plug(query, history, mask)
    real_mean = plug.history_proj(history)[mask.bool()].mean(0).detach()
    assert torch.allclose(plug.persona_centre, PersonaPlug.CENTRE_MOMENTUM * real_mean, atol=1e-6)
    out.soft_tokens[:, 1].sum().backward()  # the in-place update does not break the backward pass
    assert plug.history_proj[0].weight.grad is not None
    with pytest.raises(ValueError, match="at least one"):
        plug.set_centre(torch.zeros(0, 8))


def test_centre_survives_a_checkpoint_and_seeds_from_an_uncentred_plug(engine, tmp_path):
    from persona_demo.engine.checkpoint import copy_plug_weights, new_plug_metadata, untrained_plug

    plain = untrained_plug(engine.default_plug_config(), seed=3)
    centred = untrained_plug(engine.default_plug_config(centre_persona=True), seed=0)
    copy_plug_weights(centred, plain, "plain.safetensors")  # the centre is set when training starts
    assert torch.equal(centred.history_proj[0].weight, plain.history_proj[0].weight)
    with torch.no_grad():
        centred.persona_centre.normal_()
    metadata = new_plug_metadata(centred, engine.loaded_llm.model_id, engine.encoder.encoder_id)
    loaded, read = engine.read_plug(save_plug(tmp_path / "centred.safetensors", centred, metadata))
    assert read.config.centre_persona
    assert torch.equal(loaded.persona_centre, centred.persona_centre)
    with pytest.raises(PersonaDemoError, match="--centre-persona"):
        copy_plug_weights(untrained_plug(engine.default_plug_config()), centred, "centred.safetensors")


def test_checkpoint_round_trip_reproduces_outputs(engine, bike_history, tmp_path):
    path = save_plug(tmp_path / "plug.safetensors", engine.plug, engine.plug_metadata)
    assert path.with_suffix(".json").is_file()
    options = GenerationOptions(max_new_tokens=12)
    before = engine.compare("Write a post.", bike_history, options)
    with torch.no_grad():
        for p in engine.plug.parameters():
            p.add_(1.0)  # scramble, then restore from disk
    engine.load_plug(path)
    after = engine.compare("Write a post.", bike_history, options)
    assert (before.with_plug, before.without_plug) == (after.with_plug, after.without_plug)
    assert read_metadata(path).llm_id == engine.loaded_llm.model_id


def test_learned_attention_survives_a_checkpoint(engine, bike_history, tmp_path):
    from persona_demo.engine.checkpoint import new_plug_metadata, untrained_plug

    plug = untrained_plug(engine.default_plug_config(aggregation="learned-attention", persona_tokens=2))
    with torch.no_grad():
        plug.query_map.weight.normal_(0, 0.1)
        plug.attention_log_scale.fill_(1.5)
    metadata = new_plug_metadata(plug, engine.loaded_llm.model_id, engine.encoder.encoder_id)
    path = save_plug(tmp_path / "learned.safetensors", plug, metadata)
    loaded, read = engine.read_plug(path)
    assert read.config.learned_attention
    assert torch.equal(loaded.query_map.weight, plug.query_map.weight)
    assert float(loaded.attention_log_scale) == 1.5


def test_checkpoint_for_another_llm_is_refused(engine, tmp_path):
    other = dataclasses.replace(engine.plug_metadata, llm_id="Qwen/Qwen2.5-0.5B-Instruct")
    path = save_plug(tmp_path / "qwen.safetensors", engine.plug, other)
    with pytest.raises(PersonaDemoError, match="trained for the LLM 'Qwen/Qwen2.5-0.5B-Instruct'"):
        engine.load_plug(path)


def test_checkpoint_for_another_encoder_is_refused(engine, tmp_path):
    other = dataclasses.replace(engine.plug_metadata, encoder_id="BAAI/bge-base-en-v1.5")
    path = save_plug(tmp_path / "bge.safetensors", engine.plug, other)
    with pytest.raises(PersonaDemoError, match="encoder"):
        engine.load_plug(path)


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"\x00" * 64])
def test_damaged_or_foreign_files_are_refused(engine, tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(PersonaDemoError):
        engine.load_plug(path)


def test_missing_checkpoint_is_refused(engine, tmp_path):
    with pytest.raises(PersonaDemoError, match="not found"):
        load_plug(tmp_path / "nope.safetensors", llm_id="x", llm_dim=1, encoder_id="y", encoder_dim=1)


def test_shipped_plugs_load_on_the_default_models(engine, settings):
    shipped = sorted(settings.plugs_dir.glob("*.safetensors"))
    assert shipped, "assets/plugs should ship at least one trained plug"
    for path in shipped:
        metadata = engine.load_plug(path)
        assert metadata.task == path.stem and metadata.training
