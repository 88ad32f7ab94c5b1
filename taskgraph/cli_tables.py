"""The command-line path for a user's own table: ``taskgraph fit``, ``predict`` and
``discover`` (registered by :func:`taskgraph.cli.build_parser`).

    taskgraph fit data.csv --tasks a b c --out runs/mine            # learner, graph, report
    taskgraph predict runs/mine/model.pt new.csv --out preds.csv     # labels for a new table
    taskgraph discover data.csv --tasks a b c --method pc --out runs/pc   # structure only

``fit`` and ``discover`` write their folder atomically (complete or not at all); ``predict``
writes its CSV atomically.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Any

__all__ = ["add_parsers", "cmd_fit", "cmd_predict", "cmd_discover"]

DISCOVERY_METHODS = ("pc", "ges", "lingam", "gcnet")


def _command(argv_tail: list[str] | None) -> str:
    return shlex.join(["taskgraph", *(sys.argv[1:] if argv_tail is None else argv_tail)])


def _kinds(pairs: list[str] | None) -> dict[str, str]:
    from taskgraph.exceptions import ValidationError

    out = {}
    for item in pairs or []:
        name, sep, kind = item.partition("=")
        if not sep:
            raise ValidationError(f"--kinds: expected COLUMN=KIND, got {item!r}")
        out[name] = kind
    return out


def _load_table_data(args: argparse.Namespace) -> Any:
    from taskgraph.data import MultiTaskData
    from taskgraph.tables import read_table

    frame = read_table(args.data)
    return MultiTaskData.from_frame(frame, tasks=args.tasks, features=args.features,
                                    env=args.env, kinds=_kinds(args.kinds))


def _split(data: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    from taskgraph.exceptions import ValidationError

    if not 0 < fraction < 1:
        raise ValidationError(f"--val-fraction: expected a number in (0, 1), got {fraction!r}")
    return data.split([1.0 - fraction, fraction], seed=seed,
                      stratify_env=data.env is not None)


def _fit_learner(args: argparse.Namespace, name: str, data: Any) -> tuple[Any, Any]:
    import taskgraph as tg

    train, val = _split(data, args.val_fraction, args.seed)
    learner = tg.learners.create(name, data.tasks, epochs=args.epochs, seed=args.seed,
                                 device=args.device, verbose=args.verbose)
    learner.fit(train, val=val)
    return learner, val


def cmd_fit(args: argparse.Namespace) -> int:
    """Train a learner on a table and write the learner, its task graph in every format, the
    picture, validation metrics per task and ``report.html``."""
    from taskgraph.report import check_out_dir, write_results

    t0 = time.perf_counter()
    check_out_dir(args.out)
    data = _load_table_data(args)
    learner, val = _fit_learner(args, args.learner, data)
    metrics = learner.evaluate(val)
    kinds = {t.name: t.kind for t in data.tasks}
    summary = {"data": args.data, "rows": len(data), "validation rows": len(val),
               "features (encoded)": data.x.shape[1], "learner": args.learner,
               "device": str(learner.device_), "epochs run": len(learner.history_),
               "best epoch": learner.best_epoch_, "mean validation score": metrics["mean"],
               "seconds": round(time.perf_counter() - t0, 1)}
    if any(t.kind == "regression" for t in data.tasks):
        summary["regression metrics"] = ("on labels standardised by the training column's mean "
                                         "and standard deviation")
    out = write_results(args.out, graph=learner.task_graph_, command=_command(args.argv),
                        title=f"taskgraph fit: {args.learner} on {args.data}", summary=summary,
                        metrics=metrics, kinds=kinds, learner=learner)
    print(f"wrote {out}/ (model.pt, graph.*, metrics.json, report.html) in "
          f"{time.perf_counter() - t0:.1f}s; mean validation score {metrics['mean']:.4f}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Apply a learner saved by ``taskgraph fit`` to a new table; writes one column per task
    (class names for classification tasks), and the class probabilities with ``--proba``."""
    from taskgraph._io import atomic_write
    from taskgraph.exceptions import ValidationError
    from taskgraph.learners import load_learner
    from taskgraph.tables import _pandas, read_table

    pd = _pandas()
    learner = load_learner(args.model, **({} if args.device is None else
                                          {"device": args.device}))
    schema = getattr(learner, "data_schema_", None)
    if schema is None:
        raise ValidationError(f"model: {args.model!r} was not trained on a table "
                              "(taskgraph fit or MultiTaskData.from_frame)")
    frame = read_table(args.data)
    pred = learner.predict(frame)
    out = pd.DataFrame(schema.decode(pred))
    if args.proba:
        proba = learner.predict_proba(frame)
        for k, task in enumerate(schema.tasks):
            for c, name in enumerate(task.classes or []):
                out[f"p({task.name}={name})"] = proba[:, k, c].numpy()
    with atomic_write(args.out, "w") as fh:
        out.to_csv(fh, index=False)
    print(f"wrote {args.out} ({len(out)} rows, {len(schema.tasks)} tasks)")
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    """Learn only the task graph of a table (PC, GES or DirectLiNGAM on the labels, or gcnet)
    and write the graph files, the picture and ``report.html``."""
    from taskgraph.report import check_out_dir, write_results
    from taskgraph.structure import discover

    t0 = time.perf_counter()
    check_out_dir(args.out)
    data = _load_table_data(args)
    if args.method == "gcnet":
        learner, _ = _fit_learner(args, "gcnet", data)
        graph = learner.task_graph_
    else:
        graph = discover(data, method=args.method)
    summary = {"data": args.data, "rows": len(data), "method": args.method,
               "edges": graph.n_edges, "seconds": round(time.perf_counter() - t0, 1)}
    out = write_results(args.out, graph=graph, command=_command(args.argv),
                        title=f"taskgraph discover: {args.method} on {args.data}",
                        summary=summary)
    print(f"wrote {out}/ (graph.*, report.html): {graph.n_edges} edges")
    return 0


def _table_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="a CSV/TSV file (or parquet with pyarrow)")
    p.add_argument("--tasks", nargs="+", required=True, metavar="COLUMN",
                   help="label columns (empty cells = missing labels)")
    p.add_argument("--features", nargs="+", metavar="COLUMN",
                   help="feature columns (default: every other column)")
    p.add_argument("--env", metavar="COLUMN", help="environment column (optional)")
    p.add_argument("--kinds", nargs="+", metavar="COLUMN=KIND",
                   help="override inferred task kinds: binary, multiclass or regression")
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of rows held out for validation (default: 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", default=None, help="progress bars")


def add_parsers(sub: Any, device_option: Any) -> None:
    """Register ``fit``, ``predict`` and ``discover`` on the CLI's sub-parsers."""
    f = sub.add_parser("fit", help="train a learner on your table; write graph, metrics, report",
                       description=cmd_fit.__doc__)
    _table_options(f)
    f.add_argument("--learner", default="gcnet", help="registered learner (default: gcnet)")
    device_option(f)
    f.set_defaults(func=cmd_fit, argv=None)

    p = sub.add_parser("predict", help="apply a learner saved by `taskgraph fit` to a table",
                       description=cmd_predict.__doc__)
    p.add_argument("model", help="model.pt written by taskgraph fit")
    p.add_argument("data", help="a CSV/TSV file with the same feature columns")
    p.add_argument("--out", required=True, help="predictions CSV (written atomically)")
    p.add_argument("--proba", action="store_true", help="add class-probability columns")
    p.add_argument("--device", default=None, help="device to predict on (default: as saved, "
                                                  "CPU when that is missing)")
    p.set_defaults(func=cmd_predict, argv=None)

    d = sub.add_parser("discover", help="task graph only: pc, ges, lingam or gcnet on a table",
                       description=cmd_discover.__doc__)
    _table_options(d)
    d.add_argument("--method", choices=DISCOVERY_METHODS, default="pc")
    device_option(d)
    d.set_defaults(func=cmd_discover, argv=None)
