r"""Which label couplings are not invariant across environments.

A causal task → task mechanism is the same in every environment; a coupling made by a hidden
confounder whose strength differs by environment is not. :func:`heterogeneous_pairs` tests, for
every pair of classification tasks, whether the pairwise label association differs between the
training environments. The composed learner factorises GMTL's joint label prior over the pairs
it flags (the couplings whose prior is expected to shift), see
:class:`taskgraph.learners.CausalGraph`.
"""

from __future__ import annotations

import torch

from taskgraph.exceptions import ValidationError
from taskgraph.tasks import TaskSet

__all__ = ["heterogeneous_pairs", "log_odds_ratios"]


def log_odds_ratios(y: torch.Tensor, env: torch.Tensor, n_classes: list[int],
                    pseudocount: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Local log odds ratios of every task pair in every environment, with their variances.

    For tasks :math:`j, k` with :math:`C` classes (padded to :math:`C_{\max}`), cells
    :math:`(a, b)`, :math:`a, b \ge 1`, against the reference class 0:

    .. math::
        \mathrm{LOR}^{(e)}_{jk,ab} = \log\frac{n_{ab}\, n_{00}}{n_{a0}\, n_{0b}}, \qquad
        \mathrm{Var} = \frac1{n_{ab}} + \frac1{n_{00}} + \frac1{n_{a0}} + \frac1{n_{0b}}

    (Woolf's estimate; counts smoothed by ``pseudocount``; rows with a missing label of the pair
    are skipped). One co-occurrence matmul per environment, no loop over pairs.

    Shapes:
        - **y:** ``[N, T]`` class labels (NaN = missing), **env:** ``[N]`` ids in ``[0, E)``
        - **returns:** ``(lor, var)``, each ``[E, T, T, C-1, C-1]``; cells beyond a task's
          classes have ``var = inf``
    """
    n, t = y.shape
    c = max(n_classes)
    n_envs = int(env.max()) + 1 if env.numel() else 1
    obs = ~torch.isnan(y)
    lab = torch.nan_to_num(y).long().clamp(0, c - 1)
    onehot = torch.nn.functional.one_hot(lab, c).double() * obs[..., None].double()  # [N,T,C]
    flat = onehot.reshape(n, t * c)
    # one [T·C, T·C] co-occurrence matmul per environment (no [N, T, C, T, C] intermediate)
    counts = torch.stack([flat[env == e].T @ flat[env == e] for e in range(n_envs)])
    counts = counts.reshape(n_envs, t, c, t, c).permute(0, 1, 3, 2, 4) + float(pseudocount)
    valid = torch.zeros(t, c, dtype=torch.bool)
    for i, ci in enumerate(n_classes):
        valid[i, :ci] = True
    n00 = counts[..., :1, :1]
    na0 = counts[..., 1:, :1]
    n0b = counts[..., :1, 1:]
    nab = counts[..., 1:, 1:]
    lor = nab.log() + n00.log() - na0.log() - n0b.log()
    var = 1 / nab + 1 / n00 + 1 / na0 + 1 / n0b
    cell = valid[:, None, 1:, None] & valid[None, :, None, 1:]                       # [T,T,C-1,C-1]
    var = torch.where(cell[None], var, torch.full_like(var, float("inf")))
    return lor, var


#: :func:`heterogeneous_pairs` ignores environments with fewer training rows
HETEROGENEITY_MIN_ROWS = 20


def heterogeneous_pairs(y: torch.Tensor, env: torch.Tensor | None, tasks: TaskSet,
                        z: float = 4.0, min_rows: int = HETEROGENEITY_MIN_ROWS
                        ) -> list[tuple[int, int]]:
    r"""Pairs of classification tasks whose label association differs across environments.

    A pair :math:`(j, k)` is flagged when some cell's log odds ratio differs between two
    environments by more than ``z`` standard errors:

    .. math::
        \max_{e < e',\, a, b}\;
        \frac{\bigl|\mathrm{LOR}^{(e)}_{jk,ab} - \mathrm{LOR}^{(e')}_{jk,ab}\bigr|}
        {\sqrt{\mathrm{Var}^{(e)}_{jk,ab} + \mathrm{Var}^{(e')}_{jk,ab}}} > z

    (the default ``z = 4`` keeps the family-wise false-positive rate small over the
    :math:`T(T-1)/2 \cdot (C-1)^2` cells of moderate ``T``). Environments with fewer than
    ``min_rows`` rows are ignored. Without two environments nothing is flagged.

    Args:
        y (Tensor): ``[N, T]`` labels (NaN = missing).
        env (Tensor, optional): ``[N]`` environment ids.
        tasks (TaskSet): the tasks (regression tasks are never flagged).
        z (float): threshold on the standardised difference (> 0).
        min_rows (int): smallest environment used.

    Returns:
        list of ``(j, k)`` task positions with ``j < k``, sorted.
    """
    if not z > 0:
        raise ValidationError(f"z: expected a positive threshold, got {z!r}")
    if env is None:
        return []
    y, env = y.cpu(), env.cpu()
    cls = [i for i, task in enumerate(tasks) if task.is_classification]
    if len(cls) < 2:
        return []
    keep = torch.bincount(env.long())
    envs = [e for e in range(len(keep)) if int(keep[e]) >= int(min_rows)]
    if len(envs) < 2:
        return []
    rows = torch.isin(env.long(), torch.tensor(envs))
    remap = torch.full((len(keep),), -1, dtype=torch.long)
    remap[torch.tensor(envs)] = torch.arange(len(envs))
    yc = y[rows][:, cls].double()
    lor, var = log_odds_ratios(yc, remap[env.long()[rows]],
                               [int(tasks[i].n_classes) for i in cls])
    ea, eb = torch.triu_indices(len(envs), len(envs), 1)
    diff = (lor[ea] - lor[eb]).abs() / (var[ea] + var[eb]).sqrt()           # [P, T, T, ., .]
    score = torch.nan_to_num(diff, nan=0.0).amax(dim=(0, 3, 4))
    out = []
    for a, b in zip(*torch.triu_indices(len(cls), len(cls), 1).tolist()):
        if float(score[a, b]) > float(z):
            out.append((cls[a], cls[b]))
    return out
