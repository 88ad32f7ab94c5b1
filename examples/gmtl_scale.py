"""GMTL decoding at scale: 50 binary tasks x 10,000 examples with a graph-factorised prior.

The paper's prior is one table over every label combination: 2**50 cells here, which cannot be
built, let alone enumerated per example. ``JointPrior.fit(..., kind="graph")`` factorises the
prior over a task graph instead, and GMTL decodes it by message passing:

- on the Chow-Liu tree of the labels: exact max-product on a tree;
- on the planted task DAG's skeleton (cycles): exact max-product variable elimination (its
  elimination width is small), or damped loopy max-product + ICM (approximate) when forced.

The script times each decode (best of ``--repeats`` runs, wall clock, torch limited to
``--threads`` threads) and prints the per-task accuracy at alpha = 0 and 1. Run:
``python examples/gmtl_scale.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import taskgraph as tg
from taskgraph.exceptions import ValidationError
from taskgraph.inference import GMTL, ConvergenceWarning, JointPrior


def timed(decoder: GMTL, log_probs: torch.Tensor, repeats: int) -> tuple[torch.Tensor, float]:
    best = float("inf")
    labels = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        labels = decoder.decode(log_probs)
        best = min(best, time.perf_counter() - t0)
    return labels, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer examples (CI-sized)")
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--edges", type=int, default=75)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_test = 1000 if args.quick else args.examples

    bench = tg.datasets.planted_dag(n_tasks=args.tasks, n_edges=args.edges,
                                    n_samples=2000 if args.quick else 5000, n_test=n_test,
                                    seed=args.seed)
    learner = tg.learners.create("hard_sharing", bench.tasks, epochs=3 if args.quick else 10,
                                 batch_size=256, lr=3e-3, seed=args.seed, verbose=False)
    learner.fit(bench.train, val=bench.val)
    log_probs = learner.predict_log_proba(bench.test_iid.x)
    print(f"{args.tasks} binary tasks, log-probabilities {tuple(log_probs.shape)}, "
          f"torch threads = {torch.get_num_threads()}")

    try:
        JointPrior.fit(bench.train, kind="full")
    except ValidationError as exc:
        print(f"kind='full' refuses: {str(exc)[:110]}...")

    planted = JointPrior.fit(bench.train, graph=bench.true_graph)
    chow_liu = JointPrior.fit(bench.train, kind="graph")
    runs = [
        ("alpha = 0", chow_liu, "independent"),
        ("Chow-Liu tree", chow_liu, "auto"),
        ("planted skeleton", planted, "auto"),
        ("planted skeleton", planted, "max_product"),
    ]
    y = bench.test_iid.y
    base = learner.predict(bench.test_iid.x)
    print(f"independent argmax: mean accuracy {(base == y).float().mean():.4f}")
    print(f"{'prior graph':<18}{'edges':>6}{'method':>13}{'seconds':>9}  {'exact':<6}"
          f"{'how':<34}{'mean acc':>9}")
    for name, prior, method in runs:
        alpha = 0.0 if method == "independent" else 1.0
        decoder = GMTL(prior, alpha=alpha, method="auto" if alpha == 0 else method)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            labels, seconds = timed(decoder, log_probs, args.repeats)
        info = decoder.info_
        if info["loopy"]:
            how = (f"loopy, {info['iterations']} sweeps, "
                   f"{info['converged_fraction']:.1%} converged")
        elif alpha == 0:
            how = "per-task argmax"
        elif info["elimination"]:
            how = f"elimination, largest factor {info['max_factor']}"
        else:
            how = "tree max-product"
        acc = float((labels.float() == y).float().mean())
        edges = "-" if alpha == 0 else str(len(prior.edges))
        print(f"{name:<18}{edges:>6}{method:>13}{seconds:>9.3f}  "
              f"{str(info['exact']):<6}{how:<34}{acc:>9.4f}")
        if caught:
            print(f"  warning: {str(caught[0].message)[:100]}...")


if __name__ == "__main__":
    main()
