"""Run recipes are files: each shipped plug's recipe (configs/train/) is what its sidecar says it was trained
with, and `train --config` reads a recipe under the flags given beside it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from persona_demo.cli.train import add_train_command, plug_shape
from persona_demo.engine.checkpoint import read_metadata
from persona_demo.engine.plug import PlugConfig
from persona_demo.errors import PersonaDemoError
from persona_demo.training.train_config import TrainConfig, config_from_args, read_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs" / "train").glob("*.yaml"))


def test_every_shipped_plug_has_a_recipe():
    shipped = {p.stem for p in (ROOT / "assets" / "plugs").glob("*.safetensors")}
    assert shipped == {r.stem for r in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_a_recipe_is_its_plugs_sidecar(recipe):
    training, plug = read_recipe(recipe)
    sidecar = read_metadata(ROOT / "assets" / "plugs" / f"{recipe.stem}.safetensors")
    recorded = {k: v for k, v in sidecar.training.items() if k != "step"}
    recorded["user_holdout"] = not sidecar.saw_every_author
    assert TrainConfig(**training) == TrainConfig(**recorded)
    assert PlugConfig(**{**derived(sidecar.config), **plug}) == sidecar.config
    assert "learned_attention" not in sidecar.config.to_dict()  # one aggregation choice


PLUG_DERIVED = ("encoder_dim", "llm_dim", "token_norm")


def derived(config: PlugConfig) -> dict[str, object]:
    return {k: getattr(config, k) for k in PLUG_DERIVED}


def parsed(*argv: str) -> argparse.Namespace:
    """`train` flags as the real command parses them."""
    parser = argparse.ArgumentParser()
    add_train_command(parser.add_subparsers())
    return parser.parse_args(["train", "--data", "d", "--out", "p.safetensors", *argv])


def test_flags_override_the_recipe_and_the_recipe_overrides_defaults(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "training:\n  epochs: 3.0\n  lr: 0.0005\nconfig:\n  persona_tokens: 4\n  centre_persona: true\n"
    )
    training, plug = read_recipe(recipe)
    args = parsed("--lr", "0.002", "--tau", "0.5")
    config = config_from_args(args, training)
    assert (config.epochs, config.lr, config.batch_size) == (3.0, 0.002, TrainConfig().batch_size)
    assert plug_shape(args, plug) == {"persona_tokens": 4, "centre_persona": True, "tau": 0.5}


def test_a_plug_sidecar_is_a_recipe_too():
    training, plug = read_recipe(ROOT / "assets" / "plugs" / "amazon_mi_rating.json")
    assert training["epochs"] == 2.0 and plug["persona_tokens"] == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("training:\n  epocs: 3\n", "does not know: epocs"),
        ("training: [1, 2\n", "not valid YAML"),
        ("data: here\n", "must hold a `training`"),
    ],
)
def test_a_bad_recipe_is_refused_with_what_is_wrong(tmp_path, text, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(PersonaDemoError, match=message):
        read_recipe(recipe)
    with pytest.raises(PersonaDemoError, match="Cannot read"):
        read_recipe(tmp_path / "missing.yaml")


def test_learned_attention_is_one_aggregation_choice(tmp_path):
    assert plug_shape(parsed("--aggregation", "learned-attention"), {}) == {
        "aggregation": "learned-attention"
    }
    assert plug_shape(parsed("--learned-attention"), {}) == {"aggregation": "learned-attention"}  # older flag
    older = tmp_path / "older.yaml"  # a sidecar written when learned attention was a separate flag
    older.write_text("config:\n  aggregation: attention\n  learned_attention: true\n")
    assert read_recipe(older)[1] == {"aggregation": "learned-attention"}
    older.write_text("config:\n  aggregation: mean\n  learned_attention: true\n")
    with pytest.raises(PersonaDemoError, match="learned attention needs aggregation 'attention'"):
        read_recipe(older)
    with pytest.raises(SystemExit):
        parsed("--aggregation", "max")
