"""What the bench records about the CPU, and the dtype the frozen models get from the measured bf16 speed-ups."""

from __future__ import annotations

import os

import torch

from persona_demo.config import Settings
from persona_demo.engine.hardware import (
    BF16_PROBES,
    ISA_FLAGS,
    bf16_is_faster_on_cpu,
    bf16_speedups,
    cpu_description,
    cpu_has_native_bf16,
)
from persona_demo.engine.models import bf16_pays, resolve_dtype, resolve_encoder_dtype


def test_cpu_description_names_the_cpu_and_its_bf16_support():
    described = cpu_description()
    assert described["model"] and described["cores"] == os.cpu_count()
    assert set(described["flags"]) <= set(ISA_FLAGS)
    assert described["native_bf16"] == cpu_has_native_bf16()
    if described["native_bf16"]:  # oneDNN names the ISA it runs bf16 with
        assert described["onednn_isa"] not in {"", "unknown"}


def test_auto_dtype_follows_the_measured_bf16_speedups(monkeypatch):
    """On a CPU the LLM keeps fp32 weights (exact scores) and the encoder takes bf16 where a prompt-sized batch
    wins by the margin (native bf16); the decoding probe does not decide, as generation decodes from fp16 weight
    copies either way."""
    from persona_demo.engine import hardware

    cpu = torch.device("cpu")
    cases = {(2.1, 4.2): torch.bfloat16, (1.47, 0.27): torch.float32, (0.4, 2.5): torch.bfloat16}
    cases |= {(3.0, 1.05): torch.float32}
    for speedups, expected in cases.items():
        monkeypatch.setattr(hardware, "bf16_speedups", lambda speedups=speedups: speedups)
        assert resolve_dtype(Settings(), cpu) == torch.float32
        assert resolve_encoder_dtype(Settings(), cpu) == expected
        assert bf16_pays(cpu) == (expected == torch.bfloat16)  # bf16 weight copies for generation's prompts
        assert resolve_dtype(Settings(dtype="bfloat16"), cpu) == torch.bfloat16  # --dtype still overrides
    assert resolve_dtype(Settings(), torch.device("cuda")) == torch.bfloat16


def test_the_probes_time_real_matmuls_on_this_cpu():
    speedups = bf16_speedups()
    assert len(speedups) == len(BF16_PROBES) and all(x > 0 for x in speedups)
    assert cpu_description()["bf16_chosen"] == bf16_is_faster_on_cpu()
