"""GCNet on many tasks with a sparse candidate graph: step time grows with edges, not T².

For each task count T, builds ``planted_dag(T, n_edges=2T)``, gives ``gcnet`` the heuristic
candidate graph (each task's ``k`` most label-correlated partners, both directions, so
E ≈ 2kT edges), times training steps, and trains a short run at the largest T to show that it
learns. Above ``dense_limit`` (64) tasks every structure part runs on the candidate edges only:
sparse message passing, a SEM with one weight per candidate edge, the Hutchinson acyclicity
estimate, and the EBM's sparse pairwise energy.

Run:  python examples/gcnet_scale.py            (T = 125, 250, 500, 1000; about 2-3 min)
      python examples/gcnet_scale.py --quick    (T = 100, 200)
"""

from __future__ import annotations

import argparse
import time

import torch

import taskgraph as tg
from taskgraph.bench import step_times
from taskgraph.metrics import format_table, structure


def step_ms(learner: tg.learners.BaseLearner, data: tg.MultiTaskData, n_steps: int) -> float:
    """Median wall time of one optimisation step (forward, backward, Adam) in ms, on the
    learner's device (CUDA synchronised)."""
    return 1e3 * step_times({"gcnet": learner}, data, n_steps, batch_size=128, warmup=2)["gcnet"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, nargs="+", default=[125, 250, 500, 1000])
    p.add_argument("--k", type=int, default=5, help="candidate partners per task")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--epochs", type=int, default=3, help="training epochs at the largest T")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="auto",
                   help="torch device: auto (CUDA when available), cpu, cuda (default: auto)")
    args = p.parse_args()
    if args.quick:
        args.tasks, args.samples, args.steps, args.epochs = [100, 200], 600, 3, 1
    torch.manual_seed(0)
    rows = []
    for t in args.tasks:
        bench = tg.datasets.planted_dag(n_tasks=t, n_edges=2 * t, n_samples=args.samples,
                                        seed=0, n_test=200)
        learner = tg.learners.create("gcnet", bench.tasks, candidates="heuristic",
                                     k_candidates=args.k, verbose=False, device=args.device)
        learner.fit(bench.train, epochs=0)          # build the model only
        e_feat = int(learner.model_.edge_index.shape[1])
        ms = step_ms(learner, bench.train, args.steps)
        rows.append({"tasks": t, "edges": e_feat, "dense_pairs": t * (t - 1),
                     "ms_per_step": ms, "us_per_edge": 1e3 * ms / e_feat})
        print(f"T={t}: E={e_feat} candidate edges, {ms:.1f} ms/step", flush=True)
    print()
    print(format_table(rows, floatfmt=".2f"))
    first, last = rows[0], rows[-1]
    t_ratio = last["tasks"] / first["tasks"]
    print(f"\nT x{t_ratio:.0f}: edges x{last['edges'] / first['edges']:.1f}, step time "
          f"x{last['ms_per_step'] / first['ms_per_step']:.1f} (a T^2 method: x{t_ratio ** 2:.0f})")

    t = args.tasks[-1]
    bench = tg.datasets.planted_dag(n_tasks=t, n_edges=2 * t, n_samples=args.samples, seed=0,
                                    n_test=500)
    t0 = time.perf_counter()
    learner = tg.learners.create("gcnet", bench.tasks, candidates="heuristic",
                                 k_candidates=args.k, epochs=args.epochs, verbose=False,
                                 device=args.device)
    learner.fit(bench.train)
    s = structure(learner.task_graph_, bench.true_graph)
    base = tg.learners.create("hard_sharing", bench.tasks, epochs=args.epochs,
                              verbose=False, device=args.device).fit(bench.train)
    losses = [round(h["task_loss"], 1) for h in learner.history_]
    print(f"\ntrained gcnet on T={t} for {args.epochs} epochs in "
          f"{time.perf_counter() - t0:.0f}s: task loss per epoch (summed over tasks) {losses}")
    print(f"test_iid mean accuracy: gcnet {learner.evaluate(bench.test_iid)['mean']:.3f}, "
          f"hard_sharing {base.evaluate(bench.test_iid)['mean']:.3f}; learned graph: "
          f"{learner.task_graph_.n_edges} edges, directed F1 {s['directed_f1']:.3f}, skeleton F1 "
          f"{s['skeleton_f1']:.3f}")


if __name__ == "__main__":
    main()
