"""A plug's shape and hyper-parameters: plain data, stored in every checkpoint's sidecar and read by the
`train` flags and recipes without loading torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

AGGREGATIONS = ("attention", "learned-attention", "mean")
"""attention: the paper's input-aware weights; learned-attention: the same, with a trained query map and scale
(both start at 0, i.e. the paper's weights); mean: the paper's "w/o IA" ablation."""


@dataclass(frozen=True)
class PlugConfig:
    """Shapes and hyper-parameters of a plug; stored in every checkpoint."""

    encoder_dim: int
    llm_dim: int
    token_norm: float
    """Mean L2 norm of the LLM's input token embeddings; soft tokens are scaled to it."""
    tau: float = 1.0
    aggregation: str = "attention"
    """How history items are pooled: one of `AGGREGATIONS`."""
    persona_tokens: int = 1
    """1 = the paper's single pooled P_u. k > 1 adds the k − 1 most attended history items, each projected on
    its own: item-level detail that one pooled vector averages away (the personal-share issue)."""
    centre_persona: bool = False
    """Subtract the running population mean of projected items (a stored buffer) from every persona position."""
    centre_strength: float = 1.0
    """With `centre_persona`: the share β of the centre taken off, Proj(h_i) − β·c. 1 removes what users share
    entirely (cosine ~0, but the frozen LLM then reads noise); smaller β trades distinctness for NLL."""
    query_encoder: bool = False
    """The plug owns a trainable copy of the input encoder (the paper's Enc_input, `train
    --train-query-encoder`); its weights are in the checkpoint under `query_encoder.`."""

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, not {self.aggregation!r}")
        if self.tau <= 0:
            raise ValueError("tau must be positive")
        if not 0.0 < self.centre_strength <= 1.0:
            raise ValueError("centre_strength must be in (0, 1]")
        if self.centre_strength != 1.0 and not self.centre_persona:
            raise ValueError("centre_strength needs centre_persona")
        if not 1 <= self.persona_tokens <= 64:
            raise ValueError("persona_tokens must be between 1 and 64")

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> PlugConfig:
        """A config from stored values; a checkpoint written before `learned-attention` became an aggregation
        (with a separate `learned_attention` flag) reads as the same plug."""
        return cls(**upgraded_plug_shape(values))  # type: ignore[arg-type]

    @property
    def learned_attention(self) -> bool:
        """The attention has trainable parts (a query map W and a log-scale s)."""
        return self.aggregation == "learned-attention"

    @property
    def soft_tokens(self) -> int:
        """Positions the plug adds to the prompt: I, P_u and the per-item tokens."""
        return 1 + self.persona_tokens

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def upgraded_plug_shape(values: dict[str, object]) -> dict[str, object]:
    """Stored plug settings in today's form: the older `learned_attention: true` flag becomes
    `aggregation: learned-attention` (false is dropped)."""
    values = dict(values)
    if values.pop("learned_attention", False):
        if values.get("aggregation", "attention") != "attention":
            raise ValueError("learned attention needs aggregation 'attention'")
        values["aggregation"] = "learned-attention"
    return values
