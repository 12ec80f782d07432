"""Where and how tensors run: device and precision choice, autocast, the fp16 gradient scaler, torchrun's
distributed setup.

Precision is honoured on every device: bf16 and fp16 run under autocast on the CPU too (fp16 with the CPU
gradient scaler), so the code path tests run on a CPU is the one a GPU runs. `auto` is resolved before
anything records it: for training, bf16 on GPUs with native bf16 (compute capability 8.0 or later: A100,
H100, H200; not V100/T4, where torch emulates it), else fp32 (also on CPUs, where bf16 training is not
faster); for inference (`aqa score`, `aqa extract`), bf16 also on CPUs with native bf16 (AVX-512 BF16 or
AMX), where it pays.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from aqa_cli.util.errors import AqaError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FP16_INIT_SCALE = 1.0
"""The fp16 gradient scaler's first scale. The L1 + L2 loss on scores in points has large gradients, not
small ones: up to 95 at initialisation and 816 after one epoch in the tiny test model, and its activation
gradients overflow fp16 (max 65504) at any scale from 32 up, so that every step was skipped at torch's
default 2**16 (and 6 of the first 10 in the review's run). Starting unscaled, the scaler still doubles the
scale after every 2000 clean steps and halves it on an overflow."""
DDP_TIMEOUT_MINUTES = 60
"""The process group's timeout: rank 0 alone evaluates val and test and writes checkpoints while the
other ranks wait in a barrier, which NCCL's default 10-minute watchdog would end on a large split.
`AQA_DDP_TIMEOUT_MINUTES` changes it."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AqaError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AqaError(f"--device {name}: no CUDA GPU is visible to torch; use --device cpu")
    return device


def resolve_precision(name: str, device: torch.device, inference: bool = False) -> str:
    """The precision to run (and record): `auto` resolved as the module docstring says; a precision the
    device cannot run is refused with one line."""
    if name not in PRECISIONS:
        raise AqaError(f"unknown --precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if device.type not in ("cuda", "cpu"):
        if name in ("auto", "fp32"):
            return "fp32"
        raise AqaError(f"--precision {name} runs on cpu or cuda only, not on {device.type}; use fp32")
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if native_bf16_gpu(device) else "fp32"
        return "bf16" if inference and native_bf16_cpu() else "fp32"
    if (
        name == "bf16"
        and device.type == "cuda"
        and not torch.cuda.is_bf16_supported(including_emulation=True)
    ):
        raise AqaError(
            f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16 or fp32"
        )
    return name


def native_bf16_gpu(device: torch.device) -> bool:
    """bf16 in hardware (compute capability 8.0 or later), not torch's emulation on older GPUs."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def native_bf16_cpu() -> bool:
    """The CPU computes bf16 natively (AVX-512 BF16 or AMX, as /proc/cpuinfo lists them); AQA_CPU_BF16=0
    or 1 says otherwise (for measurements and tests)."""
    if os.environ.get("AQA_CPU_BF16") in ("0", "1"):
        return os.environ["AQA_CPU_BF16"] == "1"
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


def autocast(device: torch.device, precision: str):
    """Autocast to the precision's dtype (no-op for fp32), on the CPU as on CUDA."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def full_precision(device: torch.device):
    """fp32 inside an autocast region: for the few operations whose rounding the scores would show."""
    return torch.autocast(device.type, enabled=False)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The gradient scaler: active for fp16 only (bf16 has fp32's range)."""
    return torch.amp.GradScaler(device.type, init_scale=FP16_INIT_SCALE, enabled=precision == "fp16")


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict | None) -> None:
    """A checkpoint's scaler state; a run saved without fp16 has none, and then fp16 starts a fresh scaler."""
    if scaler.is_enabled() and state:
        scaler.load_state_dict(state)


@dataclass(frozen=True)
class Inference:
    """How a frozen model runs for `aqa score` and `aqa extract`: device, precision, memory format."""

    device: torch.device
    precision: str
    channels_last: bool

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model.to(self.device)
        return model.to(memory_format=torch.channels_last_3d) if self.channels_last else model

    def autocast(self):
        return autocast(self.device, self.precision)


def inference(device_name: str, precision: str) -> Inference:
    """Inference settings: `auto` precision as the module docstring says; channels-last 3D with bf16 on a
    CPU (oneDNN's bf16 convolutions want it) and on CUDA, as training uses it there."""
    device = resolve_device(device_name)
    resolved = resolve_precision(precision, device, inference=True)
    return Inference(device, resolved, device.type == "cuda" or resolved == "bf16")


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1, no group, when not launched by torchrun).

    Under torchrun the process joins a group even when it is the only one (`--nproc_per_node=1`), so a
    one-GPU machine runs the same DistributedDataParallel code as several."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False  # in a process group (DistributedDataParallel)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def share_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) on every rank: after a training step each rank holds
        those of its own batches, which DistributedDataParallel replaces only at the next forward."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, 0)

    def gather(self, value) -> list:
        """Every rank's `value`, in rank order (on every rank); [value] without a group."""
        if not self.enabled:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the process group when started by torchrun (RANK set); NCCL on GPUs, else gloo."""
    if "RANK" not in os.environ:
        return Distributed(), resolve_device(device_name)
    info = Distributed(
        int(os.environ["RANK"]),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", 0)),
        enabled=True,
    )
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        minutes = float(os.environ.get("AQA_DDP_TIMEOUT_MINUTES", DDP_TIMEOUT_MINUTES))
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=minutes)
        )
    return info, device
