"""Model selection without validation data: ``fit(train)`` against ``fit(train, val=val)``.

On a planted 6-task DAG each learner is fitted three ways per seed: with the benchmark's
validation split (``val``), with no ``val`` and its default ``validation_fraction`` (the
structure learners hold out 10% of ``train`` for selection), and with no ``val`` and
``validation_fraction=None`` (all of ``train``, last epoch kept). Printed: IID test mean accuracy
of each, and the gap of the two ``val``-free fits to the ``val`` fit.

    python examples/selection_without_val.py            # 3 seeds, 30 epochs (docs/gcnet.md)
    python examples/selection_without_val.py --quick    # 1 seed, 3 epochs (smoke test)
"""

from __future__ import annotations

import argparse

import torch

import taskgraph as tg
from taskgraph.metrics import format_table


def score(learner: tg.learners.BaseLearner, bench: tg.datasets.Benchmark, **fit: object
          ) -> float:
    """IID test mean accuracy of ``learner`` fitted on the benchmark's training rows."""
    learner.fit(bench.train, **fit)
    return learner.evaluate(bench.test_iid)["mean"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--learners", nargs="+", default=["hard_sharing", "gcnet", "causal_graph"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--samples", type=int, default=2625, help="training rows")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.samples = [0], 3, 600
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        bench = tg.datasets.planted_dag(n_tasks=6, n_edges=6, n_samples=args.samples, seed=seed)
        for name in args.learners:
            kw = dict(epochs=args.epochs, seed=seed, verbose=False)

            with_val = score(tg.learners.create(name, bench.tasks, **kw), bench, val=bench.val)
            default = tg.learners.create(name, bench.tasks, **kw)
            frac = default.validation_fraction
            internal = score(default, bench)
            none = score(tg.learners.create(name, bench.tasks, validation_fraction=None, **kw),
                         bench)
            rows.append({"seed": seed, "learner": name, "val": with_val,
                         "no_val_default": internal, "default_fraction": frac,
                         "no_val_all_rows": none, "gap_default": internal - with_val,
                         "gap_all_rows": none - with_val})
            print(f"seed {seed} {name}: val {with_val:.3f}, no val (fraction {frac}) "
                  f"{internal:.3f}, no val (all rows) {none:.3f}", flush=True)
    print(f"\nplanted_dag, 6 tasks, {len(bench.train)} training rows, {args.epochs} epochs; "
          "IID mean accuracy")
    print(format_table(rows, floatfmt=".3f"))


if __name__ == "__main__":
    main()
