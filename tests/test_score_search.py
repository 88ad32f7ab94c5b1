"""The hybrid structure search: interventional BIC local scores against hand computation, hill
climbing against brute-force enumeration of DAGs, identified orientations against hand-derived
cases, and the learner option ``structure_search="hybrid"``."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import torch

import taskgraph as tg
from taskgraph import ValidationError
from taskgraph.learners import create, load_learner
from taskgraph.metrics import structure
from taskgraph.structure.score_search import (
    LocalScore,
    hill_climb,
    hybrid_search,
    identified_orientation,
    search_graph,
)


def _sample(n: int, seed: int, kind: str) -> np.ndarray:
    """Binary labels of a 3-node chain a → b → c or collider a → c ← b."""
    rng = np.random.default_rng(seed)
    a = rng.random(n) < 0.5
    if kind == "chain":
        b = rng.random(n) < np.where(a, 0.9, 0.2)
        c = rng.random(n) < np.where(b, 0.85, 0.1)
    else:
        b = rng.random(n) < 0.4
        c = rng.random(n) < np.where(a & b, 0.95, np.where(a | b, 0.5, 0.05))
    return np.stack([a, b, c], axis=1).astype(float)


def test_local_score_is_the_hand_computed_bic():
    y = np.array([[0, 0], [0, 0], [0, 1], [1, 1], [1, 1], [1, 0], [np.nan, 1]])
    score = LocalScore(y, [2, 2])
    # node 1 without parents, 7 rows: counts (3, 4)
    expect = 3 * np.log(3 / 7) + 4 * np.log(4 / 7) - 0.5 * np.log(7) * 1
    assert score(1, frozenset()) == pytest.approx(expect)
    # node 1 given node 0 (row 6 dropped: parent missing): a=0 -> (2, 1), a=1 -> (1, 2)
    ll = 2 * np.log(2 / 3) + np.log(1 / 3) + np.log(1 / 3) + 2 * np.log(2 / 3)
    assert score(1, frozenset({0})) == pytest.approx(ll - 0.5 * np.log(6) * 2)
    # rows with do on node 1 do not enter node 1's term, but do enter node 0's
    do = np.zeros_like(y, dtype=bool)
    do[:3, 1] = True
    s2 = LocalScore(y, [2, 2], do)
    assert s2(1, frozenset()) == pytest.approx(3 * np.log(3 / 4) + np.log(1 / 4)
                                               - 0.5 * np.log(4))
    assert s2(0, frozenset({1})) == score(0, frozenset({1}))
    half = LocalScore(y, [2, 2], penalty=0.5)
    assert half(1, frozenset()) == pytest.approx(expect + 0.25 * np.log(7))


def test_score_equivalence_without_interventions_and_not_with_them():
    y = _sample(3000, 0, "chain")
    s = LocalScore(y, [2, 2, 2])
    fwd, bwd = np.zeros((3, 3), bool), np.zeros((3, 3), bool)
    fwd[0, 1] = fwd[1, 2] = True
    bwd[1, 0] = bwd[2, 1] = True
    assert s.total(fwd) == pytest.approx(s.total(bwd))
    do = np.zeros_like(y, dtype=bool)
    do[:300, 1] = True
    y2 = y.copy()
    y2[:300, 1] = np.random.default_rng(1).random(300) < 0.5     # b set by the intervention
    y2[:300, 2] = np.random.default_rng(2).random(300) < np.where(y2[:300, 1] > 0, 0.85, 0.1)
    s2 = LocalScore(y2, [2, 2, 2], do)
    assert s2.total(fwd) > s2.total(bwd) + 5


def _all_dags(cand: np.ndarray):
    pairs = [(i, j) for i, j in zip(*np.nonzero(np.triu(cand, 1)))]
    for states in itertools.product((0, 1, 2), repeat=len(pairs)):
        dag = np.zeros_like(cand, dtype=bool)
        for (i, j), st in zip(pairs, states):
            if st == 1:
                dag[i, j] = True
            elif st == 2:
                dag[j, i] = True
        if nx.is_directed_acyclic_graph(nx.DiGraph(dag)):
            yield dag


@pytest.mark.parametrize("kind", ["chain", "collider"])
def test_hill_climb_reaches_the_brute_force_optimum(kind):
    y = _sample(4000, 3, kind)
    s = LocalScore(y, [2, 2, 2])
    cand = ~np.eye(3, dtype=bool)
    best = max(s.total(d) for d in _all_dags(cand))
    found = hill_climb(s, cand)
    assert s.total(found) == pytest.approx(best)
    skel = found | found.T
    truth = np.zeros((3, 3), bool)
    truth[[0, 1] if kind == "chain" else [0, 1], [1, 2] if kind == "chain" else [2, 2]] = True
    assert np.array_equal(skel, truth | truth.T)
    if kind == "collider":
        assert np.array_equal(found, truth)     # the v-structure is identified
    with pytest.raises(ValidationError, match="start"):
        hill_climb(s, np.zeros((3, 3), bool), start=truth)


def test_identified_orientation_by_hand():
    chain = np.zeros((3, 3), bool)
    chain[0, 1] = chain[1, 2] = True
    und = identified_orientation(chain)
    assert np.array_equal(und, chain | chain.T)                 # a — b — c
    assert not identified_orientation(chain, np.array([False, True, False])).any()
    only_c = identified_orientation(chain, np.array([False, False, True]))
    assert only_c[0, 1] and only_c[1, 0] and not only_c[1, 2]  # b → c fixed, a — b not
    collider = np.zeros((3, 3), bool)
    collider[0, 2] = collider[1, 2] = True
    assert not identified_orientation(collider).any()           # compelled


@pytest.fixture(scope="module")
def collider_data():
    y = _sample(1500, 5, "collider")
    tasks = tg.TaskSet([tg.Task(n, "binary") for n in "abc"])
    x = np.random.default_rng(0).standard_normal((len(y), 2))
    return tg.MultiTaskData(x, y, tasks)


def test_hybrid_search_and_the_learner_option(collider_data, tmp_path):
    dag, und, info = hybrid_search(collider_data)
    assert dag[0, 2] and dag[1, 2] and dag.sum() == 2 and not und.any()
    assert isinstance(info["score"], float) and info["n_candidates"] == 2
    learner = create("gcnet", collider_data.tasks, structure_search="hybrid", hidden=8,
                     node_dim=8, epochs=2, verbose=False).fit(collider_data)
    g = learner.task_graph_
    assert np.array_equal(g.adjacency != 0, dag) and g.meta["structure_search"] == "hybrid"
    loaded = load_learner(learner.save(tmp_path / "h.pt"))
    assert loaded.task_graph_ == g


def test_hybrid_needs_classification_tasks(collider_data):
    tasks = tg.TaskSet([tg.Task("a", "binary"), tg.Task("b", "binary"),
                        tg.Task("c", "regression")])
    data = tg.MultiTaskData(collider_data.x, collider_data.y, tasks)
    with pytest.raises(ValidationError, match="structure_search"):
        create("gcnet", tasks, structure_search="hybrid", epochs=1, verbose=False).fit(data)
    with pytest.raises(ValidationError, match="structure_search"):
        create("gcnet", tasks, structure_search="bic", epochs=1, verbose=False).fit(data)


def test_hybrid_on_asia_with_interventions():
    """Behaviour on an expert network (bnlearn's asia, shipped in the pgmpy 0.1.26 wheel)."""
    from taskgraph.datasets.bif import bundled_networks

    if "asia" not in bundled_networks():
        pytest.skip("pgmpy 0.1.26's example models are not installed")
    bench = tg.datasets.bayesian_network("asia", n_samples=5000, seed=0,
                                         interventional_fraction=0.1)
    dag, und, _ = hybrid_search(bench.train)
    g = search_graph(dag, und, bench.tasks)
    s = structure(g, bench.true_graph)
    assert s["directed_f1"] >= 0.9 and s["skeleton_f1"] >= 0.9


def test_conditional_bic_prefers_the_truth_and_counts_parent_parameters(collider_data):
    from taskgraph.structure.score_search import conditional_bic

    truth = np.zeros((3, 3), bool)
    truth[0, 2] = truth[1, 2] = True
    wrong = np.zeros((3, 3), bool)
    wrong[2, 0] = wrong[0, 1] = True
    assert conditional_bic(collider_data, truth) < conditional_bic(collider_data, wrong)
    assert conditional_bic(collider_data, truth) < conditional_bic(collider_data,
                                                                   np.zeros((3, 3), bool))
    # the penalty: (r_i - 1)(r_j - 1) log N / 2N per edge; a regression-free 3-task case with
    # an edge whose fit gains nothing (a, b independent) costs exactly that much
    one = np.zeros((3, 3), bool)
    one[0, 1] = True
    n = len(collider_data)
    gap = conditional_bic(collider_data, one) - conditional_bic(collider_data,
                                                                np.zeros((3, 3), bool))
    assert gap == pytest.approx(np.log(n) / (2 * n), abs=2e-3)


def test_auto_structure_search_reports_the_lower_conditional_bic(collider_data):
    from taskgraph.structure.score_search import conditional_bic

    learner = create("gcnet", collider_data.tasks, hidden=8, node_dim=8, epochs=2,
                     validation_fraction=None, verbose=False).fit(collider_data)
    last = learner.history_[-1]
    assert last["structure_search"] in ("sem", "hybrid")
    assert last["feature_direction"] == "none"       # two noise columns: the comparison runs
    chosen = "hybrid" if last["bic_hybrid"] < last["bic_sem"] else "sem"
    assert last["structure_search"] == chosen
    g = learner.task_graph_
    # the hybrid graph marks unorientable edges both ways; its score is that of the found DAG
    dag = learner._hybrid["dag"] if chosen == "hybrid" else g.adjacency != 0
    und = np.zeros_like(dag) if g.undirected is None else g.undirected
    assert np.array_equal(dag | und, g.adjacency != 0) if chosen == "hybrid" else True
    assert conditional_bic(collider_data, dag) == pytest.approx(
        last[f"bic_{chosen}"], rel=1e-6)
    assert (g.meta.get("structure_search") == "hybrid") == (chosen == "hybrid")


def test_auto_keeps_the_sem_graph_when_pc_cannot_run(collider_data):
    """Sparse labels: almost no row has every task labelled, PC cannot run, and the fit ends with
    the SEM's graph and the reason in ``history_`` instead of an error."""
    y = collider_data.y.clone()
    y[:, 0][torch.arange(len(y)) % 2 == 0] = float("nan")
    y[:, 1][torch.arange(len(y)) % 2 == 1] = float("nan")
    data = tg.MultiTaskData(collider_data.x, y, collider_data.tasks)
    learner = create("gcnet", data.tasks, hidden=8, node_dim=8, epochs=1,
                     verbose=False).fit(data)
    last = learner.history_[-1]
    assert last["structure_search"] == "sem" and "complete rows" in last["hybrid_skipped"]
    assert learner.task_graph_.meta.get("structure_search") is None


def test_auto_records_why_it_kept_the_sem_graph_with_a_regression_task(collider_data):
    """A regression task: the hybrid search (discrete scores) is not run, and ``history_`` says
    so instead of the choice passing silently."""
    tasks = tg.TaskSet([*collider_data.tasks, tg.Task("r", "regression")])
    y = torch.cat([collider_data.y, collider_data.x[:, :1]], dim=1)
    data = tg.MultiTaskData(collider_data.x, y, tasks)
    learner = create("gcnet", data.tasks, hidden=8, node_dim=8, epochs=1,
                     verbose=False).fit(data)
    last = learner.history_[-1]
    assert "regression" in last["hybrid_skipped"]
    assert "bic_hybrid" not in last


def _sensor_data(seed: int = 0) -> tg.MultiTaskData:
    """Collider labels seen through two noisy sensor columns each (features downstream)."""
    y = _sample(1500, 5, "collider")
    rng = np.random.default_rng(seed)
    x = np.repeat(y, 2, axis=1) + 0.7 * rng.standard_normal((len(y), 6))
    return tg.MultiTaskData(x, y, tg.TaskSet([tg.Task(n, "binary") for n in "abc"]))


def test_feature_direction_tells_causes_sensors_and_noise_apart():
    from taskgraph.structure.score_search import feature_direction

    rng = np.random.default_rng(1)
    n = 3000
    tasks = tg.TaskSet([tg.Task(n_, "binary") for n_ in "ab"])
    # causes: independent columns, each label a function of three of them (a collider per pair)
    x = rng.standard_normal((n, 6))
    logits = np.stack([x[:, :3].sum(1), x[:, 3:].sum(1)], axis=1) * 2.0
    y = (rng.random((n, 2)) < 1 / (1 + np.exp(-logits))).astype(float)
    up = feature_direction(tg.MultiTaskData(x, y, tasks))
    assert up["verdict"] == "upstream" and up["upstream_pairs"] >= 6 and up["pairs"] == 15
    down = feature_direction(_sensor_data())
    assert down["verdict"] == "downstream" and down["upstream_pairs"] == 0
    # the two columns of each sensor, and the sensors of the dependent labels, are explained
    assert down["downstream_pairs"] >= 3
    noise = feature_direction(tg.MultiTaskData(rng.standard_normal((n, 6)), y, tasks))
    assert noise["verdict"] == "none"
    # rows with a missing label are left out; a single column cannot be judged
    y_missing = y.copy()
    y_missing[:100, 0] = np.nan
    assert feature_direction(tg.MultiTaskData(x, y_missing, tasks))["rows"] == n - 100
    assert feature_direction(tg.MultiTaskData(x[:, :1], y, tasks))["verdict"] == "none"


def test_auto_takes_the_hybrid_dag_when_the_features_are_sensors():
    """Sensor features: the labels' own distribution carries the graph, so ``auto`` reports the
    hybrid search's DAG without the comparison given ``x`` (which would condition on the
    labels' descendants), and says why in ``history_``."""
    data = _sensor_data()
    learner = create("gcnet", data.tasks, hidden=8, node_dim=8, epochs=2,
                     validation_fraction=None, verbose=False).fit(data)
    last = learner.history_[-1]
    assert last["structure_search"] == "hybrid" and last["feature_direction"] == "downstream"
    assert "bic_sem" not in last
    dag = learner.task_graph_.adjacency != 0
    assert dag[0, 2] and dag[1, 2] and dag.sum() == 2
    assert learner.task_graph_.meta["hybrid_feature_direction"] == "downstream"


def test_a_saved_learner_keeps_the_undirected_marks(tmp_path):
    """A chain a → b → c has no compelled edge: the hybrid graph marks both edges undirected,
    and a saved learner gives them back (the checkpoint once dropped the marks)."""
    y = _sample(1500, 3, "chain")
    data = tg.MultiTaskData(np.random.default_rng(0).standard_normal((len(y), 2)), y,
                            tg.TaskSet([tg.Task(n, "binary") for n in "abc"]))
    learner = create("gcnet", data.tasks, structure_search="hybrid", hidden=8, node_dim=8,
                     epochs=1, verbose=False).fit(data)
    g = learner.task_graph_
    assert g.n_undirected == 2
    loaded = load_learner(learner.save(tmp_path / "u.pt"))
    assert loaded.task_graph_ == g and loaded.task_graph_.n_undirected == 2


def test_bootstrap_exports_edge_confidence_on_the_hybrid_graph(collider_data, tmp_path):
    """``bootstrap=B``: the reported hybrid graph carries each entry's frequency over B row
    resamples (exactly ``bootstrap_confidence`` with the learner's seed), kept by save/load."""
    from taskgraph.structure.bootstrap import bootstrap_confidence

    learner = create("gcnet", collider_data.tasks, structure_search="hybrid", bootstrap=3,
                     hidden=8, node_dim=8, epochs=1, validation_fraction=None,
                     verbose=False).fit(collider_data)
    conf = learner.task_graph_.confidence
    assert conf is not None and conf.shape == (3, 3)
    ref = bootstrap_confidence(collider_data, n_boot=3, seed=learner.seed)
    assert np.array_equal(conf, ref)
    assert conf[0, 2] == 1.0 and conf[1, 2] == 1.0      # the collider's edges, every resample
    loaded = load_learner(learner.save(tmp_path / "b.pt"))
    assert np.array_equal(loaded.task_graph_.confidence, conf)
    with pytest.raises(ValidationError, match="bootstrap"):
        create("gcnet", collider_data.tasks, bootstrap=-1, epochs=1,
               verbose=False).fit(collider_data)
