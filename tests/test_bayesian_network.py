"""The BIF reader and the Bayesian-network benchmark (taskgraph.datasets.bayesian_network).

A hand-written network checks parsing, sampling frequencies, interventions, environments and the
errors of malformed files; bnlearn's networks bundled with pgmpy 0.1.26 (read by path, skipped
when the wheel is absent) check node and arc counts and asia's marginals against enumeration.
"""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest

import taskgraph.datasets._files as _files
from taskgraph.datasets import BayesianNetwork, bayesian_network, read_bif
from taskgraph.datasets._files import DataFileError
from taskgraph.datasets.bif import _missing_pgmpy
from taskgraph.datasets.registry import available_benchmarks, get_benchmark, list_benchmarks
from taskgraph.exceptions import MissingDependencyError, ValidationError

TINY = """\
// a small network: A -> B, A -> C, B -> C
network tiny {
  property author = "someone";
}
variable A { type discrete [ 2 ] { a0, a1 }; }
variable B {
  type discrete[3]{b0,b1,b2};
  property position = (10, 20);
}
variable C {
  type discrete [ 2 ] { c0 , c1 } ;
}
/* a block comment
   over two lines */
probability ( A ) {
  table 0.3, 0.7;
}
probability ( B | A ) {
  (a0) 0.5, 0.25, 0.25;
  (a1) 0.1, 0.2, 0.7;
}
probability(C|A,B){
  (a1, b0) 0.9, 0.1;
  (a0, b0) 0.2, 0.8;
  (a0,b1) 0.6,0.4;
  (a1, b1) 0.3, 0.7;
  default 0.5, 0.5;
}
"""
P_A = np.array([0.3, 0.7])
P_B_A = np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]])
P_C_AB = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5], [0.9, 0.1], [0.3, 0.7], [0.5, 0.5]])

ASIA_NEEDS = pytest.mark.skipif(_missing_pgmpy() is not None,
                                reason="bnlearn's BIF files come from pgmpy's wheel, not "
                                       "installed: pip install --no-deps pgmpy==0.1.26")


@pytest.fixture
def tiny_path(tmp_path):
    path = tmp_path / "tiny.bif"
    path.write_text(TINY)
    return path


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _joint_tiny() -> np.ndarray:
    """P(A, B, C) of TINY by enumeration ``[2, 3, 2]``."""
    return P_A[:, None, None] * P_B_A[:, :, None] * P_C_AB.reshape(2, 3, 2)


# ---------------------------------------------------------------------------- parsing
def test_parse_tiny_exact(tiny_path):
    net = read_bif(tiny_path)
    assert net.name == "tiny" and net.nodes == ["A", "B", "C"]
    assert net.states == [["a0", "a1"], ["b0", "b1", "b2"], ["c0", "c1"]]
    assert net.parents == [[], [0], [0, 1]] and net.n_arcs == 3
    np.testing.assert_array_equal(net.cpts[0], P_A[None, :])
    np.testing.assert_array_equal(net.cpts[1], P_B_A)
    np.testing.assert_array_equal(net.cpts[2], P_C_AB)  # rows out of order + default filled
    np.testing.assert_array_equal(net.adjacency, [[0, 1, 1], [0, 0, 1], [0, 0, 0]])
    assert net.topological_order() == [0, 1, 2] and net.roots == [0]


def test_parse_gz_and_str_path(tmp_path):
    gz = tmp_path / "tiny.bif.gz"
    gz.write_bytes(gzip.compress(TINY.encode()))
    a, b = read_bif(gz), read_bif(str(gz))
    assert a.nodes == b.nodes == ["A", "B", "C"]
    for x, y in zip(a.cpts, b.cpts):
        np.testing.assert_array_equal(x, y)


def test_network_name_from_file_when_unknown(tmp_path):
    path = tmp_path / "mynet.bif"
    path.write_text(TINY.replace("network tiny", "network unknown"))
    assert read_bif(path).name == "mynet"


BAD = [  # (what to replace, replacement, line containing, message fragment)
    ("table 0.3, 0.7;", "table 0.3, x7;", "table 0.3, x7", "bad token 'x7'"),
    ("(a0) 0.5, 0.25, 0.25;", "(a0) 0.5, 0.25, 0.25", "(a1) 0.1", "bad token '\\('"),
    ("(a0) 0.5, 0.25, 0.25;", "(a0) 0.5, 0.25, 0.3;", "(a0) 0.5, 0.25, 0.3", "sums to 1.05"),
    ("(a1) 0.1, 0.2, 0.7;", "(a1) 0.3, 0.7;", "(a1) 0.3, 0.7", "wrong row length"),
    ("probability ( B | A ) {", "probability ( B | Z ) {", "probability ( B | Z )",
     "unknown parent 'Z'"),
    ("(a1) 0.1, 0.2, 0.7;", "(a2) 0.1, 0.2, 0.7;", "(a2) 0.1", "unknown state 'a2'"),
    ("(a1) 0.1, 0.2, 0.7;", "(a0) 0.1, 0.2, 0.7;", "(a0) 0.1", "duplicate row"),
    ("  default 0.5, 0.5;\n", "", "probability(C|A,B)", "missing rows: 2 of 6"),
    ("probability ( A ) {\n  table 0.3, 0.7;",
     "probability ( A | C ) {\n  (c0) 0.3, 0.7;\n  (c1) 0.3, 0.7;", "probability ( A | C )",
     "cycle"),
    ("table 0.3, 0.7;", "table -0.3, 1.3;", "table -0.3", "negative probability"),
    ("over two lines */", "never closed", "/* a block comment", "unterminated /\\* comment"),
    ("variable A {", "variable A { type discrete [ 2 ] { a0, a1 }; }\nvariable A {",
     "variable A {", "declared twice"),
    ("probability ( A ) {\n  table 0.3, 0.7;\n}\n", "", "variable A {",
     "no probability block"),
    ("type discrete [ 2 ] { c0 , c1 } ;", "type discrete [ 3 ] { c0 , c1 } ;",
     "discrete [ 3 ]", "declares 3 states"),
]


@pytest.mark.parametrize("old,new,at,message", BAD)
def test_malformed_file_names_the_line(tmp_path, old, new, at, message):
    assert old in TINY
    text = TINY.replace(old, new, 1)
    path = tmp_path / "bad.bif"
    path.write_text(text)
    # the duplicate-declaration case: the second 'variable A {' is the offending line
    line = _line(text, at) + (1 if message == "declared twice" else 0)
    with pytest.raises(DataFileError, match=message) as info:
        read_bif(path)
    assert f"{path}: line {line}:" in str(info.value)
    assert isinstance(info.value, OSError)


def test_missing_file_and_bad_argument(tmp_path):
    with pytest.raises(DataFileError, match="no such file"):
        read_bif(tmp_path / "nope.bif")
    with pytest.raises(ValidationError, match="name_or_path"):
        read_bif(3)  # type: ignore[arg-type]
    path = tmp_path / "broken.bif.gz"
    path.write_bytes(gzip.compress(TINY.encode())[:30])
    with pytest.raises(DataFileError, match="cannot read"):
        read_bif(path)


# ---------------------------------------------------------------------------- sampling
def test_sampling_frequencies_match_hand_computation(tiny_path):
    net = read_bif(tiny_path)
    y = net.sample(200_000, seed=1)
    joint = _joint_tiny()
    # P(B) = 0.3 [0.5, 0.25, 0.25] + 0.7 [0.1, 0.2, 0.7] = [0.22, 0.215, 0.565]
    np.testing.assert_allclose(joint.sum((0, 2)), [0.22, 0.215, 0.565])
    # P(C = c0) = 0.3 (0.1 + 0.15 + 0.125) + 0.7 (0.09 + 0.06 + 0.35) = 0.4625
    assert joint[..., 0].sum() == pytest.approx(0.4625)
    freq = np.zeros((2, 3, 2))
    np.add.at(freq, (y[:, 0], y[:, 1], y[:, 2]), 1.0)
    np.testing.assert_allclose(freq / len(y), joint, atol=0.005)


def test_benchmark_structure_and_tasks(tiny_path):
    bench = bayesian_network(tiny_path, n_samples=400, seed=0, n_test=100)
    assert [t.kind for t in bench.tasks] == ["binary", "multiclass", "binary"]
    assert bench.tasks["B"].n_classes == 3
    assert bench.info["states"]["B"] == ["b0", "b1", "b2"]
    np.testing.assert_array_equal(bench.true_graph.adjacency != 0, read_bif(tiny_path).adjacency)
    assert not bench.true_graph.learned
    # a complete DAG on 3 nodes: every edge reversible
    np.testing.assert_array_equal(bench.info["cpdag"], [[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    assert (len(bench.train), len(bench.val), len(bench.test_iid), len(bench.test_ood)) == (
        400, 80, 100, 100)
    assert bench.train.do is None and bench.train.env is None
    y = bench.train.y.numpy()
    assert set(np.unique(y[:, 1])) <= {0.0, 1.0, 2.0}


def test_determinism_by_seed(tiny_path):
    a = bayesian_network(tiny_path, n_samples=300, seed=3, interventional_fraction=0.2,
                         n_environments=2, n_test=50)
    b = bayesian_network(tiny_path, n_samples=300, seed=3, interventional_fraction=0.2,
                         n_environments=2, n_test=50)
    c = bayesian_network(tiny_path, n_samples=300, seed=4, interventional_fraction=0.2,
                         n_environments=2, n_test=50)
    for name, split in a.splits.items():
        other = b.splits[name]
        assert split.x.equal(other.x) and split.y.equal(other.y)
    assert a.train.do.equal(b.train.do) and a.train.env.equal(b.train.env)
    assert not a.train.y.equal(c.train.y)


def test_interventional_rows(tiny_path):
    n = 120_000
    bench = bayesian_network(tiny_path, n_samples=n, seed=0, interventional_fraction=1.0,
                             features="noise", n_features=1, n_test=10)
    y, do = bench.train.y.numpy().astype(int), bench.train.do.numpy()
    assert do.sum(axis=1).tolist() == [1] * n  # every row: exactly one node intervened
    rows_b = do[:, 1]
    assert abs(rows_b.mean() - 1 / 3) < 0.01
    yb = y[rows_b]
    # do(B): B uniform, its parent A keeps P(A), the child C follows P(C | A, do(B))
    np.testing.assert_allclose(np.bincount(yb[:, 1], minlength=3) / len(yb), [1 / 3] * 3,
                               atol=0.01)
    assert yb[:, 0].mean() == pytest.approx(0.7, abs=0.01)
    p_c0 = (P_A[:, None] * P_C_AB.reshape(2, 3, 2)[..., 0]).sum(0)  # P(c0 | do(B = b))
    for b in range(3):
        sel = yb[:, 1] == b
        assert (yb[sel, 2] == 0).mean() == pytest.approx(p_c0[b], abs=0.02)
    # do(A): A uniform and B follows P(B | A)
    ya = y[do[:, 0]]
    assert ya[:, 0].mean() == pytest.approx(0.5, abs=0.01)
    for a in range(2):
        sel = ya[:, 0] == a
        np.testing.assert_allclose(np.bincount(ya[sel, 1], minlength=3) / sel.sum(), P_B_A[a],
                                   atol=0.02)
    assert bench.val.do is None and bench.test_iid.do is None


def test_interventional_fraction_counts(tiny_path):
    bench = bayesian_network(tiny_path, n_samples=1000, seed=0, interventional_fraction=0.1,
                             n_test=10)
    assert int(bench.train.do.sum()) == 100


def test_feature_modes(tiny_path):
    kw = dict(n_samples=200, seed=0, n_test=20)
    noise = bayesian_network(tiny_path, features="noise", **kw)
    assert noise.train.x.shape == (200, 10) and noise.info["feature_columns"] == {}
    assert bayesian_network(tiny_path, features="noise", n_features=4, **kw).n_features == 4
    sensor = bayesian_network(tiny_path, features="sensor", **kw)
    assert sensor.train.x.shape == (200, 6)
    assert sensor.info["feature_columns"] == {"A": [0, 1], "B": [2, 3], "C": [4, 5]}
    roots = bayesian_network(tiny_path, features="roots", n_features=3, **kw)
    assert roots.train.x.shape == (200, 5)
    assert roots.info["feature_columns"] == {"A": [0, 1]}
    assert roots.info["noise_columns"] == [2, 3, 4]
    wide = bayesian_network(tiny_path, features="sensor", sensor_dim=3, **kw)
    assert wide.train.x.shape == (200, 9)
    # noiseless sensors read back each task's state point exactly
    exact = bayesian_network(tiny_path, features="sensor", sensor_noise=0.0, **kw)
    x, y = exact.train.x.numpy(), exact.train.y.numpy().astype(int)
    for j, name in enumerate(["A", "B", "C"]):
        pts = exact.info["sensor_points"][name].astype(np.float32)
        np.testing.assert_allclose(x[:, 2 * j:2 * j + 2], pts[y[:, j]], rtol=1e-6)
    # the sensors do not depend on n_samples
    other = bayesian_network(tiny_path, features="sensor", sensor_noise=0.0, n_samples=50,
                             seed=0, n_test=20)
    np.testing.assert_array_equal(other.info["sensor_points"]["B"],
                                  exact.info["sensor_points"]["B"])


def test_environments_shift_cpts(tiny_path):
    n = 60_000
    bench = bayesian_network(tiny_path, n_samples=n, seed=2, n_environments=3, n_shifted=3,
                             n_test=30_000, features="noise", n_features=1)
    env = bench.train.env.numpy()
    assert np.bincount(env).tolist() == [n // 3] * 3
    assert bench.val.env is not None and bench.test_iid.env is None
    assert bench.info["shifted_nodes"] == [[], ["A", "B", "C"], ["A", "B", "C"]]
    y = bench.train.y.numpy().astype(int)
    for e in range(3):
        p_a1 = P_A[1] if e == 0 else bench.info["env_cpts"][e]["A"][0, 1]
        assert y[env == e, 0].mean() == pytest.approx(p_a1, abs=0.015)
    ood = bench.test_ood.y.numpy().astype(int)
    assert ood[:, 0].mean() == pytest.approx(bench.info["ood_cpts"]["A"][0, 1], abs=0.015)
    # one environment: test_ood alone is shifted (default n_shifted = max(1, round(T / 5)))
    one = bayesian_network(tiny_path, n_samples=100, seed=0, n_test=20)
    assert one.info["shifted_nodes"] == [[]] and len(one.info["ood_shifted_nodes"]) == 1


def test_argument_errors(tiny_path):
    with pytest.raises(ValidationError, match="features"):
        bayesian_network(tiny_path, features="pixels")
    with pytest.raises(ValidationError, match="n_shifted"):
        bayesian_network(tiny_path, n_shifted=4)
    with pytest.raises(ValidationError, match="interventional_fraction"):
        bayesian_network(tiny_path, interventional_fraction=1.5)
    with pytest.raises(ValidationError, match="n_environments"):
        bayesian_network(tiny_path, n_environments=0)
    with pytest.raises(ValidationError, match="n_features"):
        bayesian_network(tiny_path, features="noise", n_features=0)


def test_missing_pgmpy(monkeypatch):
    real = _files.package_dir
    monkeypatch.setattr(_files, "package_dir", lambda p: None if p == "pgmpy" else real(p))
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps pgmpy==0\.1\.26"):
        bayesian_network("asia")
    assert "bn_asia" in list_benchmarks() and "bn_asia" not in available_benchmarks()
    assert "pgmpy==0.1.26" in get_benchmark("bn_alarm").unavailable()


# ---------------------------------------------------------------------------- bnlearn's networks
@ASIA_NEEDS
@pytest.mark.parametrize("name,nodes,arcs", [("asia", 8, 8), ("sachs", 11, 17),
                                             ("child", 20, 25), ("insurance", 27, 52),
                                             ("alarm", 37, 46)])
def test_bundled_counts_and_cpts(name, nodes, arcs):
    net = read_bif(name)
    assert (net.n_nodes, net.n_arcs) == (nodes, arcs)
    assert int(net.adjacency.sum()) == arcs
    cards = net.cardinalities
    for j, cpt in enumerate(net.cpts):
        assert cpt.shape == (int(np.prod(cards[net.parents[j]])), cards[j])
        np.testing.assert_allclose(cpt.sum(axis=1), 1.0, atol=1e-12)
        assert (cpt >= 0).all()


@ASIA_NEEDS
def test_unknown_bundled_name():
    with pytest.raises(ValidationError, match="no bundled network 'nosuchnet'"):
        read_bif("nosuchnet")


@ASIA_NEEDS
def test_asia_marginals_match_enumeration():
    net = read_bif("asia")
    assert isinstance(net, BayesianNetwork) and set(net.cardinalities) == {2}
    t = net.n_nodes
    marginals = np.zeros((t, 2))
    for config in itertools.product((0, 1), repeat=t):  # 256 configurations
        p = 1.0
        for j in range(t):
            pa = net.parents[j]
            c = int(np.ravel_multi_index(tuple(config[q] for q in pa), (2,) * len(pa))) if pa else 0
            p *= net.cpts[j][c, config[j]]
        marginals[np.arange(t), config] += p
    np.testing.assert_allclose(marginals.sum(axis=1), 1.0)
    bench = bayesian_network("asia", n_samples=100_000, seed=0, n_test=10,
                             features="noise", n_features=1)
    y = bench.train.y.numpy()
    np.testing.assert_allclose(y.mean(axis=0), marginals[:, 1], atol=0.008)
    # the CPDAG: asia—tub, smoke—lung, smoke—bronc reversible; the rest compelled
    cpdag, names = bench.info["cpdag"], bench.tasks.names
    und = {frozenset((names[i], names[j])) for i, j in zip(*np.nonzero(cpdag & cpdag.T))}
    assert und == {frozenset(p) for p in [("asia", "tub"), ("smoke", "lung"),
                                          ("smoke", "bronc")]}
    assert cpdag[names.index("either"), names.index("xray")] == 1
    assert cpdag[names.index("xray"), names.index("either")] == 0


@ASIA_NEEDS
def test_registered_benchmarks_quick():
    assert {f"bn_{n}" for n in ("asia", "sachs", "child", "insurance", "alarm")} <= set(
        available_benchmarks())
    spec = get_benchmark("bn_alarm")
    assert spec.has_truth and spec.unavailable() is None
    bench = spec.build(0, True)
    assert len(bench.train) == 500 and len(bench.tasks) == 37
    assert int(bench.true_graph.adjacency.astype(bool).sum()) == 46

