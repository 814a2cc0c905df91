"""Training and evaluation across processes through Hugging Face Accelerate (`accelerate launch`).

Why a small wrapper rather than Accelerate calls spread through `train.py` and `evaluate.py`: a plain
`python -m persona_demo train ...` must keep working, bit for bit as before, without Accelerate or any
config; and the training/evaluation loops stay readable. `Single` is that plain process (no collectives,
the historical bf16 autocast on CPU); `Accelerated` wraps an `accelerate.Accelerator` and is chosen when
the command runs under `accelerate launch` (or torchrun).

What is shared how:
- Only the plug trains: it (and its optimizer) go through `Accelerator.prepare` (DDP, or DeepSpeed ZeRO
  from the config). The frozen LLM and encoder are loaded once per process, on that process's device,
  never wrapped, never given gradients.
- `--batch-size` is the GLOBAL batch: every process draws the same global batch (same seed, same data
  order, same history dropout) and works on its contiguous share. The loss is scaled so that DDP's gradient
  mean equals the 1-process gradient of the whole batch; the same command gives the same plug (to float
  tolerance) on 1 or N processes.
- Evaluation hands whole batches round-robin to processes (each example sits in the same batch as in a
  1-process run, so greedy outputs match) and gathers (index, prediction) pairs back in the original order.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

import torch
from torch import nn

from ..config import Settings
from ..engine.models import resolve_device
from ..errors import PersonaDemoError

T = TypeVar("T")


def launched_by_accelerate(environ: dict[str, str] | None = None) -> bool:
    """True under `accelerate launch` (it always exports ACCELERATE_MIXED_PRECISION) or torchrun."""
    env = os.environ if environ is None else environ
    return "ACCELERATE_MIXED_PRECISION" in env or int(env.get("WORLD_SIZE", "1") or 1) > 1


class Single:
    """One plain process: every collective is the identity, every write happens here."""

    num_processes = 1
    process_index = 0
    is_main = True
    device: torch.device | None = None
    """None: the engine picks its device from the settings, as it always did."""

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's contiguous share of a (global) batch."""
        return list(items)

    def round_robin(self, items: Sequence[T]) -> list[T]:
        """Every num_processes-th item from this process's index: whole evaluation batches per process."""
        return list(items)

    def prepare(self, plug: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, Any]:
        return plug, optimizer

    def accumulate(self, module: nn.Module) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, grad_accum: int) -> None:
        (loss / grad_accum).backward()

    def autocast(self, cpu_bf16: bool, device: torch.device) -> contextlib.AbstractContextManager:
        """The historical default: bf16 autocast on CPU when the training config asks for it."""
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16 and device.type == "cpu")

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def gather(self, items: list[T]) -> list[T]:
        return list(items)

    def wait(self) -> None:
        """Barrier (no-op for one process)."""


class Accelerated(Single):
    """Many processes (or one, under `accelerate launch`) through an `accelerate.Accelerator`."""

    def __init__(self, grad_accum: int = 1, batch_size: int = 0) -> None:
        from accelerate import Accelerator

        # The scheduler is not prepared (Accelerate would step it once per process), and gradient accumulation
        # uses Accelerate's `accumulate` (no gradient sync on all but the last micro-batch of a step).
        # cpu=True without CUDA: under torchrun (`accelerate launch --multi_gpu` or configs/cpu-2-processes.yaml)
        # the processes then join a gloo group on CPU. (`accelerate launch --cpu --num_processes N` starts ONE
        # process in Accelerate 1.15 unless MPI's mpirun is installed and a hostfile is given.)
        self.accelerator = Accelerator(
            gradient_accumulation_steps=grad_accum, cpu=not torch.cuda.is_available()
        )
        self.num_processes = self.accelerator.num_processes
        self.process_index = self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process
        self.device = self.accelerator.device
        self.batch_size = batch_size
        if self.is_main:  # says what really runs: e.g. `--cpu --num_processes 2` without MPI is 1 process
            state = self.accelerator.state
            print(
                f"accelerate: {self.num_processes} process(es), {state.distributed_type.value}, "
                f"device {self.device}, mixed precision {state.mixed_precision}",
                file=sys.stderr,
            )

    def shard(self, items: Sequence[T]) -> list[T]:
        n, k = len(items), self.num_processes
        if n < k:
            raise PersonaDemoError(
                f"a batch of {n} cannot feed {k} processes: raise --batch-size to at least {k}"
            )
        lo, hi = n * self.process_index // k, n * (self.process_index + 1) // k
        return list(items[lo:hi])

    def round_robin(self, items: Sequence[T]) -> list[T]:
        return list(items[self.process_index :: self.num_processes])

    def prepare(self, plug: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, Any]:
        plugin = self.accelerator.state.deepspeed_plugin
        # No DataLoader is prepared, so DeepSpeed is told the per-process batch.
        if plugin is not None and self.batch_size:
            ds = plugin.deepspeed_config
            if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
                ds["train_micro_batch_size_per_gpu"] = max(1, self.batch_size // self.num_processes)
        return self.accelerator.prepare(plug, optimizer)

    def accumulate(self, module: nn.Module) -> contextlib.AbstractContextManager:
        return self.accelerator.accumulate(module)

    def backward(self, loss: torch.Tensor, grad_accum: int) -> None:
        if grad_accum != self.accelerator.gradient_accumulation_steps:
            raise PersonaDemoError("internal: the Accelerator was built for another --grad-accum")
        self.accelerator.backward(loss)  # divides by gradient_accumulation_steps

    def autocast(self, cpu_bf16: bool, device: torch.device) -> contextlib.AbstractContextManager:
        """Mixed precision from Accelerate's config (`--mixed_precision no|bf16|fp16`), not our default."""
        return self.accelerator.autocast()

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.num_processes == 1:
            return value
        return self.accelerator.reduce(value.detach().to(self.device), reduction="sum")

    def any(self, flag: bool) -> bool:
        """Agree on a flag (e.g. a stop request that reached only some processes): true if any is set."""
        if self.num_processes == 1:
            return bool(flag)
        return bool(self.sum(torch.tensor([int(flag)], device=self.device)).item())

    def gather(self, items: list[T]) -> list[T]:
        if self.num_processes == 1:
            return list(items)
        from accelerate.utils import gather_object

        return list(gather_object(items))

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()


def current(grad_accum: int = 1, batch_size: int = 0) -> Single:
    """`Accelerated` under `accelerate launch`, else the plain `Single` process (no Accelerate import)."""
    return Accelerated(grad_accum, batch_size) if launched_by_accelerate() else Single()


def settings_for(settings: Settings, dist: Single, training: bool = False) -> Settings:
    """Each process on its own device (cuda:LOCAL_RANK), and CPU threads split between local processes.

    For `training`, the frozen LLM gets an explicit float32 on a CPU: exact fp32 weights without generation's
    half-precision copies (training never generates, so they would only take memory); the config's bf16
    autocast gives the speed, and a bf16 residual stream would round what the plug learns from."""
    changes: dict[str, object] = {}
    device = dist.device or resolve_device(settings)
    if training and settings.dtype == "auto" and device.type == "cpu":
        changes["dtype"] = "float32"
    if dist.num_processes == 1 and dist.device is None:
        return replace(settings, **changes) if changes else settings
    if dist.device is not None and dist.device.type == "cuda":
        changes["device"] = str(dist.device)
    if not settings.threads and dist.device is not None and dist.device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.num_processes) or 1)
        changes["threads"] = max(1, (os.cpu_count() or 1) // local)
    return replace(settings, **changes) if changes else settings
