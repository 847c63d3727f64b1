"""How a run computes: device, precision, memory layout, compilation and processes.

The TrainConfig says `auto` for most of these; `resolve_engine` turns that into concrete choices
for this machine, and the run's result records them.

* device: auto picks CUDA, then Apple's MPS, then the CPU.
* precision: bf16 autocast where the hardware does bf16 natively (CPUs with AVX512_BF16 or AMX,
  CUDA GPUs from Ampere on); fp16 with a gradient scaler on older CUDA GPUs; fp32 elsewhere.
  fp16 is refused on the CPU: it has no fast path there and would only lose precision.
* channels_last: on for models with convolutions (oneDNN and cuDNN run them faster that way).
* distributed: under torchrun (RANK/WORLD_SIZE set), DistributedDataParallel with gloo on the
  CPU and NCCL on GPUs.
* memory (CPU, glibc): `keep_freed_memory` has malloc keep freed memory for reuse rather than
  give it back to the system: a training step allocates the same large buffers again and
  again. It changes the whole process, so `convkit train` and `evaluate` call it, not the
  engine: a notebook or a test process that imports convkit keeps glibc's defaults.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from convkit.errors import ConfigError


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX512_BF16 or AMX-BF16)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", _local_rank() if torch.cuda.device_count() > 1 else 0)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "device=cuda, but PyTorch sees no CUDA GPU here; use --device cpu or auto"
            )
        return torch.device("cuda", _local_rank() % torch.cuda.device_count())
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps, but PyTorch sees no Apple GPU here; use --device cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu":
            return "bf16" if cpu_has_native_bf16() else "fp32"
        return "fp32"
    if name == "fp16" and device.type == "cpu":
        raise ConfigError(
            "precision=fp16 on the CPU: it has no fast fp16 path and would only lose "
            "precision; use bf16 (fast on CPUs with AVX512_BF16) or fp32"
        )
    return name


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def local_world_size(self) -> int:
        """Processes on this machine (torchrun's LOCAL_WORLD_SIZE): they share its memory."""
        return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if self.active else 1


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def speaks() -> bool:
    """True in the process that prints: rank 0 under torchrun (before or after the process
    group is joined), the only process otherwise."""
    return os.environ.get("RANK", "0") == "0"


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def torchrun_place() -> tuple[int, int]:
    """(rank, world size) torchrun gave this process, before the process group is joined (data
    is loaded before the model and the engine exist); (0, 1) otherwise."""
    if not launched_by_torchrun():
        return 0, 1
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def backend_for(device: torch.device) -> str:
    """The collective backend for a device: NCCL between GPUs, gloo between CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group torchrun set up (once per process); one process otherwise.

    This and torchrun_place (for loading a process's own data shards before the engine exists)
    are the only places that read torchrun's RANK and WORLD_SIZE, and this is the only one that
    starts a process group: everything else gets the Engine's `Distributed`."""
    import torch.distributed as dist

    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Distributed()
    backend = backend_for(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
    # Record the backend the group really has, not the one asked for.
    return Distributed(dist.get_rank(), dist.get_world_size(), _local_rank(), dist.get_backend())


def exit_if_distributed(code: int) -> None:
    """Under torchrun, end this process now with `code`, skipping Python's shutdown.

    gloo's worker threads release each collective's tensors after the collective has returned,
    and releasing a tensor Python knows needs the interpreter's lock. When a process ends right
    after its last collective (rank 1 after testing), that release can fall in the middle of
    Python's shutdown, which kills the thread and aborts the process ("terminate called without
    an active exception", SIGABRT; the core's stack ends in ProcessGroupGloo::runLoop ->
    ~AsyncAllreduceWork -> take_gil): 5 of 40 two-process runs here, and torchrun then fails
    the whole job. Destroying the process group first does not help (gloo joins its threads
    only when the last reference goes). Everything a command writes is on disk and closed when
    it returns, so only the standard streams need flushing. A no-op without a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream
                stream.flush()
        os._exit(code)


@dataclass(frozen=True)
class Engine:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    compile: bool
    dist: Distributed

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs its loss scaled so small gradients do not flush to zero; bf16 does not."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def prepare(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(the model, moved and laid out; the module to call for training steps)."""
        model = model.to(self.device, memory_format=self.memory_format)
        step_module: nn.Module = model
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            step_module = DistributedDataParallel(model, device_ids=ids)
        if self.compile:
            step_module = torch.compile(step_module)
        return model, step_module

    def describe(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else self.device.type,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "world_size": self.dist.world_size,
            "backend": self.dist.backend or None,
            "threads": torch.get_num_threads(),
        }

    def all_sum(self, *values: float) -> list[float]:
        """Sums of `values` over all processes (the values themselves in one process)."""
        if not self.dist.active:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value`, in every process (the value itself in one process)."""
        if not self.dist.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.dist.active:
            import torch.distributed as dist

            dist.barrier()


def resolve_engine(
    device: str, precision: str, channels_last: str, compile: str, model: nn.Module
) -> Engine:
    dev = resolve_device(device)
    if dev.type == "cuda":
        # cuDNN's fastest kernels add in varying order: without this a resumed GPU run drifts
        # from the uninterrupted one (measured on an H100: 99.26% against 99.32%).
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    prec = resolve_precision(precision, dev)
    layout = has_convolutions(model) if channels_last == "auto" else channels_last == "on"
    return Engine(dev, prec, layout, compile == "on", init_distributed(dev))


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the next allocation; True when it was set.

    By default glibc serves each allocation over 32 MB (a CIFAR-10 batch's activations are
    hundreds of MB) with a fresh mmap and unmaps it when freed, so every step faults all its
    activation memory in again, page by page, zero-filled by the kernel: airbench's network at
    batch 2,000 took 780,000 page faults and 1.7 s of system time a step, 18% of its time on
    this 2-core CPU (4.81 s a step, 3.95 s with this). Here every allocation comes from the heap
    (M_MMAP_MAX 0) and the heap is never trimmed (M_TRIM_THRESHOLD at its largest), so the
    process keeps its peak memory until it exits, as PyTorch's GPU allocator does on a GPU.
    Elsewhere (macOS, musl), or with CONVKIT_MALLOC=system, nothing changes. For the whole
    process, for good: call it in a process that trains, as the command line does."""
    if os.environ.get("CONVKIT_MALLOC") == "system" or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
