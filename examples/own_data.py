"""Your own data: a CSV in, a task graph, metrics and a report out, with no code written.

Writes a table like a user's (5,000 rows, 20 feature columns of which 3 categorical, 8 label
columns of mixed kinds, 30% of the labels missing), then runs the three commands a user runs:

    taskgraph fit table.csv --tasks ... --out runs/own_data/fit
    taskgraph predict runs/own_data/fit/model.pt fresh.csv --out runs/own_data/preds.csv
    taskgraph discover table.csv --tasks ... --method pc --out runs/own_data/pc

and prints the wall time of each.

    python examples/own_data.py              # the full table (README: "Your own data")
    python examples/own_data.py --quick      # 600 rows, 2 epochs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from taskgraph.cli import main as taskgraph

LABELS = ["diabetes", "smoker", "risk", "stage", "region_pref", "bmi", "cost", "visits"]


def write_table(path: Path, n: int, seed: int, labels: bool = True) -> None:
    """A synthetic patient table: 17 numeric and 3 categorical features; 8 labels (binary,
    multiclass with string classes, regression) that depend on the features and on each
    other; 30% of the labels missing."""
    import pandas as pd

    g = np.random.default_rng(seed)
    num = g.normal(size=(n, 17))
    cols = {f"x{i}": num[:, i] for i in range(17)}
    cols["sex"] = g.choice(["f", "m"], n)
    cols["site"] = g.choice(["north", "south", "east", "west"], n)
    cols["plan"] = g.choice(["basic", "plus", "premium"], n)
    lin = num[:, :8] + 0.5 * (cols["site"] == "north")[:, None]
    diabetes = lin[:, 0] + 0.3 * g.normal(size=n) > 0
    smoker = lin[:, 1] + 0.8 * diabetes + 0.3 * g.normal(size=n) > 0.4
    risk = np.array(["low", "mid", "high"])[np.digitize(lin[:, 2] + smoker, [0.0, 1.0])]
    stage = np.digitize(lin[:, 3] + diabetes, [-0.5, 0.5, 1.5])          # integers 0..3
    region_pref = g.choice(["a", "b", "c"], n)
    bmi = 25 + 3 * lin[:, 4] + 2 * diabetes + g.normal(size=n)
    cost = 1000 + 300 * lin[:, 5] + 400 * smoker + 50 * g.normal(size=n)
    visits = np.clip(np.round(3 + lin[:, 6] + stage), 0, None) + 0.5 * g.normal(size=n)
    frame = pd.DataFrame(cols)
    if labels:
        values = {"diabetes": np.where(diabetes, "yes", "no"), "smoker": smoker.astype(int),
                  "risk": risk, "stage": stage, "region_pref": region_pref, "bmi": bmi,
                  "cost": cost, "visits": visits}
        for name in LABELS:
            col = pd.Series(values[name], dtype=object)
            col[g.random(n) < 0.3] = None
            frame[name] = col
    frame.to_csv(path, index=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/own_data")
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.rows, args.epochs = 600, 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table, fresh = out / "table.csv", out / "fresh.csv"
    write_table(table, args.rows, seed=0)
    write_table(fresh, 500, seed=1, labels=False)
    steps = [
        ["fit", str(table), "--tasks", *LABELS, "--out", str(out / "fit"), "--epochs",
         str(args.epochs)],
        ["predict", str(out / "fit" / "model.pt"), str(fresh), "--out",
         str(out / "preds.csv")],
        ["discover", str(table), "--tasks", *LABELS, "--method", "pc", "--out",
         str(out / "pc")],
    ]
    for argv in steps:
        t0 = time.perf_counter()
        rc = taskgraph(argv)
        print(f"taskgraph {argv[0]}: exit {rc} in {time.perf_counter() - t0:.1f}s", flush=True)
        if rc != 0:
            raise SystemExit(rc)
    print(f"open {out / 'fit' / 'report.html'} in a browser")


if __name__ == "__main__":
    main()
