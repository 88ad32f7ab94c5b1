"""Command line: ``taskgraph demo | train | export | bench`` (also ``python -m taskgraph``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from taskgraph._io import json_safe as _json_safe

__all__ = ["main", "build_parser"]

DISCOVERY = ("pc", "ges", "lingam", "corr")
FORMATS = ("graphml", "gexf", "json", "dot", "csv")


def _device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", type=_device_arg,
                        help="torch device: auto (CUDA when available, else CPU), cpu, cuda, "
                             "cuda:1, ... (default: auto)")


def _device_arg(text: str) -> str:
    from taskgraph.devices import resolve_device
    from taskgraph.exceptions import ValidationError

    try:
        return str(resolve_device(text, "--device"))
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_at_least(low: int, what: str):
    """An argparse ``type`` for integers >= ``low``; the error names the expectation (argparse
    adds the option name) and exits with status 2."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_NONNEG = _int_at_least(0, "an integer >= 0")
_POSITIVE = _int_at_least(1, "an integer >= 1")


def _benchmark(name: str, seed: int, quick: bool) -> Any:
    import taskgraph as tg
    from taskgraph.exceptions import ValidationError

    if name == "planted_dag":
        return tg.datasets.planted_dag(n_tasks=10, n_edges=15,
                                       n_samples=1000 if quick else 5000, seed=seed)
    if name == "confounded":
        return tg.datasets.confounded(n_per_env=500 if quick else 1500, seed=seed)
    if name == "anticausal":
        return tg.datasets.anticausal(n_samples=1000 if quick else 4000, seed=seed)
    raise ValidationError(f"--benchmark: unknown benchmark {name!r}; "
                          "choose planted_dag, confounded or anticausal")


def _write_json(path: Path, payload: Any) -> None:
    from taskgraph._io import atomic_write

    with atomic_write(path) as fh:
        json.dump(_json_safe(payload), fh, indent=2, sort_keys=True)


#: the demo's learners: the composed learner first (its graph is the headline), then MT-CRL and
#: the plain multi-task baselines beside it (``--learners`` adds e.g. gcnet; the per-part
#: ablation is examples/causal_graph_ablation.py)
DEMO_LEARNERS = ("causal_graph", "mtcrl", "hard_sharing", "mmoe")


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the composed learner ``causal_graph`` beside ``mtcrl``, ``hard_sharing`` and
    ``mmoe`` (``--learners`` to choose) on a planted-truth benchmark (``causal_mtl``: planted
    task DAG, environment-dependent confounder, shifted joint label prior; or
    ``planted_dag``), run the classical discovery baselines, print one table and write
    ``runs/demo/``."""
    import taskgraph as tg
    from taskgraph.exceptions import ValidationError
    from taskgraph.metrics import format_table, structure
    from taskgraph.structure import discover

    t_start = time.perf_counter()
    registered = tg.learners.list()
    if args.learners:
        unknown = [n for n in args.learners if n not in registered]
        if unknown:
            raise ValidationError(f"--learners: unknown learner(s) {unknown}; registered: "
                                  f"{registered}")
        learners = list(dict.fromkeys(args.learners))
    else:
        learners = [n for n in DEMO_LEARNERS if n in registered]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.benchmark == "causal_mtl":
        bench = tg.datasets.causal_mtl(n_tasks=args.tasks, n_edges=args.edges,
                                       n_per_env=max(1, args.samples // 2), seed=args.seed)
    else:
        bench = tg.datasets.planted_dag(n_tasks=args.tasks, n_edges=args.edges,
                                        n_samples=args.samples, seed=args.seed)
    print(f"benchmark: {bench!r}", flush=True)
    rows: list[dict[str, Any]] = []
    graphs: dict[str, tg.TaskGraph] = {}
    for name in learners:
        t0 = time.perf_counter()
        learner = tg.learners.create(name, bench.tasks, epochs=args.epochs, seed=args.seed,
                                     verbose=args.verbose, device=args.device)
        learner.fit(bench.train, val=bench.val)
        row: dict[str, Any] = {"method": name,
                               "iid_mean": learner.evaluate(bench.test_iid)["mean"],
                               "ood_mean": learner.evaluate(bench.test_ood)["mean"]}
        if getattr(type(learner), "learns_structure", False):
            s = structure(learner.task_graph_, bench.true_graph)
            row.update(shd=s["shd"], f1=s["directed_f1"], skel_f1=s["skeleton_f1"])
            graphs[name] = learner.task_graph_
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if getattr(learner, "gmtl_", None) is not None:   # the same model, decoded per task
            rows.append({"method": f"{name} (per-task decoding)",
                         "iid_mean": learner.evaluate(bench.test_iid, "independent")["mean"],
                         "ood_mean": learner.evaluate(bench.test_ood, "independent")["mean"]})
        print(f"  trained {name} in {row['seconds']:.1f}s", flush=True)
    for method in DISCOVERY:
        t0 = time.perf_counter()
        kw = {"n_edges": bench.true_graph.n_edges} if method == "corr" else {}
        g = discover(bench.train, method=method, **kw)
        s = structure(g, bench.true_graph)
        graphs[method] = g
        rows.append({"method": method, "shd": s["shd"], "f1": s["directed_f1"],
                     "skel_f1": s["skeleton_f1"], "seconds": time.perf_counter() - t0})
    table = format_table(rows, ["method", "iid_mean", "ood_mean", "shd", "f1", "skel_f1",
                                "seconds"], floatfmt=".3f")
    print(f"\n{bench.name}: task metric = mean accuracy; structure vs the planted DAG")
    print(table)
    headline = next((n for n in learners if n in graphs), "lingam")
    graph = graphs[headline]
    for suffix in ("graphml", "json"):
        graph.save(out / f"graph.{suffix}")
    graph.plot(out / "graph.png")
    bench.true_graph.save(out / "true_graph.graphml")
    bench.true_graph.plot(out / "true_graph.png")
    graph.plot(out / "graph_vs_truth.png", truth=bench.true_graph)
    for name, g in graphs.items():
        g.save(out / "graphs" / f"{name}.graphml")
    _write_json(out / "metrics.json", {
        "benchmark": bench.name, "seed": args.seed, "headline_graph": headline,
        "rows": rows, "seconds": time.perf_counter() - t_start})
    from taskgraph._io import atomic_write

    with atomic_write(out / "table.txt") as fh:
        fh.write(table + "\n")
    print(f"\nwrote {out}/graph.graphml, graph.json, graph.png ({headline}), metrics.json "
          f"in {time.perf_counter() - t_start:.1f}s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train one learner on a synthetic benchmark, print its metrics and save it."""
    import taskgraph as tg
    from taskgraph.exceptions import ValidationError

    tg.learners.get(args.learner)  # an unknown name fails before any data is built
    if args.resume and not args.checkpoint:
        raise ValidationError("--resume: needs --checkpoint PATH (the file to continue from)")
    bench = _benchmark(args.benchmark, args.seed, args.quick)
    learner = tg.learners.create(args.learner, bench.tasks, epochs=args.epochs, seed=args.seed,
                                 verbose=args.verbose, device=args.device)
    learner.fit(bench.train, val=bench.val,
                checkpoint=args.checkpoint, resume=bool(args.resume) or None)
    result = {"iid": learner.evaluate(bench.test_iid), "ood": learner.evaluate(bench.test_ood)}
    print(json.dumps(_json_safe(result), indent=2))
    if args.save:
        learner.save(args.save)
        print(f"saved {args.save}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export the task graph of a saved learner (or convert a graph file)."""
    from taskgraph.exceptions import TaskGraphError
    from taskgraph.graph import TaskGraph
    from taskgraph.learners.base import load_learner

    src = Path(args.checkpoint)
    try:
        # DOT and CSV inputs go to TaskGraph.load too, which explains that they are export-only.
        if src.suffix.lower() in {".graphml", ".gexf", ".json", ".dot", ".gv", ".csv"}:
            graph = TaskGraph.load(src)
        else:
            graph = load_learner(src).task_graph_
        dest = Path(args.output) if args.output else src.with_suffix(f".{args.format}")
        if args.threshold is not None:
            graph = graph.threshold(args.threshold)
        graph.save(dest, format=args.format)
        if args.plot:
            graph.plot(dest.with_suffix(".png"))
    except TaskGraphError as exc:
        print(f"taskgraph export: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {dest}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Every registered learner × every available benchmark × seeds: JSON results under
    ``--out`` and the tables in docs/benchmarks.md (between the bench markers)."""
    from taskgraph.bench import run_bench
    from taskgraph.datasets.registry import get_benchmark, list_benchmarks
    from taskgraph.exceptions import TaskGraphError

    if args.list:
        import taskgraph as tg

        print("learners:", " ".join(tg.learners.list()))
        for name in list_benchmarks():
            why = get_benchmark(name).unavailable()
            print(f"{name:<20} {'available' if why is None else 'unavailable: ' + why}")
        return 0
    docs = None if args.no_docs else (args.docs or (None if args.quick else
                                                    "docs/benchmarks.md"))
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    try:
        run_bench(args.learners, args.benchmarks, seeds, quick=args.quick, epochs=args.epochs,
                  out=args.out, docs=docs, verbose=args.verbose, device=args.device)
    except TaskGraphError as exc:
        print(f"taskgraph bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_shift(args: argparse.Namespace) -> int:
    """GMTL under target shift on ``anticausal``: train (or load) a learner, decode with the
    training joint prior at every alpha, and write accuracy-vs-shift curves (PNG + JSON):
    GMTL's importance-sampling protocol on the IID test set, and explicit test sets drawn from
    the training prior shifted towards its reflection (``shifted_prior(kind="anti")``)."""
    import numpy as np

    import taskgraph as tg
    from taskgraph.exceptions import TaskGraphError
    from taskgraph.inference import (
        JointPrior,
        TemperatureScaler,
        alpha_sweep,
        shifted_test_accuracy,
    )

    t_start = time.perf_counter()
    try:
        alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    except ValueError:
        alphas = []
    if not alphas or not all(math.isfinite(a) and a >= 0 for a in alphas):
        print(f"taskgraph shift: error: --alphas: expected finite numbers >= 0 like 0,0.5,1, "
              f"got {args.alphas!r}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_test = (1000, 1000) if args.quick else (4000, 4000)
    bench = tg.datasets.anticausal(n_samples=n_train, seed=args.seed, n_test=n_test)
    try:
        if args.load:
            learner = tg.learners.load_learner(args.load, tasks=bench.tasks)
        else:
            epochs = args.epochs if args.epochs is not None else (60 if args.quick else 150)
            learner = tg.learners.create(args.learner, bench.tasks, epochs=epochs,
                                         batch_size=len(bench.train), lr=1e-2, patience=20,
                                         seed=args.seed, verbose=args.verbose)
            learner.fit(bench.train, val=bench.val)
        prior = JointPrior.fit(bench.train, kind=args.prior)
        iid_prior = prior if args.prior == "full" else JointPrior.fit(bench.train, kind="full")
        scaler = None if args.no_calibrate else TemperatureScaler().fit(learner, bench.val)
        sweep = alpha_sweep(learner, bench.test_iid, prior, alphas, task="y1",
                            calibration=scaler, iid_prior=iid_prior, n_reps=args.n_reps,
                            seed=args.seed)
        train_table = bench.info["train_prior"]
        explicit = []
        for i, strength in enumerate(np.linspace(0.0, 1.0, 6)):
            table = tg.datasets.shifted_prior(train_table, "anti", strength=float(strength))
            data = tg.datasets.anticausal_sample(table, n_test, seed=args.seed + 1000 + i)
            res = shifted_test_accuracy(learner, data, prior, alphas, calibration=scaler,
                                        test_prior=table)
            explicit.append({"strength": float(strength), "agreement": float(np.trace(table)),
                             "tau": res["tau"], "accuracy": res["accuracy"]})
    except TaskGraphError as exc:
        print(f"taskgraph shift: error: {exc}", file=sys.stderr)
        return 2

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.4))
    sweep.plot(ax=ax0, n_bins=8)
    cmap = plt.get_cmap("viridis")
    # the agreement prior has two distinct cell values, so its rank-based tau is a step
    # function of the shift strength; P(y1 = y2) of the test prior is the readable axis here
    agree = [row["agreement"] for row in explicit]
    for j, a in enumerate(alphas):
        ax1.plot(agree, [row["accuracy"]["y1"][j] for row in explicit], marker="o",
                 color=cmap(j / max(1, len(alphas) - 1)), label=f"α = {a:g}")
    ax1.set_xlabel(f"P(y1 = y2) in the test prior (training: "
                   f"{float(np.trace(train_table)):.2f}; left = more shift)")
    ax1.set_ylabel("accuracy of 'y1' (hard task)")
    ax1.set_title("explicit shifted test sets (training prior → its reflection)")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle(f"GMTL on anticausal: {learner.name}, prior={args.prior}, "
                 f"{'temperature-calibrated' if scaler is not None else 'uncalibrated'}")
    fig.tight_layout()
    from taskgraph._io import atomic_path

    with atomic_path(out / "shift.png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    payload = {
        "benchmark": "anticausal", "learner": learner.name, "seed": args.seed,
        "prior": args.prior, "alphas": alphas, "quick": bool(args.quick),
        "calibration": None if scaler is None else scaler.temperature_.tolist(),
        "importance_sampling": sweep.summary(n_bins=8),
        "explicit_shift": explicit,
        "seconds": time.perf_counter() - t_start,
    }
    _write_json(out / "shift.json", payload)
    print(f"GMTL target shift on anticausal ({learner.name}, prior={args.prior}, "
          f"temperatures={payload['calibration']})")
    print("accuracy of y1; explicit test sets by P(y1 = y2) of their prior")
    print("alpha   iid acc(y1)  mean IS acc(y1)  " + "  ".join(
        f"agree={row['agreement']:.2f}" for row in explicit))
    for j, a in enumerate(alphas):
        cells = "  ".join(f"{row['accuracy']['y1'][j]:10.3f}" for row in explicit)
        print(f"{a:5.2f}   {sweep.iid_accuracy[j]:11.3f}  {sweep.accuracy[j].mean():15.3f}  "
              f"{cells}")
    print(f"wrote {out}/shift.png, shift.json in {payload['seconds']:.1f}s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskgraph",
        description="Causal multi-task learning: learn, evaluate and export task graphs.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="causal_graph vs its parts, baselines and PC/GES/LiNGAM "
                                    "on a planted truth, one table",
                       description=cmd_demo.__doc__)
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    d.add_argument("--benchmark", choices=("causal_mtl", "planted_dag"), default="causal_mtl",
                   help="causal_mtl (planted DAG + environment-dependent confounder + shifted "
                        "label prior) or planted_dag (default: causal_mtl)")
    d.add_argument("--tasks", type=_int_at_least(2, "an integer >= 2"), default=6,
                   help="number of tasks (default: 6; causal_mtl needs >= 3)")
    d.add_argument("--edges", type=_NONNEG, default=6, help="planted edges (default: 6)")
    d.add_argument("--samples", type=_POSITIVE, default=5000,
                   help="training rows, split over the environments (default: 5000)")
    d.add_argument("--epochs", type=_NONNEG, default=30, help="training epochs (default: 30)")
    d.add_argument("--learners", nargs="+", metavar="NAME",
                   help="learners to train, the first with a learned graph is the headline "
                        f"(default: {' '.join(DEMO_LEARNERS)})")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--verbose", action="store_true", default=None, help="progress bars")
    _device_option(d)
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train one learner on a synthetic benchmark",
                       description=cmd_train.__doc__)
    t.add_argument("learner", help="registered learner name (see `taskgraph list`)")
    t.add_argument("--benchmark", default="planted_dag",
                   help="planted_dag | confounded | anticausal (default: planted_dag)")
    t.add_argument("--epochs", type=_NONNEG, default=30)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quick", action="store_true", help="smaller data")
    t.add_argument("--checkpoint", help="checkpoint file written every epoch")
    t.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    t.add_argument("--save", help="save the fitted learner to this file")
    t.add_argument("--verbose", action="store_true", default=None)
    _device_option(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export a saved learner's task graph",
                       description=cmd_export.__doc__)
    e.add_argument("checkpoint", help="a file written by learner.save() (or a .graphml, .gexf or "
                   ".json graph file; DOT and CSV are export-only)")
    e.add_argument("--format", choices=FORMATS, default="graphml")
    e.add_argument("--output", "-o", help="output path (default: CHECKPOINT with new suffix)")
    e.add_argument("--threshold", type=float, help="drop edges with |weight| <= this")
    e.add_argument("--plot", action="store_true", help="also write a PNG beside the output")
    e.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", help="benchmark suite: learners × benchmarks × seeds",
                       description=cmd_bench.__doc__)
    b.add_argument("--quick", action="store_true",
                   help="smoke run: small data, 2 epochs, seed 0, results in runs/bench/quick, "
                        "docs untouched")
    b.add_argument("--learners", nargs="+", metavar="NAME",
                   help="learners (default: every registered one; single_task and "
                        "hard_sharing are always added as references)")
    b.add_argument("--benchmarks", nargs="+", metavar="NAME",
                   help="benchmarks (default: every available one; see --list)")
    b.add_argument("--seeds", nargs="+", type=int, help="seeds (default: 0 1 2; --quick: 0)")
    b.add_argument("--epochs", type=_NONNEG, help="override every benchmark's epochs")
    _device_option(b)
    b.add_argument("--out", help="results folder (default: runs/bench or runs/bench/quick)")
    b.add_argument("--docs", help="Markdown file to update (default: docs/benchmarks.md, "
                                  "not with --quick)")
    b.add_argument("--no-docs", action="store_true", help="do not touch any docs")
    b.add_argument("--list", action="store_true", help="list learners and benchmarks, exit")
    b.add_argument("--verbose", action="store_true", default=None, help="progress bars")
    b.set_defaults(func=cmd_bench)

    sh = sub.add_parser("shift", help="GMTL alpha sweep under target shift on anticausal",
                        description=cmd_shift.__doc__)
    sh.add_argument("--learner", default="hard_sharing",
                    help="registered learner to train (default: hard_sharing)")
    sh.add_argument("--load", help="use a saved learner (trained on anticausal) instead")
    sh.add_argument("--prior", choices=("full", "graph", "independent"), default="full",
                    help="JointPrior kind used for decoding (default: full)")
    sh.add_argument("--alphas", default="0,0.25,0.5,0.75,1",
                    help="comma-separated alphas (default: 0,0.25,0.5,0.75,1)")
    sh.add_argument("--n-reps", type=_POSITIVE, default=1000,
                    help="importance-sampling repetitions (default: 1000)")
    sh.add_argument("--no-calibrate", action="store_true",
                    help="skip per-task temperature scaling on the validation split")
    sh.add_argument("--epochs", type=_NONNEG,
                    help="training epochs (default: 150, quick: 60)")
    sh.add_argument("--seed", type=int, default=0)
    sh.add_argument("--quick", action="store_true", help="smaller data")
    sh.add_argument("--out", default="runs/shift", help="output folder (default: runs/shift)")
    sh.add_argument("--verbose", action="store_true", default=None)
    sh.set_defaults(func=cmd_shift)

    from taskgraph.cli_tables import add_parsers

    add_parsers(sub, _device_option)

    ls = sub.add_parser("list", help="list registered learners")
    ls.set_defaults(func=lambda a: print("\n".join(__import__("taskgraph").learners.list())) or 0)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; a bad argument or input prints ``taskgraph COMMAND: error: ...``
    (the message names the argument) and returns 2, as argparse does for its own errors."""
    from taskgraph.exceptions import TaskGraphError

    args = build_parser().parse_args(argv)
    if hasattr(args, "argv"):          # the exact command, for the reports
        args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args) or 0)
    except TaskGraphError as exc:
        print(f"taskgraph {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
