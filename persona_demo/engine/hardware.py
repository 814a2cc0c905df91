"""What the CPU can do, so dtypes are chosen by the machine at hand and the bench says where it ran.

Whether bf16 is faster than fp32 on a CPU is measured, not looked up: on an AVX512-BF16 CPU a 256-row batch
runs ~2-2.5× faster in bf16, while with oneDNN capped at AVX2 bf16 is emulated and the batch runs 0.2-0.7× as
fast.
`ONEDNN_MAX_CPU_ISA` caps the instructions oneDNN may use, so one machine can stand in for an older one (`AVX2`:
a laptop without bf16; `AVX512_CORE_BF16`: a server without AMX). The other kernel libraries have caps of their
own (`KERNEL_CAPS`); set them alike, or their kernels still use the full CPU.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import torch

from .half_copies import generating, speed_up_generation

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
"""/proc/cpuinfo flags that decide which matmul kernels exist."""

ISA_CAP_VARIABLE = "ONEDNN_MAX_CPU_ISA"

KERNEL_CAPS = {
    "oneDNN": ISA_CAP_VARIABLE,
    "fbgemm": "FBGEMM_ENABLE_INSTRUCTIONS",
    "MKL": "MKL_ENABLE_INSTRUCTIONS",
    "ATen": "ATEN_CPU_CAPABILITY",
}
"""The variable that caps each kernel library's instructions: oneDNN (bf16 matmuls), fbgemm (generation from
fp16 weight copies, `half_copies.py`), MKL (fp32 matmuls) and ATen's own vector code. An older CPU is stood in
for with all four, e.g. `AVX2`, `AVX2`, `AVX2`, `avx2`."""


@cache
def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 matmuls natively (AMX or AVX512-BF16, within any ONEDNN_MAX_CPU_ISA cap);
    elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


BF16_PROBES = ((2, 576, 1536), (256, 576, 1536))
"""(rows, in, out) of the matmuls timed in both dtypes, at SmolLM2-135M's width: a decoding step of two rows
(the side-by-side pair; recorded for the bench) and a prompt's prefill or an encoder batch (decides)."""

DECODE_PROBE, BATCH_PROBE = range(len(BF16_PROBES))

BF16_MARGIN = 1.1
"""bf16 is chosen where a batch runs at least this much faster than in fp32 (measured: 2-2.5× where native,
0.2-0.7× where emulated), so timing noise cannot flip the choice."""


def _bf16_speedup(rows: int, width: int, out: int, repeats: int = 15) -> float:
    """Time of one matmul with fp32 weights (as generation runs them without bf16 copies: a `HalfCopyLinear`,
    fbgemm's fp16 product, ~1-1.3× `F.linear`'s speed) ÷ its time in bf16: the median ratio of pairs timed back
    to back, so load from another process hits both alike (timed as two separate blocks, a studio started during
    a CI run once settled on fp32 for good)."""
    fp32 = torch.nn.Linear(width, out, bias=False)
    speed_up_generation(fp32, bf16_prompts=False)
    x = torch.randn(rows, width)
    x16, w16 = x.bfloat16(), fp32.weight.detach().bfloat16()
    calls = (lambda: fp32(x), lambda: torch.nn.functional.linear(x16, w16))
    with torch.inference_mode(), generating():
        for call in calls * 2:  # oneDNN builds its kernel on first use
            call()
        ratios = []
        for _ in range(repeats):
            seconds = []
            for call in calls:
                started = time.perf_counter()
                call()
                seconds.append(time.perf_counter() - started)
            ratios.append(seconds[0] / max(seconds[1], 1e-9))
    return statistics.median(ratios)


@cache
def bf16_speedups() -> tuple[float, ...]:
    """fp32 ÷ bf16 time of each BF16_PROBES matmul on this CPU (~0.1 s, once per process). Take it before any
    background thread starts: a thread holding the GIL (numba compiling UMAP) delays the return of every timed
    call by up to a switch interval, which flattens the ratio towards 1 and can settle a native-bf16 CPU on
    fp16 prompts and an fp32 encoder."""
    return tuple(_bf16_speedup(*shape) for shape in BF16_PROBES)


def bf16_is_faster_on_cpu() -> bool:
    """Whether the encoder runs in bf16 and the LLM's generation prompts read bf16 weight copies on this CPU:
    where a prompt-sized batch runs BF16_MARGIN faster, i.e. bf16 is native. Prompts and encoder batches are
    compute-bound and gain ~2× there, which also keeps the side-by-side pair's second prompt cheap. Decoding does
    not decide: fp16 weight copies decode as fast or faster (decode probe 0.7-1.0× on the EPYC), and where bf16
    is emulated it loses the batch anyway (0.2-0.7×)."""
    return bf16_speedups()[BATCH_PROBE] >= BF16_MARGIN


def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, flags) from /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), set()
    name, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return name or platform.machine(), flags


@contextlib.contextmanager
def _captured_stdout() -> Iterator[list[str]]:
    """oneDNN's verbose lines go to the C-level stdout; collect them (the list is filled on exit)."""
    lines: list[str] = []
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield lines
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            lines += sink.read().decode("utf-8", errors="replace").splitlines()


@cache
def onednn_isa() -> str:
    """The instruction set oneDNN reports for a bf16 matmul, or why there is none (no native bf16)."""
    if not cpu_has_native_bf16():
        cap = os.environ.get(ISA_CAP_VARIABLE)
        return f"no native bf16 ({ISA_CAP_VARIABLE}={cap})" if cap else "no native bf16"
    try:
        with _captured_stdout() as lines, torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            x = torch.ones(8, 64, dtype=torch.bfloat16)
            torch.nn.functional.linear(x, torch.ones(32, 64, dtype=torch.bfloat16))
    except (OSError, RuntimeError, AttributeError):
        return "unknown"
    found = [line.split("isa:", 1)[1] for line in lines if "isa:" in line]
    return found[0].strip() if found else "unknown"


def cpu_description() -> dict[str, object]:
    """Model, cores, the ISA flags that matter, the oneDNN cap and ISA: what a CPU timing depends on."""
    name, flags = _cpuinfo()
    return {
        "model": name,
        "cores": os.cpu_count(),
        "flags": [flag for flag in ISA_FLAGS if flag in flags],
        "onednn_max_cpu_isa": os.environ.get(ISA_CAP_VARIABLE, ""),
        "kernel_caps": {name: os.environ[name] for name in KERNEL_CAPS.values() if os.environ.get(name)},
        "onednn_isa": onednn_isa(),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "bf16_speedups": [round(x, 2) for x in bf16_speedups()],
        "bf16_chosen": bf16_is_faster_on_cpu(),
    }


def short_cpu(description: dict[str, object]) -> str:
    """One line for tables: 'AMD EPYC, 2 cores, avx512_bf16, ISA cap AVX2' (+ ' (fbgemm, MKL too)' naming the
    other kernel libraries that were capped as well)."""
    flags = [f for f in description.get("flags", []) if f in ("avx512_bf16", "amx_bf16")]  # type: ignore[union-attr]
    parts = [
        str(description.get("model")),
        f"{description.get('cores')} cores",
        *(flags or ["no bf16 flags"]),
    ]
    if description.get("onednn_max_cpu_isa"):
        caps = description.get("kernel_caps") or {}
        others = [
            name
            for name, variable in KERNEL_CAPS.items()
            if variable in caps and variable != ISA_CAP_VARIABLE
        ]  # type: ignore[operator]
        parts.append(
            f"ISA cap {description['onednn_max_cpu_isa']}" + (f" ({', '.join(others)} too)" if others else "")
        )
    return ", ".join(parts)
