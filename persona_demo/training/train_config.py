"""How a plug is trained: every training setting once, with the help text its `train` flag shows.

A light module (no torch), so the command line can build its flags from it without loading models. A field
with a `help` in its metadata is a `train --flag` (underscores become dashes); the others keep their defaults.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..engine.plug_config import upgraded_plug_shape
from ..errors import PersonaDemoError
from ..tasks.limits import PERSONA_TEXT_WORDS, PROMPT_TOKENS


def flag(default: Any, help: str) -> Any:
    """A field that `train` exposes as a flag."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = flag(1.0, "passes over the training examples")
    batch_size: int = flag(8, "examples per step")
    grad_accum: int = flag(1, "steps whose gradients are summed before each optimizer step")
    lr: float = flag(1e-3, "AdamW learning rate of the projectors and the instruction vector")
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.05
    max_steps: int = flag(0, "stop after N optimizer steps (0 = run all epochs)")
    seed: int = flag(0, "seed of the plug's initialisation, the example order and the seeded choices")
    max_history: int = 256
    max_prompt_tokens: int = PROMPT_TOKENS
    max_target_tokens: int = 64
    eval_every: int = flag(50, "dev evaluation every N steps")
    eval_limit: int = flag(64, "dev examples per evaluation")
    limit: int = flag(0, "use the first N training examples (0 = all)")
    autocast_bf16: bool = True
    retrieval_k: int = flag(
        0,
        "train for the pplug+bm25 prompt: the top-k BM25 items of the user's own history as text, in LaMP's "
        "template (0 = none); on a blog file, the persona prompt with that many of the persona's texts",
    )
    retrieval_share: float = flag(
        1.0,
        "with --retrieval-k: the share of training examples (seeded) that carry the retrieved text; the rest "
        "keep the plain prompt, so one plug serves both pplug and pplug+bm25",
    )
    words_per_text: int = flag(
        PERSONA_TEXT_WORDS,
        "on a blog file with --retrieval-k: words each persona text keeps in the persona prompt (the studio "
        "reads the plug's own figure)",
    )
    free_text_share: float = flag(
        0.0,
        "LaMP data: the share of training examples (seeded) whose history is read without titles or scores, "
        "as the studio holds a typed or uploaded persona, in the plug's history and in the retrieved items",
    )
    typed_share: float = flag(
        0.0,
        "blog file: the share of examples (seeded, train and dev) whose history is what a person types into "
        "the studio, their last 3-10 posts each cut to its first 20-60 words",
    )
    user_holdout: bool = True
    """Keep the held-out authors (`tasks.lamp.HELDOUT_SHARE`) out of training and checkpoint selection, so the
    `heldout` split measures people the plug never saw (`train --all-authors` turns it off)."""
    contrastive: float = flag(
        0.0,
        "weight of a hinge that makes the gold likelier under the user's own history than under another "
        "user's (0 = the paper's loss alone); doubles the forward passes per step",
    )
    contrastive_margin: float = flag(
        0.1, "nats per target token by which the own history must beat another user's"
    )
    attention_lr: float = flag(
        0.0, "learning rate of the learned attention (0 = --lr); it needs a larger one to move in an epoch"
    )
    diversity: float = flag(
        0.0,
        "weight of a penalty on the mean cosine between different users' persona tokens above "
        "--diversity-target (0 = off); the LLM loss alone makes P_u one task token shared by everyone",
    )
    diversity_target: float = flag(
        0.9, "the cross-user cosine of P_u below which the diversity penalty is zero"
    )
    query_encoder_lr: float = flag(
        1e-4,
        "with --train-query-encoder: its learning rate (the paper's 1e-4: a pretrained transformer at the "
        "projectors' 1e-3 would forget what it knows)",
    )

    @property
    def composite_score(self) -> bool:
        """Whether checkpoints are picked by NLL plus extra terms (the training objective), not NLL alone."""
        return bool(self.contrastive or self.diversity)

    def validated(self) -> TrainConfig:
        if self.batch_size < 1 or self.grad_accum < 1:
            raise PersonaDemoError("--batch-size and --grad-accum must be at least 1")
        if not 0 < self.lr < 1:
            raise PersonaDemoError("--lr must be between 0 and 1")
        if not 0 <= self.retrieval_k <= 16:
            raise PersonaDemoError("--retrieval-k must be between 0 (no retrieved text) and 16")
        if not 0 < self.retrieval_share <= 1:
            raise PersonaDemoError("--retrieval-share must be above 0 and at most 1")
        if not 0 <= self.free_text_share <= 1:
            raise PersonaDemoError("--free-text-share must be between 0 and 1")
        if not 0 <= self.typed_share <= 1:
            raise PersonaDemoError("--typed-share must be between 0 and 1")
        if self.retrieval_share < 1 and not self.retrieval_k:
            raise PersonaDemoError("--retrieval-share needs --retrieval-k (the number of items to retrieve)")
        if not 0 <= self.attention_lr < 1:
            raise PersonaDemoError("--attention-lr must be between 0 (= --lr) and 1")
        if not 0 < self.query_encoder_lr < 1:
            raise PersonaDemoError("--query-encoder-lr must be between 0 and 1")
        if self.contrastive < 0 or self.contrastive_margin < 0:
            raise PersonaDemoError("--contrastive and --contrastive-margin must be 0 or more")
        if self.diversity < 0:
            raise PersonaDemoError("--diversity must be 0 or more")
        if not -1 <= self.diversity_target <= 1:
            raise PersonaDemoError("--diversity-target is a cosine: between -1 and 1")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise PersonaDemoError("give --epochs > 0 or --max-steps > 0")
        return self


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One `--flag` per exposed TrainConfig field, typed by the field; a flag left out keeps the field's
    default (the parsed value is None, so a command can tell a flag given at its default from one not given)."""
    for f in fields(TrainConfig):
        if "help" in f.metadata and f.default is not MISSING:
            parser.add_argument(
                f"--{f.name.replace('_', '-')}",
                type=type(f.default),
                default=None,
                help=f"{f.metadata['help']} (default {f.default})",
            )


def config_from_args(
    args: argparse.Namespace, recipe: dict[str, Any] | None = None, **more: Any
) -> TrainConfig:
    """The TrainConfig a parsed `train` command asks for: its flags over the recipe's `training` block over
    the defaults (`more`: settings that are not plain flags)."""
    given = {
        f.name: value
        for f in fields(TrainConfig)
        if "help" in f.metadata and (value := getattr(args, f.name, None)) is not None
    }
    return TrainConfig(**{**(recipe or {}), **given, **more}).validated()


RECIPE_PLUG_KEYS = {
    "tau",
    "aggregation",
    "persona_tokens",
    "centre_persona",
    "centre_strength",
    "query_encoder",
}
"""The plug's shape in a recipe's `config` block: a plug sidecar's `config` without what the models fix
(encoder_dim, llm_dim, token_norm)."""

DERIVED_PLUG_KEYS = {"encoder_dim", "llm_dim", "token_norm"}
RUN_STATE_KEYS = {"step"}
SIDECAR_ONLY_KEYS = {"format", "llm_id", "encoder_id", "task", "metrics"}
"""Sidecar keys a recipe may carry (a sidecar copied as it is) that training measures instead of reading."""


def read_recipe(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training settings, plug shape) from a recipe file: YAML with a `training` block (TrainConfig fields)
    and a `config` block (the plug's shape), the same two blocks a trained plug's .json sidecar holds."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PersonaDemoError(f"Cannot read the recipe {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PersonaDemoError(f"The recipe {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not set(data) <= {"training", "config", *SIDECAR_ONLY_KEYS}:
        raise PersonaDemoError(
            f"The recipe {path} must hold a `training` and/or a `config` block, nothing else"
        )
    training = dict(data.get("training") or {})
    try:
        plug = upgraded_plug_shape(dict(data.get("config") or {}))
    except ValueError as exc:
        raise PersonaDemoError(f"The recipe {path}: {exc}") from None
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(
        (set(training) - known - RUN_STATE_KEYS) | (set(plug) - RECIPE_PLUG_KEYS - DERIVED_PLUG_KEYS)
    )
    if unknown:
        raise PersonaDemoError(f"The recipe {path} has settings train does not know: {', '.join(unknown)}")
    return (
        {k: v for k, v in training.items() if k not in RUN_STATE_KEYS},
        {k: v for k, v in plug.items() if k in RECIPE_PLUG_KEYS},
    )
