"""Per-task heads and the padded output layout shared by every learner.

Every learner produces one padded tensor ``out[B, T, C_max]`` of head outputs, where task ``k``
uses the first ``out_dim_k`` columns (1 logit for binary, ``C_k`` logits for multiclass, 1 value
for regression). :class:`OutputLayout` turns it into masked losses, log-probabilities and labels
with vectorised operations over tasks (no Python loop over tasks or examples).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from taskgraph.tasks import TaskSet

__all__ = ["OutputLayout", "TaskHeads"]


class OutputLayout(nn.Module):
    """Index tensors describing how ``T`` mixed-kind tasks sit in ``out[B, T, C_max]``.

    Args:
        tasks (TaskSet): the tasks, in column order.

    Shapes:
        - **out:** ``[B, T, C_max]``, ``C_max = max_k out_dim_k``
        - **y:** ``[B, T]`` float, NaN = missing
        - **log_proba:** ``[B, T, C]`` with ``C = max_k n_classes_k`` (≥ 2), ``-inf`` in the
          columns a task does not have; regression tasks are all ``-inf`` rows.
    """

    def __init__(self, tasks: TaskSet) -> None:
        super().__init__()
        self.tasks = tasks
        kinds = [t.kind for t in tasks]
        self.out_dim = max(t.out_dim for t in tasks)
        self.n_classes = max([2] + [t.n_classes for t in tasks if t.is_classification])
        self.register_buffer("is_binary", torch.tensor([k == "binary" for k in kinds]))
        self.register_buffer("is_multi", torch.tensor([k == "multiclass" for k in kinds]))
        self.register_buffer("is_reg", torch.tensor([k == "regression" for k in kinds]))
        n_cls = torch.tensor([t.n_classes if t.is_classification else 0 for t in tasks])
        self.register_buffer("n_cls", n_cls)
        cols = torch.arange(self.n_classes)
        # valid class columns per task (for multiclass softmax and log_proba padding)
        self.register_buffer("class_mask", cols[None, :] < n_cls[:, None])
        # positions of the classification tasks (an index, so selecting them needs no
        # data-dependent boolean indexing on the device)
        self.register_buffer("cls_index", torch.tensor(
            [i for i, t in enumerate(tasks) if t.is_classification], dtype=torch.long),
            persistent=False)
        self.has_multi = bool(self.is_multi.any())
        self.has_reg = bool(self.is_reg.any())
        self.has_binary = bool(self.is_binary.any())
        # every task binary (n_classes == 2): the losses and log-probabilities need no masking
        self.all_binary = self.has_binary and not (self.has_multi or self.has_reg)

    def per_example_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of every (example, task) pair, 0 where the label is missing. ``[B, T]``."""
        mask = ~torch.isnan(y)
        y0 = torch.where(mask, y, torch.zeros_like(y))
        first = out[..., 0]
        if self.all_binary:
            bce = F.binary_cross_entropy_with_logits(first, y0, reduction="none")
            return torch.where(mask, bce, torch.zeros_like(bce))
        loss = torch.zeros_like(y0)
        if self.has_binary:
            bce = F.binary_cross_entropy_with_logits(first, y0, reduction="none")
            loss = torch.where(self.is_binary, bce, loss)
        if self.has_reg:
            loss = torch.where(self.is_reg, (first - y0) ** 2, loss)
        if self.has_multi:
            logits = out[..., : self.n_classes] if out.shape[-1] >= self.n_classes else F.pad(
                out, (0, self.n_classes - out.shape[-1])
            )
            logits = logits.masked_fill(~self.class_mask, -math.inf)
            safe = torch.where(self.is_multi[:, None], logits, torch.zeros_like(logits))
            logp = torch.log_softmax(safe, dim=-1)
            target = y0.long().clamp(0, self.n_classes - 1)
            ce = -logp.gather(-1, target[..., None])[..., 0]
            loss = torch.where(self.is_multi, ce, loss)
        return torch.where(mask, loss, torch.zeros_like(loss))

    def task_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss per task over its observed labels in the batch; 0 for a task with none.
        ``[T]``."""
        mask = ~torch.isnan(y)
        per = self.per_example_loss(out, y)
        count = mask.sum(dim=0).clamp_min(1)
        return per.sum(dim=0) / count

    def log_proba(self, out: torch.Tensor) -> torch.Tensor:
        """Log class probabilities ``[B, T, C]`` (``-inf`` padding)."""
        return self._log_proba(out, self.is_binary, self.is_multi, self.class_mask)

    def log_proba_subset(self, out: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Log class probabilities of the tasks ``index`` only: ``out[B, len(index), C_max]``
        -> ``[B, len(index), C]``."""
        return self._log_proba(out, self.is_binary[index], self.is_multi[index],
                               self.class_mask[index])

    def _log_proba(self, out: torch.Tensor, is_binary: torch.Tensor, is_multi: torch.Tensor,
                   class_mask: torch.Tensor) -> torch.Tensor:
        if self.all_binary:
            z = out[..., 0]
            return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=-1)
        logits = out[..., : self.n_classes] if out.shape[-1] >= self.n_classes else F.pad(
            out, (0, self.n_classes - out.shape[-1])
        )
        res = torch.full_like(logits, -math.inf)
        if self.has_binary:
            z = out[..., 0]
            binlp = torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=-1)
            binlp = F.pad(binlp, (0, self.n_classes - 2), value=-math.inf)
            res = torch.where(is_binary[:, None], binlp, res)
        if self.has_multi:
            # non-multiclass rows get zeros before the softmax: an all -inf row would give NaN
            # gradients even though torch.where discards its value
            safe = torch.where(is_multi[:, None], logits.masked_fill(~class_mask, -math.inf),
                               torch.zeros_like(logits))
            ml = torch.log_softmax(safe, dim=-1).masked_fill(~class_mask, -math.inf)
            res = torch.where(is_multi[:, None], ml, res)
        return res

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        """Labels ``[B, T]``: argmax class (classification) or the value (regression)."""
        lp = self.log_proba(out)
        labels = lp.argmax(dim=-1).to(out.dtype)
        return torch.where(self.is_reg, out[..., 0], labels)


class TaskHeads(nn.Module):
    r"""One linear head per task, computed for all tasks in one batched contraction.

    .. math::
        \mathbf{o}_{b,t} = \mathbf{W}_t^\top \mathbf{h}_{b,t} + \mathbf{b}_t

    where :math:`\mathbf{h}_{b,t}` is the task-``t`` input (the same shared vector for every
    task, or a per-task node state).

    Args:
        tasks (TaskSet): the tasks.
        in_dim (int): input width ``d``.

    Shapes:
        - **input:** ``[B, d]`` (shared) or ``[B, T, d]`` (per task)
        - **output:** ``[B, T, C_max]``; columns past a task's ``out_dim`` are 0
    """

    def __init__(self, tasks: TaskSet, in_dim: int) -> None:
        super().__init__()
        self.n_tasks = len(tasks)
        self.in_dim = in_dim
        self.out_dim = max(t.out_dim for t in tasks)
        self.weight = nn.Parameter(torch.empty(self.n_tasks, in_dim, self.out_dim))
        self.bias = nn.Parameter(torch.empty(self.n_tasks, self.out_dim))
        dims = torch.tensor([t.out_dim for t in tasks])
        cols = torch.arange(self.out_dim)[None, :]
        self.register_buffer("col_mask", (cols < dims[:, None]).float())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() == 2:
            out = torch.einsum("bd,tdc->btc", h, self.weight)
        else:
            out = torch.einsum("btd,tdc->btc", h, self.weight)
        return (out + self.bias) * self.col_mask

    def extra_repr(self) -> str:
        return f"tasks={self.n_tasks}, in_dim={self.in_dim}, out_dim={self.out_dim}"
