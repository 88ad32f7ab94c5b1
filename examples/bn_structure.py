"""Structure recovery on expert Bayesian networks (bnlearn's BIF files), against causal-learn.

Run: ``python examples/bn_structure.py [--networks asia sachs child insurance alarm]
[--features sensor noise] [--interventional 0 0.1] [--seeds 0 1 2] [--samples 5000]
[--learners gcnet causal_graph] [--json runs/bn_structure.json] [--quick]``.

Data: :func:`taskgraph.datasets.bayesian_network` (every node a task; ``--features``: a noisy
per-task 2-d sensor of each node's state, or pure noise), ``--samples`` forward-sampled training
rows (+ validation), with a fraction ``--interventional`` of them carrying ``do`` on one random
node. The bundled networks need the ``pgmpy==0.1.26`` wheel's files
(``pip install --no-deps pgmpy==0.1.26``; its code is never imported).

Methods, each scored against the true DAG (``taskgraph.metrics.structure``): the learners
(``--learners``, defaults, ``val`` given), causal-learn's PC on the labels (chi-square and G²,
alpha 0.01 and 0.05; CPDAG), GES with the BDeu score on the networks with at most
``--ges-max-nodes`` nodes (on child, 20 nodes, it did not finish in a minute), and the
correlation top-k with k = the true number of edges (an oracle count), and the graph of
``gcnet(structure_search="hybrid")``: that learner reports exactly the result of
:func:`taskgraph.structure.score_search.hybrid_search` on its training data (tested), so the row
runs the search alone and its seconds are the search's, not a whole fit's. Columns: skeleton F1,
SHD between CPDAGs (the learned graph as given: a DAG is replaced by its CPDAG, so an
equivalent DAG scores 0), F1 on the compelled edges (``NaN`` when the truth has none, as on
sachs), directed F1 against the true DAG (the measure for interventional data, where the
observational CPDAG is no longer the limit) and fit seconds; mean ± std over seeds.

``--quick`` (asia only, 600 rows, 2 epochs, one seed) is the smoke test the test suite runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import taskgraph as tg
from taskgraph.datasets.bif import BIF_INSTALL, bundled_networks
from taskgraph.metrics import format_table, structure
from taskgraph.structure import discover
from taskgraph.structure.score_search import hybrid_search, search_graph

PC_SETTINGS = [("chisq", 0.01), ("chisq", 0.05), ("gsq", 0.01), ("gsq", 0.05)]
COLUMNS = ("skeleton_f1", "cpdag_shd", "compelled_f1", "directed_f1", "seconds")


def score(pred: tg.TaskGraph, truth: tg.TaskGraph, seconds: float) -> dict[str, float]:
    s = structure(pred, truth)
    return {"skeleton_f1": s["skeleton_f1"], "cpdag_shd": s["cpdag_shd"],
            "compelled_f1": s["compelled_f1"], "directed_f1": s["directed_f1"],
            "seconds": seconds, "edges": pred.n_edges}


def baselines(bench: Any, ges_max_nodes: int, penalty: float = 0.5
              ) -> dict[str, tuple[tg.TaskGraph, float]]:
    out = {}
    for test, alpha in PC_SETTINGS:
        t0 = time.perf_counter()
        g = discover(bench.train, "pc", alpha=alpha, indep_test=test)
        out[f"pc {test} {alpha}"] = (g, time.perf_counter() - t0)
    if len(bench.tasks) <= ges_max_nodes:
        t0 = time.perf_counter()
        g = discover(bench.train, "ges", score_func="local_score_BDeu")
        out["ges bdeu"] = (g, time.perf_counter() - t0)
    if all(t.is_classification for t in bench.tasks):
        # the graph gcnet(structure_search="hybrid") reports is exactly this search's result
        t0 = time.perf_counter()
        dag, und, _ = hybrid_search(bench.train, penalty=penalty)
        out["gcnet hybrid (search)"] = (search_graph(dag, und, bench.tasks),
                                        time.perf_counter() - t0)
    t0 = time.perf_counter()
    k = int((bench.true_graph.adjacency != 0).sum())
    g = discover(bench.train, "corr", n_edges=k)
    out["corr top-k"] = (g, time.perf_counter() - t0)
    return out


def learners(bench: Any, names: list[str], epochs: int | None, device: str
             ) -> dict[str, tuple[tg.TaskGraph, float]]:
    out = {}
    for name in names:
        kw: dict[str, Any] = {"verbose": False, "device": device}
        if epochs is not None:
            kw["epochs"] = epochs
        learner = tg.learners.create(name, bench.tasks, **kw)
        t0 = time.perf_counter()
        learner.fit(bench.train, bench.val)
        out[name] = (learner.task_graph_, time.perf_counter() - t0)
    return out


def mean_std(values: list[float]) -> str:
    vals = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "nan"
    m, s = float(np.mean(vals)), float(np.std(vals))
    return f"{m:.3f} ± {s:.3f}" if abs(m) < 10 else f"{m:.1f} ± {s:.1f}"


def summary(paths: list[Path], learner_names: list[str]) -> str:
    """Markdown: per (network, features, interventional), each learner's means over its seeds
    against the best PC setting's on the same seeds (the highest mean skeleton F1, the lowest
    mean CPDAG SHD over the four settings), from ``--json`` files (later files replace
    earlier rows of the same network, features, interventional, seed and method)."""
    rows: dict[tuple, dict[str, Any]] = {}
    for path in paths:
        for r in json.loads(Path(path).read_text()):
            rows[(r["network"], r["features"], r["interventional"], r["seed"],
                  r["method"])] = r
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows.values():
        groups.setdefault((r["network"], r["features"], r["interventional"]), []).append(r)
    order = ["asia", "sachs", "child", "insurance", "alarm"]
    lines = ["| network | features | do rows | learner | seeds | skeleton F1 (PC best) | "
             "CPDAG SHD (PC best) | directed F1 | reported | bar |", "|" + "---|" * 10]

    def mean(sub: list[dict[str, Any]], col: str) -> float:
        return float(np.mean([r[col] for r in sub]))

    for key in sorted(groups, key=lambda k: (order.index(k[0]) if k[0] in order else 99,
                                             k[1], k[2])):
        sub = groups[key]
        pcs = {m for m in (r["method"] for r in sub) if m.startswith("pc ")}
        for name in learner_names:
            mine = [r for r in sub if r["method"] == name]
            if not mine:
                continue
            seeds = {r["seed"] for r in mine}      # PC on the same seeds as the learner
            same = [r for r in sub if r["seed"] in seeds]
            pc_f1 = max(mean([r for r in same if r["method"] == m], "skeleton_f1")
                        for m in pcs)
            pc_shd = min(mean([r for r in same if r["method"] == m], "cpdag_shd")
                         for m in pcs)
            f1, shd = mean(mine, "skeleton_f1"), mean(mine, "cpdag_shd")
            seen = [r["reported"] for r in mine if "reported" in r]
            reported = ", ".join(f"{x} {seen.count(x)}/{len(seen)}"
                                 for x in sorted(set(seen))) or "—"
            if seen and len(seen) < len(mine):
                reported += f" ({len(mine) - len(seen)} unrecorded)"
            ok = f1 >= pc_f1 - 1e-9 and shd <= pc_shd + 1e-9
            lines.append(f"| {key[0]} | {key[1]} | {key[2]:g} | `{name}` | {len(mine)} | "
                         f"{f1:.3f} ({pc_f1:.3f}) | {shd:.1f} ({pc_shd:.1f}) | "
                         f"{mean(mine, 'directed_f1'):.3f} | {reported} | "
                         f"{'met' if ok else '**not met**'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", nargs="+", default=["asia", "sachs", "child", "insurance",
                                                     "alarm"])
    p.add_argument("--features", nargs="+", default=["sensor", "noise"])
    p.add_argument("--interventional", nargs="+", type=float, default=[0.0, 0.1])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--learners", nargs="*", default=["gcnet", "causal_graph"])
    p.add_argument("--epochs", type=int, default=None, help="learner epochs (default: theirs)")
    p.add_argument("--ges-max-nodes", type=int, default=11)
    p.add_argument("--penalty", type=float, default=0.5,
                   help="BIC penalty factor of the hybrid search (default: 0.5, its default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None, help="write every run's scores here")
    p.add_argument("--quick", action="store_true", help="asia, 600 rows, 2 epochs, one seed")
    p.add_argument("--summary", nargs="+", type=Path, metavar="JSON",
                   help="print the learners-against-best-PC markdown table of --json files "
                        "(later files replace the same runs of earlier ones) and exit")
    args = p.parse_args(argv)
    if args.summary:
        print(summary(args.summary, args.learners))
        return {}
    if args.quick:
        args.networks, args.samples, args.epochs, args.seeds = ["asia"], 600, 2, [0]
        args.features, args.interventional = ["sensor"], [0.1]
    missing = [n for n in args.networks if n not in bundled_networks() and not Path(n).is_file()]
    if missing:
        print(f"networks {missing} not found: {BIF_INSTALL}")
        sys.exit(77)
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    for net in args.networks:
        for feat in args.features:
            for frac in args.interventional:
                for seed in args.seeds:
                    bench = tg.datasets.bayesian_network(
                        net, n_samples=args.samples, seed=seed, features=feat,
                        interventional_fraction=frac)
                    truth = bench.true_graph
                    found = {**baselines(bench, args.ges_max_nodes, args.penalty),
                             **learners(bench, args.learners, args.epochs, args.device)}
                    for method, (g, sec) in found.items():
                        rows.append({"network": net, "features": feat, "interventional": frac,
                                     "seed": seed, "method": method,
                                     **score(g, truth, sec)})
                        if method in args.learners:   # which graph the learner reported
                            rows[-1]["reported"] = g.meta.get("structure_search", "sem")
                            rows[-1]["feature_direction"] = g.meta.get(
                                "hybrid_feature_direction")
                    print(f"[{net} {feat} do={frac} seed {seed}] " + ", ".join(
                        f"{m} {r['skeleton_f1']:.2f}/{r['cpdag_shd']:.0f}"
                        + (f" ({r['reported']})" if "reported" in r else "")
                        for m, r in ((r["method"], r) for r in rows[-len(found):])), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(args.json)
    keys = sorted({(r["network"], r["features"], r["interventional"]) for r in rows},
                  key=lambda k: (args.networks.index(k[0]), k[1], k[2]))
    for key in keys:
        sub = [r for r in rows if (r["network"], r["features"], r["interventional"]) == key]
        methods = list(dict.fromkeys(r["method"] for r in sub))
        table = [{"method": m, **{c: mean_std([r[c] for r in sub if r["method"] == m])
                                  for c in COLUMNS}} for m in methods]
        n_seeds = len({r["seed"] for r in sub})
        print(f"\n== {key[0]}, features={key[1]}, interventional={key[2]}, "
              f"{n_seeds} seed(s); mean ± std ==")
        print(format_table(table, ["method", *COLUMNS]))
    return {"rows": rows}


if __name__ == "__main__":
    main()
