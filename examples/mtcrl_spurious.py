"""MT-CRL against a spurious label-label correlation (the `confounded` benchmark).

Task ``y1`` has a weak causal feature ``z1``; task ``y2`` copies ``y1`` with probability
``rho_e`` (0.9 and 0.75 in the two training environments, 0.1 out of distribution) and has a
strong feature ``z2``. A shared model learns to predict ``y1`` from ``z2`` (the shortcut) and
fails out of distribution; MT-CRL's invariance penalty on the task → module routing keeps
``y1`` on ``z1``. The script prints, per seed and as mean ± std:

- task-1 accuracy out of distribution (OOD) and in distribution (IID) for ``hard_sharing``,
  ``mtcrl`` and ``mtcrl`` without the invariance term (the ablation);
- routing recovery: with one module per input block, ``y1``'s gates on the causal and on the
  spurious module;
- with ``--timing``, the time of one training step of ``mtcrl`` over ``hard_sharing`` with the
  same backbone and batch, measured interleaved in one run.

Run::

    .venv/bin/python examples/mtcrl_spurious.py --seeds 0 1 2 --timing   # docs/benchmarks.md
    .venv/bin/python examples/mtcrl_spurious.py --quick                  # CI-size smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import taskgraph as tg
from encoders import InputFeatures, MLPBackbone, ModularEncoder
from taskgraph.learners import create

# the M4 prototype's protocol: full-batch Adam, lr 3e-3, 400 steps, 32-wide MLP (4 modules x 8)
HIDDEN, LR = 32, 3e-3


def fit(name: str, bench: tg.datasets.Benchmark, seed: int, epochs: int,
        **kw) -> tg.learners.BaseLearner:
    params = dict(hidden=HIDDEN, batch_size=len(bench.train), epochs=epochs, lr=LR, seed=seed,
                  verbose=False)
    params.update(kw)
    # no validation selection: the IID validation loss prefers the shortcut (see docs/mtcrl.md)
    return create(name, bench.tasks, **params).fit(bench.train)


def task1(learner: tg.learners.BaseLearner, bench: tg.datasets.Benchmark) -> dict[str, float]:
    return {"ood": learner.evaluate(bench.test_ood)["y1/accuracy"],
            "iid": learner.evaluate(bench.test_iid)["y1/accuracy"],
            "ood_y2": learner.evaluate(bench.test_ood)["y2/accuracy"]}


def run_seed(seed: int, n_per_env: int, epochs: int) -> dict[str, dict[str, float]]:
    bench = tg.datasets.confounded(n_per_env=n_per_env, seed=seed)
    rows = {
        "hard_sharing": task1(fit("hard_sharing", bench, seed, epochs), bench),
        "mtcrl": task1(fit("mtcrl", bench, seed, epochs), bench),
        "mtcrl, no invariance": task1(
            fit("mtcrl", bench, seed, epochs, invariance=0.0, warmup_invariance=0.0), bench),
    }
    blocks = bench.info["blocks"]  # [causal z1 block, spurious z2 block]
    enc = ModularEncoder(InputFeatures(bench.n_features), mode="blocks", blocks=blocks,
                         module_dim=8, module_hidden=16)
    routed = fit("mtcrl", bench, seed, epochs, encoder=enc)
    gates = routed.routing_[bench.tasks.index("y1")]
    rows["routing"] = {"causal": float(gates[0]), "spurious": float(gates[1]),
                       **task1(routed, bench)}
    return rows


ABLATIONS: dict[str, dict] = {
    "default (IRMv1 on gates + intercept, lambda 5, env given x labels)": {},
    "no invariance term": dict(invariance=0.0, warmup_invariance=0.0),
    "IRMv1 on gates only (no intercept dummy), lambda 5": dict(invariance_intercept=False),
    "IRMv1 on gates only, lambda 1e3 (M4 prototype setting)": dict(
        invariance_intercept=False, invariance=1e3),
    "lambda 2": dict(invariance=2.0),
    "lambda 10": dict(invariance=10.0),
    "lambda 100": dict(invariance=100.0),
    "gradient-variance penalty": dict(invariance_kind="grad_var"),
    "V-REx penalty": dict(invariance_kind="vrex"),
    "environments: given env only": dict(environments="given"),
    "environments: label strata only": dict(environments="labels"),
    "label strata without re-balancing": dict(rebalance=False),
    "penalty through heads only (encoder detached)": dict(penalty_through_encoder=False),
    "no renormalisation by lambda": dict(renormalize=False),
    "no warm-up": dict(warmup_steps=0),
    "modules: separate sub-networks": dict(module_mode="separate"),
    "read-out: gated sum": dict(readout="sum"),
    "gates: hard concrete": dict(gate="hard_concrete"),
    "no decorrelation": dict(decorrelation=0.0),
    "decorrelation x 10": dict(decorrelation=10.0),
    "conditional independence (cind), lambda 200": dict(invariance_kind="cind",
                                                         invariance=200.0),
    "conditional independence (cind), lambda 500": dict(invariance_kind="cind",
                                                         invariance=500.0),
    "conditional independence (cind), lambda 2000": dict(invariance_kind="cind",
                                                          invariance=2000.0),
    "conditional independence (cind), lambda 500, label strata": dict(
        invariance_kind="cind", invariance=500.0, environments="labels"),
    "conditional independence on modules (cind_state), lambda 500": dict(
        invariance_kind="cind_state", invariance=500.0),
    "conditional independence of the loss (cind_loss, conditional REx), lambda 50": dict(
        invariance_kind="cind_loss", invariance=50.0),
    "conditional independence of the loss (cind_loss, conditional REx), lambda 500": dict(
        invariance_kind="cind_loss", invariance=500.0),
    # HSIC is left out: at the full batch of 3,000 rows it builds K Gram matrices of 3,000²
}


def run_ablations(seeds: list[int], n_per_env: int, epochs: int,
                  only: str | None = None) -> None:
    print(f"\nablations: mtcrl variants, task y1 accuracy, mean over seeds {seeds}\n")
    print("| variant | OOD | IID |")
    print("|---|---|---|")
    benches = {s: tg.datasets.confounded(n_per_env=n_per_env, seed=s) for s in seeds}
    for label, kw in ABLATIONS.items():
        if only is not None and only not in label:
            continue
        res = [task1(fit("mtcrl", benches[s], s, epochs, **kw), benches[s]) for s in seeds]
        print(f"| {label} | {fmt([r['ood'] for r in res])} | {fmt([r['iid'] for r in res])} |",
              flush=True)


def step_time_ratio(backbone: str, reps: int) -> tuple[float, float, float]:
    """Median seconds per training step of hard_sharing and mtcrl, same backbone and batch,
    measured interleaved; returns (hard_sharing, mtcrl, ratio)."""
    if backbone == "benchmark":
        bench = tg.datasets.confounded(seed=0)
        data, enc, batch = bench.train, MLPBackbone(bench.n_features, HIDDEN), len(bench.train)
    else:  # a wider MLP on 784 inputs (MNIST-sized), batch 256
        g = np.random.default_rng(0)
        x = g.normal(size=(2048, 784)).astype(np.float32)
        y = (g.random((2048, 2)) < 0.5).astype(np.float32)
        data = tg.MultiTaskData(x, y, ["y1", "y2"], env=g.integers(0, 2, 2048))
        enc, batch = MLPBackbone(784, 512), 256
    steps = {}
    for name, kw in (("hard_sharing", {}), ("mtcrl", {"warmup_steps": 0})):
        learner = create(name, data.tasks, encoder=enc, batch_size=batch, verbose=False, **kw)
        learner._setup(data.feature_shape, data)
        opt = torch.optim.Adam(learner.model_.parameters(), lr=1e-3)
        batches = list(data.loader(batch, shuffle=True, seed=0))
        learner.model_.train()

        def step(b, learner=learner, opt=opt):
            loss, _ = learner._loss(b, 0)
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[name] = (step, batches)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for rep in range(reps + 3):
        for name, (step, batches) in steps.items():
            t0 = time.perf_counter()
            step(batches[rep % len(batches)])
            if rep >= 3:  # warm-up steps excluded
                times[name].append(time.perf_counter() - t0)
    hs, mt = statistics.median(times["hard_sharing"]), statistics.median(times["mtcrl"])
    return hs, mt, mt / hs


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="small CI-size run (one seed)")
    parser.add_argument("--timing", action="store_true", help="also measure step-time ratios")
    parser.add_argument("--ablations", action="store_true",
                        help="only run the table of mtcrl variants (docs/mtcrl.md)")
    parser.add_argument("--only", metavar="TEXT",
                        help="with --ablations: only the variants whose label contains TEXT")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest for these tiny models)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_per_env, epochs, seeds = 1500, 400, args.seeds
    if args.quick:
        n_per_env, epochs, seeds = 500, 150, seeds[:1]

    t0 = time.perf_counter()
    if args.ablations:
        run_ablations(seeds, n_per_env, epochs, args.only)
        print(f"\ntotal {time.perf_counter() - t0:.0f} s")
        return
    results = {seed: run_seed(seed, n_per_env, epochs) for seed in seeds}
    print(f"confounded(n_per_env={n_per_env}), seeds {seeds}, full-batch Adam lr {LR}, "
          f"{epochs} steps, hidden {HIDDEN}; task y1 accuracy\n")
    print("| model | OOD (rho=0.1) | IID (rho=0.825) | y2 OOD | per seed OOD / IID |")
    print("|---|---|---|---|---|")
    for model in ("hard_sharing", "mtcrl", "mtcrl, no invariance"):
        ood = [results[s][model]["ood"] for s in seeds]
        iid = [results[s][model]["iid"] for s in seeds]
        y2 = [results[s][model]["ood_y2"] for s in seeds]
        per = ", ".join(f"{o:.3f} / {i:.3f}" for o, i in zip(ood, iid))
        print(f"| {model} | {fmt(ood)} | {fmt(iid)} | {fmt(y2)} | {per} |")
    gain = [results[s]["mtcrl"]["ood"] - results[s]["hard_sharing"]["ood"] for s in seeds]
    drop = [results[s]["hard_sharing"]["iid"] - results[s]["mtcrl"]["iid"] for s in seeds]
    print(f"\nmtcrl - hard_sharing: OOD gain {fmt(gain)} (min {min(gain):.3f}), "
          f"IID drop {fmt(drop)} (max {max(drop):.3f})")
    print("\nrouting recovery (one module per input block), y1 gates:")
    for s in seeds:
        r = results[s]["routing"]
        print(f"  seed {s}: causal module {r['causal']:.3f}, spurious module "
              f"{r['spurious']:.3f}  (OOD {r['ood']:.3f}, IID {r['iid']:.3f})")
    if args.timing:
        print("\nstep time, same backbone and batch, interleaved in this run (median):")
        for backbone, reps in (("benchmark", 60), ("mlp512", 30)):
            hs, mt, ratio = step_time_ratio(backbone, reps)
            label = ("benchmark MLP 10-32-32, batch 3000" if backbone == "benchmark"
                     else "MLP 784-512-512, batch 256")
            print(f"  {label}: hard_sharing {hs * 1e3:.2f} ms, mtcrl {mt * 1e3:.2f} ms, "
                  f"ratio {ratio:.2f}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
