"""torchrun support: which share of the shards this process writes, and the barriers between ranks.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the default process group is used,
initialised here when the caller has not: gloo on CPU, nccl when CUDA is available. Nothing
but barriers goes through it: each rank reads the data itself and writes its own shards.
"""

from __future__ import annotations

import os

import torch

__all__ = ["world", "barrier", "local_device"]


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def world() -> tuple[int, int]:
    """``(world size, rank)``; ``(1, 0)`` outside torchrun. Initialises the default group if needed."""
    if not torch.distributed.is_available():
        return 1, 0
    dist = torch.distributed
    if not dist.is_initialized():
        if _env_world() <= 1:
            return 1, 0
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return dist.get_world_size(), dist.get_rank()


def barrier() -> None:
    """Waits for every rank (a no-op in one process)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def local_device(device: torch.device | str) -> torch.device:
    """``device``, with a bare ``"cuda"`` meaning this rank's GPU (``LOCAL_RANK``) under torchrun."""
    device = torch.device(device)
    dist = torch.distributed
    if device.type == "cuda" and device.index is None and dist.is_available() and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device
