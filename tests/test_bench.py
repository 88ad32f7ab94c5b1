"""The benchmark suite: registry, run_bench records, JSON merging, the docs block, the CLI."""

from __future__ import annotations

import json

import pytest

import taskgraph as tg
from taskgraph.bench import END, START, bench_tables, run_bench, update_docs
from taskgraph.datasets.registry import (
    BENCHMARKS,
    BenchmarkSpec,
    available_benchmarks,
    get_benchmark,
    list_benchmarks,
    load_benchmark,
    register_benchmark,
)
from taskgraph.exceptions import ValidationError


@pytest.fixture
def tiny_benchmark():
    """A registered 3-task planted DAG small enough for a few-second suite."""

    def build(seed: int, quick: bool):
        return tg.datasets.planted_dag(n_tasks=3, n_edges=2, n_samples=200, seed=seed,
                                       n_test=100)

    spec = register_benchmark(BenchmarkSpec("tiny_dag", build, "tiny planted DAG", epochs=2,
                                            quick_epochs=1, batch_size=64, has_truth=True,
                                            learner_kwargs={"hidden": 8}))
    yield spec
    BENCHMARKS.remove("tiny_dag")


def test_registry_lists_synthetic_and_real():
    names = list_benchmarks()
    assert names[:3] == ["planted_dag", "confounded", "anticausal"]
    assert {"multi_mnist", "multi_fashion", "multi_fashion_mnist", "movielens", "qm9"} <= set(names)
    assert {"planted_dag", "confounded", "anticausal"} <= set(available_benchmarks())
    assert get_benchmark("planted_dag").has_truth
    with pytest.raises(ValidationError, match="unknown benchmark"):
        get_benchmark("imagenet")
    with pytest.raises(ValidationError, match="already registered"):
        register_benchmark(get_benchmark("planted_dag"))
    bench = load_benchmark("confounded", seed=1, quick=True)
    assert len(bench.train) == 1000


def test_run_bench_records_and_docs(tiny_benchmark, tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nintro kept\n")
    out = tmp_path / "bench"
    res = run_bench(["mmoe"], ["tiny_dag"], seeds=[0, 1], out=out, docs=docs, log=None)
    payload = json.loads((out / "tiny_dag.json").read_text())
    assert payload["benchmark"] == res["tiny_dag"]["benchmark"] == "tiny_dag"
    recs = payload["records"]
    assert {(r["learner"], r["seed"]) for r in recs} == {
        (n, s) for n in ("single_task", "hard_sharing", "mmoe") for s in (0, 1)}
    for r in recs:
        assert r["status"] == "ok" and r["epochs_run"] == 2
        assert set(r["iid"]) >= {"mean", "t0/accuracy"} and "mean" in r["ood"]
    stl = [r for r in recs if r["learner"] == "single_task"]
    assert all(r["delta_m_iid"] == 0.0 and r["delta_m_ood"] == 0.0 for r in stl)
    hs = [r for r in recs if r["learner"] == "hard_sharing"]
    assert all(r["step_ratio"] == 1.0 for r in hs)
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nintro kept\n")
    assert text.count(START) == 1 and text.count(END) == 1
    assert "### tiny_dag" in text and "`mmoe`" in text and "±" in text
    # a second run of one learner and seed merges into the same file
    run_bench(["hard_sharing"], ["tiny_dag"], seeds=[1], out=out, log=None)
    merged = json.loads((out / "tiny_dag.json").read_text())["records"]
    assert len(merged) == 6
    # different settings replace the file
    run_bench(["hard_sharing"], ["tiny_dag"], seeds=[0], out=out, epochs=1, log=None)
    assert len(json.loads((out / "tiny_dag.json").read_text())["records"]) == 2


def test_learner_bench_attributes(tiny_benchmark, tmp_path, monkeypatch):
    from taskgraph.learners.mmoe import MMoE

    monkeypatch.setattr(MMoE, "bench_requires", ("env",), raising=False)
    res = run_bench(["mmoe"], ["tiny_dag"], seeds=[0], out=tmp_path, log=None)
    rec = next(r for r in res["tiny_dag"]["records"] if r["learner"] == "mmoe")
    assert rec["status"] == "skipped" and "env" in rec["reason"]
    assert "skipped (needs env)" in bench_tables(tmp_path)

    monkeypatch.setattr(MMoE, "bench_requires", (), raising=False)
    seen = {}

    def kwargs(spec, bench):
        seen["spec"] = spec.name
        return {"n_experts": 2}

    monkeypatch.setattr(MMoE, "bench_kwargs", staticmethod(kwargs), raising=False)
    res = run_bench(["mmoe"], ["tiny_dag"], seeds=[0], out=tmp_path / "b", log=None)
    assert seen["spec"] == "tiny_dag"
    rec = next(r for r in res["tiny_dag"]["records"] if r["learner"] == "mmoe")
    assert rec["status"] == "ok"


def test_failing_learner_is_recorded_not_raised(tiny_benchmark, tmp_path, monkeypatch):
    from taskgraph.learners.mmoe import MMoE

    monkeypatch.setattr(MMoE, "bench_kwargs", {"n_experts": "many"}, raising=False)
    res = run_bench(["mmoe"], ["tiny_dag"], seeds=[0], out=tmp_path, log=None)
    rec = next(r for r in res["tiny_dag"]["records"] if r["learner"] == "mmoe")
    assert rec["status"] == "failed" and rec["reason"]


def test_run_bench_arguments(tmp_path):
    with pytest.raises(ValidationError, match="learners"):
        run_bench(["nope"], ["planted_dag"], out=tmp_path, log=None)
    with pytest.raises(ValidationError, match="seeds"):
        run_bench(["hard_sharing"], ["planted_dag"], seeds=[], out=tmp_path, log=None)
    with pytest.raises(ValidationError, match="unknown benchmark"):
        run_bench(["hard_sharing"], ["imagenet"], out=tmp_path, log=None)


def test_update_docs_only_touches_the_block(tmp_path):
    doc = tmp_path / "b.md"
    doc.write_text(f"# B\n\nbefore\n\n{START}\nold\n{END}\n\nafter\n")
    update_docs(doc, "new table\n")
    assert doc.read_text() == f"# B\n\nbefore\n\n{START}\nnew table\n{END}\n\nafter\n"
    plain = tmp_path / "c.md"
    plain.write_text("# C\ntext\n")
    update_docs(plain, "t")
    assert plain.read_text() == f"# C\ntext\n\n{START}\nt\n{END}\n"
    assert "No benchmark results" in bench_tables(tmp_path / "none")


def test_cli_bench_list_and_quick(tiny_benchmark, tmp_path, capsys):
    from taskgraph.cli import main

    assert main(["bench", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "tiny_dag" in listed and "planted_dag" in listed and "hard_sharing" in listed
    assert main(["bench", "--quick", "--benchmarks", "tiny_dag", "--learners", "hard_sharing",
                 "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "tiny_dag.json").read_text())
    assert payload["settings"]["quick"] and payload["settings"]["epochs"] == 1
    assert main(["bench", "--benchmarks", "tiny_dag", "--learners", "nope", "--out",
                 str(tmp_path)]) == 2


def test_step_times_interleaves_every_learner():
    from taskgraph.bench import step_times

    bench = tg.datasets.planted_dag(n_tasks=3, n_edges=2, n_samples=300, seed=0, n_test=20)
    learners = {n: tg.learners.create(n, bench.tasks, hidden=8, verbose=False)
                for n in ("hard_sharing", "mmoe")}
    times = step_times(learners, bench.train, steps=3, batch_size=64, warmup=1)
    assert set(times) == {"hard_sharing", "mmoe"} and all(t > 0 for t in times.values())
    assert all(lr.model_ is not None for lr in learners.values())
    with pytest.raises(ValidationError, match="batch_size"):
        step_times(learners, bench.train, steps=1, batch_size=10**6)


def test_step_times_counts_the_expensive_steps_of_an_amortised_schedule():
    """A learner doing 90 ms of extra work every 3rd step costs ~30 ms more per step on average;
    a plain median of step times would report the cheap steps only (the margin leaves room for
    a machine shared with other jobs)."""
    import time as _time

    from taskgraph.bench import step_times

    bench = tg.datasets.planted_dag(n_tasks=3, n_edges=2, n_samples=300, seed=0, n_test=20)
    slow = tg.learners.create("hard_sharing", bench.tasks, hidden=8, verbose=False)
    fast = tg.learners.create("hard_sharing", bench.tasks, hidden=8, verbose=False)
    slow.structure_every = 3
    calls = {"n": 0}
    plain = slow._loss

    def loss(batch, epoch):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            _time.sleep(0.09)
        return plain(batch, epoch)

    slow._loss = loss
    times = step_times({"fast": fast, "slow": slow}, bench.train, steps=4, batch_size=64,
                       warmup=1)
    assert calls["n"] == 9          # steps and warm-up rounded up to whole cycles of 3
    assert times["slow"] - times["fast"] > 0.015
