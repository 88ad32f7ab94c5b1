"""The benchmark suite behind ``taskgraph bench``.

Every registered learner (``tg.learners.list()``) × every available benchmark
(``tg.datasets.available_benchmarks()``) × seeds: fit on ``train`` (selection on ``val``),
score ``test_iid`` and ``test_ood``, and record

- the task metrics and their ``mean`` (accuracy; −MSE for regression tasks),
- Δm (%) against ``single_task`` on the same benchmark and seed (:func:`taskgraph.metrics.delta_m`),
- structure metrics (SHD, directed F1, edge AUROC) when the benchmark has a planted graph and the
  learner learns one,
- the train-step time as a ratio to ``hard_sharing`` measured in the same run (median seconds
  per mini-batch over the epochs after the first).

``single_task`` and ``hard_sharing`` are always trained (they are the references). Results go to
``<out>/<benchmark>.json`` (merged with earlier runs of the same settings: a new run replaces
the records of the learners and seeds it ran), and the tables of every benchmark file in
``<out>`` are written into ``docs/benchmarks.md`` between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` (appended at the end when absent; nothing outside them changes).

Learners may declare class attributes read here with ``getattr``:

- ``bench_kwargs``: a dict, or ``callable(spec, bench) -> dict``, of extra constructor arguments.
- ``bench_requires``: names among ``"true_graph"``, ``"env"``, ``"classification"``, ``"do"``;
  benchmarks lacking one are skipped for that learner (recorded with the reason).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from taskgraph._io import json_safe as _json_safe
from taskgraph.exceptions import ValidationError
from taskgraph.train import make_adam, to_device

__all__ = ["run_bench", "bench_tables", "update_docs", "step_times", "REFERENCES", "START",
           "END"]

REFERENCES = ("single_task", "hard_sharing")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
_FORMAT = 1


# ---------------------------------------------------------------------------- helpers
def _say(message: str) -> None:
    print(message, flush=True)


def _unmet(requires: Iterable[str], spec: Any, bench: Any) -> str | None:
    have = {
        "true_graph": bool(spec.has_truth),
        "env": bench.train.env is not None,
        "classification": bench.tasks.all_classification,
        "do": bench.train.do is not None,
    }
    for req in requires:
        if req not in have:
            return f"unknown requirement {req!r}"
        if not have[req]:
            return f"needs {req}"
    return None


def _learner_kwargs(cls: type, spec: Any, bench: Any) -> dict[str, Any]:
    extra = getattr(cls, "bench_kwargs", None) or {}
    if callable(extra):
        extra = extra(spec, bench)
    return dict(extra)


def _step_seconds(history: list[dict[str, float]], n_rows: int, batch_size: int) -> float:
    times = [h["time_s"] for h in history if "time_s" in h]
    if not times:
        return float("nan")
    if len(times) > 1:
        times = times[1:]  # the first epoch pays one-off costs (allocation, caches)
    return statistics.median(times) / max(1, math.ceil(n_rows / batch_size))


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU"


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan"), 0
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return statistics.fmean(vals), sd, len(vals)


def _fmt(values: Sequence[float], digits: int = 3, pct: bool = False) -> str:
    m, s, n = _mean_std(values)
    if n == 0:
        return "–"
    f = f".{1 if pct else digits}f"
    return f"{m:{f}}" if n == 1 else f"{m:{f}} ± {s:{f}}"


# ---------------------------------------------------------------------------- one benchmark
def _fit_one(name: str, spec: Any, bench: Any, seed: int, epochs: int, verbose: bool | None,
             device: str = "cpu") -> tuple[dict[str, Any], Any]:
    import taskgraph as tg

    cls = tg.learners.get(name)
    rec: dict[str, Any] = {"learner": name, "seed": seed}
    why = _unmet(getattr(cls, "bench_requires", ()) or (), spec, bench)
    if why is not None:
        rec.update(status="skipped", reason=why)
        return rec, None
    kwargs: dict[str, Any] = {"epochs": epochs, "seed": seed, "verbose": verbose,
                              "batch_size": spec.batch_size, "device": device}
    kwargs.update(spec.learner_kwargs)
    if spec.encoder is not None:
        # a module passed to a learner keeps its own initial weights: initialise it from the
        # seed alone, not from whatever the global random stream holds after earlier runs
        torch.manual_seed(seed)
        kwargs["encoder"] = spec.encoder(bench)
    kwargs.update(_learner_kwargs(cls, spec, bench))
    t0 = time.perf_counter()
    try:
        learner = tg.learners.create(name, bench.tasks, **kwargs)
        learner.fit(bench.train, val=bench.val)
        rec["iid"] = learner.evaluate(bench.test_iid)
        rec["ood"] = learner.evaluate(bench.test_ood)
    except Exception as exc:  # noqa: BLE001 - one failing learner must not stop the suite
        rec.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:500],
                   traceback=traceback.format_exc(limit=5))
        return rec, None
    rec["fit_seconds"] = time.perf_counter() - t0
    rec["epochs_run"] = len(learner.history_)
    rec["best_epoch"] = int(getattr(learner, "best_epoch_", -1))
    rec["step_seconds"] = _step_seconds(learner.history_, len(bench.train),
                                        int(getattr(learner, "batch_size", spec.batch_size)))
    graph = getattr(learner, "task_graph_", None)
    if spec.has_truth and graph is not None and graph.learned:
        s = tg.metrics.structure(graph, bench.true_graph)
        rec["structure"] = {k: s[k] for k in ("shd", "directed_f1", "skeleton_f1", "auroc")}
    rec["status"] = "ok"
    return rec, learner


def _add_relative(records: list[dict[str, Any]], tasks: Any) -> None:
    """Δm vs single_task and step-time ratio vs hard_sharing, within each seed."""
    from taskgraph.metrics import delta_m

    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for r in records:
        if r.get("status") == "ok":
            by_seed.setdefault(r["seed"], {})[r["learner"]] = r
    for runs in by_seed.values():
        stl, hs = runs.get("single_task"), runs.get("hard_sharing")
        for r in runs.values():
            if stl is not None:
                for split in ("iid", "ood"):
                    try:
                        r[f"delta_m_{split}"] = delta_m(r[split], stl[split], tasks)
                    except ValidationError:
                        r[f"delta_m_{split}"] = float("nan")
            if hs is not None and hs.get("step_seconds"):
                r["step_ratio"] = r["step_seconds"] / hs["step_seconds"]


def step_times(learners: dict[str, Any], train: Any, steps: int, batch_size: int = 128,
               warmup: int = 3, lr: float = 1e-3) -> dict[str, float]:
    """Seconds of one training step (forward, backward, Adam) of every learner (all on one
    device; the batches are moved there first and CUDA is synchronised around each step), with the
    steps of all learners interleaved on the same batches so that machine load hits them alike.

    Each learner is built on ``train`` (``fit(train, epochs=0)``) and stepped with the Adam the
    :class:`~taskgraph.train.Trainer` uses; the first ``warmup`` rounds are not timed. Steps are
    timed in blocks of ``L`` consecutive steps, ``L`` the least common multiple of the learners'
    ``structure_every`` (1 for most): each block holds whole cycles of every amortised schedule,
    and the result is the median over blocks of the mean step time in a block (a plain median
    would pick the cheap steps of a schedule that does its expensive work every k-th step).
    ``steps`` and ``warmup`` are rounded up to multiples of ``L``. Divide by one entry (e.g.
    ``hard_sharing``'s) for ratios measured in one run.
    """
    opts = {}
    for name, learner in learners.items():
        learner.fit(train, epochs=0)              # build the model only
        learner.model_.train()
        opts[name] = make_adam(learner._param_groups(lr), lr)
    devices = {lr_.device_ for lr_ in learners.values()}
    if len(devices) != 1:
        raise ValidationError(f"learners: expected every learner on one device, got "
                              f"{sorted(str(d) for d in devices)}")
    device = devices.pop()
    batches = [to_device(b, device)
               for b in train.loader(batch_size, shuffle=True, seed=0, drop_last=True)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if not batches:
        raise ValidationError(f"batch_size: {batch_size} is more than the {len(train)} "
                              "training rows")
    block = math.lcm(*(int(getattr(lr_, "structure_every", 1) or 1)
                       for lr_ in learners.values()))
    steps, warmup = -(-steps // block) * block, -(-warmup // block) * block
    times: dict[str, list[float]] = {name: [] for name in learners}
    for i in range(steps + warmup):
        batch = batches[i % len(batches)]
        for name, learner in learners.items():
            sync()
            t0 = time.perf_counter()
            loss, _ = learner._loss(batch, epoch=10)
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
            sync()       # CUDA runs asynchronously: time the finished step
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(sum(t[i:i + block]) / block
                                    for i in range(0, len(t), block))
            for name, t in times.items()}


def run_bench(
    learners: Sequence[str] | None = None,
    benchmarks: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    quick: bool = False,
    epochs: int | None = None,
    out: str | Path | None = None,
    docs: str | Path | None = None,
    verbose: bool | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = _say,
) -> dict[str, dict[str, Any]]:
    """Run learners × benchmarks × seeds; write JSON per benchmark and (optionally) the docs.

    Args:
        learners (list of str, optional): registered learner names; default every registered
            learner. ``single_task`` and ``hard_sharing`` are added (the references).
        benchmarks (list of str, optional): registered benchmark names; default every
            *available* one. A named benchmark whose data are absent is skipped with a note.
        seeds (sequence of int): seeds (benchmark sampling, initialisation, shuffling).
        quick (bool): reduced data and ``quick_epochs`` (a smoke run).
        epochs (int, optional): overrides every benchmark's epochs.
        out (path, optional): results folder; default ``runs/bench`` (``runs/bench/quick``
            when ``quick``).
        docs (path, optional): Markdown file whose bench block is regenerated from every
            result file in ``out``; ``None`` leaves docs alone.
        verbose (bool, optional): training progress bars.
        device (str): torch device of every learner (``"cpu"``, ``"cuda"``).
        log (callable, optional): progress printer (default: print, flushed; ``None`` =
            silent).

    Returns:
        dict: benchmark name → the payload written to ``<out>/<name>.json``.
    """
    import taskgraph as tg
    from taskgraph.datasets.registry import available_benchmarks, get_benchmark

    say = log or (lambda s: None)
    registered = tg.learners.list()
    chosen = list(registered if learners is None else learners)
    unknown = [n for n in chosen if n not in registered]
    if unknown:
        raise ValidationError(f"learners: unknown {unknown}; registered: {registered}")
    chosen = list(REFERENCES) + [n for n in chosen if n not in REFERENCES]
    names = list(available_benchmarks() if benchmarks is None else benchmarks)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValidationError("seeds: expected at least one seed")
    out_dir = Path(out) if out is not None else Path("runs/bench/quick" if quick else "runs/bench")
    results: dict[str, dict[str, Any]] = {}
    for bname in names:
        spec = get_benchmark(bname)
        why = spec.unavailable()
        if why is not None:
            say(f"[bench] skip {bname}: {why}")
            continue
        n_epochs = epochs if epochs is not None else (spec.quick_epochs if quick else spec.epochs)
        records: list[dict[str, Any]] = []
        tasks = None
        for seed in seeds:
            t0 = time.perf_counter()
            bench = spec.build(seed, quick)
            tasks = bench.tasks
            say(f"[bench] {bname} seed={seed}: {bench!r} ({time.perf_counter() - t0:.1f}s)")
            for lname in chosen:
                rec, _ = _fit_one(lname, spec, bench, seed, n_epochs, verbose, device)
                rec["benchmark"] = bname
                records.append(rec)
                if rec["status"] == "ok":
                    say(f"[bench]   {lname:<14} iid={rec['iid']['mean']:.4f} "
                        f"ood={rec['ood']['mean']:.4f} ({rec['fit_seconds']:.1f}s)")
                else:
                    say(f"[bench]   {lname:<14} {rec['status']}: {rec['reason']}")
        _add_relative(records, tasks)
        settings = {"quick": bool(quick), "epochs": int(n_epochs), "device": str(device),
                    "batch_size": int(spec.batch_size), "description": spec.description}
        payload = _merge(out_dir / f"{bname}.json", bname, settings, records)
        results[bname] = payload
        say(f"[bench] wrote {out_dir / f'{bname}.json'}")
    if docs is not None:
        update_docs(docs, bench_tables(out_dir))
        say(f"[bench] updated {docs}")
    return results


def _merge(path: Path, name: str, settings: dict[str, Any], records: list[dict[str, Any]]
           ) -> dict[str, Any]:
    from taskgraph._io import atomic_write

    keep: list[dict[str, Any]] = []
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("settings") == settings and old.get("format") == _FORMAT:
            new_keys = {(r["learner"], r["seed"]) for r in records}
            keep = [r for r in old.get("records", [])
                    if (r["learner"], r["seed"]) not in new_keys]
    payload = {
        "format": _FORMAT,
        "benchmark": name,
        "settings": settings,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "machine": platform.machine(),
                        "device": _device_name(settings.get("device", "cpu"))},
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "records": keep + records,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        json.dump(_json_safe(payload), fh, indent=2, sort_keys=True)
    return payload


# ---------------------------------------------------------------------------- tables
def _table(payload: dict[str, Any]) -> str:
    recs = payload.get("records", [])
    order: list[str] = []
    for r in recs:
        if r["learner"] not in order:
            order.append(r["learner"])
    order = [n for n in REFERENCES if n in order] + [n for n in order if n not in REFERENCES]
    has_struct = any("structure" in r for r in recs)
    head = ["learner", "seeds", "IID mean", "OOD mean", "Δm IID %", "Δm OOD %", "step × HS"]
    if has_struct:
        head += ["SHD", "F1", "AUROC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    notes = []
    for name in order:
        rows = [r for r in recs if r["learner"] == name]
        ok = [r for r in rows if r.get("status") == "ok"]
        if not ok:
            reason = rows[0].get("reason", "") if rows else ""
            notes.append(f"`{name}`: {rows[0].get('status', '?')} ({reason})")
            continue

        def col(key: str, rows: list[dict[str, Any]] = ok) -> list[float]:
            return [r.get(key) for r in rows]

        cells = [f"`{name}`", str(len(ok)),
                 _fmt([r["iid"]["mean"] for r in ok]), _fmt([r["ood"]["mean"] for r in ok]),
                 _fmt(col("delta_m_iid"), pct=True), _fmt(col("delta_m_ood"), pct=True),
                 _fmt(col("step_ratio"), digits=2)]
        if has_struct:
            for key, d in (("shd", 1), ("directed_f1", 3), ("auroc", 3)):
                cells.append(_fmt([r["structure"][key] for r in ok if "structure" in r], d))
        lines.append("| " + " | ".join(cells) + " |")
    s = payload.get("settings", {})
    env = payload.get("environment", {})
    where = env.get("device", "cpu")
    title = (f"### {payload['benchmark']}\n\n{s.get('description', '')}. {s.get('epochs')} "
             f"epochs, batch {s.get('batch_size')}{', quick' if s.get('quick') else ''}; "
             f"updated {payload.get('updated', '?')} (torch {env.get('torch', '?')}, {where}, "
             f"{env.get('threads', '?')} threads).\n")
    text = title + "\n" + "\n".join(lines) + "\n"
    if notes:
        text += "\nNot in the table: " + "; ".join(notes) + "\n"
    return text


def bench_tables(out: str | Path) -> str:
    """Markdown tables (one per ``<out>/*.json`` result file) for the docs block."""
    out = Path(out)
    files = sorted(out.glob("*.json")) if out.is_dir() else []
    if not files:
        return "_No benchmark results yet: run `taskgraph bench`._\n"
    from taskgraph.datasets.registry import list_benchmarks

    rank = {n: i for i, n in enumerate(list_benchmarks())}
    payloads = []
    for f in files:
        try:
            payloads.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    payloads.sort(key=lambda p: rank.get(p.get("benchmark"), len(rank)))
    intro = ("Generated by `taskgraph bench` from the JSON files in "
             f"`{out.as_posix()}/`; do not edit by hand. mean ± std over seeds. *mean* = mean "
             "over tasks of accuracy (classification) or −MSE (regression); Δm vs "
             "`single_task` (positive = better); *step × HS* = train-step time / "
             "`hard_sharing`'s in the same run.\n\n")
    return intro + "\n".join(_table(p) for p in payloads if "benchmark" in p)


def update_docs(path: str | Path, block: str) -> Path:
    """Replace the text between the bench markers in ``path`` (append them when absent)."""
    from taskgraph._io import atomic_write

    path = Path(path)
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    body = f"{START}\n{block.rstrip()}\n{END}"
    if START in text and END in text and text.index(START) < text.index(END):
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + body + after
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    with atomic_write(path) as fh:
        fh.write(text)
    return path
