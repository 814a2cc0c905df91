"""What the CPU can do, so dtypes are chosen by the machine at hand and the bench says where it ran.

Whether bf16 is faster than fp32 on a CPU is measured, not looked up: on an AVX512-BF16 CPU a decoding step of
two rows runs 1.7× faster in bf16 and a 256-token batch 2.6× faster, while with oneDNN capped at AVX2 the
decoding step still gains (1.4×) but the batch is 4× slower (emulated bf16). `ONEDNN_MAX_CPU_ISA` caps the
instructions oneDNN may use, so one machine can stand in for an older one (`AVX2`: a laptop without bf16;
`AVX512_CORE_BF16`: a server without AMX).
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

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
"""/proc/cpuinfo flags that decide which matmul kernels exist."""

ISA_CAP_VARIABLE = "ONEDNN_MAX_CPU_ISA"


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
(the side-by-side pair) and a prompt's prefill or an encoder batch. bf16 must win both: a decoding gain
would not pay for a prefill that emulated bf16 makes 4× slower."""

BF16_MARGIN = 1.1
"""bf16 is chosen when each probe runs at least this much faster than in fp32 (measured: 1.7-2.6× where
native, 0.23× for the batch where emulated), so timing noise cannot flip the choice."""


def _bf16_speedup(rows: int, width: int, out: int, repeats: int = 15) -> float:
    """fp32 ÷ bf16 time of one matmul: the median ratio of pairs timed back to back, so load from another
    process hits both dtypes alike (timed as two separate blocks, a studio started during a CI run once
    settled on fp32 for good)."""
    x, w = torch.randn(rows, width), torch.randn(out, width)
    pair = ((x, w), (x.bfloat16(), w.bfloat16()))
    with torch.inference_mode():
        for inputs in pair * 2:  # oneDNN builds its kernel on first use
            torch.nn.functional.linear(*inputs)
        ratios = []
        for _ in range(repeats):
            seconds = []
            for inputs in pair:
                started = time.perf_counter()
                torch.nn.functional.linear(*inputs)
                seconds.append(time.perf_counter() - started)
            ratios.append(seconds[0] / max(seconds[1], 1e-9))
    return statistics.median(ratios)


@cache
def bf16_speedups() -> tuple[float, ...]:
    """fp32 ÷ bf16 time of each BF16_PROBES matmul on this CPU (~0.1 s, once per process)."""
    return tuple(_bf16_speedup(*shape) for shape in BF16_PROBES)


def bf16_is_faster_on_cpu() -> bool:
    """Whether the frozen models should run in bf16 on this CPU: faster at every probe by BF16_MARGIN."""
    return all(speedup >= BF16_MARGIN for speedup in bf16_speedups())


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
        "onednn_isa": onednn_isa(),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "bf16_speedups": [round(x, 2) for x in bf16_speedups()],
        "bf16_chosen": bf16_is_faster_on_cpu(),
    }


def short_cpu(description: dict[str, object]) -> str:
    """One line for tables: 'AMD EPYC, 2 cores, avx512_bf16, ISA cap AVX2'."""
    flags = [f for f in description.get("flags", []) if f in ("avx512_bf16", "amx_bf16")]  # type: ignore[union-attr]
    parts = [
        str(description.get("model")),
        f"{description.get('cores')} cores",
        *(flags or ["no bf16 flags"]),
    ]
    if description.get("onednn_max_cpu_isa"):
        parts.append(f"ISA cap {description['onednn_max_cpu_isa']}")
    return ", ".join(parts)
