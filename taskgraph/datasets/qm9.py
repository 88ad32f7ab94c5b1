r"""QM9 (optional): the 12 standard molecular property targets as regression tasks.

Data: the 130,831 molecules of QM9 (Ramakrishnan et al., Sci. Data 2014; 133,885 minus the
3,054 failing the consistency check) as shipped in the ``qm9pack`` wheel by QM9's author
(``qm9pack/data/qm9_part{1,2,3}.csv``), read by path without importing qm9pack
(``pip install --no-deps qm9pack==1.0.3``; the wheel is ~104 MB, so this benchmark is opt-in),
or CSV files with the same columns at a user ``path`` (a file or a folder of ``*.csv``).

**Tasks** (all regression, standardised with the training split's mean and standard deviation,
kept in ``info["target_mean"]`` / ``info["target_std"]``): ``mu`` (dipole moment, D),
``alpha`` (polarisability, bohr³), ``homo``, ``lumo``, ``gap`` (Ha), ``r2`` (electronic spatial
extent, bohr²), ``zpve`` (Ha), ``u0``, ``u298``, ``h298``, ``g298`` (energies, Ha), ``cv``
(heat capacity, cal/mol/K).

**Features** without RDKit (``n_features`` = 112): atom counts H, C, N, O, F, the number of
atoms and of heavy atoms, and a pair histogram: for each of the 15 element pairs, the number of
atom pairs in 7 distance bins (:func:`pair_histogram`; bonded, 1–3 and farther pairs) — an
extensive descriptor that, unlike sorted Coulomb-matrix eigenvalues, keeps its meaning for
molecules larger than the training ones. Standardised with training statistics.

**Shift** (``shift``): ``"size"`` (default) trains on molecules with at most 8 heavy atoms and
tests out of distribution on molecules with 9; ``"fluorine"`` trains on molecules without
fluorine and tests on those with it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from taskgraph.data import MultiTaskData
from taskgraph.datasets._files import DataFileError, check_split_fractions, require_file
from taskgraph.datasets.benchmark import Benchmark, _check_int, _check_seed
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.tasks import Task, TaskSet

__all__ = ["qm9", "load_qm9", "pair_histogram", "QM9_TARGETS", "QM9_INSTALL"]

QM9_INSTALL = "`pip install --no-deps qm9pack==1.0.3`"
_QM9_PARTS = ("data", "qm9_part1.csv")
#: task name → qm9pack column
QM9_TARGETS = {
    "mu": "Dipole_debye",
    "alpha": "Polarizability_bohr3",
    "homo": "HOMO_au",
    "lumo": "LUMO_au",
    "gap": "HOMO_LUMO_gap_au",
    "r2": "R2_bohr2",
    "zpve": "ZPVE_au",
    "u0": "InternalEnergy_0K_au",
    "u298": "InternalEnergy_298K_au",
    "h298": "Enthalphy_298K_au",  # sic, the file's spelling
    "g298": "GibbsFreeEnergy_298K_au",
    "cv": "Heatcapacity_Cv_cal_mol_K",
}
_COLUMNS = ["N_atoms", "Stoichiometry", "Elements", "XYZ_Ang", *QM9_TARGETS.values()]
_MAX_ATOMS = 29
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _csv_files(path: str | Path | None) -> list[Path]:
    if path is None:
        first = require_file("qm9pack", _QM9_PARTS, "QM9", QM9_INSTALL)
        return sorted(first.parent.glob("qm9_part*.csv"))
    p = Path(path)
    if p.is_file():
        return [p]
    files = sorted(p.glob("*.csv")) if p.is_dir() else []
    if not files:
        raise DataFileError(f"path: no QM9 CSV file at {str(p)!r}")
    return files


def _read_columns(files: list[Path]) -> dict[str, list[str]]:
    import csv

    cols: dict[str, list[str]] = {c: [] for c in _COLUMNS}
    for f in files:
        try:
            with open(f, newline="") as fh:
                reader = csv.reader(fh)
                header = next(reader)
                missing = [c for c in _COLUMNS if c not in header]
                if missing:
                    raise DataFileError(f"path: {str(f)!r} lacks the QM9 columns {missing}")
                pos = [header.index(c) for c in _COLUMNS]
                for row in reader:
                    for c, k in zip(_COLUMNS, pos):
                        cols[c].append(row[k])
        except (OSError, StopIteration, csv.Error) as exc:
            raise DataFileError(f"path: cannot read {str(f)!r} as QM9 CSV: {exc}") from None
    return cols


def load_qm9(path: str | Path | None = None) -> dict[str, Any]:
    """QM9's scalar columns and geometries.

    Returns:
        dict: ``targets`` float ``[M, 12]`` (columns :data:`QM9_TARGETS`, raw units),
        ``stoichiometry`` int ``[M, 5]`` (H, C, N, O, F), ``n_atoms`` int ``[M]``, and the
        raw ``elements`` / ``xyz`` strings (parsed lazily by :func:`pair_histogram`).

    Raises:
        MissingDependencyError: if ``path`` is ``None`` and qm9pack is not installed.
        DataFileError: on missing or malformed files.
    """
    cols = _read_columns(_csv_files(path))
    try:
        targets = np.array([[float(v) for v in cols[c]] for c in QM9_TARGETS.values()]).T
        stoich = np.array([[int(v) for v in _FLOAT.findall(s)] for s in cols["Stoichiometry"]],
                          dtype=np.int64)
        n_atoms = np.array([int(v) for v in cols["N_atoms"]], dtype=np.int64)
    except ValueError as exc:
        raise DataFileError(f"path: malformed QM9 values: {exc}") from None
    if stoich.ndim != 2 or stoich.shape[1] != 5:
        raise DataFileError("path: Stoichiometry must list 5 counts [H, C, N, O, F]")
    return {"targets": targets.reshape(len(n_atoms), len(QM9_TARGETS)),
            "stoichiometry": stoich, "n_atoms": n_atoms,
            "elements": cols["Elements"], "xyz": cols["XYZ_Ang"]}


_ELEMENTS = ("H", "C", "N", "O", "F")
#: distance bin edges (Å) of the pair histogram: bonded (≈1.0–1.5), 1–3 and farther pairs
PAIR_BINS = (1.15, 1.45, 1.75, 2.6, 3.5, 5.0)
_PAIRS = [(a, b) for a in range(5) for b in range(a, 5)]


def pair_histogram(elements: list[str], xyz: list[str], chunk: int = 4096) -> np.ndarray:
    """Counts of atom pairs by element pair and distance bin, ``[M, 15 * 7]``.

    An extensive "bag of pairs" descriptor (a binned pair distribution per element pair): for
    the 15 unordered pairs of H, C, N, O, F and the distance bins split at
    :data:`PAIR_BINS` Å, the number of atom pairs of the molecule falling there. Counts add up
    over a molecule's parts, so a model can extrapolate to larger molecules.
    """
    m = len(elements)
    code = np.full((m, _MAX_ATOMS), -1, dtype=np.int64)
    r = np.zeros((m, _MAX_ATOMS, 3))
    index = {e: k for k, e in enumerate(_ELEMENTS)}
    for i, (el, pos) in enumerate(zip(elements, xyz)):
        atoms = re.findall(r"[A-Z][a-z]?", el)
        coords = np.array(_FLOAT.findall(pos), dtype=float).reshape(-1, 3)
        if len(atoms) != len(coords) or len(atoms) > _MAX_ATOMS:
            raise DataFileError(f"path: molecule {i}: {len(atoms)} elements but "
                                f"{len(coords)} coordinates")
        code[i, :len(atoms)] = [index.get(a, -1) for a in atoms]
        r[i, :len(atoms)] = coords
    pair_id = np.full((5, 5), -1, dtype=np.int64)
    for k, (a, b) in enumerate(_PAIRS):
        pair_id[a, b] = pair_id[b, a] = k
    n_bins = len(PAIR_BINS) + 1
    out = np.zeros((m, len(_PAIRS) * n_bins))
    iu, ju = np.triu_indices(_MAX_ATOMS, k=1)
    for lo in range(0, m, chunk):
        c, rr = code[lo:lo + chunk], r[lo:lo + chunk]
        ci, cj = c[:, iu], c[:, ju]
        ok = (ci >= 0) & (cj >= 0)
        dist = np.linalg.norm(rr[:, iu] - rr[:, ju], axis=-1)
        feat = pair_id[np.maximum(ci, 0), np.maximum(cj, 0)] * n_bins + np.searchsorted(
            np.asarray(PAIR_BINS), dist)
        rows = np.broadcast_to(np.arange(len(c))[:, None], feat.shape)
        flat = (rows * out.shape[1] + feat)[ok]
        out[lo:lo + chunk] = np.bincount(flat, minlength=len(c) * out.shape[1]).reshape(
            len(c), -1)
    return out


def qm9(
    seed: int = 0,
    *,
    shift: str = "size",
    max_molecules: int | None = 30000,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    n_ood: int | None = None,
    path: str | Path | None = None,
) -> Benchmark:
    """QM9 with 12 standardised regression tasks and a size or composition shift.

    Args:
        seed (int): non-negative seed of the subsampling and the split.
        shift (str): ``"size"`` (≤ 8 heavy atoms in distribution, 9 out) or ``"fluorine"``
            (molecules without F in distribution, with F out).
        max_molecules (int, optional): at most this many in-distribution molecules (a random
            seeded subset); ``None`` keeps all.
        val_fraction (float): share of the in-distribution molecules for ``val``.
        test_fraction (float): share for ``test_iid``.
        n_ood (int, optional): molecules in ``test_ood`` (default: as many as ``test_iid``).
        path (str or Path, optional): a QM9 CSV or a folder of them; default qm9pack's.

    Returns:
        Benchmark: ``x`` float32 ``[N, 112]``; 12 regression tasks (standardised); no
        environments; empty ``true_graph``. ``info``: ``"target_mean"``, ``"target_std"``,
        ``"feature_names"``, ``"shift"``, ``"molecules"`` (row indices per split), ``"seed"``.
    """
    seed = _check_seed(seed)
    if shift not in ("size", "fluorine"):
        raise ValidationError(f"shift: expected 'size' or 'fluorine', got {shift!r}")
    if max_molecules is not None:
        max_molecules = _check_int("max_molecules", max_molecules, 10)
    val_fraction, test_fraction = check_split_fractions(val_fraction, test_fraction)
    if n_ood is not None:
        n_ood = _check_int("n_ood", n_ood, 1)

    d = load_qm9(path)
    heavy = d["n_atoms"] - d["stoichiometry"][:, 0]
    ood_mask = heavy >= 9 if shift == "size" else d["stoichiometry"][:, 4] > 0
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    in_rows = rng.permutation(np.flatnonzero(~ood_mask))
    if max_molecules is not None:
        in_rows = in_rows[:max_molecules]
    n_val = max(1, int(round(val_fraction * len(in_rows))))
    n_test = max(1, int(round(test_fraction * len(in_rows))))
    if len(in_rows) - n_val - n_test < 1:
        raise ValidationError(f"max_molecules: {len(in_rows)} molecules are too few to split")
    ood_all = np.flatnonzero(ood_mask)
    if len(ood_all) == 0:
        raise ValidationError(f"shift: no out-of-distribution molecule for shift={shift!r}")
    ood_rows = np.sort(rng.permutation(ood_all)[:n_ood if n_ood is not None else n_test])
    rows = {
        "val": np.sort(in_rows[:n_val]),
        "test_iid": np.sort(in_rows[n_val:n_val + n_test]),
        "train": np.sort(in_rows[n_val + n_test:]),
        "test_ood": ood_rows,
    }
    used = np.concatenate(list(rows.values()))
    n_hist = len(_PAIRS) * (len(PAIR_BINS) + 1)
    feats = np.zeros((len(d["n_atoms"]), 7 + n_hist))
    feats[used, :5] = d["stoichiometry"][used]
    feats[used, 5] = d["n_atoms"][used]
    feats[used, 6] = heavy[used]
    feats[used, 7:] = pair_histogram([d["elements"][i] for i in used],
                                     [d["xyz"][i] for i in used])
    tr = rows["train"]
    f_mu, f_sd = feats[tr].mean(axis=0), feats[tr].std(axis=0)
    f_sd = np.where(f_sd > 1e-12, f_sd, 1.0)
    y_mu, y_sd = d["targets"][tr].mean(axis=0), d["targets"][tr].std(axis=0)
    y_sd = np.where(y_sd > 1e-12, y_sd, 1.0)
    tasks = TaskSet([Task(name, "regression") for name in QM9_TARGETS])

    def make(name: str) -> MultiTaskData:
        r = rows[name]
        x = ((feats[r] - f_mu) / f_sd).astype(np.float32)
        y = ((d["targets"][r] - y_mu) / y_sd).astype(np.float32)
        return MultiTaskData(x, y, tasks)

    splits = {name: make(name) for name in ("train", "val", "test_iid", "test_ood")}
    info = {
        "shift": shift, "target_mean": y_mu, "target_std": y_sd, "molecules": rows,
        "feature_names": ["n_H", "n_C", "n_N", "n_O", "n_F", "n_atoms", "n_heavy"]
        + [f"pairs_{_ELEMENTS[a]}{_ELEMENTS[b]}_bin{k}" for a, b in _PAIRS
           for k in range(len(PAIR_BINS) + 1)],
        "has_true_graph": False, "seed": seed,
        "source": "qm9pack" if path is None else str(path),
    }
    graph = TaskGraph.empty(tasks.names, learned=False, meta={"benchmark": "qm9",
                                                              "truth": "none"})
    return Benchmark(splits["train"], splits["val"], splits["test_iid"], splits["test_ood"],
                     tasks, graph, feats.shape[1], "qm9", info)
