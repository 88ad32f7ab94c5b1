"""GCNet's structure quality against its training-step cost, as ``structure_every`` grows.

The structure-level objective (trivial view, SEM likelihood, acyclicity, ICE) is hundreds of small
operations whose cost hardly depends on the batch size. ``structure_every=k`` runs it on every
k-th batch (the SEM likelihood on the rows of all k batches), which divides its per-step cost by
about k but gives the SEM k times fewer optimisation steps; a larger ``sem_lr`` partly makes up
for that. This script measures both sides:

- **quality:** ``gcnet`` on ``planted_dag`` (10 tasks, 15 edges, 5,000 samples, 30 epochs, the
  setting of the structure table in docs/benchmarks.md) for every ``(k, sem_lr)``: directed F1,
  SHD and mean OOD ROC-AUC, mean ± std over seeds;
- **cost:** the training-step time of ``gcnet`` at every k as a ratio to ``hard_sharing`` with the
  same backbone, steps interleaved in one run (:func:`taskgraph.bench.step_times`), for a small
  (MLP 2 x 64, batch 128) and a larger backbone (MLP 3 x 512, batch 256).

It prints one table and draws directed F1 against the step-cost ratio
(``runs/structure_cost_tradeoff/tradeoff.png``, ``--out`` to change).

Run:  python examples/structure_cost_tradeoff.py              (about 10 min, single-threaded)
      python examples/structure_cost_tradeoff.py --ks 1 4 --sem-lrs 0.03 0.1 --seeds 0 1 2
      python examples/structure_cost_tradeoff.py --quick       (smoke test, seconds)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import taskgraph as tg
from encoders import MLPBackbone
from taskgraph.bench import step_times
from taskgraph.metrics import format_table, structure

BACKBONES = {"mlp64": (64, 2, 128), "mlp512": (512, 3, 256)}


def quality(args: argparse.Namespace, k: int, sem_lr: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"directed_f1": [], "shd": [], "ood_auroc": [], "fit_s": []}
    for seed in args.seeds:
        bench = tg.datasets.planted_dag(n_tasks=args.tasks, n_edges=args.edges,
                                        n_samples=args.samples, seed=seed, n_test=args.test)
        t0 = time.perf_counter()
        learner = tg.learners.create("gcnet", bench.tasks, structure_every=k, sem_lr=sem_lr,
                                     epochs=args.epochs, seed=seed, verbose=False)
        learner.fit(bench.train, val=bench.val)
        out["fit_s"].append(time.perf_counter() - t0)
        s = structure(learner.task_graph_, bench.true_graph)
        out["directed_f1"].append(float(s["directed_f1"]))
        out["shd"].append(float(s["shd"]))
        m = learner.evaluate(bench.test_ood)
        out["ood_auroc"].append(float(m.get("mean_auroc", m["mean"])))
        print(f"  k={k} sem_lr={sem_lr} seed {seed}: directed F1 {s['directed_f1']:.3f}, "
              f"SHD {s['shd']:.0f}, OOD AUROC {out['ood_auroc'][-1]:.3f}", flush=True)
    return out


def costs(args: argparse.Namespace) -> dict[str, dict[int, float]]:
    """``{backbone: {k: step time / hard_sharing's}}``, one interleaved run per backbone."""
    bench = tg.datasets.planted_dag(n_tasks=args.tasks, n_edges=args.edges,
                                    n_samples=max(args.samples, 2000), seed=0, n_test=100)
    res: dict[str, dict[int, float]] = {}
    for name, (hidden, layers, batch) in BACKBONES.items():
        def enc(hidden: int = hidden, layers: int = layers) -> MLPBackbone:
            return MLPBackbone(bench.n_features, hidden=hidden, n_layers=layers)

        learners = {"hard_sharing": tg.learners.create("hard_sharing", bench.tasks,
                                                       encoder=enc(), verbose=False)}
        for k in args.ks:
            learners[f"k{k}"] = tg.learners.create("gcnet", bench.tasks, encoder=enc(),
                                                   structure_every=k, verbose=False)
        times = step_times(learners, bench.train, args.steps, batch_size=batch)
        res[name] = {k: times[f"k{k}"] / times["hard_sharing"] for k in args.ks}
    return res


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from taskgraph._io import atomic_path

    fig, axes = plt.subplots(1, len(BACKBONES), figsize=(5 * len(BACKBONES), 4), sharey=True)
    for ax, name in zip(axes, BACKBONES):
        for lr in sorted({r["sem_lr"] for r in rows}):
            pts = sorted((r[f"x_{name}"], r["f1_mean"], r["f1_std"], r["k"]) for r in rows
                         if r["sem_lr"] == lr)
            xs, ys, es, ks = zip(*pts)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=f"sem_lr={lr:g}")
            for x, y, k in zip(xs, ys, ks):
                ax.annotate(f"k={k}", (x, y), textcoords="offset points", xytext=(4, 4),
                            fontsize=8)
        hidden, layers, batch = BACKBONES[name]
        ax.set_title(f"MLP {layers} x {hidden}, batch {batch}")
        ax.set_xlabel("gcnet step time / hard_sharing step time")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("directed F1 (planted_dag)")
    axes[0].legend()
    fig.suptitle("gcnet: structure quality vs step cost (structure_every = k)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--sem-lrs", type=float, nargs="+", default=[0.03, 0.1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--edges", type=int, default=15)
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--steps", type=int, default=40, help="timed steps per backbone")
    p.add_argument("--out", default="runs/structure_cost_tradeoff")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 5 tasks, 500 samples, 2 epochs, one seed, k in {1, 2}")
    args = p.parse_args()
    if args.quick:
        args.ks, args.sem_lrs, args.seeds = [1, 2], [0.03], [0]
        args.tasks, args.edges, args.samples, args.test, args.epochs, args.steps = (
            5, 4, 500, 200, 2, 4)
    if any(k < 1 for k in args.ks):
        sys.exit("--ks: every k must be a positive integer")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    print("step cost (interleaved with hard_sharing, same backbone) ...", flush=True)
    ratio = costs(args)
    rows = []
    for k in args.ks:
        for lr in args.sem_lrs:
            q = quality(args, k, lr)

            def ms(v: list[float]) -> tuple[float, float]:
                return statistics.fmean(v), statistics.pstdev(v)

            f1, shd, ood, fit = (ms(q[n]) for n in ("directed_f1", "shd", "ood_auroc", "fit_s"))
            rows.append({"k": k, "sem_lr": lr, "f1_mean": f1[0], "f1_std": f1[1],
                         **{f"x_{b}": ratio[b][k] for b in BACKBONES},
                         "directed F1": f"{f1[0]:.3f} ± {f1[1]:.3f}",
                         "SHD": f"{shd[0]:.1f} ± {shd[1]:.1f}",
                         "OOD AUROC": f"{ood[0]:.3f} ± {ood[1]:.3f}",
                         "fit s": f"{fit[0]:.1f}"})
    table = [{"structure_every": r["k"], "sem_lr": r["sem_lr"],
              **{c: r[c] for c in ("directed F1", "SHD", "OOD AUROC", "fit s")},
              **{f"step x HS ({b})": f"{r[f'x_{b}']:.2f}" for b in BACKBONES}} for r in rows]
    print(f"\ngcnet on planted_dag({args.tasks} tasks, {args.edges} edges, {args.samples} "
          f"samples), {args.epochs} epochs, seeds {args.seeds}; mean ± std")
    print(format_table(table))
    path = Path(args.out) / "tradeoff.png"
    plot(rows, path)
    print(f"\nplot: {path}  ({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
