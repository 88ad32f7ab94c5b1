"""Every learner on a second device, without a GPU: ``fakegpu`` (tests/fakegpu.py) holds CPU data
but refuses to mix with CPU tensors as CUDA does, so any tensor left on the wrong device, any
CPU generator drawing device tensors, and any in-place move of shared state fails here."""

import numpy as np
import pytest
import torch
from fakegpu import DeviceMismatch, FakeGPUTensor, fake_gpu
from test_learners import _data_for, _kwargs

import taskgraph as tg
from taskgraph.inference import GMTL, JointPrior
from taskgraph.learners import create, load_learner

MODES = ("heads", "sem", "mean_field", "gibbs")


def _modes(learner):
    """The inference modes this fitted learner can use (``None``: it has no such switch)."""
    if "inference_mode" not in learner.get_params():
        return [None]
    return [m for m in MODES if (m != "sem" or learner.structure) and (
        m not in ("mean_field", "gibbs") or learner.ebm)]


def _use(learner, mode):
    if mode is not None:
        learner.inference_ = mode


def _on_device(learner):
    devs = {p.device.type for p in learner.model_.parameters()}
    devs |= {b.device.type for b in learner.model_.buffers()}
    return devs


def test_fakegpu_catches_mixing():
    with fake_gpu() as dev:
        a = torch.ones(3, device=dev)
        assert isinstance(a, FakeGPUTensor) and a.device == dev
        with pytest.raises(DeviceMismatch):
            a + torch.ones(3)
        with pytest.raises(DeviceMismatch, match="generator"):
            torch.rand(3, generator=torch.Generator().manual_seed(0), device=dev)
        g = torch.Generator(device=dev).manual_seed(0)
        assert torch.rand(3, generator=g, device=dev).device == dev
        assert float((a + torch.tensor(1.0)).sum()) == 6.0     # CPU scalars mix, as on CUDA
        assert a[torch.tensor([0, 2])].device == dev           # CPU indices, as on CUDA


@pytest.fixture(params=tg.learners.list())
def name(request):
    return request.param


def test_every_learner_on_another_device(name, mixed_data, tmp_path):
    data = _data_for(name, mixed_data)
    train, val, test = data.split([0.6, 0.2, 0.2], seed=0)
    ref = create(name, data.tasks, patience=2, **_kwargs(name)).fit(train, val=val)
    with fake_gpu() as dev:
        learner = create(name, data.tasks, device=str(dev), patience=2, **_kwargs(name))
        learner.fit(train, val=val, checkpoint=tmp_path / "ck.pt")
        assert _on_device(learner) == {dev.type}
        # the device changes nothing but where the numbers live
        torch.testing.assert_close(learner.predict_proba(test.x), ref.predict_proba(test.x))
        for mode in _modes(learner):
            _use(learner, mode)
            for _ in range(2):      # repeated calls: nothing is moved in place by the first
                pred = learner.predict(test.x)
                proba = learner.predict_proba(test.x)
                metrics = learner.evaluate(test)
                assert pred.device.type == "cpu" and proba.device.type == "cpu"
                assert np.isfinite(metrics["mean"])
            assert _on_device(learner) == {dev.type}
        _use(learner, getattr(ref, "inference_", None))
        # a joint GMTL decode over the device's outputs
        cls = [t.name for t in data.tasks if t.is_classification]
        if len(cls) >= 2:
            prior = JointPrior.fit(train, tasks=cls[:2])
            learner.predict(test.x, inference=GMTL(prior, alpha=0.5))
        learner.task_graph_.save(tmp_path / "g.json")
        learner.task_graph_.save(tmp_path / "g.graphml")
        # more training after predicting: the structure and layout are still on the device
        learner.fit(train, val=val, epochs=1)
        # save on the device, load on the CPU and back on the device
        path = learner.save(tmp_path / "m.pt")
        assert _on_device(load_learner(path)) == {dev.type}     # where it was saved from
        cpu = load_learner(path, device="cpu")
        assert _on_device(cpu) == {"cpu"}
        again = load_learner(path, device=str(dev))
        assert _on_device(again) == {dev.type}
        torch.testing.assert_close(again.predict_proba(test.x), cpu.predict_proba(test.x))
        assert torch.equal(again.predict(test.x), learner.predict(test.x))
        # data already on the device
        on_dev = create(name, data.tasks, device=str(dev), **_kwargs(name))
        on_dev.fit(train.to(dev), val=val.to(dev))
        on_dev.predict(test.x.to(dev))
        on_dev.evaluate(test.to(dev))
    # a CPU file loads onto the device
    path = ref.save(tmp_path / "cpu.pt")
    with fake_gpu() as dev:
        moved = load_learner(path, device=str(dev))
        assert _on_device(moved) == {dev.type}
        torch.testing.assert_close(moved.predict_proba(test.x), ref.predict_proba(test.x))


def test_resume_on_another_device(mixed_data, tmp_path):
    train, val = mixed_data.split([0.75, 0.25], seed=0)
    kw = dict(_kwargs("gcnet"), epochs=4)
    with fake_gpu() as dev:
        full = create("gcnet", mixed_data.tasks, device=str(dev), **kw).fit(train, val=val)
        part = create("gcnet", mixed_data.tasks, device=str(dev), **kw)
        part.fit(train, val=val, epochs=2, checkpoint=tmp_path / "ck.pt")
        part = create("gcnet", mixed_data.tasks, device=str(dev), **kw)
        part.fit(train, val=val, checkpoint=tmp_path / "ck.pt", resume=True)
        for a, b in zip(full.model_.state_dict().values(), part.model_.state_dict().values()):
            assert torch.equal(a.cpu(), b.cpu())


@pytest.mark.slow
def test_device_check_example_passes_on_cpu(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "device_check.py"
    proc = subprocess.run([sys.executable, str(script), "--device", "cpu", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "device check: passed" in proc.stdout
    report = json.loads((tmp_path / "device_check_cpu.json").read_text())
    assert {r["learner"] for r in report["contract"]} == set(tg.learners.list())
    assert all(r["ok"] for r in report["contract"])
    assert report["torchrun"]["distributed"] and report["torchrun"]["backend"] == "gloo"


#: host synchronisations allowed per training step (``learner._loss``, backward, Adam) on a
#: device: the acyclicity overflow guard (gcnet, causal_graph) and the idle-penalty check that
#: skips the invariance pass (mtcrl, causal_graph); logs are read once per epoch
MAX_SYNCS = {"hard_sharing": 0, "single_task": 0, "mmoe": 0, "sgnn": 0, "sgnn_ebm": 0,
             "gcnet": 1, "mtcrl": 1, "causal_graph": 2, "graph_share": 0}


@pytest.mark.parametrize("learner_name", sorted(MAX_SYNCS))
def test_training_step_host_synchronisations(learner_name):
    import fakegpu

    from taskgraph.train import make_adam, to_device

    assert set(MAX_SYNCS) == set(tg.learners.list())
    bench = tg.datasets.causal_mtl(n_per_env=300, seed=0, n_test=50)
    with fake_gpu() as dev:
        # invariance from the first step, where a learner has it
        kw = {"warmup_steps": 0} if "warmup_steps" in tg.learners.get(
            learner_name)._param_names() else {}
        learner = create(learner_name, bench.tasks, device=str(dev), verbose=False, **kw)
        learner.fit(bench.train, epochs=0)
        learner.model_.train()
        opt = make_adam(learner._param_groups(1e-3), 1e-3)
        batches = [to_device(b, dev) for b in bench.train.loader(128, shuffle=True, seed=0)]
        fakegpu.reset_syncs()
        for batch in batches[:4]:
            loss, _ = learner._loss(batch, epoch=10)   # after the acyclicity warm-up
            opt.zero_grad()
            loss.backward()
            opt.step()
        per_step = fakegpu.host_syncs() / 4
    assert per_step <= MAX_SYNCS[learner_name], dict(fakegpu.SYNCS)
