"""Are the features causes or effects of the labels? ``feature_direction`` on every bundled
expert network, feature mode and seed, and on the project's own generators.

Run: ``python examples/feature_direction.py [--networks asia sachs child insurance alarm]
[--seeds 0 1 2] [--samples 5000] [--own] [--quick]``.

``structure_search="auto"`` (``gcnet``, ``causal_graph``) reads this verdict
(:func:`taskgraph.structure.score_search.feature_direction`): features *downstream* of the
labels (conditioning on the labels removes their pairwise dependence: sensors, images of the
labelled objects) leave the labels' own distribution with the task graph in it, so the hybrid
search on the labels is reported; *upstream* features (conditioning on the labels creates
dependence between them: causes of a common label) confound the labels, so the graphs are
compared given ``x``; *none* (no dependence either way: pure noise) also compares them. The
table lists, per data set, the pairs of feature columns the labels explain (downstream), the
collider pairs (upstream), the pairs tested and the verdict. ``--own`` adds ``planted_dag``,
``causal_mtl``, ``confounded`` and ``sparse_tasks`` (seed 0). Seconds per call are printed:
the test reads at most 20,000 rows and 256 columns.
"""

from __future__ import annotations

import argparse
import time
import warnings

import taskgraph as tg
from taskgraph.datasets.bif import BIF_INSTALL, bundled_networks
from taskgraph.metrics import format_table
from taskgraph.structure.score_search import feature_direction


def row(name: str, data: tg.MultiTaskData) -> dict[str, object]:
    t0 = time.perf_counter()
    d = feature_direction(data)
    return {"data": name, "columns": data.x[0].numel(), "pairs": d["pairs"],
            "explained (downstream)": d["downstream_pairs"],
            "colliders (upstream)": d["upstream_pairs"], "verdict": d["verdict"],
            "seconds": f"{time.perf_counter() - t0:.2f}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+",
                        default=["asia", "sachs", "child", "insurance", "alarm"])
    parser.add_argument("--features", nargs="+", default=["sensor", "noise", "roots"])
    parser.add_argument("--interventional", nargs="+", type=float, default=[0.0, 0.1])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--own", action="store_true", help="add the project's generators")
    parser.add_argument("--quick", action="store_true",
                        help="asia only, one seed, 1,000 rows, and the own generators")
    args = parser.parse_args()
    if args.quick:
        args.networks, args.seeds, args.samples, args.own = ["asia"], [0], 1000, True
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if args.own:
            for name in ("planted_dag", "causal_mtl", "confounded", "sparse_tasks"):
                rows.append(row(name, getattr(tg.datasets, name)(seed=0).train))
        if args.networks and not bundled_networks():
            print(f"skipped the networks: {BIF_INSTALL}")
        else:
            for net in args.networks:
                for feat in args.features:
                    for p in args.interventional:
                        for seed in args.seeds:
                            b = tg.datasets.bayesian_network(
                                net, n_samples=args.samples, seed=seed, features=feat,
                                interventional_fraction=p)
                            rows.append(row(f"{net} {feat} do={p:g} seed {seed}", b.train))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
