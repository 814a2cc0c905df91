"""`python -m persona_demo train`: train a plug on a LaMP-format folder (see experiments/train.py)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from .cli_generate import add_settings_arguments, disk_embedding_cache, settings_from_args
from .errors import PersonaDemoError


def add_train_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a persona plug on LaMP-format data")
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="LaMP folder with train_questions.json ..., or a per-user .jsonl(.gz) file (persona voice)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output plug (.safetensors)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-steps", type=int, default=0, help="stop after N optimizer steps (0 = epochs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="use the first N training examples (0 = all)")
    parser.add_argument("--eval-every", type=int, default=50, help="dev evaluation every N steps")
    parser.add_argument("--eval-limit", type=int, default=64, help="dev examples per evaluation")
    parser.add_argument("--tau", type=float, default=1.0, help="aggregator temperature (1 = the paper)")
    parser.add_argument("--aggregation", choices=["attention", "mean"], default="attention")
    parser.add_argument(
        "--persona-tokens",
        type=int,
        default=1,
        help="soft persona tokens: 1 = the paper's pooled P_u; k > 1 adds the k-1 most attended items",
    )
    parser.add_argument(
        "--learned-attention",
        action="store_true",
        help="train the attention over history items (a query map and a temperature scale, both starting at "
        "the frozen encoder's weights); the paper trains the whole input encoder for this",
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
        default=1.0,
        help="with --centre-persona: the share of the centre taken off (0-1]; 1 leaves P_u only what differs "
        "between users, smaller values keep part of what they share, which the frozen LLM reads better",
    )
    parser.add_argument(
        "--attention-lr",
        type=float,
        default=0.0,
        help="learning rate of the learned attention (0 = --lr); it needs a larger one to move in an epoch",
    )
    parser.add_argument(
        "--retrieval-k",
        type=int,
        default=0,
        help="train for the pplug+bm25 prompt: the top-k BM25 items of the user's history as text (0 = none)",
    )
    parser.add_argument(
        "--retrieval-share",
        type=float,
        default=1.0,
        help="with --retrieval-k: the share of training examples that carry the retrieved text (the rest keep "
        "the plain prompt, so one plug serves both pplug and pplug+bm25)",
    )
    parser.add_argument(
        "--contrastive",
        type=float,
        default=0.0,
        help="weight of a hinge that makes the gold likelier under the user's own history than under "
        "another user's (0 = the paper's loss alone); doubles the forward passes per step",
    )
    parser.add_argument(
        "--contrastive-margin",
        type=float,
        default=0.1,
        help="nats per target token by which the own history must beat another user's",
    )
    parser.add_argument(
        "--diversity",
        type=float,
        default=0.0,
        help="weight of a penalty on the mean cosine between different users' persona tokens above "
        "--diversity-target (0 = off); the LLM loss alone makes P_u one task token shared by everyone",
    )
    parser.add_argument(
        "--diversity-target",
        type=float,
        default=0.9,
        help="the cross-user cosine of P_u below which the diversity penalty is zero",
    )
    parser.add_argument(
        "--train-query-encoder",
        action="store_true",
        help="train a copy of the input encoder, as the paper does (it starts as the frozen history encoder; "
        "the history vectors stay frozen). The plug then carries the copy: ~90 MB instead of ~4 MB",
    )
    parser.add_argument(
        "--query-encoder-lr",
        type=float,
        default=None,
        help="with --train-query-encoder: its learning rate (default 1e-4, the paper's)",
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
    from .engine.checkpoint import copy_plug_weights, untrained_plug
    from .engine.engine import PersonaEngine
    from .experiments import distributed
    from .experiments.train import PlugTrainer, TrainConfig, TrainingInterrupted, train_plug

    if args.out.suffix != ".safetensors":
        raise PersonaDemoError("--out must end in .safetensors")
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        max_steps=args.max_steps,
        seed=args.seed,
        limit=args.limit,
        eval_every=args.eval_every,
        eval_limit=args.eval_limit,
        retrieval_k=args.retrieval_k,
        retrieval_share=args.retrieval_share,
        contrastive=args.contrastive,
        contrastive_margin=args.contrastive_margin,
        attention_lr=args.attention_lr,
        diversity=args.diversity,
        diversity_target=args.diversity_target,
        **({"query_encoder_lr": args.query_encoder_lr} if args.query_encoder_lr is not None else {}),
    ).validated()
    if args.query_encoder_lr is not None and not args.train_query_encoder:
        raise PersonaDemoError(
            "--query-encoder-lr needs --train-query-encoder (there is no encoder to train)"
        )
    # Accelerate only under `accelerate launch`; a plain run is one process as before.
    dist = distributed.current(config.grad_accum, config.batch_size)
    settings = distributed.settings_for(settings_from_args(args), dist)
    engine = PersonaEngine.from_settings(settings, cache=disk_embedding_cache(settings))
    try:
        plug_config = engine.default_plug_config(
            tau=args.tau,
            aggregation=args.aggregation,
            persona_tokens=args.persona_tokens,
            learned_attention=args.learned_attention,
            centre_persona=args.centre_persona,
            centre_strength=args.centre_strength,
            query_encoder=args.train_query_encoder,
        )
    except ValueError as exc:
        raise PersonaDemoError(str(exc)) from None
    engine.plug = untrained_plug(plug_config, args.seed, engine.query_encoder_copy).to(
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
