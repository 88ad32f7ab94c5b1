"""Multi-process training helpers (``torchrun``), used by :class:`taskgraph.Trainer`.

A script that trains a learner runs unchanged under ``torchrun --nproc_per_node=N script.py``:
the Trainer notices torchrun's environment (``WORLD_SIZE`` > 1), initialises the default process
group (``gloo`` on CPU, ``nccl`` when the learner is on CUDA), and then

- splits every **global** mini-batch of ``batch_size`` rows (the same rows, in the same order,
  as a one-process run with the same seed) into ``N`` near-equal shards, one per process
  (:class:`ShardedBatchSampler`, reseeded per epoch like the one-process loader);
- averages gradients across processes after ``backward`` (:func:`average_gradients`), each
  weighted by its share of the batch's rows. This is the reduction
  :class:`~torch.nn.parallel.DistributedDataParallel` performs, done explicitly so that
  ``learner.model_`` stays the plain module that learners' hooks call attributes on;
- computes the validation loss on shards and all-reduces the per-task sums and counts, and
  averages the logged training values, so every process holds the same history and makes the
  same model-selection and early-stopping decisions;
- shows progress bars and writes checkpoints on rank 0 only.

With no missing labels a ``N``-process run therefore computes the one-process gradients up to
floating-point summation order, and its metrics match within a small tolerance (tested with two
processes on loopback).

Scripts use :func:`is_main_process` to write exports once::

    learner.fit(bench.train, val=bench.val)
    if tg.distributed.is_main_process():
        learner.save("runs/x/model.pt")
"""

from __future__ import annotations

import atexit
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "is_distributed",
    "rank",
    "world_size",
    "local_rank",
    "is_main_process",
    "launched_by_torchrun",
    "init",
    "cleanup",
    "barrier",
    "ShardedBatchSampler",
    "shard_bounds",
    "average_gradients",
    "all_reduce_sum",
    "broadcast_object",
    "gather_objects",
]


#: set to ``1`` to take the multi-process path with a single torchrun process (``torchrun
#: --nproc_per_node 1``): the process group, sharded sampler and collectives run with one rank,
#: so that path is exercised on one device (e.g. the ``nccl`` backend on one GPU)
FORCE_ENV = "TASKGRAPH_DISTRIBUTED"


def _forced() -> bool:
    return os.environ.get(FORCE_ENV, "0") == "1"


def launched_by_torchrun() -> bool:
    """``True`` when torchrun's environment asks for more than one process, or for one process
    with ``TASKGRAPH_DISTRIBUTED=1``."""
    if "RANK" not in os.environ:
        return False
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or _forced()


def is_distributed() -> bool:
    """``True`` when a default process group of more than one process (or of one, forced by
    ``TASKGRAPH_DISTRIBUTED=1``) is initialised."""
    return dist.is_available() and dist.is_initialized() and (
        dist.get_world_size() > 1 or _forced())


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """Rank on this machine (torchrun's ``LOCAL_RANK``; 0 when not set)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """``True`` on rank 0 (and in a one-process run): the process that logs and writes."""
    return rank() == 0


def init(backend: str | None = None, device: str | torch.device | None = None) -> bool:
    """Initialise the default process group from torchrun's environment, once.

    Args:
        backend (str, optional): ``"gloo"`` or ``"nccl"``; default ``nccl`` when ``device`` is
            CUDA (or, with no device given, when CUDA is available), else ``gloo``.
        device (str or torch.device, optional): the training device; with ``nccl`` the
            current CUDA device becomes ``cuda:LOCAL_RANK``.

    Returns:
        bool: ``True`` if a multi-process group is (now) initialised (or a one-process group
        forced by ``TASKGRAPH_DISTRIBUTED=1``), ``False`` when the process was not launched for
        several processes (nothing is done).
    """
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return is_distributed()
    if not launched_by_torchrun():
        return False
    if backend is None:
        cuda = (torch.device(device).type == "cuda") if device is not None else (
            torch.cuda.is_available())
        backend = "nccl" if cuda else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    atexit.register(cleanup)
    return is_distributed()


def cleanup() -> None:
    """Destroy the default process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


# ---------------------------------------------------------------------------- data sharding
def shard_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous near-equal ``(start, stop)`` ranges covering ``range(n)`` (the
    first ``n % parts`` ranges get one extra row)."""
    base, extra = divmod(int(n), int(parts))
    bounds, start = [], 0
    for p in range(parts):
        stop = start + base + (1 if p < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


class ShardedBatchSampler:
    """This process's share of every global mini-batch of a seeded per-epoch permutation.

    The global order is ``torch.randperm(n, generator=seeded(seed_fn(epoch)))``, the same
    permutation the one-process loader (a seeded :class:`~torch.utils.data.RandomSampler`)
    draws, cut into batches of ``batch_size``; each batch is split into ``world_size``
    near-equal contiguous shards and this sampler yields shard ``rank`` (possibly empty for a
    last batch smaller than ``world_size``). Call :meth:`set_epoch` before each epoch, as with
    :class:`~torch.utils.data.distributed.DistributedSampler`.

    Args:
        n (int): number of rows.
        batch_size (int): global batch size.
        seed_fn (callable): ``epoch -> seed`` of that epoch's permutation.
        rank (int): this process's rank.
        world_size (int): number of processes.
    """

    def __init__(self, n: int, batch_size: int, seed_fn: Any, rank: int, world_size: int
                 ) -> None:
        self.n, self.batch_size = int(n), int(batch_size)
        self.seed_fn, self.rank, self.world_size = seed_fn, int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, float]]:
        """Yields ``(indices, share)``: this shard's row indices and its fraction of the
        global batch's rows (the weight of its gradient)."""
        gen = torch.Generator()
        gen.manual_seed(int(self.seed_fn(self.epoch)))
        perm = torch.randperm(self.n, generator=gen)
        for start in range(0, self.n, self.batch_size):
            batch = perm[start:start + self.batch_size]
            lo, hi = shard_bounds(len(batch), self.world_size)[self.rank]
            yield batch[lo:hi], (hi - lo) / len(batch)


# ---------------------------------------------------------------------------- collectives
def average_gradients(params: Sequence[torch.nn.Parameter], weight: float) -> None:
    """Replace each gradient by the weighted sum over processes of ``weight * grad``.

    With ``weight`` = this process's share of the global batch the result is the gradient of
    the global batch's mean loss (what DistributedDataParallel computes for equal shards).
    A parameter keeps ``grad = None`` only if it has no gradient on every process, so
    optimisers skip exactly the parameters a one-process run would skip. One flat all-reduce
    carries every gradient and the has-gradient flags.
    """
    if not is_distributed() or not params:
        return
    device = params[0].device
    flags = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=device)
    flat = torch.cat([
        (torch.zeros(p.numel(), device=device, dtype=torch.float32) if p.grad is None
         else p.grad.detach().reshape(-1).float() * weight)
        for p in params
    ] + [flags])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    has = flat[-len(params):].tolist()      # one host synchronisation for every flag
    for i, p in enumerate(params):
        n = p.numel()
        if has[i] > 0:
            g = flat[offset:offset + n].view_as(p).to(p.dtype)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        offset += n


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes in place and return it (no-op when not distributed)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every process (identity when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
