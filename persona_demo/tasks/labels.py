"""Answer label tasks (LaMP-1/2/3) by scoring each label instead of parsing free text.

A 135M chat model asked for a 1-5 rating writes "1. 1" or a sentence; the official rule then maps the answer
to the farthest star, so free generation measures the output format, not the plug. Scoring each label as the
continuation of the prompt (cut and templated as in training) reads the model's preference directly.
For ratings the answer is the median of that distribution, which minimises the expected absolute error (MAE);
for classes it is the most likely label.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..engine.engine import PersonaEngine
from ..engine.generation import Row, soft_len
from .nll import scoring_row


@torch.no_grad()
def label_log_probs(
    engine: PersonaEngine,
    prompts: Sequence[str],
    labels: Sequence[str],
    soft: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    soft_mask: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """[n, len(labels)] log-probabilities over the label set (normalised across labels) for each prompt.

    `soft`/`soft_mask` give each prompt its soft tokens ([n, k, D], or one entry per prompt where None means
    no plug), so plugged and plain prompts share one batched pass (the studio's side-by-side rating).

    Labels that start with distinct tokens (LaMP-3's stars, LaMP-1's "[1]"/"[2]") are read off one forward
    pass of the prompt; otherwise each label + EOS is scored as its own teacher-forced row."""

    def row(i: int, target: str) -> Row:
        return scoring_row(
            engine,
            prompts[i],
            target,
            None if soft is None else soft[i],
            None if soft_mask is None else soft_mask[i],
        )

    tokenizer = engine.llm.tokenizer
    first_ids = [tokenizer(label, add_special_tokens=False)["input_ids"][0] for label in labels]
    if len(set(first_ids)) == len(labels) and not engine.llm.llm.is_encoder_decoder:
        rows = [
            Row(r.prompt_ids, r.soft_tokens, r.soft_mask) for r in (row(i, "") for i in range(len(prompts)))
        ]
        last = [soft_len(r) + len(r.prompt_ids) - 1 for r in rows]
        scores = engine.llm.logits_at(rows, last)[:, first_ids].float()
    else:
        nll, _ = engine.llm.token_nll([row(i, label) for i in range(len(prompts)) for label in labels])
        scores = -nll.float().view(len(prompts), len(labels))
    return torch.log_softmax(scores, dim=-1)


def choose_label(log_probs: torch.Tensor, labels: Sequence[str], kind: str) -> list[str]:
    """Median label for ratings (labels in increasing order), most likely label otherwise."""
    if kind == "rating":
        cumulative = log_probs.exp().cumsum(-1)
        index = (cumulative < 0.5).sum(-1).clamp(max=len(labels) - 1)
    else:
        index = log_probs.argmax(-1)
    return [labels[int(i)] for i in index]
