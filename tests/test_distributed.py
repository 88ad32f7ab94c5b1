"""Multi-process training: torchrun with 2 gloo processes on loopback equals 1 process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from taskgraph import distributed as tgd

SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    torch.set_num_threads(1)
    import taskgraph as tg

    out, ckpt = sys.argv[1], sys.argv[2]
    bench = tg.datasets.planted_dag(n_tasks=4, n_edges=3, n_samples=600, seed=0, n_test=400,
                                    missing_rate=float(sys.argv[3]))
    learner = tg.learners.create("hard_sharing", bench.tasks, hidden=32, epochs=5,
                                 batch_size=64, seed=0, verbose=False)
    learner.fit(bench.train, val=bench.val, checkpoint=ckpt)
    flat = torch.cat([p.detach().reshape(-1) for p in learner.model_.parameters()])
    rank = tg.distributed.rank()
    payload = {
        "rank": rank,
        "world_size": tg.distributed.world_size(),
        "distributed": tg.distributed.is_distributed(),
        "val_loss": [h["val_loss"] for h in learner.history_],
        "task_loss": [h["task_loss"] for h in learner.history_],
        "iid": learner.evaluate(bench.test_iid),
        "ood": learner.evaluate(bench.test_ood),
        "weights": flat.tolist(),
        "best_epoch": learner.best_epoch_,
    }
    # exports: rank 0 only by default, every rank with all_ranks=True
    learner.save(f"{out}.model{rank}.pt")
    learner.task_graph_.save(f"{out}.graph{rank}.json")
    learner.save(f"{out}.all{rank}.pt", all_ranks=True)
    with open(f"{out}.rank{rank}.json", "w") as fh:
        json.dump(payload, fh)
''')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", MPLBACKEND="Agg")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _run(tmp_path, nproc: int, missing: float, forced: bool = False) -> list[dict]:
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    tag = f"{nproc}{'f' if forced else ''}"
    out = tmp_path / f"m{tag}"
    ckpt = tmp_path / f"c{tag}.ckpt"
    args = [str(script), str(out), str(ckpt), str(missing)]
    env = _env()
    if forced:
        env[tgd.FORCE_ENV] = "1"
    if nproc == 1 and not forced:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
               f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ckpt.is_file()
    return [json.loads((tmp_path / f"m{tag}.rank{r}.json").read_text()) for r in range(nproc)]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_one_forced_rank_takes_the_distributed_path(tmp_path):
    """torchrun --nproc_per_node 1 with TASKGRAPH_DISTRIBUTED=1: a one-rank process group, the
    sharded sampler and the collectives run, and the result equals the plain run."""
    plain = _run(tmp_path, 1, 0.0)[0]
    forced = _run(tmp_path, 1, 0.0, forced=True)[0]
    assert forced["distributed"] and not plain["distributed"]
    np.testing.assert_allclose(forced["weights"], plain["weights"], atol=1e-5)
    np.testing.assert_allclose(forced["val_loss"], plain["val_loss"], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_processes_match_one(tmp_path):
    one = _run(tmp_path, 1, 0.0)[0]
    two = _run(tmp_path, 2, 0.0)
    assert one["world_size"] == 1 and [r["world_size"] for r in two] == [2, 2]
    # every process ends with the same weights and the same history
    assert two[0]["weights"] == two[1]["weights"]
    assert two[0]["val_loss"] == two[1]["val_loss"]
    # ... and equals the one-process run up to floating-point summation order
    np.testing.assert_allclose(two[0]["val_loss"], one["val_loss"], rtol=1e-4)
    np.testing.assert_allclose(two[0]["task_loss"], one["task_loss"], rtol=1e-4)
    np.testing.assert_allclose(two[0]["weights"], one["weights"], atol=1e-4)
    assert two[0]["best_epoch"] == one["best_epoch"]
    # rank 0 alone writes exports (unless all_ranks=True)
    assert (tmp_path / "m2.model0.pt").is_file() and (tmp_path / "m2.graph0.json").is_file()
    assert not (tmp_path / "m2.model1.pt").exists()
    assert not (tmp_path / "m2.graph1.json").exists()
    assert (tmp_path / "m2.all0.pt").is_file() and (tmp_path / "m2.all1.pt").is_file()
    for split in ("iid", "ood"):
        for key, value in one[split].items():
            assert abs(two[0][split][key] - value) <= 0.01, (split, key)


# ---------------------------------------------------------------------------- unit level
def test_single_process_defaults():
    assert not tgd.is_distributed()
    assert tgd.rank() == 0 and tgd.world_size() == 1 and tgd.is_main_process()
    assert tgd.init() is False  # not launched by torchrun: nothing to do
    assert tgd.broadcast_object({"a": 1}) == {"a": 1}
    assert tgd.gather_objects(3) == [3]
    t = torch.ones(3)
    assert torch.equal(tgd.all_reduce_sum(t), torch.ones(3))


def test_shard_bounds_cover_everything():
    for n in range(0, 12):
        for parts in (1, 2, 3, 5):
            b = tgd.shard_bounds(n, parts)
            assert b[0][0] == 0 and b[-1][1] == n
            assert all(b[i][1] == b[i + 1][0] for i in range(parts - 1))
            sizes = [hi - lo for lo, hi in b]
            assert max(sizes) - min(sizes) <= 1


def test_sharded_sampler_reassembles_the_one_process_order():
    from torch.utils.data import RandomSampler

    n, bs, seed = 103, 16, 1234
    shards = [list(tgd.ShardedBatchSampler(n, bs, lambda e: seed + e, r, 3)) for r in range(3)]
    gen = torch.Generator().manual_seed(seed)
    one = list(RandomSampler(range(n), generator=gen))
    batches = [one[i:i + bs] for i in range(0, n, bs)]
    assert all(len(s) == len(batches) for s in shards)
    for k, batch in enumerate(batches):
        joined = sum((shards[r][k][0].tolist() for r in range(3)), [])
        assert joined == batch
        assert abs(sum(shards[r][k][1] for r in range(3)) - 1.0) < 1e-12
    sampler = tgd.ShardedBatchSampler(n, bs, lambda e: seed + e, 0, 1)
    first = [i.tolist() for i, _ in sampler]
    sampler.set_epoch(1)
    assert [i.tolist() for i, _ in sampler] != first


def test_average_gradients_is_a_no_op_in_one_process():
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    tgd.average_gradients([p], 0.5)
    assert torch.equal(p.grad, torch.full((2,), 3.0))
