"""Learners where labels are scarce: many related binary tasks, few labels per task.

Run: ``python examples/sparse_regime.py [--tasks 20 200] [--label-rates 0.02 0.05 0.2 1.0]
[--seeds 0 1 2] [--rows logistic hard_sharing ...] [--json runs/sparse_regime.json]
[--markdown runs/sparse_regime.md] [--quick]``.

Data: :func:`taskgraph.datasets.sparse_tasks` with ``--n-samples`` training rows (default
4,000), ``x`` in R^``--n-features`` (20), the tasks in clusters of ``--cluster-size`` (5) whose
weight vectors have cosine ``--within-cosine`` (0.9) within a cluster and about 0 across, plus
``--n-unrelated`` and ``--n-conflicting`` tasks and a ``--nonlinearity`` share of the logit. Each
training and validation label is observed with probability ``label rate``; the masks are nested
across rates and ``x``, ``y`` are the same, so rows at different rates differ only in which
labels are seen.

Rows: ``logistic`` (one scikit-learn ``LogisticRegression``, default settings, per task on its
labelled training rows; a reference, not a registered learner), ``oracle_shrinkage`` (an upper
reference for sharing, not a learner: per-task logistic regression in x shrunk towards the
task's *true* signed cluster mean, strength chosen on ``val``; it knows what a sharing method
has to estimate), ``known_graph`` (a reference: per-task logistic regression in x fitted
jointly under graph_share's graph prior along the *true* relatedness graph, ridge and strength
on ``val``; it knows the graph but must estimate the cluster means) and every registered learner
named in ``--rows``, built with its defaults (``seed``, ``verbose=False``) and fitted with
``val`` given. Columns: accuracy on ``test_iid`` (mean over tasks), mean ± std over seeds; the
Bayes ceiling (accuracy of the true p(y|x)'s argmax, in expectation over the test labels);
paired differences against ``hard_sharing`` (mean ± std over seeds, seeds ahead); the share of
the gap between the better of ``hard_sharing`` and ``logistic`` and the ceiling that a row
closes (means over seeds); process CPU seconds of one fit. Warnings a learner raises are kept in
the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import taskgraph as tg
from taskgraph._io import atomic_write, json_safe
from taskgraph.datasets import sparse_tasks_logits
from taskgraph.metrics import format_table

#: row name -> (registered learner, constructor arguments)
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "single_task": ("single_task", {}),
    "hard_sharing": ("hard_sharing", {}),
    "mmoe": ("mmoe", {}),
    "sgnn": ("sgnn", {}),
    "gcnet": ("gcnet", {}),
    "causal_graph": ("causal_graph", {}),
    "graph_share": ("graph_share", {}),
    "graph_share - graph": ("graph_share", {"graph": False}),
    "graph_share - signed": ("graph_share", {"signed": False}),
    "graph_share - skip": ("graph_share", {"skip": False}),
    "graph_share - refit": ("graph_share", {"refit": False}),
}
DEFAULT_ROWS = ["logistic", "single_task", "hard_sharing", "mmoe", "sgnn", "gcnet",
                "causal_graph", "graph_share", "graph_share - graph", "graph_share - signed",
                "graph_share - skip", "graph_share - refit"]
#: rows every other row is compared with, seed by seed (when they were run)
REFERENCES = ("hard_sharing", "logistic", "graph_share")


def make_bench(n_tasks: int, rate: float, seed: int, args: argparse.Namespace
               ) -> tg.datasets.Benchmark:
    n_clustered = n_tasks - args.n_unrelated
    return tg.datasets.sparse_tasks(
        n_tasks=n_tasks, n_samples=args.n_samples, seed=seed, n_features=args.n_features,
        n_clusters=max(1, n_clustered // args.cluster_size) if n_clustered else 0,
        within_cosine=args.within_cosine, n_unrelated=args.n_unrelated,
        n_conflicting=args.n_conflicting, nonlinearity=args.nonlinearity, label_rate=rate,
        n_test=args.n_test)


def scores(pred: np.ndarray, bench: tg.datasets.Benchmark) -> dict[str, float]:
    """Test accuracy (mean over tasks) and the expected accuracy under the true p(y|x)."""
    y = bench.test_iid.y.numpy()
    p = 1.0 / (1.0 + np.exp(-sparse_tasks_logits(bench.test_iid.x.numpy(), bench.info)))
    expected = np.where(pred > 0.5, p, 1.0 - p)
    return {"acc": float((pred == y).mean()), "exp_acc": float(expected.mean())}


def fit_logistic(bench: tg.datasets.Benchmark) -> np.ndarray:
    """One default LogisticRegression per task on its labelled training rows; a task whose
    labelled rows hold one class predicts that class."""
    from sklearn.linear_model import LogisticRegression

    x, y, x_test = bench.train.x.numpy(), bench.train.y.numpy(), bench.test_iid.x.numpy()
    pred = np.zeros((len(x_test), y.shape[1]))
    for k in range(y.shape[1]):
        seen = ~np.isnan(y[:, k])
        labels = y[seen, k]
        if np.unique(labels).size < 2:
            pred[:, k] = labels[0]
            continue
        pred[:, k] = LogisticRegression().fit(x[seen], labels).predict(x_test)
    return pred


def _shrunk_logistic(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, lam: float,
                     init: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``argmin sum(BCE over labelled entries) + lam * ||w - m||^2`` by L-BFGS."""
    w = init.clone().requires_grad_(True)
    b = torch.zeros(y.shape[1], dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")
    seen = ~torch.isnan(y)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        per = torch.nn.functional.binary_cross_entropy_with_logits(
            x @ w + b, torch.nan_to_num(y), reduction="none")
        loss = per[seen].sum() + lam * (w - m).pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def fit_oracle_shrinkage(bench: tg.datasets.Benchmark,
                         strengths: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)
                         ) -> np.ndarray:
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
    return ((bench.test_iid.x.double() @ w + b) > 0).double().numpy()


def fit_known_graph(bench: tg.datasets.Benchmark,
                    strengths: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0),
                    ridges: tuple[float, ...] = (0.03, 0.3, 3.0)) -> np.ndarray:
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
    out = torch.einsum("nd,tdc->ntc", bench.test_iid.x.double(), weight) + bias
    return (out[..., 0] > 0).double().numpy()


def run_row(name: str, bench: tg.datasets.Benchmark, seed: int, args: argparse.Namespace
            ) -> dict[str, Any]:
    cpu = time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if name == "logistic":
            pred = fit_logistic(bench)
        elif name == "oracle_shrinkage":
            pred = fit_oracle_shrinkage(bench)
        elif name == "known_graph":
            pred = fit_known_graph(bench)
        else:
            learner_name, kw = CONFIGS[name]
            extra = {"epochs": args.epochs} if args.epochs is not None else {}
            learner = tg.learners.create(learner_name, bench.tasks, seed=seed, verbose=False,
                                         **extra, **kw)
            learner.fit(bench.train, val=bench.val)
            pred = learner.predict(bench.test_iid.x).numpy()
    row = {**scores(pred, bench), "cpu_s": time.process_time() - cpu}
    messages = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    if messages:
        row["warnings"] = messages
    return row


def summarise(results: dict[str, list[dict[str, Any]]], ceiling: list[float], rows: list[str]
              ) -> dict[str, dict[str, Any]]:
    """Per row: mean/std accuracy, paired differences to each reference row that was run
    (``diff``: {reference: {mean, std, ahead}}), gap closed, CPU s."""
    acc = {r: np.array([s["acc"] for s in results[r]]) for r in rows}
    best_ref = None
    if "hard_sharing" in acc and "logistic" in acc:
        best_ref = max(acc["hard_sharing"].mean(), acc["logistic"].mean())
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry: dict[str, Any] = {"acc_mean": float(acc[r].mean()), "acc_std": float(acc[r].std()),
                                 "cpu_s": float(np.mean([s["cpu_s"] for s in results[r]])),
                                 "diff": {}}
        for ref in REFERENCES:
            if ref in acc:
                diff = acc[r] - acc[ref]
                entry["diff"][ref] = {"mean": float(diff.mean()), "std": float(diff.std()),
                                      "ahead": int((diff > 0).sum())}
        if best_ref is not None:
            gap = float(np.mean(ceiling)) - best_ref
            entry["gap_closed"] = (float(acc[r].mean()) - best_ref) / gap if gap > 0 else None
        out[r] = entry
    return out


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def render(settings: list[dict[str, Any]], rows: list[str], seeds: list[int]) -> str:
    """Markdown: accuracy, paired differences to the reference rows, gap closed, CPU s."""
    head = ["T", "label rate", "ceiling", *rows]
    acc, gap, cpu = [], [], []
    diff: dict[str, list[list[str]]] = {ref: [] for ref in REFERENCES}
    for s in settings:
        key = [str(s["n_tasks"]), f"{100 * s['label_rate']:g}%"]
        summ = s["summary"]
        ceil = f"{np.mean(s['ceiling']):.3f}"
        acc.append(key + [ceil] + [f"{summ[r]['acc_mean']:.3f} ± {summ[r]['acc_std']:.3f}"
                                   for r in rows])
        for ref in REFERENCES:
            if ref in summ[rows[0]]["diff"]:
                diff[ref].append(key + [ceil] + [
                    "·" if r == ref else
                    f"{summ[r]['diff'][ref]['mean']:+.4f} ± {summ[r]['diff'][ref]['std']:.4f} "
                    f"({summ[r]['diff'][ref]['ahead']}/{len(seeds)})" for r in rows])
        if summ[rows[0]].get("gap_closed") is not None:
            gap.append(key + [ceil] + [f"{summ[r]['gap_closed']:+.2f}" for r in rows])
        cpu.append(key + [ceil] + [f"{summ[r]['cpu_s']:.1f}" for r in rows])
    parts = [f"Test accuracy (mean over tasks), mean ± std over seeds {seeds}; ceiling = "
             "Bayes accuracy of the true p(y|x).", markdown_table(head, acc)]
    for ref in REFERENCES:
        if diff[ref]:
            parts += [f"Paired difference to {ref} (mean ± std over seeds; seeds ahead).",
                      markdown_table(head, diff[ref])]
    if gap:
        parts += ["Share of the gap between max(hard_sharing, logistic) and the ceiling closed "
                  "(means over seeds; 1 = at the ceiling, negative = behind the better reference).",
                  markdown_table(head, gap)]
    parts += ["CPU seconds per fit (process time, mean over seeds).", markdown_table(head, cpu)]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", type=int, default=[20, 200], help="T values")
    parser.add_argument("--label-rates", nargs="+", type=float, default=[0.02, 0.05, 0.2, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, metavar="ROW",
                        choices=["logistic", "oracle_shrinkage", "known_graph", *CONFIGS],
                        help="rows to run (default: %(default)s)")
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
    parser.add_argument("--json", default="runs/sparse_regime.json")
    parser.add_argument("--markdown", default="runs/sparse_regime.md")
    parser.add_argument("--quick", action="store_true",
                        help="6 tasks, 300 rows, 2 epochs, one seed and rate: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.label_rates, args.seeds = [6], [0.2], args.seeds[:1]
        args.n_samples, args.n_test, args.epochs, args.cluster_size = 300, 200, 2, 3
    torch.set_num_threads(args.threads)
    rows = list(dict.fromkeys(args.rows))
    out: dict[str, Any] = {"command": " ".join(["python", *sys.argv]),
                           "torch": torch.__version__, "rows": rows, "seeds": args.seeds,
                           "settings": []}
    for n_tasks in args.tasks:
        for rate in args.label_rates:
            results: dict[str, list[dict[str, Any]]] = {r: [] for r in rows}
            ceiling = []
            for seed in args.seeds:
                bench = make_bench(n_tasks, rate, seed, args)
                ceiling.append(bench.info["bayes_accuracy"]["mean"])
                for r in rows:
                    results[r].append(run_row(r, bench, seed, args))
                    print(f"  [T={n_tasks} rate={rate:g} seed={seed}] {r}: acc "
                          f"{results[r][-1]['acc']:.4f}  cpu {results[r][-1]['cpu_s']:.1f}s",
                          flush=True)
            summary = summarise(results, ceiling, rows)
            out["settings"].append({"n_tasks": n_tasks, "label_rate": rate, "ceiling": ceiling,
                                    "per_seed": results, "summary": summary})
            print(f"\n== T={n_tasks}, label rate {rate:g}: ceiling {np.mean(ceiling):.4f} ==")
            print(format_table([
                {"row": r, **{k: v for k, v in summary[r].items() if k != "diff"},
                 **{f"vs {ref}": d["mean"] for ref, d in summary[r]["diff"].items()}}
                for r in rows]))
            print(flush=True)
            with atomic_write(Path(args.json)) as fh:
                json.dump(json_safe(out), fh, indent=1)
    text = render(out["settings"], rows, args.seeds)
    with atomic_write(Path(args.markdown)) as fh:
        fh.write(f"Command: `{out['command']}`\n\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
