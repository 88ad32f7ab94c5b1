r"""Expert Bayesian networks (bnlearn's BIF files) as multi-task benchmarks with a known DAG.

The reader (:func:`read_bif`, :func:`bundled_networks`, :class:`BayesianNetwork`) lives in
:mod:`taskgraph.datasets.bif` and is re-exported here.

:func:`bayesian_network` forward-samples such a network (vectorised, one pass over the nodes in
topological order) into a :class:`~taskgraph.datasets.Benchmark` where every node is a task
(binary with 2 states, multiclass otherwise; label ``s`` = the node's ``s``-th state), with
features, interventional rows and environments on top, and the true DAG and its CPDAG recorded.

Bundled networks are read **by path** from the files inside the ``pgmpy==0.1.26`` wheel
(``pgmpy/utils/example_models/<name>.bif.gz``); pgmpy's code is never imported, so its
dependencies are not needed: ``pip install --no-deps pgmpy==0.1.26`` (2 MB).
"""

from __future__ import annotations

import os

import numpy as np

from taskgraph.data import MultiTaskData
from taskgraph.datasets.benchmark import (
    Benchmark,
    _check_float,
    _check_int,
    _check_seed,
    _split_sizes,
    _streams,
)
from taskgraph.datasets.bif import (
    BENCHMARK_NETWORKS,
    BIF_INSTALL,
    BayesianNetwork,
    _forward_sample,
    bundled_networks,
    read_bif,
)
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.metrics import cpdag
from taskgraph.tasks import Task, TaskSet

__all__ = [
    "BayesianNetwork",
    "read_bif",
    "bundled_networks",
    "bayesian_network",
    "BIF_INSTALL",
    "FEATURE_MODES",
    "BENCHMARK_NETWORKS",
]

FEATURE_MODES = ("noise", "sensor", "roots")

# ---------------------------------------------------------------------------- sampling
def _shifted_cpts(rng: np.random.Generator, net: BayesianNetwork, n_shifted: int,
                  concentration: float) -> tuple[list[np.ndarray], list[int]]:
    """A copy of the CPTs where ``n_shifted`` random nodes get every row redrawn from a
    symmetric Dirichlet(``concentration``)."""
    chosen = sorted(int(j) for j in rng.choice(net.n_nodes, size=n_shifted, replace=False))
    cpts = [c.copy() for c in net.cpts]
    for j in chosen:
        shape = cpts[j].shape
        cpts[j] = rng.dirichlet(np.full(shape[1], concentration), size=shape[0])
    return cpts, chosen


# ---------------------------------------------------------------------------- features
def _features(rng: np.random.Generator, y: np.ndarray, mode: str, sensed: list[int],
              points: list[np.ndarray], noise: float, n_extra: int) -> np.ndarray:
    n = y.shape[0]
    if mode == "noise":
        return rng.standard_normal((n, n_extra))
    dim = points[0].shape[1] if points else 0
    blocks = [points[k][y[:, j]] for k, j in enumerate(sensed)]
    signal = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))
    jitter = rng.standard_normal((n, len(sensed) * dim)) * noise
    return np.concatenate([signal + jitter, rng.standard_normal((n, n_extra))], axis=1)


# ---------------------------------------------------------------------------- the benchmark
def bayesian_network(
    name_or_path: str | os.PathLike | BayesianNetwork,
    n_samples: int = 5000,
    seed: int = 0,
    *,
    features: str = "sensor",
    n_features: int | None = None,
    sensor_noise: float = 1.0,
    sensor_dim: int = 2,
    interventional_fraction: float = 0.0,
    n_environments: int = 1,
    n_shifted: int | None = None,
    shift_concentration: float = 1.0,
    val_fraction: float = 0.2,
    n_test: int = 2000,
) -> Benchmark:
    r"""A Bayesian network (bnlearn's BIF) forward-sampled into a multi-task benchmark.

    Every node is a task: ``binary`` with 2 states, ``multiclass`` otherwise; the label is the
    state's index in the ``variable`` block (``info["states"]`` names them). Rows are drawn by
    vectorised forward sampling in topological order (per node: the parents' mixed-radix
    configuration indexes the CPT, and the state is the inverse CDF of one uniform draw).

    **Features** (``features``):

    - ``"noise"``: ``x`` is ``n_features`` (default 10) columns of pure
      :math:`\mathcal{N}(0, 1)` noise: every signal is in the labels.
    - ``"sensor"`` (default): each task ``j`` gets a noisy ``sensor_dim``-dimensional (default 2)
      sensor of its own state: a fixed random point :math:`m_{j,s} \sim \mathcal{N}(0, I)` per
      state ``s`` plus :math:`\mathcal{N}(0, \text{sensor\_noise}^2 I)` noise; columns
      ``[2j, 2j + 2)`` (``info["feature_columns"]``). With ``n_features`` given, that many
      pure-noise columns are appended.
    - ``"roots"``: the same sensors for the root causes (nodes without parents) only, so every
      other task must be inferred through the graph.

    **Interventions.** A fraction ``interventional_fraction`` of the training rows each get
    :math:`do(X_k = s)` for one uniformly chosen node ``k`` and a uniformly chosen state ``s``;
    the node's descendants respond, its parents do not, and ``train.do[row, k]`` is ``True``
    (``planted_dag``'s convention). Validation and test rows are observational.

    **Environments.** With ``n_environments`` = ``E`` > 1 the training, validation and
    ``test_iid`` rows are split evenly over environments ``0 .. E-1`` (``train.env`` and
    ``val.env`` set; the test splits carry no ``env``). Environment 0 uses the file's CPTs; in
    each environment ``e > 0`` the CPTs of ``n_shifted`` randomly chosen nodes (default
    :math:`\max(1, \operatorname{round}(T/5))`) have every row redrawn from a symmetric
    Dirichlet(``shift_concentration``); the graph is the same in all of them. ``test_ood`` is
    drawn from one more, unseen environment (index ``E``) shifted the same way: with the
    default ``E = 1`` it is the file's network with ``n_shifted`` CPTs redrawn.

    Args:
        name_or_path (str, path or BayesianNetwork): a ``.bif`` / ``.bif.gz`` path, a network
            bundled with pgmpy 0.1.26 (``"asia"``, ``"sachs"``, ``"child"``, ``"insurance"``,
            ``"alarm"``, ...: :func:`bundled_networks`), or a parsed network.
        n_samples (int): training rows (>= 1).
        seed (int): non-negative seed; same arguments and seed → identical benchmark. The
            sensors and the shifted CPTs do not depend on ``n_samples``.
        features (str): ``"noise"``, ``"sensor"`` or ``"roots"``.
        n_features (int, optional): ``"noise"``: the number of columns (default 10, >= 1);
            sensor modes: extra pure-noise columns (default 0).
        sensor_noise (float): standard deviation of the sensor noise (>= 0; the state points
            have unit variance).
        sensor_dim (int): dimensions of each sensor (>= 1).
        interventional_fraction (float): fraction in ``[0, 1]`` of training rows with one
            intervened node.
        n_environments (int): training environments ``E`` (>= 1).
        n_shifted (int, optional): nodes whose CPTs are redrawn per shifted environment
            (``0 .. T``).
        shift_concentration (float): Dirichlet concentration of the redrawn rows (> 0; 1 =
            uniform over the simplex, larger = closer to uniform rows).
        val_fraction (float): validation rows as a fraction of ``n_samples`` (> 0).
        n_test (int): rows of each of ``test_iid`` and ``test_ood``.

    Returns:
        Benchmark: ``name="bayesian_network"``; ``true_graph`` is the network's DAG (weights
        0/1, ``learned=False``, ``meta`` with ``benchmark``, ``network``, ``seed``). ``info``
        keys: ``"network"`` (name), ``"source"`` (file), ``"states"`` (task → state names, the
        class names), ``"parents"`` (task → parent names), ``"cpts"`` (task → ``[C, K]`` CPT
        of environment 0, configuration order of :class:`BayesianNetwork`), ``"order"``
        (topological order, task indices), ``"cpdag"`` (``[T, T]`` 0/1: a compelled edge
        ``i → j`` has ``[i, j] = 1`` only, a reversible one ``[i, j] = [j, i] = 1``),
        ``"n_arcs"``, ``"features"``, ``"feature_columns"`` (task → its sensor columns; empty
        for ``"noise"``), ``"sensor_points"`` (task → ``[K, sensor_dim]``), ``"sensor_noise"``,
        ``"noise_columns"``, ``"interventional_fraction"``, ``"n_environments"``,
        ``"shifted_nodes"`` (per training environment, the names of the redrawn nodes; ``[]``
        for environment 0), ``"env_cpts"`` (per environment, name → redrawn CPT),
        ``"ood_shifted_nodes"``, ``"ood_cpts"``, ``"shift_concentration"``, ``"seed"``.

    Raises:
        MissingDependencyError: a bundled name without pgmpy's wheel (the message gives
            :data:`BIF_INSTALL`).
        DataFileError: a missing or malformed file (the message names the file and line).
        ValidationError: an invalid argument (the message names it).

    Example:
        >>> bench = bayesian_network("asia", n_samples=5000, seed=0)  # doctest: +SKIP
        >>> bench.tasks.names[:3], int(bench.true_graph.adjacency.sum())  # doctest: +SKIP
        (['asia', 'tub', 'smoke'], 8)
    """
    net = name_or_path if isinstance(name_or_path, BayesianNetwork) else read_bif(name_or_path)
    n_samples = _check_int("n_samples", n_samples, 1)
    seed = _check_seed(seed)
    if features not in FEATURE_MODES:
        raise ValidationError(f"features: expected one of {list(FEATURE_MODES)}, got "
                              f"{features!r}")
    if n_features is None:
        n_extra = 10 if features == "noise" else 0
    else:
        n_extra = _check_int("n_features", n_features, 1 if features == "noise" else 0)
    sensor_noise = _check_float("sensor_noise", sensor_noise, 0.0)
    sensor_dim = _check_int("sensor_dim", sensor_dim, 1)
    interventional_fraction = _check_float("interventional_fraction", interventional_fraction,
                                           0.0, 1.0)
    n_envs = _check_int("n_environments", n_environments, 1)
    t = net.n_nodes
    if n_shifted is None:
        n_shifted = max(1, round(t / 5))
    n_shifted = _check_int("n_shifted", n_shifted, 0)
    if n_shifted > t:
        raise ValidationError(f"n_shifted: the network has {t} nodes, got {n_shifted}")
    shift_concentration = _check_float("shift_concentration", shift_concentration, 0.0,
                                       low_open=True)
    val_fraction = _check_float("val_fraction", val_fraction, 0.0, low_open=True)
    n_test = _check_int("n_test", n_test, 1)
    n_val, n_test = _split_sizes(n_samples, val_fraction, n_test)
    cards = net.cardinalities
    single = [net.nodes[j] for j in range(t) if cards[j] < 2]
    if single:
        raise ValidationError(f"name_or_path: nodes {single} have a single state; a task needs "
                              "at least 2")

    g_sensor, g_env, g_train, g_val, g_iid, g_ood = _streams(seed, 6)
    sensed = {"noise": [], "sensor": list(range(t)), "roots": net.roots}[features]
    points = [g_sensor.standard_normal((int(cards[j]), sensor_dim)) for j in range(t)]
    sensed_points = [points[j] for j in sensed]
    env_sets: list[list[np.ndarray]] = [list(net.cpts)]
    shifted: list[list[int]] = [[]]
    for _ in range(1, n_envs):
        cpts, chosen = _shifted_cpts(g_env, net, n_shifted, shift_concentration)
        env_sets.append(cpts)
        shifted.append(chosen)
    ood_cpts, ood_chosen = _shifted_cpts(g_env, net, n_shifted, shift_concentration)

    names = list(net.nodes)
    tasks = TaskSet([Task(nm, "binary") if cards[j] == 2 else Task(nm, "multiclass",
                                                                   int(cards[j]))
                     for j, nm in enumerate(names)])

    def envs_of(n: int, k: int) -> np.ndarray:
        return np.repeat(np.arange(k), [n // k + (e < n % k) for e in range(k)])

    def make(rng: np.random.Generator, n: int, sets: list[list[np.ndarray]], frac: float,
             with_env: bool) -> MultiTaskData:
        env = envs_of(n, len(sets))
        u = rng.random((n, t))
        n_do = int(round(frac * n))
        do_rows = rng.permutation(n)[:n_do]
        do_nodes = rng.integers(0, t, size=n_do)
        do_u = rng.random(n_do)
        do = np.zeros((n, t), dtype=bool)
        do_state = np.zeros((n, t), dtype=np.int64)
        do[do_rows, do_nodes] = True
        do_state[do_rows, do_nodes] = np.floor(do_u * cards[do_nodes]).astype(np.int64)
        y = _forward_sample(net, sets, env, u, do, do_state)
        x = _features(rng, y, features, sensed, sensed_points, sensor_noise, n_extra)
        return MultiTaskData(x.astype(np.float32), y.astype(np.float32), tasks,
                             env=env if with_env else None, do=do if frac > 0 else None)

    train = make(g_train, n_samples, env_sets, interventional_fraction, n_envs > 1)
    val = make(g_val, n_val, env_sets, 0.0, n_envs > 1)
    test_iid = make(g_iid, n_test, env_sets, 0.0, False)
    test_ood = make(g_ood, n_test, [ood_cpts], 0.0, False)

    adjacency = net.adjacency
    true_graph = TaskGraph(adjacency.astype(np.float64), tasks, learned=False,
                           meta={"benchmark": "bayesian_network", "network": net.name,
                                 "seed": seed})
    dim = sensor_dim
    info = {
        "network": net.name,
        "source": net.source,
        "states": {nm: list(net.states[j]) for j, nm in enumerate(names)},
        "parents": {nm: [names[p] for p in net.parents[j]] for j, nm in enumerate(names)},
        "cpts": {nm: net.cpts[j].copy() for j, nm in enumerate(names)},
        "order": net.topological_order(),
        "cpdag": cpdag(adjacency),
        "n_arcs": net.n_arcs,
        "features": features,
        "feature_columns": {names[j]: list(range(k * dim, (k + 1) * dim))
                            for k, j in enumerate(sensed)},
        "sensor_points": {names[j]: points[j] for j in sensed},
        "sensor_noise": sensor_noise,
        "noise_columns": list(range(len(sensed) * dim, len(sensed) * dim + n_extra)),
        "interventional_fraction": interventional_fraction,
        "n_environments": n_envs,
        "shifted_nodes": [[names[j] for j in s] for s in shifted],
        "env_cpts": [{names[j]: cpts[j] for j in s} for cpts, s in zip(env_sets, shifted)],
        "ood_shifted_nodes": [names[j] for j in ood_chosen],
        "ood_cpts": {names[j]: ood_cpts[j] for j in ood_chosen},
        "shift_concentration": shift_concentration,
        "seed": seed,
    }
    return Benchmark(train, val, test_iid, test_ood, tasks, true_graph,
                     int(train.x.shape[1]), "bayesian_network", info)
