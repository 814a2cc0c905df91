"""Collapse detector: how far apart different users' persona tokens are (the cosine target).

Cosine near 1 between users means a position is one more task token, the same for everyone. Training logs
it on its dev sample; `evaluate --metric nll` reports it on the whole split, for P_u and each item token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..engine.engine import PersonaEngine
from ..engine.plug import PlugOutput


def cross_user_cosine(vectors: torch.Tensor, present: torch.Tensor, users: Sequence[str]) -> torch.Tensor:
    """Mean cosine over pairs of rows from different users where both rows fill the position, as a tensor
    that gradients flow through (training's diversity term); nan if there is no such pair."""
    unit = F.normalize(vectors.float(), dim=-1)
    keep = present.bool().to(unit.device)
    ids = {user: i for i, user in enumerate(dict.fromkeys(users))}
    index = torch.tensor([ids[user] for user in users], device=unit.device)
    pairs = (index[:, None] != index[None, :]) & keep[:, None] & keep[None, :]
    if not pairs.any():
        return unit.new_tensor(float("nan"))
    return (unit @ unit.T)[pairs].mean()


def mean_cross_user_cosine(vectors: torch.Tensor, present: torch.Tensor, users: Sequence[str]) -> float:
    """`cross_user_cosine` as a number, for logs and metrics."""
    return float(cross_user_cosine(vectors.detach().cpu(), present.cpu(), users))


def persona_cosines(out: PlugOutput, users: Sequence[str]) -> dict[str, object]:
    """`persona_cosine` (P_u, the paper's persona token) and `persona_cosine_by_token` ([P_u, item 1, ...])."""
    by_token = [
        mean_cross_user_cosine(out.soft_tokens[:, position], out.soft_mask[:, position], users)
        for position in range(1, out.soft_tokens.shape[1])
    ]
    return {"persona_cosine": by_token[0], "persona_cosine_by_token": by_token}


@torch.no_grad()
def split_persona_cosines(
    engine: PersonaEngine,
    queries: Sequence[str],
    histories: Sequence[Sequence[str]],
    users: Sequence[str],
    batch_size: int = 32,
) -> dict[str, object]:
    """`persona_cosines` over a whole split, the plug run in batches (long histories stay in memory bounds)."""
    tokens, masks = [], []
    for start in range(0, len(queries), batch_size):
        out = engine.plug_output(queries[start : start + batch_size], histories[start : start + batch_size])
        tokens.append(out.soft_tokens.float().cpu())
        masks.append(out.soft_mask.cpu())
    joined = PlugOutput(torch.cat(tokens), torch.cat(masks), torch.zeros(0))
    return persona_cosines(joined, users)
