"""`python -m persona_demo train`: train a plug on a LaMP-format folder (see training/train.py)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from ..config import add_settings_arguments, settings_from_args
from ..engine.cache import disk_embedding_cache
from ..engine.plug_config import AGGREGATIONS
from ..errors import PersonaDemoError
from ..training.train_config import add_config_flags, config_from_args, read_recipe


def add_train_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a persona plug on LaMP-format data")
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="LaMP folder with train_questions.json ..., or a per-user .jsonl(.gz) file (persona voice)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output plug (.safetensors)")
    parser.add_argument(
        "--config",
        type=Path,
        help="a recipe (configs/train/*.yaml, or a trained plug's .json sidecar): its settings become the "
        "defaults, flags given here override them",
    )
    add_config_flags(parser)  # --epochs, --lr, --retrieval-k ...: one per TrainConfig setting
    parser.add_argument("--tau", type=float, help="aggregator temperature (default 1 = the paper)")
    parser.add_argument(
        "--aggregation",
        choices=AGGREGATIONS,
        help="how history items are pooled: attention (default, the paper's), learned-attention (the same with "
        "a trained query map and temperature, both starting at the frozen encoder's weights; the paper trains "
        "the whole input encoder for this), mean (the paper's w/o IA ablation)",
    )
    parser.add_argument(
        "--persona-tokens",
        type=int,
        help="soft persona tokens: 1 = the paper's pooled P_u; k > 1 adds the k-1 most attended items",
    )
    parser.add_argument(  # the older spelling of --aggregation learned-attention
        "--learned-attention",
        dest="aggregation",
        action="store_const",
        const="learned-attention",
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--centre-persona",
        action="store_true",
        help="subtract the population mean of projected history items (a running mean, not learned), so P_u "
        "carries what differs between users and the instruction token what they share",
    )
    parser.add_argument(
        "--centre-strength",
        type=float,
        help="with --centre-persona: the share of the centre taken off (0-1], default 1; 1 leaves P_u only what "
        "differs between users, smaller values keep part of what they share, which the frozen LLM reads better",
    )
    parser.add_argument(
        "--all-authors",
        action="store_true",
        help="LaMP data: train on every author, including the held-out ones (then `evaluate --split heldout` "
        "no longer measures people the plug never saw)",
    )
    parser.add_argument(
        "--train-query-encoder",
        action="store_true",
        help="train a copy of the input encoder, as the paper does (it starts as the frozen history encoder; "
        "the history vectors stay frozen). The plug then carries the copy: ~90 MB instead of ~4 MB",
    )
    parser.add_argument(
        "--init",
        type=Path,
        help="start from this plug's weights (e.g. a shipped plug, with more --persona-tokens)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run (same flags) from OUT's .train-state.pt",
    )
    add_settings_arguments(parser)
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from ..engine import distributed
    from ..engine.checkpoint import copy_plug_weights, untrained_plug
    from ..engine.engine import PersonaEngine
    from ..training.train import PlugTrainer, TrainingInterrupted, train_plug

    if args.out.suffix != ".safetensors":
        raise PersonaDemoError("--out must end in .safetensors")
    recipe, recipe_plug = read_recipe(args.config) if args.config else ({}, {})
    if args.all_authors:
        recipe["user_holdout"] = False
    config = config_from_args(args, recipe)
    shape = plug_shape(args, recipe_plug)
    if args.query_encoder_lr is not None and not shape.get("query_encoder"):
        raise PersonaDemoError(
            "--query-encoder-lr needs --train-query-encoder (there is no encoder to train)"
        )
    # Accelerate only under `accelerate launch`; a plain run is one process as before.
    dist = distributed.current(config.grad_accum, config.batch_size)
    settings = distributed.settings_for(settings_from_args(args), dist, training=True)
    engine = PersonaEngine.from_settings(settings, cache=disk_embedding_cache(settings))
    try:
        plug_config = engine.default_plug_config(**shape)
    except ValueError as exc:
        raise PersonaDemoError(str(exc)) from None
    engine.plug = untrained_plug(plug_config, config.seed, engine.query_encoder_copy).to(
        engine.loaded_llm.device
    )
    if args.init is not None:  # same weights, possibly another tau / token count
        start, _ = engine.read_plug(args.init)
        copy_plug_weights(engine.plug, start, str(args.init))
    trainer = PlugTrainer(engine, config, dist)

    def request_stop(signum: int, _frame: object) -> None:
        print(
            f"\n{signal.Signals(signum).name}: saving the training state after this step...", file=sys.stderr
        )
        trainer.stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = train_plug(engine, args.data, args.out, config, resume=args.resume, trainer=trainer)
    except TrainingInterrupted as stopped:
        if dist.is_main:
            print(str(stopped), file=sys.stderr)
        return 3
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if dist.is_main:
        print(json.dumps({"out": str(args.out), **result}))
    return 0


def plug_shape(args: argparse.Namespace, recipe: dict[str, object]) -> dict[str, object]:
    """The plug's shape: flags given on the command line, else the recipe's `config` block, else the defaults
    (PlugConfig's)."""
    given = {
        "tau": args.tau,
        "aggregation": args.aggregation,
        "persona_tokens": args.persona_tokens,
        "centre_persona": args.centre_persona or None,
        "centre_strength": args.centre_strength,
        "query_encoder": args.train_query_encoder or None,
    }
    return {**recipe, **{k: v for k, v in given.items() if v is not None}}
