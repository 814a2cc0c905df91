"""All settings in one place: defaults ← environment variables (`PERSONA_DEMO_*`) ← CLI flags.

Every field below is documented in the README's Configuration table; keep the two in step.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar

from .errors import PersonaDemoError

DEFAULT_LLM = "smollm2-135m-instruct"
DEFAULT_ENCODER = "all-MiniLM-L6-v2"
ENV_PREFIX = "PERSONA_DEMO_"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "persona-demo"


def _default_plugs_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "plugs"


@dataclass(frozen=True)
class Settings:
    """Runtime settings shared by the CLI, the app, training and the bench."""

    llm: str = DEFAULT_LLM
    """`smollm2-135m-instruct` (embedded GGUF), a Hugging Face model id, or a local model folder."""
    encoder: str = DEFAULT_ENCODER
    """`all-MiniLM-L6-v2` (embedded), a Hugging Face encoder id, or a local folder."""
    device: str = "auto"
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda`, `cuda:N`."""
    dtype: str = "auto"
    """`auto` (bfloat16 on CUDA; float32 weights on a CPU, so scores are exact, with generation reading bf16
    weight copies for prompts where bf16 is measured faster at start-up and fp16 copies for decoding steps),
    `float32` (exact fp32 everywhere, generation too: slower), `bfloat16`, `float16`."""
    quantization: str = "auto"
    """`auto` (4-bit nf4 on CUDA, none on CPU), `none`, `nf4`."""
    threads: int = 0
    """CPU threads for torch; 0 = all cores."""
    cache_dir: Path = field(default_factory=_default_cache_dir)
    """Converted models live here (build products, safe to delete)."""
    plugs_dir: Path = field(default_factory=_default_plugs_dir)
    """Where trained plugs (`<task>.safetensors`) are looked up by task name."""
    max_new_tokens: int = 48
    """Default length of a generation."""
    generation_concurrency: int = 1
    """How many generations (compare/chat) the studio runs at once; others wait in the queue."""
    encoder_dtype: str = "auto"
    """`auto` (bfloat16 on CUDA and on a CPU where bf16 is measured faster at start-up, else float32), `float32`,
    `bfloat16`. bf16 vectors are within 1e-4 cosine of fp32 ones, so cached vectors stay interchangeable."""
    encoder_batch_size: int = 128
    """Texts per encoder batch at most; a batch also stops at `encoder_batch_tokens` padded tokens."""
    encoder_batch_tokens: int = 4096
    """Padded tokens per encoder batch at most: many short texts or a few long ones, never a huge batch."""
    encoder_max_length: int = 256

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from `PERSONA_DEMO_<FIELD>` variables, then apply non-None overrides (CLI flags)."""
        return _from_env(cls, environ, overrides).validated()

    def validated(self) -> Settings:
        """Reject settings that can't work, with a message naming the setting."""
        if self.quantization not in {"auto", "none", "nf4"}:
            raise PersonaDemoError(f"quantization must be auto, none or nf4, not {self.quantization!r}")
        if self.dtype not in {"auto", "float32", "bfloat16", "float16"}:
            raise PersonaDemoError(f"dtype must be auto, float32, bfloat16 or float16, not {self.dtype!r}")
        if self.encoder_dtype not in {"auto", "float32", "bfloat16"}:
            raise PersonaDemoError(
                f"encoder_dtype must be auto, float32 or bfloat16, not {self.encoder_dtype!r}"
            )
        if not (self.device in {"auto", "cpu", "cuda"} or self.device.startswith("cuda:")):
            raise PersonaDemoError(f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if self.threads < 0:
            raise PersonaDemoError("threads must be 0 (all cores) or a positive number")
        if not 1 <= self.max_new_tokens <= 4096:
            raise PersonaDemoError("max_new_tokens must be between 1 and 4096")
        if not 1 <= self.generation_concurrency <= 64:
            raise PersonaDemoError("generation_concurrency must be between 1 and 64")
        if not 1 <= self.encoder_batch_size <= 4096:
            raise PersonaDemoError("encoder_batch_size must be between 1 and 4096")
        if not 8 <= self.encoder_batch_tokens <= 1_048_576:
            raise PersonaDemoError("encoder_batch_tokens must be between 8 and 1048576")
        if not 8 <= self.encoder_max_length <= 8192:
            raise PersonaDemoError("encoder_max_length must be between 8 and 8192")
        return self


@dataclass(frozen=True)
class StudioSettings:
    """Where and for whom the studio serves; the persona database's path is the store's (`PERSONA_DEMO_DB`)."""

    host: str = "127.0.0.1"
    """Bind address. Localhost unless told otherwise: the page can read and change every stored persona."""
    port: int = 7860
    plug: str = ""
    """Plug for free prompts and chat (a task name or a .safetensors file); empty = the first shipped plug."""
    auth: str = ""
    """`user:password[,user2:password2]` to require a login; empty = none."""

    ALIASES: ClassVar[dict[str, str]] = {"host": "GRADIO_SERVER_NAME", "port": "GRADIO_SERVER_PORT"}
    """Variables honoured when the `PERSONA_DEMO_` one is unset (Hugging Face Spaces sets these)."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> StudioSettings:
        environ = dict(os.environ if environ is None else environ)
        for name, alias in cls.ALIASES.items():
            if not environ.get(ENV_PREFIX + name.upper()) and environ.get(alias):
                environ[ENV_PREFIX + name.upper()] = environ[alias]
        return _from_env(cls, environ, overrides)


def _from_env(cls, environ: dict[str, str] | None, overrides: dict[str, object]):
    """An instance of the settings dataclass `cls`: defaults ← `PERSONA_DEMO_<FIELD>` ← non-None overrides."""
    environ = dict(os.environ if environ is None else environ)
    types = {f.name: f.type for f in fields(cls)}
    values: dict[str, object] = {}
    for name, kind in types.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = _coerce(name, raw, kind)
    for name, value in overrides.items():
        if value is not None:
            values[name] = _coerce(name, value, types[name])
    return replace(cls(), **values)


def _coerce(name: str, value: object, annotation: object) -> object:
    kind = str(annotation)
    try:
        if kind in {"int", "<class 'int'>"}:
            return int(value)  # type: ignore[arg-type]
        if kind in {"Path", "<class 'pathlib.Path'>"}:
            return Path(str(value)).expanduser()
    except ValueError:
        raise PersonaDemoError(f"setting {name} expects a whole number, got {value!r}") from None
    return str(value)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The model flags of the studio and of every command that loads models (defaults: Settings ←
    PERSONA_DEMO_*)."""
    group = parser.add_argument_group("models (env PERSONA_DEMO_<NAME> sets the default)")
    group.add_argument("--llm", help="embedded 'smollm2-135m-instruct' (default), a HF model id or a folder")
    group.add_argument("--encoder", help="embedded 'all-MiniLM-L6-v2' (default), a HF encoder id or a folder")
    group.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    group.add_argument(
        "--dtype",
        help="auto (default: bfloat16 on CUDA; on a CPU float32 weights, generating from half-precision copies: "
        "bf16 prompts where bf16 is native, fp16 decoding steps), float32 (exact everywhere), bfloat16",
    )
    group.add_argument("--quantization", help="auto (default: nf4 on CUDA, none on CPU), none, nf4")
    group.add_argument("--quantize", dest="quantization", help=argparse.SUPPRESS)  # the studio's older name
    group.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    group.add_argument("--cache-dir", type=Path, help="where converted models are kept")


def settings_from_args(args: argparse.Namespace, **extra: object) -> Settings:
    names = ("llm", "encoder", "device", "dtype", "quantization", "threads", "cache_dir")
    return Settings.from_env(**{n: getattr(args, n, None) for n in names}, **extra)
