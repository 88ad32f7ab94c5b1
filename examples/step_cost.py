"""Training-step cost of each learner as a ratio to ``hard_sharing`` with the same backbone.

Steps of all learners are interleaved (hard_sharing, A, B, ..., hard_sharing, A, B, ...) so that
machine load hits them alike, and the step time of each (the median over blocks of whole
``structure_every`` cycles of the mean step time, :func:`taskgraph.bench.step_times`) is divided
by hard_sharing's. A step is forward, backward and an Adam update on one mini-batch of
``planted_dag`` (10 tasks) or ``causal_mtl`` (6 tasks).

Run:  python examples/step_cost.py                      (default MLP backbone, width 64)
      python examples/step_cost.py --hidden 512 --layers 3
      python examples/step_cost.py --learners gcnet causal_graph --structure-every 4
      python examples/step_cost.py --quick
"""

from __future__ import annotations

import argparse

import torch

import taskgraph as tg
from encoders import MLPBackbone
from taskgraph.bench import step_times
from taskgraph.metrics import format_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--learners", nargs="+", default=["gcnet", "sgnn", "sgnn_ebm", "mtcrl",
                                                      "mmoe"])
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bench", default="planted_dag", choices=["planted_dag", "causal_mtl"],
                   help="planted_dag (10 tasks) or causal_mtl (6 tasks, 2 environments)")
    p.add_argument("--structure-every", type=int, default=1,
                   help="structure_every of the learners that learn a graph (gcnet, causal_graph)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="auto",
                   help="torch device: auto (CUDA when available), cpu, cuda (default: auto)")
    args = p.parse_args()
    if args.quick:
        args.steps = 6
    torch.set_num_threads(args.threads)
    if args.bench == "planted_dag":
        bench = tg.datasets.planted_dag(n_tasks=10, n_edges=15, n_samples=2000, seed=0,
                                        n_test=100)
    else:
        bench = tg.datasets.causal_mtl(n_per_env=1000, seed=0, n_test=100)
    names = ["hard_sharing"] + [n for n in args.learners if n != "hard_sharing"]
    learners = {}
    for name in names:
        enc = MLPBackbone(bench.n_features, hidden=args.hidden, n_layers=args.layers)
        extra = ({"structure_every": args.structure_every}
                 if name in ("gcnet", "causal_graph") else {})
        learners[name] = tg.learners.create(name, bench.tasks, encoder=enc, verbose=False,
                                            device=args.device, **extra)
    times = step_times(learners, bench.train, args.steps, batch_size=args.batch)
    base = times["hard_sharing"]
    rows = [{"learner": n, "median_ms": 1e3 * times[n], "ratio_vs_hard_sharing": times[n] / base}
            for n in names]
    print(f"device {next(iter(learners.values())).device_}, "
          f"backbone MLP {args.layers} x {args.hidden}, batch {args.batch}, "
          f"{args.steps} interleaved steps, {args.threads} thread(s)")
    print(format_table(rows, floatfmt=".2f"))


if __name__ == "__main__":
    main()
