"""Learners where labels are scarce: many related binary tasks, few labels per task.

Run: ``python examples/sparse_regime.py [--dataset sparse_tasks|movielens] [--tasks 20 200]
[--label-rates 0.02 0.05 0.2 1.0] [--seeds 0 1 2] [--rows logistic hard_sharing ...]
[--json runs/sparse_regime.json] [--markdown runs/sparse_regime.md] [--quick]``; runs split
across processes (seeds or rows apart) join into one table per setting with ``--merge a.json
b.json ... [--markdown out.md]``.

Data: :func:`taskgraph.datasets.sparse_tasks` with ``--n-samples`` training rows (default
4,000), ``x`` in R^``--n-features`` (20), the tasks in clusters of ``--cluster-size`` (5) whose
weight vectors have cosine ``--within-cosine`` (0.9) within a cluster and about 0 across, plus
``--n-unrelated`` and ``--n-conflicting`` tasks and a ``--nonlinearity`` share of the logit. Each
training and validation label is observed with probability ``label rate``; the masks are nested
across rates and ``x``, ``y`` are the same, so rows at different rates differ only in which
labels are seen.

``--dataset movielens``: :func:`taskgraph.datasets.movielens_sparse` instead (MovieLens-100k,
one row per user, 18 binary ``likes_<genre>`` tasks, the label rate applied to the train/val
labels, split by user; needs recbole's copy of the data, ``pip install --no-deps
recbole==1.2.1``, else the script exits with code 77; default rates 0.1 and 1.0). There is no
Bayes ceiling ("—", no gap-closed table), test labels are missing where a user rated no movie
of the genre, and the majority class is strong, so the tables report per split (``test_iid``;
``test_ood`` = users aged 45+) accuracy and AUROC over the observed labels (means over tasks),
the ``majority`` row, paired accuracy differences to ``majority`` and paired AUROC differences
to the other references. ``oracle_shrinkage``, ``oracle_prior`` and ``known_graph`` read the
generator's truth and are skipped with a note. Outputs default to
``runs/sparse_regime_movielens.{json,md}``.

Rows: ``logistic`` (one scikit-learn ``LogisticRegression``, default settings, per task on its
labelled training rows; a reference, not a registered learner), ``majority`` (per task the
majority class of its labelled training rows; probability = the training share of 1s),
``oracle_shrinkage`` (an upper reference for sharing, not a learner: per-task logistic
regression in x shrunk towards the task's *true* signed cluster mean, strength chosen on
``val``; it knows what a sharing method has to estimate), ``oracle_prior`` (a reference: the
maximum a posteriori linear heads under the generator's own prior given the clusters, signs,
biases, the span of the cluster centres and the variances, nothing chosen on data; it must
estimate the cluster means and the private directions, which is what any learner has to do),
``known_graph`` (a reference: per-task logistic regression in x fitted jointly under
graph_share's graph prior along the *true* relatedness graph, ridge and strength on ``val``; it
knows the graph but must estimate the cluster means) and every registered learner named in
``--rows``, built with its defaults (``seed``, ``verbose=False``) and fitted with ``val`` given.
Columns: accuracy on ``test_iid`` (mean over tasks), mean ± std over seeds; the Bayes ceiling
(accuracy of the true p(y|x)'s argmax, in expectation over the test labels); paired differences
against ``hard_sharing`` (mean ± std over seeds, seeds ahead); the share of the gap between the
better of ``hard_sharing`` and ``logistic`` and the ceiling that a row closes (means over
seeds); process CPU seconds of one fit. Warnings a learner raises are kept in the JSON.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import taskgraph as tg
from taskgraph._io import atomic_write, json_safe
from taskgraph.datasets import sparse_tasks_logits
from taskgraph.metrics import format_table, task_metrics

#: row name -> (registered learner, constructor arguments)
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "single_task": ("single_task", {}),
    "hard_sharing": ("hard_sharing", {}),
    "mmoe": ("mmoe", {}),
    "sgnn": ("sgnn", {}),
    "gcnet": ("gcnet", {}),
    "causal_graph": ("causal_graph", {}),
    "gcnet - share": ("gcnet", {"share": False}),
    "causal_graph - share": ("causal_graph", {"share": False}),
    "graph_share": ("graph_share", {}),
    "graph_share - graph": ("graph_share", {"graph": False}),
    "graph_share - signed": ("graph_share", {"signed": False}),
    "graph_share - skip": ("graph_share", {"skip": False}),
    "graph_share - refit": ("graph_share", {"refit": False}),
}
DEFAULT_ROWS = ["logistic", "single_task", "hard_sharing", "mmoe", "sgnn", "gcnet",
                "gcnet - share", "causal_graph", "causal_graph - share", "graph_share",
                "graph_share - graph", "graph_share - signed", "graph_share - skip",
                "graph_share - refit"]
#: rows every other row is compared with, seed by seed (when they were run)
REFERENCES = ("hard_sharing", "logistic", "graph_share")


def make_bench(n_tasks: int, rate: float, seed: int, args: argparse.Namespace
               ) -> tg.datasets.Benchmark:
    if args.dataset == "movielens":
        return tg.datasets.movielens_sparse(seed, label_rate=rate)
    n_clustered = n_tasks - args.n_unrelated
    return tg.datasets.sparse_tasks(
        n_tasks=n_tasks, n_samples=args.n_samples, seed=seed, n_features=args.n_features,
        n_clusters=max(1, n_clustered // args.cluster_size) if n_clustered else 0,
        within_cosine=args.within_cosine, n_unrelated=args.n_unrelated,
        n_conflicting=args.n_conflicting, nonlinearity=args.nonlinearity, label_rate=rate,
        n_test=args.n_test)


def scores(predictor: Predictor, bench: tg.datasets.Benchmark, dataset: str
           ) -> dict[str, float]:
    """``sparse_tasks``: test accuracy (mean over tasks) and the expected accuracy under the
    true p(y|x). ``movielens``: per split (``test_iid`` unprefixed, ``test_ood`` as ``ood_``)
    the accuracy and AUROC over the observed labels, each a mean over tasks."""
    if dataset == "movielens":
        out = {}
        for prefix, split in (("", bench.test_iid), ("ood_", bench.test_ood)):
            pred, prob = predictor(split.x)
            m = task_metrics(bench.tasks, split.y.numpy(), pred, prob)
            out[prefix + "acc"], out[prefix + "auroc"] = m["mean"], m["mean_auroc"]
        return out
    pred, _ = predictor(bench.test_iid.x)
    y = bench.test_iid.y.numpy()
    p = 1.0 / (1.0 + np.exp(-sparse_tasks_logits(bench.test_iid.x.numpy(), bench.info)))
    expected = np.where(pred > 0.5, p, 1.0 - p)
    return {"acc": float((pred == y).mean()), "exp_acc": float(expected.mean())}


#: a fitted row: test features -> (predicted labels [N, T], P(y = 1) [N, T])
Predictor = Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]]


def _from_logits(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    return (logits > 0).double().numpy(), torch.sigmoid(logits).double().numpy()


def fit_logistic(bench: tg.datasets.Benchmark) -> Predictor:
    """One default LogisticRegression per task on its labelled training rows; a task whose
    labelled rows hold one class predicts that class."""
    from sklearn.linear_model import LogisticRegression

    x, y = bench.train.x.numpy(), bench.train.y.numpy()
    models: list[Any] = []
    for k in range(y.shape[1]):
        seen = ~np.isnan(y[:, k])
        labels = y[seen, k]
        models.append(float(labels[0]) if np.unique(labels).size < 2
                      else LogisticRegression().fit(x[seen], labels))

    def predict(x_test: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        xt = x_test.numpy()
        pred, prob = np.zeros((len(xt), len(models))), np.zeros((len(xt), len(models)))
        for k, m in enumerate(models):
            if isinstance(m, float):
                pred[:, k] = prob[:, k] = m
            else:
                pred[:, k], prob[:, k] = m.predict(xt), m.predict_proba(xt)[:, 1]
        return pred, prob

    return predict


def fit_majority(bench: tg.datasets.Benchmark) -> Predictor:
    """Per task the majority class of its labelled training rows (ties: 1); the probability
    is the training share of 1s, the same for every row (so its AUROC is 0.5)."""
    rate = np.nanmean(bench.train.y.numpy(), axis=0)

    def predict(x_test: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        n = len(x_test)
        return (np.tile((rate >= 0.5).astype(float), (n, 1)), np.tile(rate, (n, 1)))

    return predict


def _lbfgs_map(params: list[torch.Tensor], logits: Callable[[], torch.Tensor],
               penalty: Callable[[], torch.Tensor], y: torch.Tensor, max_iter: int = 300,
               **options: float) -> None:
    """``argmin sum(BCE of logits() over labelled entries of y) + penalty()`` over ``params``
    (in place) by L-BFGS with a strong-Wolfe line search; ``options`` go to the optimiser."""
    seen, target = ~torch.isnan(y), torch.nan_to_num(y)
    opt = torch.optim.LBFGS(params, max_iter=max_iter, line_search_fn="strong_wolfe", **options)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        per = torch.nn.functional.binary_cross_entropy_with_logits(
            logits(), target, reduction="none")
        loss = per[seen].sum() + penalty()
        loss.backward()
        return loss

    opt.step(closure)


def _shrunk_logistic(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, lam: float,
                     init: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``argmin sum(BCE over labelled entries) + lam * ||w - m||^2`` by L-BFGS."""
    w = init.clone().requires_grad_(True)
    b = torch.zeros(y.shape[1], dtype=x.dtype, requires_grad=True)
    _lbfgs_map([w, b], lambda: x @ w + b, lambda: lam * (w - m).pow(2).sum(), y)
    return w.detach(), b.detach()


def fit_oracle_shrinkage(bench: tg.datasets.Benchmark,
                         strengths: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)
                         ) -> Predictor:
    """Per-task logistic regression in x with the penalty ``lam * ||w_k - m_k||^2`` (sum of
    losses over labelled rows), ``m_k`` the true mean of the signed linear weights of task k's
    cluster (times ``signal``, the task's sign restored; 0 for unrelated tasks), ``lam`` chosen
    by the validation loss."""
    info = bench.info
    weights = info["weights"] * info["signal"] * np.sqrt(1.0 - info["nonlinearity"])
    cluster, sign = info["cluster"], info["sign"]
    centre = np.zeros_like(weights)
    for c in np.unique(cluster[cluster >= 0]):
        members = cluster == c
        centre[:, members] = (weights[:, members] * sign[members]).mean(axis=1,
                                                                     keepdims=True) * sign[members]
    x, y = bench.train.x.double(), bench.train.y.double()
    xv, yv = bench.val.x.double(), bench.val.y.double()
    m = torch.as_tensor(centre)
    best, w = None, m.clone()
    for lam in strengths:
        w, b = _shrunk_logistic(x, y, m, lam, w)
        with torch.no_grad():
            per = torch.nn.functional.binary_cross_entropy_with_logits(
                xv @ w + b, torch.nan_to_num(yv), reduction="none")
            seen = ~torch.isnan(yv)
            val = float(((per * seen).sum(0) / seen.sum(0).clamp_min(1)).sum())
        if best is None or val < best[0]:
            best = (val, w, b)
    _, w, b = best
    return lambda x_test: _from_logits(x_test.double() @ w + b)


def fit_oracle_prior(bench: tg.datasets.Benchmark) -> Predictor:
    r"""The maximum a posteriori linear heads under the generator's own prior, given everything
    about the truth except the cluster means and the private directions: the clusters, the
    signs, the biases, the span :math:`C` of the cluster centres and the variances. Heads
    :math:`\beta_k = s_k(Q a_{g(k)} + N d_k)` with :math:`Q` ``[F, G]`` an orthonormal basis of
    :math:`C`, :math:`N` one of its complement, :math:`a_g \sim \mathcal N(0, \sigma^2\rho/G)`
    (a unit centre in :math:`C`, scaled) and :math:`d_k \sim \mathcal N(0,
    \sigma^2(1-\rho)/(F-G))` (:math:`\sigma^2/(F-G)` for an unrelated task), the Gaussian form
    of the generator's unit vectors; :math:`C = \mathbb R^F` and the variances over :math:`F`
    when the centres do not fit in :math:`F` dimensions. Nothing is chosen on data. It is what
    sharing can reach on ``sparse_tasks`` when it knows the structure and must estimate only the
    parameters (linear part only: exact at ``--nonlinearity 0``)."""
    info = bench.info
    sigma2 = float(info["signal"]) ** 2 * (1.0 - float(info["nonlinearity"]))
    rho = float(info["within_cosine"])
    cluster = np.asarray(info["cluster"])
    centres = np.asarray(info["centres"], dtype=np.float64)          # [G, F]
    n_features, n_clusters = bench.n_features, len(centres)
    if 0 < n_clusters < n_features:
        q = centres.T                                                  # orthonormal [F, G]
        _, _, vt = np.linalg.svd(q.T, full_matrices=True)
        n_basis = vt[n_clusters:].T                                    # [F, F - G]
        var_a, dims = sigma2 * rho / n_clusters, n_features - n_clusters
    else:
        q = n_basis = np.eye(n_features)
        var_a, dims = sigma2 * rho / n_features, n_features
    var_d = np.where(cluster >= 0, sigma2 * (1.0 - rho), sigma2) / dims
    qt, nt = torch.as_tensor(q), torch.as_tensor(n_basis)
    member = torch.as_tensor(np.eye(max(n_clusters, 1))[np.maximum(cluster, 0)].T
                             * (cluster >= 0))                         # [G, T]
    sign = torch.as_tensor(np.asarray(info["sign"], dtype=np.float64))
    bias = torch.as_tensor(np.asarray(info["bias"], dtype=np.float64))
    x, y = bench.train.x.double(), bench.train.y.double()
    a = torch.zeros(qt.shape[1], member.shape[0], dtype=torch.float64, requires_grad=True)
    d = torch.zeros(nt.shape[1], y.shape[1], dtype=torch.float64, requires_grad=True)
    prec_d = torch.as_tensor(1.0 / var_d)

    def heads() -> torch.Tensor:
        return (qt @ a @ member + nt @ d) * sign                       # [F, T]

    _lbfgs_map([a, d], lambda: x @ heads() + bias,
               lambda: 0.5 * a.pow(2).sum() / var_a + 0.5 * (d.pow(2) * prec_d).sum(), y,
               max_iter=500, tolerance_grad=1e-9)
    with torch.no_grad():
        w = heads()
    return lambda x_test: _from_logits(x_test.double() @ w + bias)


def fit_known_graph(bench: tg.datasets.Benchmark,
                    strengths: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0),
                    ridges: tuple[float, ...] = (0.03, 0.3, 3.0)) -> Predictor:
    """Per-task logistic regression in x fitted jointly under graph_share's prior along the
    *true* signed relatedness graph (``info["relatedness"]``), ridge and strength chosen by
    the validation loss: what the graph part reaches when the graph is right and the cluster
    means must still be estimated from the labels."""
    from taskgraph.nn.heads import OutputLayout
    from taskgraph.nn.task_sharing import fit_heads, mean_task_loss

    layout = OutputLayout(bench.tasks)
    mask = torch.ones(len(bench.tasks), 1)
    adjacency = torch.as_tensor(bench.info["relatedness"].adjacency)
    x, y = bench.train.x.double(), bench.train.y.double()
    best, fit = None, None
    for r in ridges:
        for lam in strengths:
            fit = fit_heads(x, y, layout, mask, ridge=r, strength=lam, adjacency=adjacency,
                            init=fit)
            loss = mean_task_loss(bench.val.x.double(), bench.val.y.double(), layout, *fit)
            if best is None or loss < best[0]:
                best = (loss, fit)
    weight, bias = best[1]
    return lambda x_test: _from_logits(
        (torch.einsum("nd,tdc->ntc", x_test.double(), weight) + bias)[..., 0])


def run_row(name: str, bench: tg.datasets.Benchmark, seed: int, args: argparse.Namespace
            ) -> dict[str, Any]:
    cpu = time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if name == "logistic":
            predictor = fit_logistic(bench)
        elif name == "majority":
            predictor = fit_majority(bench)
        elif name == "oracle_shrinkage":
            predictor = fit_oracle_shrinkage(bench)
        elif name == "oracle_prior":
            predictor = fit_oracle_prior(bench)
        elif name == "known_graph":
            predictor = fit_known_graph(bench)
        else:
            learner_name, kw = CONFIGS[name]
            extra = {"epochs": args.epochs} if args.epochs is not None else {}
            learner = tg.learners.create(learner_name, bench.tasks, seed=seed, verbose=False,
                                         **extra, **kw)
            learner.fit(bench.train, val=bench.val)

            def predictor(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
                return (learner.predict(x).numpy(),
                        learner.predict_proba(x)[..., 1].double().numpy())
        row = scores(predictor, bench, args.dataset)
    row["cpu_s"] = time.process_time() - cpu
    messages = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    if messages:
        row["warnings"] = messages
    return row


def _paired(values: dict[str, np.ndarray], r: str, refs: list[str]) -> dict[str, Any]:
    out = {}
    for ref in refs:
        diff = values[r] - values[ref]
        out[ref] = {"mean": float(diff.mean()), "std": float(diff.std()),
                    "ahead": int((diff > 0).sum())}
    return out


def summarise(results: dict[str, list[dict[str, Any]]], ceiling: list[float] | None,
              rows: list[str]) -> dict[str, dict[str, Any]]:
    """Per row: mean/std of each score (``acc``; on MovieLens also ``auroc``, ``ood_acc``,
    ``ood_auroc``), paired accuracy differences to each reference row that was run (``diff``:
    {reference: {mean, std, ahead}}; ``diff_auroc`` likewise on MovieLens), gap closed (not on
    MovieLens: no ceiling), CPU s."""
    metrics = [m for m in ("acc", "auroc", "ood_acc", "ood_auroc") if m in results[rows[0]][0]]
    vals = {m: {r: np.array([s[m] for s in results[r]]) for r in rows} for m in metrics}
    acc = vals["acc"]
    refs = [r for r in ("majority", *REFERENCES) if r in acc]
    best_ref = None
    if ceiling is not None and "hard_sharing" in acc and "logistic" in acc:
        best_ref = max(acc["hard_sharing"].mean(), acc["logistic"].mean())
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry: dict[str, Any] = {}
        for m in metrics:
            entry[f"{m}_mean"] = float(vals[m][r].mean())
            entry[f"{m}_std"] = float(vals[m][r].std())
        entry["cpu_s"] = float(np.mean([s["cpu_s"] for s in results[r]]))
        entry["diff"] = _paired(acc, r, refs)
        if "auroc" in vals:
            entry["diff_auroc"] = _paired(vals["auroc"], r, [f for f in refs if f != "majority"])
        if best_ref is not None:
            gap = float(np.mean(ceiling)) - best_ref
            entry["gap_closed"] = (float(acc[r].mean()) - best_ref) / gap if gap > 0 else None
        out[r] = entry
    return out


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def render(settings: list[dict[str, Any]], rows: list[str], seeds: list[int],
           skipped: dict[str, str] | None = None) -> str:
    """Markdown: accuracy (and on MovieLens AUROC, test_ood AUROC), paired differences to the
    reference rows, gap closed (sparse_tasks only), CPU s."""
    movielens = settings[0]["ceiling"] is None
    head = ["T", "label rate", "ceiling", *rows]
    key: list[list[str]] = []
    for s in settings:
        ceil = "—" if s["ceiling"] is None else f"{np.mean(s['ceiling']):.3f}"
        key.append([str(s["n_tasks"]), f"{100 * s['label_rate']:g}%", ceil])

    def score_table(metric: str) -> str:
        return markdown_table(head, [k + [f"{s['summary'][r][metric + '_mean']:.3f} ± "
                                          f"{s['summary'][r][metric + '_std']:.3f}" for r in rows]
                                     for k, s in zip(key, settings)])

    def diff_cell(d: dict[str, Any]) -> str:
        return f"{d['mean']:+.4f} ± {d['std']:.4f} ({d['ahead']}/{len(seeds)})"

    def diff_table(field: str, ref: str) -> str:
        return markdown_table(head, [
            k + ["·" if r == ref else diff_cell(s["summary"][r][field][ref]) for r in rows]
            for k, s in zip(key, settings)])

    first = settings[0]["summary"][rows[0]]
    parts: list[str] = []
    if movielens:
        parts += [f"MovieLens-100k, `movielens_sparse` (T = 18 `likes_<genre>` tasks, one row per "
                  f"user; no Bayes ceiling, so no gap-closed table). Test_iid accuracy (mean over "
                  f"tasks of the accuracy over each task's observed labels), mean ± std over "
                  f"seeds {seeds}.", score_table("acc"),
                  "Test_iid AUROC (mean over tasks), mean ± std over seeds; `majority` scores "
                  "0.5 by construction.", score_table("auroc"),
                  "Test_ood AUROC (users aged 45+, unseen), mean ± std over seeds.",
                  score_table("ood_auroc")]
        if "majority" in first["diff"]:
            parts += ["Paired test_iid accuracy difference to majority (mean ± std over seeds; "
                      "seeds ahead).", diff_table("diff", "majority")]
        for ref in first.get("diff_auroc", {}):
            parts += [f"Paired test_iid AUROC difference to {ref} (mean ± std over seeds; seeds "
                      "ahead).", diff_table("diff_auroc", ref)]
    else:
        parts += [f"Test accuracy (mean over tasks), mean ± std over seeds {seeds}; ceiling = "
                  "Bayes accuracy of the true p(y|x).", score_table("acc")]
        for ref in first["diff"]:
            parts += [f"Paired difference to {ref} (mean ± std over seeds; seeds ahead).",
                      diff_table("diff", ref)]
        if first.get("gap_closed") is not None:
            parts += ["Share of the gap between max(hard_sharing, logistic) and the ceiling "
                      "closed (means over seeds; 1 = at the ceiling, negative = behind the "
                      "better reference).", markdown_table(head, [
                          k + [f"{s['summary'][r]['gap_closed']:+.2f}" for r in rows]
                          for k, s in zip(key, settings)])]
    parts += ["CPU seconds per fit (process time, mean over seeds).", markdown_table(
        head, [k + [f"{s['summary'][r]['cpu_s']:.1f}" for r in rows]
               for k, s in zip(key, settings)])]
    for row, why in (skipped or {}).items():
        parts.append(f"Not run: `{row}` ({why}).")
    return "\n\n".join(parts) + "\n"


#: rows that read a generator's truth, with why they cannot run on MovieLens
TRUTH_ROWS = {
    "oracle_shrinkage": "it needs the generator's true cluster means; MovieLens has none",
    "oracle_prior": "it needs the generator's clusters, centre span and variances; MovieLens "
                    "has none",
    "known_graph": "it needs the generator's true relatedness graph; MovieLens has none",
}


def merge(paths: list[str], tasks: list[int] | None = None) -> tuple[str, list[str]]:
    """One markdown table per (T, label rate) from several ``--json`` files of runs split across
    processes (seeds or rows run apart). Later files replace the same (setting, seed, row) runs
    of earlier ones. A setting's table keeps the rows run on every seed of that setting; rows
    run on only some seeds are named under it. ``tasks`` keeps only those T values (MovieLens
    settings are always kept). Returns the markdown and the merged commands."""
    runs: dict[tuple[str, int, float], dict[int, dict[str, Any]]] = {}
    ceilings: dict[tuple[str, int, float], dict[int, float | None]] = {}
    commands: list[str] = []
    skipped: dict[str, str] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            settings = data["settings"]
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(f"--merge: cannot read {path}: {exc}") from exc
        commands.append(data.get("command", path))
        skipped.update(data.get("skipped", {}))
        for s in settings:
            key = (data.get("dataset", "sparse_tasks"), int(s["n_tasks"]), float(s["label_rate"]))
            if tasks is not None and key[0] != "movielens" and key[1] not in tasks:
                continue
            for i, seed in enumerate(data["seeds"]):
                for row, per_seed in s["per_seed"].items():
                    if i < len(per_seed):
                        runs.setdefault(key, {}).setdefault(seed, {})[row] = per_seed[i]
                ceil = s["ceiling"][i] if s["ceiling"] is not None else None
                ceilings.setdefault(key, {})[seed] = ceil
    order = {r: i for i, r in enumerate(dict.fromkeys(["logistic", "majority", *TRUTH_ROWS,
                                                         *DEFAULT_ROWS]))}
    parts: list[str] = []
    for key in sorted(runs):
        seeds = sorted(runs[key])
        every = set.intersection(*(set(runs[key][sd]) for sd in seeds))
        some = set.union(*(set(runs[key][sd]) for sd in seeds)) - every
        rows = sorted(every, key=lambda r: (order.get(r, len(order)), r))
        if not rows:
            continue
        results = {r: [runs[key][sd][r] for sd in seeds] for r in rows}
        ceiling = None if key[0] == "movielens" else [ceilings[key][sd] for sd in seeds]
        setting = {"n_tasks": key[1], "label_rate": key[2], "ceiling": ceiling,
                   "summary": summarise(results, ceiling, rows)}
        text = render([setting], rows, seeds, skipped)
        for r in sorted(some, key=lambda r: (order.get(r, len(order)), r)):
            have = [sd for sd in seeds if r in runs[key][sd]]
            text += f"\nNot in this table: `{r}` (run on seeds {have} only).\n"
        parts.append(f"#### T = {key[1]}, {100 * key[2]:g}% labels\n\n{text}")
    return "\n".join(parts), commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["sparse_tasks", "movielens"],
                        default="sparse_tasks",
                        help="the synthetic generator or MovieLens-100k's movielens_sparse "
                             "(needs recbole's data; --tasks and the generator options are "
                             "then ignored)")
    parser.add_argument("--tasks", nargs="+", type=int, default=[20, 200], help="T values")
    parser.add_argument("--label-rates", nargs="+", type=float, default=None,
                        help="label rates (default: 0.02 0.05 0.2 1.0; movielens: 0.1 1.0)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                        choices=["logistic", "majority", *TRUTH_ROWS, *CONFIGS],
                        help=f"rows to run (default: {DEFAULT_ROWS}; movielens adds majority)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: each learner's own)")
    parser.add_argument("--n-samples", type=int, default=4000)
    parser.add_argument("--n-features", type=int, default=20)
    parser.add_argument("--cluster-size", type=int, default=5)
    parser.add_argument("--within-cosine", type=float, default=0.9)
    parser.add_argument("--n-unrelated", type=int, default=0)
    parser.add_argument("--n-conflicting", type=int, default=0)
    parser.add_argument("--nonlinearity", type=float, default=0.0)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", default=None,
                        help="default runs/sparse_regime.json (runs/sparse_regime_movielens.json)")
    parser.add_argument("--markdown", default=None,
                        help="default runs/sparse_regime.md (runs/sparse_regime_movielens.md)")
    parser.add_argument("--quick", action="store_true",
                        help="6 tasks, 300 rows, 2 epochs, one seed and rate: a smoke test "
                             "(movielens: its 18 tasks, rate 0.1)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="merge --json files of runs split across processes into one table "
                             "per setting (later files replace the same runs of earlier ones; "
                             "--tasks keeps those T), write it to --markdown if given, print "
                             "it, and exit")
    args = parser.parse_args(argv)
    if args.merge:
        text, commands = merge(args.merge, args.tasks)
        text = "Commands:\n\n" + "\n".join(f"    {c}" for c in commands) + "\n\n" + text
        if args.markdown:
            with atomic_write(Path(args.markdown)) as fh:
                fh.write(text)
        print(text)
        return 0
    movielens = args.dataset == "movielens"
    stem = "runs/sparse_regime_movielens" if movielens else "runs/sparse_regime"
    args.json = args.json or stem + ".json"
    args.markdown = args.markdown or stem + ".md"
    if args.label_rates is None:
        args.label_rates = [0.1, 1.0] if movielens else [0.02, 0.05, 0.2, 1.0]
    rows = args.rows or (DEFAULT_ROWS[:1] + ["majority"] + DEFAULT_ROWS[1:] if movielens
                         else DEFAULT_ROWS)
    if args.quick:
        args.tasks, args.label_rates, args.seeds = [6], [0.2], args.seeds[:1]
        args.n_samples, args.n_test, args.epochs, args.cluster_size = 300, 200, 2, 3
        if movielens:
            args.label_rates = [0.1]
            rows = args.rows or ["logistic", "majority", "hard_sharing", "graph_share"]
    skipped: dict[str, str] = {}
    if movielens:
        args.tasks = [0]  # placeholder: the task count comes from the benchmark
        skipped = {r: TRUTH_ROWS[r] for r in rows if r in TRUTH_ROWS}
        for r, why in skipped.items():
            print(f"note: skipping {r} on MovieLens: {why}", flush=True)
        rows = [r for r in rows if r not in TRUTH_ROWS]
        try:
            make_bench(0, args.label_rates[0], args.seeds[0], args)
        except tg.MissingDependencyError as exc:
            print(f"skipped: {exc}")
            return 77
    torch.set_num_threads(args.threads)
    rows = list(dict.fromkeys(rows))
    out: dict[str, Any] = {"command": shlex.join(["python", *sys.argv]),
                           "dataset": args.dataset, "torch": torch.__version__, "rows": rows,
                           "seeds": args.seeds, "skipped": skipped, "settings": []}
    for n_tasks in args.tasks:
        for rate in args.label_rates:
            results: dict[str, list[dict[str, Any]]] = {r: [] for r in rows}
            ceiling: list[float] | None = None if movielens else []
            for seed in args.seeds:
                bench = make_bench(n_tasks, rate, seed, args)
                n_tasks = len(bench.tasks)
                if ceiling is not None:
                    ceiling.append(bench.info["bayes_accuracy"]["mean"])
                for r in rows:
                    res = run_row(r, bench, seed, args)
                    results[r].append(res)
                    extra = f" auroc {res['auroc']:.4f}" if "auroc" in res else ""
                    print(f"  [T={n_tasks} rate={rate:g} seed={seed}] {r}: acc "
                          f"{res['acc']:.4f}{extra}  cpu {res['cpu_s']:.1f}s", flush=True)
            summary = summarise(results, ceiling, rows)
            out["settings"].append({"n_tasks": n_tasks, "label_rate": rate, "ceiling": ceiling,
                                    "per_seed": results, "summary": summary})
            ceil = "none" if ceiling is None else f"{np.mean(ceiling):.4f}"
            print(f"\n== T={n_tasks}, label rate {rate:g}: ceiling {ceil} ==")
            print(format_table([
                {"row": r, **{k: v for k, v in summary[r].items() if not k.startswith("diff")},
                 **{f"vs {ref}": d["mean"] for ref, d in summary[r]["diff"].items()}}
                for r in rows]))
            print(flush=True)
            with atomic_write(Path(args.json)) as fh:
                json.dump(json_safe(out), fh, indent=1)
    text = render(out["settings"], rows, args.seeds, skipped)
    with atomic_write(Path(args.markdown)) as fh:
        fh.write(f"Command: `{out['command']}`\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
