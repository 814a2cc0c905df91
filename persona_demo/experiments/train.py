"""Train a PersonaPlug on LaMP-format data with the paper's recipe, at CPU scale.

Frozen LLM, frozen (cached) history embeddings; trainable projectors + instruction vector. AdamW with linear
warmup/decay, gradient accumulation, the official code's history-dropout augmentation (applied on the fly:
with probability 10/11 an example loses int(n·U(0, 0.5)) + 1 of its items, as the ×10 copies + original do),
periodic dev NLL, best checkpoint kept, seeded.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.lamp import LampDataset, load_split
from ..data.voice import is_voice_file, load_voice_split
from ..engine.checkpoint import PlugMetadata, save_plug
from ..engine.engine import PersonaEngine
from ..engine.generation import Row
from ..errors import PersonaDemoError
from .distributed import Single
from .nll import scoring_row
from .retrieval import build_rag_prompt


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.05
    max_steps: int = 0
    """Stop after this many optimizer steps (0 = run all epochs)."""
    seed: int = 0
    max_history: int = 256
    max_prompt_tokens: int = 256
    max_target_tokens: int = 64
    eval_every: int = 50
    eval_limit: int = 64
    limit: int = 0
    """Use only the first N training examples (0 = all)."""
    autocast_bf16: bool = True
    retrieval_k: int = 0
    """>0: each prompt carries the top-k BM25 items of the user's own history as text (LaMP's template), so
    the plug learns for the `pplug+bm25` prompt it is evaluated and served with."""

    def validated(self) -> TrainConfig:
        if self.batch_size < 1 or self.grad_accum < 1:
            raise PersonaDemoError("--batch-size and --grad-accum must be at least 1")
        if not 0 < self.lr < 1:
            raise PersonaDemoError("--lr must be between 0 and 1")
        if not 0 <= self.retrieval_k <= 16:
            raise PersonaDemoError("--retrieval-k must be between 0 (no retrieved text) and 16")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise PersonaDemoError("give --epochs > 0 or --max-steps > 0")
        return self


@dataclass
class Example:
    """A training/dev item as the plug sees it."""

    prompt: str
    query: str
    history: list[str]
    target: str
    user: str = ""


def to_examples(dataset: LampDataset, limit: int = 0, retrieval_k: int = 0) -> list[Example]:
    spec = dataset.spec
    out = []
    for e in dataset.examples[: limit or None]:
        if not e.target:
            continue
        history = spec.history_texts(e.profile)
        prompt = build_rag_prompt(dataset.task, e, retrieval_k, "bm25") if retrieval_k else e.input
        out.append(Example(prompt, e.query or e.input, history, e.target, e.user_id or e.id))
    if not out:
        raise PersonaDemoError(f"{dataset.source}: no examples with a target to train on")
    return out


VOICE_TARGETS_PER_USER = 3
"""Training targets per persona-voice train user (its most recent posts, each with its earlier posts)."""


def voice_examples(path: Path, split: str, limit: int = 0) -> list[Example]:
    """Persona-voice examples (train: several targets per user; dev: the most recent post of each user)."""
    per_user = VOICE_TARGETS_PER_USER if split == "train" else 1
    examples = load_voice_split(path, split, targets_per_user=per_user)[: limit or None]
    return [Example(e.prompt, e.prompt, e.history, e.target, e.user) for e in examples]


def history_dropout(history: list[str], rng: random.Random) -> list[str]:
    """The official augmentation: keep the original 1 time in 11, else drop a random share of items."""
    if len(history) <= 2 or rng.random() < 1 / 11:
        return history
    n_del = int(len(history) * rng.uniform(0, 0.5)) + 1
    return rng.sample(history, len(history) - n_del)


def state_path(out: Path) -> Path:
    """Where an interrupted run of `out` keeps its training state (`plug.safetensors` → `plug.train-state.pt`)."""
    out = Path(out)
    return out.with_name(out.stem + ".train-state.pt")


class TrainingInterrupted(PersonaDemoError):
    """Training stopped on request after saving its state; the message says how to resume."""

    def __init__(self, step: int, total: int, state: Path) -> None:
        super().__init__(
            f"training stopped at step {step}/{total}; state saved to {state}. "
            "Run the same command with --resume to continue."
        )
        self.step = step


class PlugTrainer:
    """Owns the optimisation of `engine.plug`; the engine's LLM and encoder stay frozen."""

    def __init__(self, engine: PersonaEngine, config: TrainConfig, dist: Single | None = None) -> None:
        self.engine = engine
        self.config = config.validated()
        self.tokenizer = engine.llm.tokenizer
        self.stop_requested = False
        """Set (e.g. by a signal handler) to save the training state after the current step and stop."""
        self.dist = dist or Single()
        """The processes this run spans (see distributed.py); only the main one writes files."""
        self.forward_plug: torch.nn.Module | None = None
        """The plug as the forward pass sees it while training (DDP-wrapped across processes)."""

    def row(self, example: Example, soft: torch.Tensor, soft_mask: torch.Tensor) -> Row:
        """The same teacher-forcing row as evaluation's NLL (cut prompt, cut target + EOS)."""
        cfg = self.config
        return scoring_row(
            self.engine,
            example.prompt,
            example.target,
            soft,
            soft_mask,
            cfg.max_prompt_tokens,
            cfg.max_target_tokens,
        )

    def batch_nll(
        self, batch: list[Example], histories: list[list[str]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.engine.plug_output([e.query for e in batch], histories, plug=self.forward_plug)
        rows = [self.row(e, out.soft_tokens[i], out.soft_mask[i]) for i, e in enumerate(batch)]
        with self.dist.autocast(self.config.autocast_bf16, self.engine.loaded_llm.device):
            nll, counts = self.engine.llm.token_nll(rows)
        return nll.float().sum(), counts.sum()

    @torch.no_grad()
    def dev_nll(self, dev: list[Example]) -> float:
        """Mean target-token NLL (nats) on dev examples, full histories (each process scores its share)."""
        self.engine.plug.eval()
        total, count = 0.0, 0
        for start in self.dist.round_robin(range(0, len(dev), self.config.batch_size)):
            batch = dev[start : start + self.config.batch_size]
            nll, n = self.batch_nll(batch, [e.history[-self.config.max_history :] for e in batch])
            total, count = total + float(nll), count + int(n)
        if self.dist.num_processes > 1:
            total, count = self.dist.sum(torch.tensor([total, float(count)], dtype=torch.float64)).tolist()
        return total / max(count, 1)

    @torch.no_grad()
    def dev_diagnostics(self, dev: list[Example]) -> dict[str, float]:
        """Collapse detector: mean pairwise cosine of P_u across different users, and the mean largest
        attention weight. Cosine near 1 means P_u is one more task token, the same for everyone."""
        self.engine.plug.eval()
        histories = [e.history[-self.config.max_history :] for e in dev if e.history]
        queries = [e.query for e in dev if e.history]
        users = [e.user or str(i) for i, e in enumerate(dev) if e.history]
        if len(histories) < 2:
            return {}
        out = self.engine.plug_output(queries, histories)
        persona = torch.nn.functional.normalize(out.soft_tokens[:, 1].float(), dim=-1)
        cosine = persona @ persona.T
        different = torch.tensor([[a != b for b in users] for a in users], device=cosine.device)
        return {
            "persona_cosine": float(cosine[different].mean()) if different.any() else float("nan"),
            "max_attention": float(out.weights.max(-1).values.mean()),
        }

    def fit(
        self,
        train: list[Example],
        dev: list[Example],
        out: Path,
        metadata: PlugMetadata,
        *,
        resume: bool = False,
        on_step: Callable[[int], None] | None = None,
    ) -> dict[str, float]:
        """Train; with `resume`, continue bit-for-bit from `out`'s training state (see `state_path`).

        The state (plug, optimizer, schedule, RNGs, data order, best score) is saved at every dev
        evaluation and when `stop_requested` is set (SIGTERM/SIGINT in the CLI); it is deleted at the end.
        """
        cfg = self.config
        plug = self.engine.plug
        # Warm the embedding cache in one batched pass (every text encoded once).
        self.engine.encoder.encode(sorted({t for e in train + dev for t in e.history[-cfg.max_history :]}))
        steps_per_epoch = math.ceil(len(train) / (cfg.batch_size * cfg.grad_accum))
        total = cfg.max_steps or max(1, int(steps_per_epoch * cfg.epochs))
        warmup = max(1, int(total * cfg.warmup_ratio))
        optimizer = torch.optim.AdamW(plug.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
        )
        self.forward_plug, optimizer = self.dist.prepare(plug, optimizer)
        state_file = state_path(out)
        if resume:
            state = self._load_state(state_file, optimizer, schedule)
            start, order, best, history_log = state["step"], state["order"], state["best"], state["log"]
            rng = random.Random()
            rng.setstate(state["python_rng"])
            torch.set_rng_state(state["torch_rng"])
        else:
            torch.manual_seed(cfg.seed)
            rng = random.Random(cfg.seed)
            start, order = 0, []
            best = self.dev_nll(dev) if dev else math.inf
            history_log = {"dev_nll_start": best, **self._diagnostics_log(dev, "start")}
            if dev:  # the untrained plug is the first candidate: `out` always holds the best so far
                self._save(out, metadata, 0, best, history_log)
        bar = tqdm(
            range(start, total),
            desc="training plug",
            unit="step",
            initial=start,
            total=total,
            disable=not self.dist.is_main,
        )
        for step in bar:
            plug.train()
            optimizer.zero_grad()
            loss_sum = 0.0
            for _ in range(cfg.grad_accum):
                if len(order) < cfg.batch_size:
                    fresh = list(range(len(train)))
                    rng.shuffle(fresh)
                    order += fresh
                batch = [train[i] for i in order[: cfg.batch_size]]
                del order[: cfg.batch_size]
                histories = [history_dropout(e.history[-cfg.max_history :], rng) for e in batch]
                # Every process drew the same global batch (same RNG use); each scores its share. The loss is
                # over the global token count, times the process count that DDP's gradient mean divides by.
                with self.dist.accumulate(self.forward_plug):
                    nll, count = self.batch_nll(self.dist.shard(batch), self.dist.shard(histories))
                    loss = nll * self.dist.num_processes / self.dist.sum(count)
                    self.dist.backward(loss, cfg.grad_accum)
                loss_sum += float(loss.detach()) / cfg.grad_accum
            optimizer.step()
            schedule.step()
            bar.set_postfix(loss=f"{loss_sum:.3f}")
            done = step + 1
            if dev and (done % cfg.eval_every == 0 or done == total):
                current = self.dev_nll(dev)
                diagnostics = self._diagnostics_log(dev, "last")
                history_log.update(diagnostics)
                if self.dist.is_main:
                    shown = ", ".join(f"{k.removesuffix('_last')} {v:.3f}" for k, v in diagnostics.items())
                    bar.write(f"step {done}: dev NLL {current:.4f} (best {best:.4f}); {shown}")
                if current < best:
                    best = current
                    self._save(out, metadata, done, best, history_log)
            if on_step is not None:
                on_step(done)
            stop = self.dist.any(self.stop_requested)  # a signal may reach some processes only: all stop
            if done < total and (stop or (dev and done % cfg.eval_every == 0)):
                self._save_state(state_file, optimizer, schedule, done, order, best, history_log, rng)
            if stop and done < total:
                self.dist.wait()  # the state is on disk before any process exits
                bar.close()
                raise TrainingInterrupted(done, total, state_file)
        if not dev:
            self._save(out, metadata, total, math.nan, history_log)
        if self.dist.is_main:
            state_file.unlink(missing_ok=True)
        self.dist.wait()
        return {"dev_nll_start": history_log["dev_nll_start"], "dev_nll_best": best, "steps": total}

    def _diagnostics_log(self, dev: list[Example], when: str) -> dict[str, float]:
        return {f"{k}_{when}": v for k, v in self.dev_diagnostics(dev).items()}

    def _state_config(self) -> dict[str, object]:
        """The settings a resumed run must share with the interrupted one."""
        return {k: v for k, v in asdict(self.config).items() if k not in {"eval_every", "eval_limit"}}

    def _save_state(self, path, optimizer, schedule, step, order, best, log, rng) -> None:
        if not self.dist.is_main:  # every process holds the same state; one writes it
            return
        state = {
            "step": step,
            "plug": self.engine.plug.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "order": list(order),
            "best": best,
            "log": log,
            "python_rng": rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "config": self._state_config(),
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(path)  # atomic: a kill while saving leaves the previous state intact

    def _load_state(self, path: Path, optimizer, schedule) -> dict:
        if not path.is_file():
            raise PersonaDemoError(f"nothing to resume: {path} does not exist (start without --resume)")
        try:
            state = torch.load(path, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
            raise PersonaDemoError(
                f"{path} is not a readable training state ({type(exc).__name__})"
            ) from None
        if state.get("config") != self._state_config():
            raise PersonaDemoError(
                f"{path} was saved with other training settings; resume with the same flags as the first run"
            )
        self.engine.plug.load_state_dict(state["plug"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        return state

    def _save(self, out: Path, metadata: PlugMetadata, step: int, dev_nll: float, log: dict) -> None:
        if not self.dist.is_main:
            return
        metadata.training = {**asdict(self.config), "step": step}
        metadata.metrics = {**log, "dev_nll": dev_nll}
        save_plug(out, self.engine.plug, metadata)


def train_plug(
    engine: PersonaEngine,
    data_dir: Path,
    out: Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    trainer: PlugTrainer | None = None,
) -> dict[str, float]:
    """Load `train` (and `dev` if present) from a LaMP folder, or the train/dev users of a per-user JSONL
    file (the persona-voice task), and train the engine's plug into `out`."""
    if is_voice_file(data_dir):
        if config.retrieval_k:
            raise PersonaDemoError(
                "--retrieval-k is for LaMP tasks; the persona-voice prompt carries no retrieved text"
            )
        train = voice_examples(data_dir, "train", config.limit)
        dev = voice_examples(data_dir, "dev", config.eval_limit)
        task = "persona_voice"
    else:
        k = config.retrieval_k
        train = to_examples(load_split(data_dir, "train"), config.limit, k)
        dev_path = Path(data_dir) / "dev_questions.json"
        dev = (
            to_examples(load_split(data_dir, "dev"), 0, k)[: config.eval_limit] if dev_path.is_file() else []
        )
        task = Path(data_dir).name
    metadata = PlugMetadata(
        llm_id=engine.loaded_llm.model_id,
        encoder_id=engine.encoder.encoder_id,
        config=engine.plug.config,
        task=task,
    )
    trainer = trainer or PlugTrainer(engine, config)
    return trainer.fit(train, dev, Path(out), metadata, resume=resume)
