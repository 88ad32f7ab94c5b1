"""Every learner on one device: the contract, step-cost ratios, GCNet at scale, a whole fit
against the CPU, and the multi-process path under torchrun.

Run on a GPU machine as one command (the figures in docs/scaling.md come from it)::

    python examples/device_check.py --device cuda --out runs/device_check

and on the CPU (the reduced plan, under a minute; CI runs it)::

    python examples/device_check.py --device cpu

Sections:

1. **contract** — each registered learner: ``fit`` with ``val``, early stopping, a checkpoint
   and a resumed run; ``predict`` / ``predict_proba`` / ``evaluate`` twice in every inference
   mode; GMTL decoding; the task graph exported; saved on the device and loaded on the CPU and
   back; data given on the CPU and already on the device. A failure is reported per learner and
   makes the script exit 1.
2. **step cost** — step-time ratios against ``hard_sharing`` (MLP 2x64 and 3x512, batch 128 and
   1024; CUDA synchronised around every step, :func:`taskgraph.bench.step_times`).
3. **gcnet at scale** — ``gcnet`` step time at T = 125 / 500 / 1000 (heuristic candidates).
4. **whole fit** — ``causal_graph`` trained on the device and on the CPU: seconds and metrics.
5. **torchrun** — ``torchrun --nproc_per_node 1`` with ``TASKGRAPH_DISTRIBUTED=1`` (``nccl`` on
   CUDA, ``gloo`` on the CPU) against the plain run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

import taskgraph as tg
from encoders import MLPBackbone
from taskgraph.bench import step_times
from taskgraph.devices import resolve_device
from taskgraph.inference import GMTL, JointPrior
from taskgraph.metrics import format_table

MODES = ("heads", "sem", "mean_field", "gibbs")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _devices_of(learner: tg.learners.BaseLearner) -> set[str]:
    tensors = [*learner.model_.parameters(), *learner.model_.buffers()]
    return {t.device.type for t in tensors}


def _modes(learner: tg.learners.BaseLearner) -> list[str | None]:
    if "inference_mode" not in learner.get_params():
        return [None]
    return [m for m in MODES if (m != "sem" or learner.structure) and (
        m not in ("mean_field", "gibbs") or learner.ebm)]


def check_contract(name: str, device: torch.device, bench: Any, tmp: Path) -> dict[str, Any]:
    """The whole learner contract of ``name`` on ``device``; raises on the first failure."""
    kw = dict(epochs=3, batch_size=64, hidden=16, seed=0, verbose=False, patience=2,
              **getattr(tg.learners.get(name), "conformance_kwargs", {}))
    train, val, test = bench.train, bench.val, bench.test_iid
    dev = str(device)
    learner = tg.learners.create(name, bench.tasks, device=dev, **kw)
    learner.fit(train, val=val, epochs=2, checkpoint=tmp / f"{name}.ck")
    learner = tg.learners.create(name, bench.tasks, device=dev, **kw)
    learner.fit(train, val=val, checkpoint=tmp / f"{name}.ck", resume=True)
    assert _devices_of(learner) == {device.type}, _devices_of(learner)
    modes = _modes(learner)
    chosen = getattr(learner, "inference_", None)
    for mode in modes:
        if mode is not None:
            learner.inference_ = mode
        for _ in range(2):
            pred, proba = learner.predict(test.x), learner.predict_proba(test.x)
            assert pred.device.type == "cpu" and proba.device.type == "cpu"
            assert np.isfinite(learner.evaluate(test)["mean"])
    if chosen is not None:
        learner.inference_ = chosen
    cls = [t.name for t in bench.tasks if t.is_classification]
    prior = JointPrior.fit(train, tasks=cls[:2])
    learner.predict(test.x, inference=GMTL(prior, alpha=0.5))
    learner.task_graph_.save(tmp / f"{name}.graphml")
    path = learner.save(tmp / f"{name}.pt")
    on_cpu = tg.learners.load_learner(path, device="cpu")
    back = tg.learners.load_learner(on_cpu.save(tmp / f"{name}.cpu.pt"), device=dev)
    assert _devices_of(on_cpu) == {"cpu"} and _devices_of(back) == {device.type}
    torch.testing.assert_close(back.predict_proba(test.x), on_cpu.predict_proba(test.x),
                               atol=1e-4, rtol=1e-4)
    fresh = tg.learners.create(name, bench.tasks, device=dev, **kw)
    fresh.fit(train.to(device), val=val.to(device))
    fresh.evaluate(test.to(device))
    return {"learner": name, "ok": True, "modes": ",".join(m or "-" for m in modes),
            "epochs": len(learner.history_)}


def section_contract(device: torch.device) -> tuple[list[dict[str, Any]], bool]:
    bench = tg.datasets.planted_dag(n_tasks=4, n_edges=3, n_samples=400, seed=0, n_test=100)
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        for name in tg.learners.list():
            t0 = time.perf_counter()
            try:
                row = check_contract(name, device, bench, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - reported per learner, exit code 1
                ok = False
                row = {"learner": name, "ok": False,
                       "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                traceback.print_exc()
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            print(f"  contract {name}: {'ok' if row['ok'] else row['error']}", flush=True)
    return rows, ok


def section_step_cost(device: torch.device, full: bool) -> list[dict[str, Any]]:
    bench = tg.datasets.planted_dag(n_tasks=10, n_edges=15, n_samples=2500, seed=0, n_test=100)
    names = ["hard_sharing", "single_task", "mmoe", "mtcrl", "sgnn", "sgnn_ebm", "gcnet",
             "causal_graph"]
    shapes = [(2, 64), (3, 512)] if full else [(2, 64)]
    batches = [128, 1024] if full else [128]
    steps = 30 if full else 4
    rows = []
    for layers, width in shapes:
        for batch in batches:
            learners = {n: tg.learners.create(
                n, bench.tasks, verbose=False, device=str(device),
                encoder=MLPBackbone(bench.n_features, hidden=width, n_layers=layers))
                for n in names}
            times = step_times(learners, bench.train, steps, batch_size=batch)
            base = times["hard_sharing"]
            for n in names:
                rows.append({"mlp": f"{layers}x{width}", "batch": batch, "learner": n,
                             "ms": 1e3 * times[n], "ratio": times[n] / base})
            print(f"  step cost MLP {layers}x{width}, batch {batch}: " + ", ".join(
                f"{n} {times[n] / base:.2f}x" for n in names), flush=True)
    return rows


def section_gcnet_scale(device: torch.device, full: bool) -> list[dict[str, Any]]:
    rows = []
    for t in ((125, 500, 1000) if full else (125,)):
        bench = tg.datasets.planted_dag(n_tasks=t, n_edges=2 * t, n_samples=1000, seed=0,
                                        n_test=50)
        learner = tg.learners.create("gcnet", bench.tasks, candidates="heuristic",
                                     verbose=False, device=str(device))
        ms = 1e3 * step_times({"gcnet": learner}, bench.train, 10 if full else 3,
                              batch_size=128, warmup=2)["gcnet"]
        rows.append({"tasks": t, "edges": int(learner.model_.edge_index.shape[1]),
                     "ms_per_step": ms})
        print(f"  gcnet T={t}: {ms:.1f} ms/step", flush=True)
    return rows


def section_whole_fit(device: torch.device, full: bool) -> list[dict[str, Any]]:
    bench = tg.datasets.causal_mtl(n_per_env=1000 if full else 200, seed=0, n_test=200)
    rows = []
    for where in dict.fromkeys([str(device), "cpu"]):
        t0 = time.perf_counter()
        learner = tg.learners.create("causal_graph", bench.tasks, epochs=30 if full else 2,
                                     seed=0, verbose=False, device=where)
        learner.fit(bench.train, val=bench.val)
        _sync(torch.device(where))
        rows.append({"device": where, "seconds": time.perf_counter() - t0,
                     "iid_mean": learner.evaluate(bench.test_iid)["mean"],
                     "ood_mean": learner.evaluate(bench.test_ood)["mean"]})
        print(f"  causal_graph fit on {where}: {rows[-1]['seconds']:.1f} s", flush=True)
    return rows


_TORCHRUN_SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    import taskgraph as tg
    device, out = sys.argv[1], sys.argv[2]
    bench = tg.datasets.planted_dag(n_tasks=4, n_edges=3, n_samples=600, seed=0, n_test=100)
    learner = tg.learners.create("hard_sharing", bench.tasks, hidden=32, epochs=3,
                                 batch_size=64, seed=0, verbose=False, device=device)
    learner.fit(bench.train, val=bench.val)
    dist = torch.distributed
    flat = torch.cat([p.detach().reshape(-1).cpu() for p in learner.model_.parameters()])
    json.dump({"distributed": tg.distributed.is_distributed(),
               "backend": dist.get_backend() if dist.is_initialized() else None,
               "weights": flat.tolist()}, open(out, "w"))
''')


def section_torchrun(device: torch.device) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "run.py"
        script.write_text(_TORCHRUN_SCRIPT)
        env = {k: v for k, v in os.environ.items()
               if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        plain = Path(tmp) / "plain.json"
        subprocess.run([sys.executable, str(script), str(device), str(plain)], env=env,
                       check=True, timeout=300)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        forced = Path(tmp) / "forced.json"
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
                        "--nproc_per_node=1", "--master_addr=127.0.0.1",
                        f"--master_port={port}", str(script), str(device), str(forced)],
                       env={**env, tg.distributed.FORCE_ENV: "1"}, check=True, timeout=300)
        a, b = json.loads(plain.read_text()), json.loads(forced.read_text())
    diff = float(np.abs(np.array(a["weights"]) - np.array(b["weights"])).max())
    row = {"backend": b["backend"], "distributed": b["distributed"],
           "max_weight_diff_vs_plain": diff, "ok": bool(b["distributed"]) and diff < 1e-3}
    print(f"  torchrun 1 process ({b['backend']}): max weight difference to the plain run "
          f"{diff:.2e}", flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto",
                   help="torch device: auto (CUDA when available), cpu, cuda (default: auto)")
    p.add_argument("--full", action="store_true",
                   help="the full plan on the CPU too (default: full on CUDA, reduced on CPU)")
    p.add_argument("--quick", action="store_true", help="the reduced plan, on CUDA too")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["contract", "step_cost", "gcnet_scale", "whole_fit", "torchrun"])
    p.add_argument("--out", help="folder for device_check_<device>.json")
    args = p.parse_args()
    device = resolve_device(args.device, "--device")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device: CUDA is not available on this machine")
    full = args.full or (device.type == "cuda" and not args.quick)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, "
          f"{'full' if full else 'reduced'} plan", flush=True)
    report: dict[str, Any] = {"device": str(device), "device_name": name,
                              "torch": torch.__version__, "full": full,
                              "date": time.strftime("%Y-%m-%d")}
    ok = True
    if "contract" not in args.skip:
        report["contract"], ok = section_contract(device)
        print(format_table(report["contract"], ["learner", "ok", "modes", "seconds"]))
    if "step_cost" not in args.skip:
        report["step_cost"] = section_step_cost(device, full)
        print(format_table(report["step_cost"], floatfmt=".2f"))
    if "gcnet_scale" not in args.skip:
        report["gcnet_scale"] = section_gcnet_scale(device, full)
        print(format_table(report["gcnet_scale"], floatfmt=".1f"))
    if "whole_fit" not in args.skip:
        report["whole_fit"] = section_whole_fit(device, full)
        print(format_table(report["whole_fit"], floatfmt=".3f"))
    if "torchrun" not in args.skip:
        report["torchrun"] = section_torchrun(device)
        ok = ok and report["torchrun"]["ok"]
    if args.out:
        from taskgraph._io import atomic_write

        out = Path(args.out) / f"device_check_{device.type}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {out}")
    print("device check:", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
