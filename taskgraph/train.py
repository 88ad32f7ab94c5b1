"""The training loop shared by every learner.

:class:`Trainer` runs Adam over mini-batches of a :class:`~taskgraph.data.MultiTaskData`,
minimising the learner's objective (by default the sum over tasks of the masked per-task mean
loss), keeps the epoch with the lowest validation task loss, stops early after ``patience``
epochs without improvement, shows tqdm progress, and writes a checkpoint after every epoch
atomically. ``resume`` continues from a checkpoint to exactly the result of an uninterrupted
run on CPU with the same seed: shuffling is seeded per epoch, and the model, optimizer, best
state, early-stopping counters, learner training state and torch RNG state are all saved.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import CheckpointError, ValidationError

if TYPE_CHECKING:
    from taskgraph.learners.base import BaseLearner

__all__ = ["Trainer"]

_CKPT_FORMAT = "taskgraph.checkpoint"


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
            raise ValidationError(f"patience: expected a positive integer or None, got {patience!r}")
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
    @torch.no_grad()
    def val_loss(learner: BaseLearner, val: MultiTaskData, batch_size: int = 4096) -> float:
        """Sum over tasks of the mean validation loss (the selection criterion)."""
        learner.model_.eval()
        per = torch.zeros(len(learner.tasks_set_), device=learner.device)
        count = torch.zeros_like(per)
        for i in range(0, len(val), batch_size):
            x = val.x[i:i + batch_size].to(learner.device)
            y = val.y[i:i + batch_size].to(learner.device)
            out = learner._forward(x)
            per += learner.layout_.per_example_loss(out, y).sum(dim=0)
            count += (~torch.isnan(y)).sum(dim=0)
        return float((per / count.clamp_min(1)).sum())

    def _save(self, learner: BaseLearner, state: dict[str, Any]) -> None:
        from taskgraph._io import atomic_write

        assert self.checkpoint is not None
        with atomic_write(self.checkpoint, "wb") as fh:
            torch.save(state, fh)

    def _load(self, path: Path, learner: BaseLearner) -> dict[str, Any]:
        from taskgraph.learners.base import read_state

        state = read_state(path, fmt=_CKPT_FORMAT)
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
        learner: BaseLearner,
        train: MultiTaskData,
        val: MultiTaskData | None = None,
        resume: bool | str | Path | None = None,
    ) -> list[dict[str, float]]:
        """Train ``learner.model_`` (already built) and return the per-epoch history."""
        model = learner.model_
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
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
                torch.set_rng_state(st["rng"])
            elif resume is not True:
                raise CheckpointError(f"resume: no checkpoint at {str(path)!r}")

        bar = tqdm(range(start, self.epochs), desc=f"{learner.name}", unit="epoch",
                   disable=not self._show(), initial=start, total=self.epochs, leave=False)
        stopped = bool(self.patience and bad >= self.patience)
        for epoch in bar:
            if stopped:
                break
            model.train()
            t0 = time.perf_counter()
            sums: dict[str, float] = {}
            n_batches = 0
            for batch in train.loader(self.batch_size, shuffle=True,
                                      seed=_epoch_seed(self.seed, epoch)):
                batch = batch._replace(
                    x=batch.x.to(learner.device),
                    y=batch.y.to(learner.device),
                    env=None if batch.env is None else batch.env.to(learner.device),
                    do=None if batch.do is None else batch.do.to(learner.device),
                )
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
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            row: dict[str, float] = {"epoch": float(epoch)}
            row.update({k: v / max(n_batches, 1) for k, v in sums.items()})
            row.update(learner._on_epoch_end(epoch, train))
            row["time_s"] = time.perf_counter() - t0
            if val is not None:
                vl = self.val_loss(learner, val)
                row["val_loss"] = vl
                if vl < best_loss - 1e-7:
                    best_loss, best_epoch, bad = vl, epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
            history.append(row)
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k in ("task_loss", "val_loss")})
            if self.checkpoint is not None:
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
                    "rng": torch.get_rng_state(),
                })
            if self.patience is not None and bad >= self.patience:
                stopped = True
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        learner.best_epoch_ = best_epoch
        model.eval()
        return history
