"""The training loop shared by every learner.

:class:`Trainer` runs Adam over mini-batches of a :class:`~taskgraph.data.MultiTaskData`,
minimising the learner's objective (by default the sum over tasks of the masked per-task mean
loss), keeps the epoch with the lowest validation task loss, stops early after ``patience``
epochs without improvement, shows tqdm progress, and writes a checkpoint after every epoch
atomically. ``resume`` continues from a checkpoint to exactly the result of an uninterrupted
run on CPU with the same seed: shuffling is seeded per epoch, and the model, optimizer, best
state, early-stopping counters, learner training state and torch RNG state are all saved.

Under ``torchrun --nproc_per_node=N`` the same code trains on N processes (see
:mod:`taskgraph.distributed`): each global batch is sharded across processes, gradients are
averaged after ``backward`` (DistributedDataParallel's reduction, done explicitly so that
``learner.model_`` stays the plain module), validation losses and logs are all-reduced, and only
rank 0 shows progress and writes checkpoints. A one-process run takes none of these paths.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from taskgraph import distributed as tgd
from taskgraph._io import read_torch_file
from taskgraph.data import Batch, MultiTaskData
from taskgraph.devices import rng_state, set_rng_state
from taskgraph.exceptions import CheckpointError, ValidationError

__all__ = ["Trainer", "Trainable", "FitResult", "make_adam", "to_device"]


class Trainable(Protocol):
    """What the :class:`Trainer` needs of a learner (every
    :class:`~taskgraph.learners.BaseLearner` is one once its model is built). The trainer only
    reads these and calls the hooks; it sets nothing on the learner."""

    name: str
    model_: torch.nn.Module
    layout_: Any
    tasks_set_: Any

    @property
    def device_(self) -> torch.device: ...

    def _param_groups(self, lr: float) -> list[dict[str, Any]]: ...

    def _loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, Any]]: ...

    def _on_epoch_end(self, epoch: int, train: MultiTaskData,
                      optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]: ...

    def _selection_loss(self, val: MultiTaskData, sharded: bool = False) -> float: ...

    def _val_loss(self, val: MultiTaskData, batch_size: int = 4096,
                  sharded: bool = False) -> float: ...

    def _train_state(self) -> dict[str, Any]: ...

    def _load_train_state(self, state: dict[str, Any]) -> None: ...


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns: the per-epoch ``history``, the selected ``best_epoch``
    (``-1`` without validation data), its validation criterion ``best_loss`` and whether early
    stopping ended the run."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_loss: float = float("inf")
    stopped_early: bool = False

_CKPT_FORMAT = "taskgraph.checkpoint"


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """Every tensor of ``batch`` on ``device``."""
    return batch._replace(
        x=batch.x.to(device),
        y=batch.y.to(device),
        env=None if batch.env is None else batch.env.to(device),
        do=None if batch.do is None else batch.do.to(device),
    )


def make_adam(groups: Any, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """The Adam every learner trains with: the fused kernel (one update for all parameters)
    when every parameter is a floating tensor on CPU or CUDA, the multi-tensor ``foreach`` path
    otherwise."""
    groups = list(groups)
    params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                 for p in params)
    if fused:
        try:   # copies: Adam writes its options into the group dicts
            return torch.optim.Adam([dict(g) if isinstance(g, dict) else g for g in groups],
                                    lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, ValueError):   # torch < 2.4 has no fused Adam on CPU
            pass
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, foreach=True)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919) % (2**63 - 1)


class Trainer:
    """Mini-batch Adam training with validation selection, early stopping and checkpoints.

    Args:
        epochs (int): number of epochs.
        batch_size (int): mini-batch size.
        lr (float): Adam learning rate.
        weight_decay (float): Adam weight decay.
        patience (int, optional): stop after this many epochs without a lower validation loss.
        seed (int): seed of shuffling and dropout.
        verbose (bool, optional): progress bar; ``None`` = only when stderr is a terminal.
        checkpoint (path, optional): file rewritten atomically after every epoch.
    """

    def __init__(
        self,
        epochs: int = 30,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int | None = None,
        seed: int = 0,
        verbose: bool | None = None,
        checkpoint: str | Path | None = None,
    ) -> None:
        if patience is not None and (not isinstance(patience, int) or patience < 1):
            raise ValidationError(
                f"patience: expected a positive integer or None, got {patience!r}")
        if not lr > 0:
            raise ValidationError(f"lr: expected a positive learning rate, got {lr!r}")
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.seed = seed
        self.verbose = verbose
        self.checkpoint = None if checkpoint is None else Path(checkpoint)

    # ------------------------------------------------------------------ helpers
    def _show(self) -> bool:
        if self.verbose is None:
            return sys.stderr.isatty()
        return bool(self.verbose)

    @staticmethod
    def val_loss(learner: Trainable, val: MultiTaskData, batch_size: int = 4096,
                 sharded: bool = False) -> float:
        """Sum over tasks of the mean validation loss (the plain selection criterion; the
        learner computes it, see ``BaseLearner._val_loss``)."""
        return learner._val_loss(val, batch_size=batch_size, sharded=sharded)

    def _save(self, learner: Trainable, state: dict[str, Any]) -> None:
        from taskgraph._io import atomic_write

        assert self.checkpoint is not None
        with atomic_write(self.checkpoint, "wb") as fh:
            torch.save(state, fh)

    def _load(self, path: Path, learner: Trainable) -> dict[str, Any]:
        state = read_torch_file(path, _CKPT_FORMAT)
        if state.get("learner") != learner.name:
            raise CheckpointError(
                f"resume: checkpoint {str(path)!r} is for learner {state.get('learner')!r}, "
                f"not {learner.name!r}"
            )
        if state.get("tasks") != learner.tasks_set_.to_list():
            raise CheckpointError(
                f"resume: checkpoint {str(path)!r} was written for a different task set "
                f"({[t['name'] for t in state.get('tasks', [])]})"
            )
        return state

    # ------------------------------------------------------------------ main loop
    def fit(
        self,
        learner: Trainable,
        train: MultiTaskData,
        val: MultiTaskData | None = None,
        resume: bool | str | Path | None = None,
    ) -> FitResult:
        """Train ``learner.model_`` (already built); returns the history and the selected
        epoch. The best epoch's weights are loaded into the model at the end."""
        ddp = tgd.init(device=learner.device_)
        if ddp:
            _prepare_distributed(learner)
        model = learner.model_
        # fused: one update kernel instead of a Python loop over parameters (learners with
        # many small parameters gain most on CPU)
        opt = make_adam(learner._param_groups(self.lr), self.lr, self.weight_decay)
        history: list[dict[str, float]] = []
        best_loss, best_epoch, best_state, bad = float("inf"), -1, None, 0
        start = 0
        torch.manual_seed(self.seed)

        if resume:
            path = self.checkpoint if resume is True else Path(resume)
            if path is None:
                raise ValidationError("resume: resume=True needs checkpoint=<path>")
            if path.exists():
                st = self._load(path, learner)
                model.load_state_dict(st["model"])
                opt.load_state_dict(st["optimizer"])
                learner._load_train_state(st["extra"])
                history = list(st["history"])
                best_loss, best_epoch, bad = st["best_loss"], st["best_epoch"], st["bad_epochs"]
                best_state = st["best_state"]
                start = int(st["epoch"])
                set_rng_state(st["rng"])
            elif resume is not True:
                raise CheckpointError(f"resume: no checkpoint at {str(path)!r}")

        bar = tqdm(range(start, self.epochs), desc=f"{learner.name}", unit="epoch",
                   disable=not self._show() or not tgd.is_main_process(), initial=start,
                   total=self.epochs, leave=False)
        if ddp:
            if _row_sampler(learner, train, 0) is not None:
                raise ValidationError(
                    f"{learner.name}: its own row sampler (e.g. balanced_sampling) is not "
                    "supported in distributed training")
            params = [p for group in opt.param_groups for p in group["params"]]
            sampler = tgd.ShardedBatchSampler(len(train), self.batch_size,
                                              lambda e: _epoch_seed(self.seed, e),
                                              tgd.rank(), tgd.world_size())
        stopped = bool(self.patience and bad >= self.patience)
        for epoch in bar:
            if stopped:
                break
            model.train()
            t0 = time.perf_counter()
            sums: dict[str, Any] = {}
            n_batches = 0
            if ddp:
                sampler.set_epoch(epoch)
                n_batches += self._distributed_epoch(learner, train, sampler, opt, params,
                                                     epoch, sums)
            seed = _epoch_seed(self.seed, epoch)
            for batch in () if ddp else train.loader(self.batch_size, shuffle=True, seed=seed,
                                                     sampler=_row_sampler(learner, train, seed)):
                batch = to_device(batch, learner.device_)
                loss, logs = learner._loss(batch, epoch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{learner.name}: training loss became {float(loss)} at epoch {epoch}; "
                        "lower lr or check the data"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n_batches += 1
                _accumulate(sums, logs)
            sums = {k: float(v) for k, v in sums.items()}    # one read of the epoch's logs
            if ddp:  # mean of the logged values over every process's batches
                parts = tgd.gather_objects((sums, n_batches))
                n_batches = sum(n for _, n in parts)
                sums = {k: sum(s.get(k, 0.0) for s, _ in parts) for k in parts[0][0]}
            row: dict[str, float] = {"epoch": float(epoch)}
            row.update({k: v / max(n_batches, 1) for k, v in sums.items()})
            row.update(learner._on_epoch_end(epoch, train, optimizer=opt))
            row["time_s"] = time.perf_counter() - t0
            if val is not None:
                vl = learner._selection_loss(val, sharded=ddp)
                row["val_loss"] = vl
                if ddp:  # rank 0's row decides, so every process selects the same epoch
                    row = tgd.broadcast_object(row)
                    vl = row["val_loss"]
                if vl < best_loss - 1e-7:
                    best_loss, best_epoch, bad = vl, epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
            history.append(row)
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items()
                             if k in ("task_loss", "val_loss")})
            if self.checkpoint is not None and tgd.is_main_process():
                self._save(learner, {
                    "format": _CKPT_FORMAT,
                    "learner": learner.name,
                    "tasks": learner.tasks_set_.to_list(),
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "best_state": best_state,
                    "best_loss": best_loss,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad,
                    "history": history,
                    "extra": learner._train_state(),
                    "rng": rng_state(learner.device_),
                })
            if self.patience is not None and bad >= self.patience:
                stopped = True
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        return FitResult(history=history, best_epoch=best_epoch, best_loss=best_loss,
                         stopped_early=stopped)

    def _distributed_epoch(
        self,
        learner: Trainable,
        train: MultiTaskData,
        sampler: tgd.ShardedBatchSampler,
        opt: torch.optim.Optimizer,
        params: list[torch.nn.Parameter],
        epoch: int,
        sums: dict[str, Any],
    ) -> int:
        """One epoch on this process's shards; returns the number of non-empty shards."""
        n_batches = 0
        for idx, share in sampler:
            opt.zero_grad(set_to_none=True)
            bad = torch.zeros(1, device=learner.device_)
            if len(idx) > 0:
                batch = train[idx]
                batch = to_device(batch, learner.device_)
                loss, logs = learner._loss(batch, epoch)
                if not torch.isfinite(loss):
                    bad += 1
                else:
                    loss.backward()
                    n_batches += 1
                    _accumulate(sums, logs)
            if float(tgd.all_reduce_sum(bad)) > 0:  # every process raises together
                raise FloatingPointError(
                    f"{learner.name}: training loss became non-finite at epoch {epoch} on some "
                    "process; lower lr or check the data"
                )
            tgd.average_gradients(params, share)
            opt.step()
        return n_batches


def _row_sampler(learner: Trainable, train: MultiTaskData, seed: int) -> Any:
    """The learner's own row order for an epoch (``_train_sampler(train, seed)``, e.g. rows
    drawn with unequal probabilities), or ``None`` for the usual shuffle."""
    hook = getattr(learner, "_train_sampler", None)
    return None if hook is None else hook(train, seed)


def _accumulate(sums: dict[str, Any], logs: dict[str, Any]) -> None:
    """Add a step's logged values to the epoch's sums. Values may be tensors: they are summed
    where they live and read once per epoch, so logging costs no host synchronisation per step
    on a GPU."""
    for k, v in logs.items():
        v = v.detach().double() if isinstance(v, torch.Tensor) else float(v)
        sums[k] = sums[k] + v if k in sums else v


def _prepare_distributed(learner: Trainable) -> None:
    """Put the model on this process's device (``cuda`` = ``cuda:LOCAL_RANK`` once
    :func:`taskgraph.distributed.init` has set it) and make every process start from rank 0's
    weights."""
    if torch.device(learner.device_).type == "cuda":
        learner.model_.to(learner.device_)
        learner.layout_ = learner.layout_.to(learner.device_)
    for tensor in learner.model_.state_dict().values():
        torch.distributed.broadcast(tensor, src=0)
