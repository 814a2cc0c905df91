"""PersonaPlug: the paper's user embedder, as one small `nn.Module` for any encoder and any LLM.

    w_i = softmax_i(x · h_i / τ)            input-aware aggregation over the history (padding masked)
    P_u = Σ_i w_i · Proj(h_i)              per-item projection, then the weighted sum (Eq. 4; Proj is nonlinear)
    I   = Proj_I(v)                        a learned instruction vector with its own projector
    soft tokens = [I; P_u], each rescaled to the LLM's mean token-embedding norm

With a frozen encoder, w_i is fixed by the data: near-uniform at τ = 1 (largest weight ~0.11 for ~18 items),
and no training can sharpen it. The paper trains the input encoder for that. `learned_attention` is the cheap
version: w_i = softmax_i((x + W x) · h_i · e^s / τ) with a trainable map W (zero at start) and log-scale s (0 at
start), so a plug starts out exactly as the paper's and learns which items to read.

`query_encoder` is the paper's own answer: the plug carries a trainable copy of the input encoder (x = Enc_input
of the query), initialised from the frozen history encoder, so training moves the query side of the attention
while the history vectors stay frozen and cached. It makes a plug ~25× larger (the MiniLM copy is 90 MB).

`centre_persona` subtracts the population mean c of projected items, Proj(h_i) − c, before they are pooled
or used as item tokens. c is a buffer (a running mean over training batches, like BatchNorm's), not a weight:
the loss can't move it, so what all users share can't hide in P_u and must go to I, and P_u keeps what
differs between users. Without it, different users' P_u have cosine ~0.98: one more task token. Taken off in
full it made the frozen LLM's NLL worse on huffpost; the shipped huffpost plug takes off 60% (`centre_strength`
0.6, README, Personal share).

τ = 1 with unit-norm vectors reproduces the paper (logits are cosines). The official code multiplies by a
FlanT5-XXL constant (539.97); we measure the norm on the LLM at hand instead (`llm_token_norm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import QueryTokens, pool
from .plug_config import AGGREGATIONS, PlugConfig

__all__ = ["AGGREGATIONS", "PersonaPlug", "PlugConfig", "PlugOutput"]


@dataclass
class PlugOutput:
    """What the plug gives the LLM (`soft_tokens`, `soft_mask`) and what it gives the UI (`weights`)."""

    soft_tokens: torch.Tensor
    """[B, 1 + k, llm_dim]: instruction token I, persona token P_u, then k − 1 per-item tokens (k ≥ 1)."""
    soft_mask: torch.Tensor
    """[B, 1 + k] long: 0 on persona positions a row can't fill (no history, fewer items than k − 1)."""
    weights: torch.Tensor
    """[B, L]: attention weight of each history item (0 on padding; each row with history sums to 1)."""


def projector(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear → GELU → Linear, as in the official code's `align_mlp`."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


@torch.no_grad()
def llm_token_norm(embedding: nn.Module, vocab_size: int, sample: int = 8192) -> float:
    """Mean L2 norm of token embeddings as the module outputs them (so scaled embeddings, e.g. Gemma's, count)."""
    weight = getattr(embedding, "weight", None)
    device = weight.device if weight is not None else torch.device("cpu")
    ids = torch.linspace(0, vocab_size - 1, steps=min(sample, vocab_size), device=device).long()
    return float(embedding(ids).float().norm(dim=-1).mean())


class PersonaPlug(nn.Module):
    """Map (query vector, history vectors) to the soft tokens [I; P_u] for a frozen LLM."""

    def __init__(
        self, config: PlugConfig, query_encoder: nn.Module | None = None, query_pooling: str = "mean"
    ) -> None:
        """`query_encoder`: the transformer to train as the input encoder, required iff the config says so."""
        super().__init__()
        if config.query_encoder != (query_encoder is not None):
            raise ValueError(
                "a plug with query_encoder=True needs the encoder to copy"
                if config.query_encoder
                else "this plug config has no query encoder"
            )
        self.config = config
        self.query_pooling = query_pooling
        if query_encoder is not None:
            if getattr(query_encoder, "pooler", None) is not None:
                query_encoder.pooler = None  # pooling reads the hidden states; DDP rejects unused weights
            self.query_encoder = query_encoder.float().requires_grad_(True).eval()
        self.history_proj = projector(config.encoder_dim, config.llm_dim)
        self.instruction = nn.Parameter(torch.randn(config.encoder_dim) / config.encoder_dim**0.5)
        self.instruction_proj = projector(config.encoder_dim, config.llm_dim)
        if config.learned_attention:
            self.query_map = nn.Linear(config.encoder_dim, config.encoder_dim, bias=False)
            nn.init.zeros_(self.query_map.weight)
            self.attention_log_scale = nn.Parameter(torch.zeros(()))
        if config.centre_persona:
            self.register_buffer("persona_centre", torch.zeros(config.llm_dim))

    def train(self, mode: bool = True) -> PersonaPlug:
        """Training mode, except the query encoder's dropout stays off: the history vectors it is compared with
        are encoded without dropout, and a run on 2 processes then trains the same plug as on 1."""
        super().train(mode)
        if self.config.query_encoder:
            self.query_encoder.eval()
        return self

    CENTRE_MOMENTUM = 0.05
    """Share of each training batch's item mean in the running centre (~20 batches of memory)."""

    def project_items(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Proj(h_i) [B, L, D], centred when configured; in training mode the centre follows the batches."""
        projected = self.history_proj(history.to(self.instruction.dtype))
        real = mask.bool()
        if self.config.centre_persona and self.training and real.any():
            with torch.no_grad():
                batch_mean = projected.detach()[real].float().mean(0)
                self.persona_centre.lerp_(batch_mean.to(self.persona_centre.dtype), self.CENTRE_MOMENTUM)
        return self.centred(projected)

    def centred(self, projected: torch.Tensor) -> torch.Tensor:
        """Projected items minus β × the stored centre (unchanged for a plug without one)."""
        if not self.config.centre_persona:
            return projected
        return projected - self.config.centre_strength * self.persona_centre.to(projected.dtype)

    @torch.no_grad()
    def set_centre(self, items: torch.Tensor) -> None:
        """Start the running centre at the mean projected item of these item vectors [N, E] (the training
        set's), so a plug started from an uncentred one is centred from its first step."""
        if items.shape[0] == 0:
            raise ValueError("the persona centre needs at least one history item")
        projected = self.history_proj(items.to(self.instruction.dtype))
        self.persona_centre.copy_(projected.float().mean(0).to(self.persona_centre.dtype))

    def encode_query(self, tokens: QueryTokens) -> torch.Tensor:
        """Query vectors [B, E] from the plug's own input encoder (with gradients when training)."""
        hidden = self.query_encoder(
            input_ids=tokens.input_ids, attention_mask=tokens.attention_mask
        ).last_hidden_state
        return pool(hidden, tokens.attention_mask, self.query_pooling)

    def attention_weights(
        self, query: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """softmax(x·h_i/τ) over real items (or their plain mean in "mean" mode); all-zero for empty rows."""
        mask = mask.bool()
        if self.config.aggregation == "mean":
            weights = mask.float()
        else:
            query = query.float()
            scale = 1.0 / self.config.tau
            if self.config.learned_attention:
                query = query + self.query_map(query.to(self.query_map.weight.dtype)).float()
                scale = self.attention_log_scale.float().exp() / self.config.tau
            scores = torch.einsum("bld,bd->bl", history.float(), query) * scale
            scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            weights = torch.nan_to_num(weights, nan=0.0)  # rows with no history: softmax of all -inf
            return weights * mask
        return weights / weights.sum(-1, keepdim=True).clamp(min=1)

    def forward(
        self,
        query: torch.Tensor | QueryTokens,
        history: torch.Tensor,
        mask: torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> PlugOutput:
        """query [B, E] (or its tokens, for a plug with its own query encoder), history [B, L, E], mask [B, L]
        (1 = real item) → soft tokens [B, 1 + k, D].

        `strength` scales P_u only (the UI's persona-strength knob); 1.0 is what the plug was trained with.
        """
        if isinstance(query, QueryTokens):  # encoded here, so DDP sees the encoder inside the forward pass
            query = self.encode_query(query)
        if mask is None:
            mask = torch.ones(history.shape[:2], dtype=torch.long, device=history.device)
        weights = self.attention_weights(query, history, mask)
        projected = self.project_items(history, mask)
        persona = torch.einsum("bl,bld->bd", weights.to(projected.dtype), projected)
        instruction = self.instruction_proj(self.instruction).expand_as(persona)
        norm = self.config.token_norm
        soft = torch.stack(
            [F.normalize(instruction, dim=-1) * norm, F.normalize(persona, dim=-1) * norm * strength], 1
        )
        has_history = mask.bool().any(-1).long()
        soft_mask = torch.stack([torch.ones_like(has_history), has_history], 1)
        if self.config.persona_tokens > 1:
            items, item_mask = self.top_items(projected, weights, mask, self.config.persona_tokens - 1)
            soft = torch.cat([soft, F.normalize(items, dim=-1) * norm * strength], 1)
            soft_mask = torch.cat([soft_mask, item_mask], 1)
        return PlugOutput(soft_tokens=soft, soft_mask=soft_mask, weights=weights)

    @staticmethod
    def top_items(
        projected: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The n most attended projected items [B, n, D] (most attended first) and which of them exist."""
        batch, length, dim = projected.shape
        if length < n:  # pad so every row has n slots; padded slots are masked out
            projected = torch.cat([projected, projected.new_zeros(batch, n - length, dim)], 1)
            weights = torch.cat([weights, weights.new_zeros(batch, n - length)], 1)
            mask = torch.cat([mask, mask.new_zeros(batch, n - length)], 1)
        ranked = weights.masked_fill(~mask.bool(), -1.0)  # real items first, even with weight 0
        index = ranked.topk(n, dim=-1).indices
        items = projected.gather(1, index.unsqueeze(-1).expand(-1, -1, dim))
        return items, mask.gather(1, index).long()

    @torch.no_grad()
    def persona_vector(self, history: torch.Tensor) -> torch.Tensor:
        """Query-independent persona (unit vector in LLM space): the mean of projected items, for maps."""
        if history.shape[0] == 0:
            raise ValueError("a persona vector needs at least one history item")
        projected = self.centred(self.history_proj(history.to(self.instruction.dtype)))
        return F.normalize(projected.mean(0), dim=-1)
