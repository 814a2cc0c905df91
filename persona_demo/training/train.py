"""Train a PersonaPlug on LaMP-format data with the paper's recipe, at CPU scale.

Frozen LLM, frozen (cached) history embeddings; trainable projectors + instruction vector. AdamW with linear
warmup/decay, gradient accumulation, the official code's history-dropout augmentation (applied on the fly:
with probability 10/11 an example loses int(n·U(0, 0.5)) + 1 of its items, as the ×10 copies + original do),
periodic dev NLL, best checkpoint kept, seeded.

Optional contrastive term : the paper's loss alone lets P_u become a task token that any user's history
produces. With `contrastive > 0`, each target must also be likelier under its user's own history than under
another user's (a fixed seeded derangement) by `contrastive_margin` nats/token, or pay the shortfall.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.voice import is_voice_file, load_voice_split, typed_examples
from ..engine.checkpoint import LEARNED_ATTENTION_KEYS, PlugMetadata, is_query_encoder_key, save_plug
from ..engine.distributed import Single
from ..engine.engine import PersonaEngine
from ..engine.generation import Prompt, Row
from ..engine.plug import PlugOutput
from ..errors import PersonaDemoError
from ..evaluation.collapse import cross_user_cosine, mean_cross_user_cosine
from ..tasks.lamp import LampDataset, load_split, user_split
from ..tasks.nll import derangement, prompt_fit, scoring_row
from ..tasks.persona_prompt import PersonaPromptConfig, persona_prompt_builder
from ..tasks.retrieval import rag_prompt_builder
from .train_config import TrainConfig


@dataclass
class Example:
    """A training/dev item as the plug sees it."""

    prompt: Prompt
    query: str
    history: list[str]
    target: str
    user: str = ""
    shuffled_prompt: Prompt = ""
    """The same question as another user would see it (their retrieved items, if any): the contrastive term."""
    shuffled_history: list[str] = field(default_factory=list)
    """Another user's history (the contrastive term's negative)."""


def to_examples(
    dataset: LampDataset,
    limit: int = 0,
    retrieval_k: int = 0,
    shuffle_seed: int | None = None,
    retrieval_share: float = 1.0,
    share_seed: int = 0,
    fit: tuple[Callable[[str], int], int] | None = None,
    free_text_share: float = 0.0,
) -> list[Example]:
    """Training/dev examples; with `shuffle_seed`, each also carries another user's history (and, with
    `retrieval_k`, the prompt built from that user's items ranked against this question).

    With `retrieval_share` < 1, a seeded share of the examples carries the retrieved text, the rest the plain
    input; an example's negative is built the same way as its own prompt. `fit` keeps the question in prompts
    that the row will cut (see `rag_prompt_builder`). With `free_text_share`, a seeded share of the examples
    reads its profile without titles or scores (`LampTask.free_text_profile`), as a studio persona is held."""
    spec = dataset.spec
    kept = [e for e in dataset.examples[: limit or None] if e.target]
    if not kept:
        raise PersonaDemoError(f"{dataset.source}: no examples with a target to train on")
    if free_text_share:
        free = random.Random(share_seed + 1)
        kept = [
            replace(e, profile=spec.free_text_profile(e.profile)) if free.random() < free_text_share else e
            for e in kept
        ]
    rag = rag_prompt_builder(dataset.task, kept, retrieval_k, "bm25", fit) if retrieval_k else None
    chooser = random.Random(share_seed)
    hybrid = [rag is not None and chooser.random() < retrieval_share for _ in kept]

    def prompt_for(i: int, j: int) -> str:
        """Example i's prompt with user j's retrieved items (j = i: its own), or its plain input."""
        return rag(i, j) if rag and hybrid[i] else kept[i].input

    out = [
        Example(
            prompt_for(i, i), e.query or e.input, spec.history_texts(e.profile), e.target, e.user_id or e.id
        )
        for i, e in enumerate(kept)
    ]
    if shuffle_seed is not None:
        attach_shuffled(out, shuffle_seed, prompt_for)
    return out


def attach_shuffled(
    examples: list[Example], seed: int, prompt_for: Callable[[int, int], Prompt] | None = None
) -> None:
    """Give example i the history of example j(i) of another user; `prompt_for(i, j)` rebuilds i's prompt
    with j's retrieved items (default: i's own prompt, for prompts without retrieved text)."""
    donors = derangement([e.user or str(i) for i, e in enumerate(examples)], seed)
    for i, (example, j) in enumerate(zip(examples, donors)):
        example.shuffled_history = examples[j].history
        example.shuffled_prompt = prompt_for(i, j) if prompt_for else example.prompt


VOICE_TARGETS_PER_USER = 3
"""Training targets per persona-voice train user (its most recent posts, each with its earlier posts)."""


def voice_examples(
    path: Path,
    split: str,
    limit: int = 0,
    *,
    engine: PersonaEngine | None = None,
    persona_prompt: PersonaPromptConfig | None = None,
    text_share: float = 1.0,
    seed: int = 0,
    shuffle_seed: int | None = None,
    typed_share: float = 0.0,
) -> list[Example]:
    """Persona-voice examples (train: several targets per user; dev: the most recent post of each user).

    With `persona_prompt` (texts > 0) a seeded share `text_share` of the prompts is the studio's persona prompt
    (the instruction under the persona's most fitting earlier posts, `tasks.persona_prompt`), the rest the bare
    instruction. `shuffle_seed` attaches another user's history (and persona prompt) to each example.
    `typed_share`: a seeded share of the examples read a typed history instead (`data.voice.typed_examples`)."""
    per_user = VOICE_TARGETS_PER_USER if split == "train" else 1
    found = load_voice_split(path, split, targets_per_user=per_user)[: limit or None]
    found = typed_examples(found, typed_share, seed)
    build = None
    if persona_prompt is not None and persona_prompt.texts > 0:
        if engine is None:
            raise PersonaDemoError("persona prompts need the engine's encoder to choose the texts")
        build = persona_prompt_builder(
            engine.encoder, [e.prompt for e in found], [e.history for e in found], persona_prompt
        )
    chooser = random.Random(seed)
    persona = [build is not None and chooser.random() < text_share for _ in found]

    def prompt_for(i: int, j: int) -> Prompt:
        return build(i, j) if build is not None and persona[i] else found[i].prompt

    out = [Example(prompt_for(i, i), e.prompt, e.history, e.target, e.user) for i, e in enumerate(found)]
    if shuffle_seed is not None:
        attach_shuffled(out, shuffle_seed, prompt_for)
    return out


def history_dropout(history: list[str], rng: random.Random) -> list[str]:
    """The official augmentation: keep the original 1 time in 11, else drop a random share of items."""
    if len(history) <= 2 or rng.random() < 1 / 11:
        return history
    n_del = int(len(history) * rng.uniform(0, 0.5)) + 1
    return rng.sample(history, len(history) - n_del)


def tagged(diagnostics: dict[str, float], when: str) -> dict[str, float]:
    """Collapse-detector figures as the plug's metrics store them (`persona_cosine_start`, ..._last)."""
    return {f"{k}_{when}": v for k, v in diagnostics.items()}


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


@dataclass
class Run:
    """Where a training run stands: what a resumed run restores."""

    step: int
    order: list[int]
    """Training example indices still to draw, in order (refilled with a fresh shuffle when short)."""
    best: float
    """The best dev score so far (the plug in `out` has it)."""
    log: dict[str, float]
    rng: random.Random


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

    def row(self, prompt: Prompt, target: str, soft: torch.Tensor, soft_mask: torch.Tensor) -> Row:
        """The same teacher-forcing row as evaluation's NLL (cut prompt, cut target + EOS)."""
        cfg = self.config
        return scoring_row(
            self.engine,
            prompt,
            target,
            soft,
            soft_mask,
            cfg.max_prompt_tokens,
            cfg.max_target_tokens,
        )

    def row_nll(
        self, batch: list[Example], histories: list[list[str]], prompts: list[Prompt] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example summed target NLL and token counts, with these histories (and prompts)."""
        nll, counts, _ = self.row_nll_and_plug(batch, histories, prompts)
        return nll, counts

    def row_nll_and_plug(
        self, batch: list[Example], histories: list[list[str]], prompts: list[Prompt] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, PlugOutput]:
        """`row_nll` and the plug output it used (the diversity term reads its P_u)."""
        out = self.engine.plug_output([e.query for e in batch], histories, plug=self.forward_plug)
        prompts = prompts or [e.prompt for e in batch]
        rows = [
            self.row(p, e.target, out.soft_tokens[i], out.soft_mask[i])
            for i, (p, e) in enumerate(zip(prompts, batch))
        ]
        with self.dist.autocast(self.config.autocast_bf16, self.engine.loaded_llm.device):
            nll, counts = self.engine.llm.token_nll(rows)
        return nll.float(), counts, out

    def diversity_penalty(self, out: PlugOutput, batch: list[Example]) -> torch.Tensor:
        """relu(mean cross-user cosine of this batch's P_u − target): zero once users are far enough apart.
        Rows without a user id count as distinct users."""
        users = [e.user or f"#{i}" for i, e in enumerate(batch)]
        cosine = cross_user_cosine(out.soft_tokens[:, 1], out.soft_mask[:, 1], users)
        if torch.isnan(cosine):
            return cosine.new_zeros(())
        return torch.relu(cosine - self.config.diversity_target)

    def batch_nll(
        self, batch: list[Example], histories: list[list[str]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        nll, counts = self.row_nll(batch, histories)
        return nll.sum(), counts.sum()

    def negatives(self, batch: list[Example], rng: random.Random | None) -> list[list[str]]:
        """Each example's other-user history, with the own history's augmentation when training (`rng`).

        Drawn for the whole global batch before sharding, like the own histories, so every process uses
        its RNG identically and keeps drawing the same batches."""
        if any(not e.shuffled_history for e in batch):
            raise PersonaDemoError("the contrastive term needs examples built with another user's history")
        histories = [e.shuffled_history[-self.config.max_history :] for e in batch]
        return histories if rng is None else [history_dropout(h, rng) for h in histories]

    def contrastive_sum(
        self,
        batch: list[Example],
        negatives: list[list[str]],
        own_nll: torch.Tensor,
        counts: torch.Tensor,
    ) -> tuple[torch.Tensor, float]:
        """Σ over examples of relu(margin − (NLL_shuffled − NLL_own)) in nats/token, and the mean gap.

        The negative is the same question with another user's history (and retrieved items): only what
        differs between users can pay the margin, so the term rewards personal signal, not task fit."""
        shuffled_nll, _ = self.row_nll(batch, negatives, [e.shuffled_prompt for e in batch])
        gap = (shuffled_nll - own_nll) / counts.clamp(min=1)
        hinge = torch.relu(self.config.contrastive_margin - gap)
        return hinge.sum(), float(gap.detach().mean())

    @torch.no_grad()
    def dev_scores(self, dev: list[Example], diagnostics: dict[str, float]) -> dict[str, float]:
        """Dev NLL, and the score that picks the best checkpoint: the NLL, plus (with the contrastive term)
        its weighted mean hinge on dev and (with the diversity term) its weighted cosine excess, i.e. the
        training objective, so a plug that trades a little NLL for personal signal can win. `diagnostics`: this
        plug's `dev_diagnostics(dev)`, which callers log anyway (the diversity term reads its cosine)."""
        self.engine.plug.eval()
        total, count, hinge_total = 0.0, 0, 0.0
        for start in self.dist.round_robin(range(0, len(dev), self.config.batch_size)):
            batch = dev[start : start + self.config.batch_size]
            nll, n = self.row_nll(batch, [e.history[-self.config.max_history :] for e in batch])
            total, count = total + float(nll.sum()), count + int(n.sum())
            if self.config.contrastive:
                hinge_total += float(self.contrastive_sum(batch, self.negatives(batch, None), nll, n)[0])
        if self.dist.num_processes > 1:
            sums = torch.tensor([total, float(count), hinge_total], dtype=torch.float64)
            total, count, hinge_total = self.dist.sum(sums).tolist()
        nll, hinge = total / max(count, 1), hinge_total / max(len(dev), 1)
        scores = {"nll": nll, "hinge": hinge, "score": nll + self.config.contrastive * hinge}
        if self.config.diversity:  # the same excess over the whole dev sample (more user pairs than a batch)
            cosine = diagnostics.get("persona_cosine", float("nan"))
            excess = max(cosine - self.config.diversity_target, 0.0) if not math.isnan(cosine) else 0.0
            scores["score"] += self.config.diversity * excess
        return scores

    @torch.no_grad()
    def dev_diagnostics(self, dev: list[Example]) -> dict[str, float]:
        """Collapse detector: mean pairwise cosine of P_u across different users, and the mean largest
        attention weight. Cosine near 1 means P_u is one more task token, the same for everyone."""
        self.engine.plug.eval()
        histories = [e.history[-self.config.max_history :] for e in dev if e.history]
        queries = [e.query for e in dev if e.history]
        users = [e.user or str(i) for i, e in enumerate(dev) if e.history]
        if len(set(users)) < 2:
            return {}
        vectors = self.engine.history_tensor(histories)
        out = self.engine.plug_output(queries, histories, history_vectors=vectors)
        result = {
            "persona_cosine": mean_cross_user_cosine(out.soft_tokens[:, 1], out.soft_mask[:, 1], users),
            "max_attention": float(out.weights.max(-1).values.mean()),
        }
        plug = self.engine.plug
        if plug.config.centre_persona:  # the same P_u before the centre is taken off: what users share
            device = self.engine.loaded_llm.device
            raw = plug.history_proj(vectors[0].to(device, plug.instruction.dtype))
            pooled = torch.einsum("bl,bld->bd", out.weights.to(raw.dtype), raw)
            result["persona_cosine_uncentred"] = mean_cross_user_cosine(pooled, out.soft_mask[:, 1], users)
        return result

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
        # Warm the embedding cache in one batched pass (every text encoded once).
        self.engine.encoder.encode(sorted({t for e in train + dev for t in e.history[-cfg.max_history :]}))
        steps_per_epoch = math.ceil(len(train) / (cfg.batch_size * cfg.grad_accum))
        total = cfg.max_steps or max(1, int(steps_per_epoch * cfg.epochs))
        warmup = max(1, int(total * cfg.warmup_ratio))
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
        )
        self.forward_plug, optimizer = self.dist.prepare(self.engine.plug, optimizer)
        state_file = state_path(out)
        if resume:
            run = self._resume_run(state_file, optimizer, schedule)
        else:
            run = self._start_run(train, dev, out, metadata)
        bar = tqdm(
            range(run.step, total),
            desc="training plug",
            unit="step",
            initial=run.step,
            total=total,
            disable=not self.dist.is_main,
        )
        for step in bar:
            loss, gap = self._train_step(train, run, optimizer)
            schedule.step()
            bar.set_postfix(loss=f"{loss:.3f}", **({"gap": f"{gap:+.3f}"} if cfg.contrastive else {}))
            done = run.step = step + 1
            if dev and (done % cfg.eval_every == 0 or done == total):
                self._evaluate_and_keep_best(dev, run, out, metadata, bar.write)
            if on_step is not None:
                on_step(done)
            stop = self.dist.any(self.stop_requested)  # a signal may reach some processes only: all stop
            if done < total and (stop or (dev and done % cfg.eval_every == 0)):
                self._save_state(state_file, optimizer, schedule, run)
            if stop and done < total:
                self.dist.wait()  # the state is on disk before any process exits
                bar.close()
                raise TrainingInterrupted(done, total, state_file)
        if not dev:
            self._save(out, metadata, total, math.nan, run.log)
        if self.dist.is_main:
            state_file.unlink(missing_ok=True)
        self.dist.wait()
        result = {"dev_nll_start": run.log["dev_nll_start"], "dev_nll_best": run.best, "steps": total}
        if cfg.composite_score:  # `best` was NLL + extra terms; report the NLL of the kept step beside it
            result |= {"dev_score_best": run.best, "dev_nll_best": run.log.get("dev_nll", math.nan)}
        return result

    def _start_run(self, train: list[Example], dev: list[Example], out: Path, metadata: PlugMetadata) -> Run:
        """A fresh run: seeded RNGs, the centre set, the untrained plug scored on dev and saved as the first
        candidate, so `out` always holds the best plug so far."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        run = Run(step=0, order=[], best=math.inf, log={}, rng=random.Random(cfg.seed))
        if self.engine.plug.config.centre_persona:
            self.start_centre(train)
        diagnostics = self.dev_diagnostics(dev)
        scores = self.dev_scores(dev, diagnostics) if dev else {"nll": math.inf, "score": math.inf}
        run.best = scores["score"]
        run.log = {"dev_nll_start": scores["nll"], **tagged(diagnostics, "start")}
        if cfg.composite_score and dev:
            run.log |= {"dev_score_start": run.best, "dev_nll": scores["nll"]}
        if dev:
            self._save(out, metadata, 0, run.best, run.log)
        return run

    def _resume_run(self, state_file: Path, optimizer, schedule) -> Run:
        """The interrupted run, exactly where it stopped (plug, optimizer, schedule, RNGs, data order)."""
        state = self._load_state(state_file, optimizer, schedule)
        rng = random.Random()
        rng.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        return Run(step=state["step"], order=state["order"], best=state["best"], log=state["log"], rng=rng)

    def _train_step(self, train: list[Example], run: Run, optimizer) -> tuple[float, float]:
        """One optimizer step over `grad_accum` batches drawn from the run's order; (loss, contrastive gap)."""
        cfg = self.config
        self.engine.plug.train()
        optimizer.zero_grad()
        loss_sum, gap_sum = 0.0, 0.0
        for _ in range(cfg.grad_accum):
            if len(run.order) < cfg.batch_size:
                fresh = list(range(len(train)))
                run.rng.shuffle(fresh)
                run.order += fresh
            batch = [train[i] for i in run.order[: cfg.batch_size]]
            del run.order[: cfg.batch_size]
            histories = [history_dropout(e.history[-cfg.max_history :], run.rng) for e in batch]
            negatives = self.negatives(batch, run.rng) if cfg.contrastive else []
            # Every process drew the same global batch (same RNG use); each scores its share. The loss is over
            # the global token count, times the process count that DDP's gradient mean divides by.
            with self.dist.accumulate(self.forward_plug):
                shard = self.dist.shard(batch)
                rows_nll, counts, soft = self.row_nll_and_plug(shard, self.dist.shard(histories))
                loss = rows_nll.sum() * self.dist.num_processes / self.dist.sum(counts.sum())
                if cfg.diversity:  # per process: its shard's users (all of them on one process)
                    loss = loss + cfg.diversity * self.diversity_penalty(soft, shard)
                if cfg.contrastive:
                    hinge, gap = self.contrastive_sum(shard, self.dist.shard(negatives), rows_nll, counts)
                    rows = self.dist.sum(torch.tensor(float(len(shard)), device=hinge.device))
                    loss = loss + cfg.contrastive * hinge * self.dist.num_processes / rows
                    gap_sum += gap / cfg.grad_accum
                self.dist.backward(loss, cfg.grad_accum)
            loss_sum += float(loss.detach()) / cfg.grad_accum
        optimizer.step()
        return loss_sum, gap_sum

    def _evaluate_and_keep_best(
        self, dev: list[Example], run: Run, out: Path, metadata: PlugMetadata, say: Callable[[str], None]
    ) -> None:
        """Score the plug on dev; save it to `out` if it beats the best so far."""
        cfg = self.config
        collapse = self.dev_diagnostics(dev)
        scores = self.dev_scores(dev, collapse)
        current = scores["score"]
        diagnostics = tagged(collapse, "last")
        run.log.update(diagnostics)
        if self.dist.is_main:
            shown = ", ".join(f"{k.removesuffix('_last')} {v:.3f}" for k, v in diagnostics.items())
            if cfg.composite_score:
                shown += f", dev NLL {scores['nll']:.4f}, dev hinge {scores['hinge']:.4f}"
            label = "dev objective" if cfg.composite_score else "dev NLL"
            say(f"step {run.step}: {label} {current:.4f} (best {run.best:.4f}); {shown}")
        if current < run.best:
            run.best = current
            if cfg.composite_score:
                run.log["dev_nll"] = scores["nll"]
            self._save(out, metadata, run.step, run.best, run.log)

    def start_centre(self, train: list[Example]) -> None:
        """Set the plug's running centre to the mean projected item of the training histories (each distinct
        text once), so the first step is already centred, even from an uncentred `--init` plug."""
        texts = sorted({t for e in train for t in e.history[-self.config.max_history :]})
        if texts:
            self.engine.plug.set_centre(self.engine.encoder.encode(texts).to(self.engine.loaded_llm.device))

    def parameter_groups(self) -> list[dict]:
        """AdamW groups: the learned attention (if any) at `attention_lr`, without weight decay; the query
        encoder (if any) at `query_encoder_lr`; everything else at `lr`.

        Adam moves each parameter by ~lr per step, so at lr 1e-3 the attention's log-scale could sharpen the
        weights by at most e^0.17 ≈ 1.2× in a 171-step epoch: too slow to matter."""
        named = list(self.engine.plug.named_parameters())
        encoder = [p for n, p in named if is_query_encoder_key(n)]
        attention = [p for n, p in named if n in LEARNED_ATTENTION_KEYS]
        rest = [p for n, p in named if n not in LEARNED_ATTENTION_KEYS and not is_query_encoder_key(n)]
        groups = [{"params": rest}]
        if attention and self.config.attention_lr:
            groups.append({"params": attention, "lr": self.config.attention_lr, "weight_decay": 0.0})
        else:
            groups[0]["params"] += attention
        if encoder:
            groups.append({"params": encoder, "lr": self.config.query_encoder_lr})
        return groups

    def _state_config(self) -> dict[str, object]:
        """The settings a resumed run must share with the interrupted one."""
        return {k: v for k, v in asdict(self.config).items() if k not in {"eval_every", "eval_limit"}}

    def _save_state(self, path: Path, optimizer, schedule, run: Run) -> None:
        if not self.dist.is_main:  # every process holds the same state; one writes it
            return
        state = {
            "step": run.step,
            "plug": self.engine.plug.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "order": list(run.order),
            "best": run.best,
            "log": run.log,
            "python_rng": run.rng.getstate(),
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
        # dev_nll is the selection score; with contrastive/diversity terms that is the objective (dev_score),
        # and the log carries the plain NLL at that step.
        if self.config.composite_score:
            metadata.metrics = {**log, "dev_score": dev_nll}
        else:
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
    if is_voice_file(data_dir):  # --retrieval-k: that many of the persona's posts in the persona prompt
        voice = {
            "engine": engine,
            "persona_prompt": PersonaPromptConfig(config.retrieval_k, config.words_per_text),
            "text_share": config.retrieval_share,
            "seed": config.seed,
            "shuffle_seed": config.seed if config.contrastive else None,
            "typed_share": config.typed_share,
        }
        train = voice_examples(data_dir, "train", config.limit, **voice)
        dev = voice_examples(data_dir, "dev", config.eval_limit, **voice)
        task = "persona_voice"
    else:
        k = config.retrieval_k
        seed = config.seed if config.contrastive else None
        share = {
            "retrieval_share": config.retrieval_share,
            "share_seed": config.seed,
            "fit": prompt_fit(engine, config.max_prompt_tokens),
            "free_text_share": config.free_text_share,
        }
        read = user_split if config.user_holdout else load_split
        train = to_examples(read(data_dir, "train"), config.limit, k, shuffle_seed=seed, **share)
        dev_path = Path(data_dir) / "dev_questions.json"
        dev = (
            to_examples(read(data_dir, "dev"), 0, k, shuffle_seed=seed, **share)[: config.eval_limit]
            if dev_path.is_file()
            else []
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
