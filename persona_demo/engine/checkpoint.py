"""Plug checkpoints: weights in safetensors, metadata both in its header and in a readable JSON sidecar.

A plug only makes sense for the LLM and encoder it was trained with (its projector targets one embedding
space and reads another), so loading checks both ids and the shapes before any weight is touched.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import Settings
from ..errors import PersonaDemoError
from .plug import PersonaPlug, PlugConfig

FORMAT = "persona-demo-plug/1"
METADATA_KEY = "persona_demo"


@dataclass
class PlugMetadata:
    """Everything needed to know what a plug is for and how good it was."""

    llm_id: str
    encoder_id: str
    config: PlugConfig
    task: str = "untrained"
    training: dict[str, object] = field(default_factory=dict)
    metrics: dict[str, object] = field(default_factory=dict)

    @property
    def retrieval_k(self) -> int:
        """Items the plug reads as text beside its soft tokens (`train --retrieval-k`); 0 for a plain plug."""
        try:
            return max(0, int((self.training or {}).get("retrieval_k") or 0))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return 0

    @property
    def words_per_text(self) -> int | None:
        """Words per persona text in the prompt the plug was trained on (`train --words-per-text`); None when
        the plug does not record it (the default then applies)."""
        try:
            return int((self.training or {}).get("words_per_text") or 0) or None  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return None

    @property
    def saw_every_author(self) -> bool:
        """Whether training read every author of its LaMP folder (`train --all-authors`, or a plug trained
        before the held-out authors existed): then the `heldout` split is not unseen for it."""
        return not (self.training or {}).get("user_holdout", False)

    def to_dict(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "llm_id": self.llm_id,
            "encoder_id": self.encoder_id,
            "config": self.config.to_dict(),
            "task": self.task,
            "training": self.training,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object], source: Path) -> PlugMetadata:
        try:
            if data.get("format") != FORMAT:
                raise KeyError("format")
            return cls(
                llm_id=str(data["llm_id"]),
                encoder_id=str(data["encoder_id"]),
                config=PlugConfig.from_dict(data["config"]),  # type: ignore[arg-type]
                task=str(data.get("task", "untrained")),
                training=dict(data.get("training") or {}),  # type: ignore[arg-type]
                metrics=dict(data.get("metrics") or {}),  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PersonaDemoError(f"{source} is not a persona-demo plug (bad metadata: {exc}).") from None


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_plug(path: str | Path, plug: PersonaPlug, metadata: PlugMetadata) -> Path:
    """Write `path` (.safetensors) and its `.json` sidecar atomically (a crash never leaves half a plug)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta_json = json.dumps(metadata.to_dict(), indent=2, sort_keys=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in plug.state_dict().items()}
    for target, writer in (
        (path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: meta_json})),
        (sidecar_path(path), lambda tmp: Path(tmp).write_text(meta_json + "\n", encoding="utf-8")),
    ):
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        os.close(fd)
        try:
            writer(tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; plugs are meant to be shared
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def read_metadata(path: str | Path) -> PlugMetadata:
    """Metadata from the safetensors header (the sidecar is for people; the header is authoritative)."""
    path = Path(path)
    if not path.is_file():
        raise PersonaDemoError(f"Plug file not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise PersonaDemoError(f"{path} is not a readable safetensors file ({exc}).") from None
    if METADATA_KEY not in header:
        raise PersonaDemoError(f"{path} has no persona-demo metadata: it is not a plug made by this app.")
    try:
        data = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError:
        raise PersonaDemoError(f"{path} has corrupted plug metadata.") from None
    return PlugMetadata.from_dict(data, path)


def check_compatible(
    metadata: PlugMetadata, llm_id: str, llm_dim: int, encoder_id: str, encoder_dim: int, source: Path
) -> None:
    """Refuse a plug trained for another LLM or encoder, saying which and what to do."""
    if metadata.llm_id != llm_id or metadata.config.llm_dim != llm_dim:
        raise PersonaDemoError(
            f"The plug {source.name} was trained for the LLM {metadata.llm_id!r} (hidden size "
            f"{metadata.config.llm_dim}), but the loaded LLM is {llm_id!r} (hidden size {llm_dim}). "
            "Load the matching LLM with --llm, or train a plug for this one (python -m persona_demo train)."
        )
    if metadata.encoder_id != encoder_id or metadata.config.encoder_dim != encoder_dim:
        raise PersonaDemoError(
            f"The plug {source.name} was trained with the encoder {metadata.encoder_id!r} "
            f"({metadata.config.encoder_dim}-d), but the loaded encoder is {encoder_id!r} ({encoder_dim}-d). "
            "Use the matching --encoder."
        )


QueryEncoderFactory = Callable[[], tuple[nn.Module, str]]
"""Makes a fresh copy of the frozen encoder and names its pooling: the skeleton of a plug's query encoder."""


def load_plug(
    path: str | Path,
    *,
    llm_id: str,
    llm_dim: int,
    encoder_id: str,
    encoder_dim: int,
    query_encoder: QueryEncoderFactory | None = None,
) -> tuple[PersonaPlug, PlugMetadata]:
    """Load a plug after checking it belongs to this LLM and encoder. A plug with its own query encoder
    (`train --train-query-encoder`) gets `query_encoder()`'s copy, then the checkpoint's weights in it."""
    path = Path(path)
    metadata = read_metadata(path)
    check_compatible(metadata, llm_id, llm_dim, encoder_id, encoder_dim, path)
    plug = PersonaPlug(metadata.config, *query_encoder_parts(metadata.config, query_encoder, path))
    try:
        state = load_file(str(path))
        plug.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise PersonaDemoError(f"{path} is damaged or incomplete: {str(exc).splitlines()[0]}") from None
    plug.eval()
    return plug, metadata


def new_plug_metadata(plug: PersonaPlug, llm_id: str, encoder_id: str) -> PlugMetadata:
    return PlugMetadata(llm_id=llm_id, encoder_id=encoder_id, config=plug.config)


def query_encoder_parts(
    config: PlugConfig, query_encoder: QueryEncoderFactory | None, source: Path | None = None
) -> tuple[nn.Module | None, str]:
    """(encoder copy, pooling) for `PersonaPlug(config, ...)`: a fresh copy when the config has a query
    encoder, else nothing."""
    if not config.query_encoder:
        return None, "mean"
    if query_encoder is None:
        raise PersonaDemoError(
            f"{source or 'This plug'} carries its own query encoder; load it through a PersonaEngine."
        )
    return query_encoder()


LEARNED_ATTENTION_KEYS = frozenset({"query_map.weight", "attention_log_scale"})
CENTRE_KEYS = frozenset({"persona_centre"})
QUERY_ENCODER_PREFIX = "query_encoder."


def is_query_encoder_key(name: str) -> bool:
    return name.startswith(QUERY_ENCODER_PREFIX)


def copy_plug_weights(target: PersonaPlug, source: PersonaPlug, source_name: str) -> None:
    """Start `target` from `source`'s weights (`train --init`). A plug without learned attention (or a centre,
    or a query encoder) may seed one with it (the new parts start at zero, i.e. the source's own attention;
    training sets the centre; the query encoder starts as the frozen encoder); the reverse would drop weights."""
    result = target.load_state_dict(source.state_dict(), strict=False)
    if any(is_query_encoder_key(k) for k in result.unexpected_keys):
        raise PersonaDemoError(
            f"{source_name} has its own query encoder; add --train-query-encoder to start from it"
        )
    if set(result.unexpected_keys) & LEARNED_ATTENTION_KEYS:
        raise PersonaDemoError(
            f"{source_name} has learned attention; add --aggregation learned-attention to start from it"
        )
    if result.unexpected_keys:
        raise PersonaDemoError(f"{source_name} has a persona centre; add --centre-persona to start from it")
    missing = {k for k in result.missing_keys if not is_query_encoder_key(k)}
    missing -= LEARNED_ATTENTION_KEYS | CENTRE_KEYS
    if missing:
        raise PersonaDemoError(f"{source_name} lacks weights this plug needs: {', '.join(sorted(missing))}")


def untrained_plug(
    config: PlugConfig, seed: int = 0, query_encoder: QueryEncoderFactory | None = None
) -> PersonaPlug:
    """A freshly initialised plug, reproducible from its seed (and with the same projectors as a plug of the
    same seed without a query encoder: the copy is made before the seed is set)."""
    parts = query_encoder_parts(config, query_encoder)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return PersonaPlug(config, *parts).eval()
    finally:
        torch.random.set_rng_state(generator_state)


def resolve_plug_path(plug: str | None, settings: Settings) -> Path | None:
    """A file path, or a task name looked up as assets/plugs/<name>.safetensors."""
    if plug is None:
        return None
    candidate = Path(plug)
    if candidate.suffix == ".safetensors" or candidate.exists():
        return candidate
    named = settings.plugs_dir / f"{plug}.safetensors"
    if named.is_file():
        return named
    available = sorted(p.stem for p in settings.plugs_dir.glob("*.safetensors"))
    raise PersonaDemoError(f"No plug named {plug!r}; available: {', '.join(available) or 'none'}.")
