"""Quickstart: a planted task DAG, a multi-task learner, IID vs OOD scores, the learned graph.

Run: ``python examples/quickstart.py`` (a few minutes on 2 CPU cores) or with ``--quick``.

It shows the whole user path of taskgraph in a few calls:

1. ``tg.datasets.planted_dag``: 8 binary tasks generated along a random task DAG, with hidden
   confounders whose correlation flips out of distribution (``test_ood``);
2. ``tg.learners.create(...).fit(train, val=val)``: the single-task and hard-sharing baselines and,
   when one is registered, a learner that learns the task graph;
3. ``learner.evaluate``: per-task accuracy in and out of distribution, Δm against single-task;
4. ``learner.task_graph_`` against the planted ``bench.true_graph`` (SHD, F1).
"""

from __future__ import annotations

import argparse
import time

import taskgraph as tg
from taskgraph.metrics import delta_m, format_table, structure

#: learners that learn a task graph, in order of preference (whichever is registered first)
GRAPH_LEARNERS = ("gcnet", "causal_graph", "sgnn_ebm", "sgnn", "mtcrl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n_samples, epochs = (500, 2) if args.quick else (3000, 15)

    bench = tg.datasets.planted_dag(n_tasks=8, n_edges=10, n_samples=n_samples, seed=args.seed,
                                    n_test=500 if args.quick else 2000)
    print(bench)
    registered = tg.learners.list()
    graph_learner = next((n for n in GRAPH_LEARNERS if n in registered), None)
    names = ["single_task", "hard_sharing"] + ([graph_learner] if graph_learner else [])

    rows, scores, learners = [], {}, {}
    for name in names:
        t0 = time.perf_counter()
        learner = tg.learners.create(name, bench.tasks, epochs=epochs, seed=args.seed,
                                     verbose=False)
        learner.fit(bench.train, val=bench.val)
        iid, ood = learner.evaluate(bench.test_iid), learner.evaluate(bench.test_ood)
        scores[name], learners[name] = (iid, ood), learner
        rows.append({"learner": name, "iid_acc": iid["mean"], "ood_acc": ood["mean"],
                     "seconds": time.perf_counter() - t0})
    for row in rows:
        iid, ood = scores[row["learner"]]
        row["dm_iid_%"] = delta_m(iid, scores["single_task"][0], bench.tasks)
        row["dm_ood_%"] = delta_m(ood, scores["single_task"][1], bench.tasks)
    print("\nMean task accuracy in distribution (iid) and under the confounder flip (ood);")
    print("Δm = % gain over single-task models (positive = multi-task helps).")
    print(format_table(rows, ["learner", "iid_acc", "ood_acc", "dm_iid_%", "dm_ood_%",
                              "seconds"], floatfmt=".3f"))

    print(f"\nplanted graph: {bench.true_graph.n_edges} edges: "
          + ", ".join(f"{s}->{d}" for s, d, _ in bench.true_graph.edges()))
    if graph_learner is None:
        print("no graph-learning learner is registered; baselines have no task graph")
        return
    graph = learners[graph_learner].task_graph_
    s = structure(graph, bench.true_graph)
    print(f"{graph_learner} learned {graph.n_edges} edges: SHD={s['shd']}, "
          f"directed F1={s['directed_f1']:.2f}, skeleton F1={s['skeleton_f1']:.2f}")


if __name__ == "__main__":
    main()
