"""One run on several processes (torchrun): data parallel inside every batch.

Started under ``torchrun --nproc-per-node N``, a run point trains on N
processes: every rank reads the same batches in the same order (the same
seeded generator), takes its rows of each batch (``rank::N``), and after the
backward pass the gradients are averaged over ranks.  With a mean-reduced loss
and equal shares, the averaged gradient is the single-process gradient of the
whole batch (up to the order of float additions), so every rank holds the same
weights after every step; masks, ADMM/SLR state and quantizer levels, which
are computed from the weights, are the same on every rank too.  The budget is
counted once (steps are global steps).  Only rank 0 writes records and caches.

Batch-norm statistics are per rank (not synchronised): for models with batch
norm the result differs from one process by more than float order.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["world_size", "rank", "is_main", "init_from_env", "shard_batch", "average_gradients", "broadcast_object",
           "barrier", "active"]


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); gloo on
    CPU, nccl on CUDA (each rank on its ``LOCAL_RANK`` GPU). Returns whether
    this process is one of several."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return active()


def _rows(x: Any, r: int, n: int) -> Any:
    if isinstance(x, torch.Tensor) and x.dim() > 0:
        return x[r::n]
    if isinstance(x, list):
        return x[r::n]
    return x


def shard_batch(batch: Any) -> Any:
    """This rank's rows of ``batch``: tensors and lists along their first
    dimension, tuples and dicts element by element; everything else as is."""
    if not active():
        return batch
    r, n = rank(), world_size()
    if isinstance(batch, tuple):
        return tuple(_rows(x, r, n) for x in batch)
    if isinstance(batch, dict):
        return {k: _rows(v, r, n) for k, v in batch.items()}
    return _rows(batch, r, n)


def average_gradients(parameters) -> None:
    """All-reduce and average every gradient over the ranks (in place)."""
    if not active():
        return
    n = world_size()
    for p in parameters:
        # the same parameters lack a gradient on every rank (same model, same
        # code path); leaving them out keeps SGD from touching them, as in one process
        if p.grad is None:
            continue
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(n)


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (plain picklable data)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
