"""`bench --shapes 135m,1.7b,8b`: the plug on real LLM shapes in bf16 and 4-bit nf4, with random weights.

A real checkpoint cannot travel to a GPU machine (the 135M GGUF alone is 98 MB; an 8B one is GBs), and
random weights of the same architecture run the same kernels on the same tensor shapes, so time and memory
are those of the real model. What random weights cannot give is text: nothing here reads the outputs.

This module needs only torch, transformers and (for nf4) bitsandbytes, so it runs on a bare GPU machine:
`python -m persona_demo.bench.shapes --device cuda --out gpu.json` (scripts/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..engine.generation import FrozenLLM, GenerationOptions, Row
from ..engine.models import wrap_llm
from ..engine.plug import PersonaPlug, PlugConfig
from .bench import interleaved

SHAPES: dict[str, dict[str, object]] = {
    "135m": {  # HuggingFaceTB/SmolLM2-135M-Instruct's config (tests compare it with the embedded model's)
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
    },
    "1.7b": {  # HuggingFaceTB/SmolLM2-1.7B-Instruct
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rope_theta": 130000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
    },
    "8b": {  # a Llama-3-8B-like config: GQA with 8 KV heads, a 128k vocabulary, untied head
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    },
}

ENCODER_DIM = 384
"""The history encoder's width (MiniLM): the plug's input side does not grow with the LLM."""


@dataclass(frozen=True)
class ShapeBenchConfig:
    device: str = "cuda"
    shapes: tuple[str, ...] = ("135m", "1.7b", "8b")
    dtypes: tuple[str, ...] = ("bfloat16", "nf4")
    prompt_tokens: int = 256
    new_tokens: int = 32
    history_items: int = 50
    train_batch: int = 8
    repeats: int = 3


class PositionTokenizer:
    """What FrozenLLM asks a tokenizer for, over a random-weight model's ids: a pad and an end id, and a
    decode that names the ids (random weights produce no text worth reading)."""

    chat_template = None

    def __init__(self, vocab_size: int) -> None:
        self.pad_token_id = 0
        self.eos_token_id = vocab_size - 1

    def decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(map(str, tokens))


def random_llm(shape: str, dtype: str, device: str) -> FrozenLLM:
    """A LlamaForCausalLM of the shape with random weights, in bf16 or with its linear layers in nf4."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape])  # type: ignore[arg-type]
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 on the device: an fp32 8B would take 32 GB first
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    if dtype == "nf4":
        quantize_nf4(model, device)
    return FrozenLLM(
        wrap_llm(model, PositionTokenizer(config.vocab_size), f"random-{shape}", quantization=dtype)
    )


def quantize_nf4(model: nn.Module, device: str) -> None:
    """Swap every decoder linear layer for a bitsandbytes 4-bit one (nf4, double quantization, bf16 compute),
    as `BitsAndBytesConfig(load_in_4bit=True, ...)` loads a checkpoint; the LM head stays bf16, as there."""
    import bitsandbytes as bnb

    decoder = model.get_decoder()
    for module in list(decoder.modules()):
        for name, child in list(module.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            quantized = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=torch.bfloat16,
                compress_statistics=True,
                quant_type="nf4",
                device="meta",
            )
            quantized.weight = bnb.nn.Params4bit(
                child.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4"
            )
            if child.bias is not None:
                quantized.bias = nn.Parameter(child.bias.data, requires_grad=False)
            setattr(module, name, quantized.to(device))  # .to() quantizes
            del child
    gc.collect()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up (CUDA kernels, allocator)."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def synchronized_clock(device: str) -> Callable[[], float]:
    """perf_counter after the device's queued work is done, so `interleaved` times GPU work, not its launch."""

    def clock() -> float:
        synchronize(device)
        return time.perf_counter()

    return clock


def bench_one(shape: str, dtype: str, config: ShapeBenchConfig) -> dict:
    """Memory, load, prefill/decode speed, plug overhead, side by side and a training step for one model."""
    device = config.device
    on_cuda = device.startswith("cuda")
    if on_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    llm = random_llm(shape, dtype, device)
    synchronize(device)
    load_s = time.perf_counter() - started
    weights_mb = torch.cuda.memory_allocated() / 2**20 if on_cuda else None
    if on_cuda:  # the peak from here on is serving's (weights + KV cache + activations), not the build's
        torch.cuda.reset_peak_memory_stats()
    vocab = llm.vocab_size
    generator = torch.Generator().manual_seed(1)
    prompts = [
        torch.randint(1, vocab - 1, (config.prompt_tokens,), generator=generator).tolist() for _ in "ab"
    ]
    plug = PersonaPlug(PlugConfig(encoder_dim=ENCODER_DIM, llm_dim=llm.hidden_size, token_norm=1.0)).to(
        device
    )
    history = torch.nn.functional.normalize(torch.randn(1, config.history_items, ENCODER_DIM), dim=-1).to(
        device
    )
    query = torch.nn.functional.normalize(torch.randn(1, ENCODER_DIM), dim=-1).to(device)
    options = GenerationOptions(max_new_tokens=config.new_tokens, min_new_tokens=config.new_tokens)

    def plugged_row(ids: list[int]) -> Row:
        with torch.no_grad():
            out = plug(query, history)
        return Row(ids, out.soft_tokens[0], out.soft_mask[0])

    def prefill(batch: int) -> None:
        embeds, mask = llm.batch([Row(p) for p in prompts[:batch]], left_pad=True)
        with torch.inference_mode():
            llm.model(inputs_embeds=embeds, attention_mask=mask)

    result: dict[str, object] = {"shape": shape, "dtype": dtype, "load_s": load_s, "weights_mb": weights_mb}
    for batch in (1, 2):
        prefill_s = timed(lambda batch=batch: prefill(batch), device, config.repeats)
        rows = [Row(p) for p in prompts[:batch]]
        generate_s = timed(lambda rows=rows: llm.generate(rows, options), device, config.repeats)
        result[f"prefill_tokens_per_s_batch{batch}"] = batch * config.prompt_tokens / prefill_s
        result[f"decode_tokens_per_s_batch{batch}"] = (
            batch * config.new_tokens / max(generate_s - prefill_s, 1e-9)
        )
        result[f"generate_s_batch{batch}"] = generate_s
    if on_cuda:
        result["peak_memory_mb_batch2"] = torch.cuda.max_memory_allocated() / 2**20
    clock = synchronized_clock(device)
    result["plug_overhead"] = interleaved(
        lambda _: llm.generate([plugged_row(prompts[0])], options),
        lambda _: llm.generate([Row(prompts[0])], options),
        config.repeats,
        clock,
    ).ratio
    result["side_by_side"] = interleaved(
        lambda _: llm.generate([plugged_row(prompts[0]), Row(prompts[0])], options),
        lambda _: llm.generate([Row(prompts[0])], options),
        config.repeats,
        clock,
    ).ratio
    result["train_examples_per_s"] = train_examples_per_s(llm, plug, prompts[0], history, query, config)
    if on_cuda:
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def train_examples_per_s(
    llm: FrozenLLM,
    plug: PersonaPlug,
    prompt: list[int],
    history: torch.Tensor,
    query: torch.Tensor,
    config: ShapeBenchConfig,
) -> float:
    """One plug training step (frozen LLM, loss on 16 target tokens, AdamW on the plug): examples/s."""
    optimizer = torch.optim.AdamW(plug.parameters(), lr=1e-4)
    n = config.train_batch
    target = prompt[:16]

    def step() -> None:
        optimizer.zero_grad()
        out = plug(query.expand(n, -1), history.expand(n, -1, -1))
        rows = [Row(prompt, out.soft_tokens[i], out.soft_mask[i], target_ids=target) for i in range(n)]
        nll, count = llm.token_nll(rows)
        (nll.sum() / count.sum()).backward()
        optimizer.step()

    return n / timed(step, config.device, config.repeats)


def run_shapes(config: ShapeBenchConfig, progress: Callable[[str], None] = print) -> dict:
    results: list[dict] = []
    for shape in config.shapes:
        for dtype in config.dtypes:
            progress(f"shapes bench: {shape} {dtype}...")
            try:
                results.append(bench_one(shape, dtype, config))  # its models are freed on return
                gc.collect()
            except (RuntimeError, ImportError, ValueError) as exc:  # e.g. out of memory, no bitsandbytes
                results.append({"shape": shape, "dtype": dtype, "error": f"{exc.__class__.__name__}: {exc}"})
            progress(f"shapes bench: {json.dumps(results[-1])[:300]}")
    info: dict[str, object] = {"torch": torch.__version__, "device": config.device}
    if config.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return {"environment": info, "config": config.__dict__, "results": results}


def table(report: dict) -> str:
    """Shape × dtype: VRAM, tokens/s, plug overhead, side-by-side ratio, training examples/s."""
    lines = [
        f"GPU/CPU: {report['environment'].get('gpu', report['environment']['device'])}",
        (
            "| shape | dtype | weights MB | peak MB (batch 2, 256-token prompts) | prefill tok/s b1 / b2 | "
            "decode tok/s b1 / b2 | plug overhead | side by side | train examples/s |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['dtype']} | {r['error']} | | | | | | |")
            continue
        mb = lambda v: "n/a" if v is None else f"{v:,.0f}"
        lines.append(
            f"| {r['shape']} | {r['dtype']} | {mb(r['weights_mb'])} | {mb(r.get('peak_memory_mb_batch2'))} | "
            f"{r['prefill_tokens_per_s_batch1']:,.0f} / {r['prefill_tokens_per_s_batch2']:,.0f} | "
            f"{r['decode_tokens_per_s_batch1']:,.1f} / {r['decode_tokens_per_s_batch2']:,.1f} | "
            f"{r['plug_overhead']:.3f} | {r['side_by_side']:.3f} | {r['train_examples_per_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu (a dry run)")
    parser.add_argument("--shapes", default="135m,1.7b,8b", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--dtypes", default="bfloat16,nf4", help="comma-separated: bfloat16, nf4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    shapes = tuple(s.strip() for s in args.shapes.split(",") if s.strip())
    dtypes = tuple(d.strip() for d in args.dtypes.split(",") if d.strip())
    wrong = [s for s in shapes if s not in SHAPES] + [d for d in dtypes if d not in ("bfloat16", "nf4")]
    if wrong or args.repeats < 1 or args.new_tokens < 1:
        print(f"error: unknown shape or dtype {wrong}, or repeats/new tokens below 1", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA GPU here; use --device cpu for a dry run", file=sys.stderr)
        return 2
    config = ShapeBenchConfig(
        device=args.device, shapes=shapes, dtypes=dtypes, repeats=args.repeats, new_tokens=args.new_tokens
    )
    report = run_shapes(config)
    print(table(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
