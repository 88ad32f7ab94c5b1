"""examples/sparse_regime.py on MovieLens-100k (``--dataset movielens --quick``): the table has
AUROC beside accuracy, no ceiling, a majority row, and the truth-reading references are skipped
with a note. Skipped when recbole's copy of the data is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskgraph.datasets import _files

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "sparse_regime.py"


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(_files.package_file("recbole", "dataset_example", "ml-100k") is None,
                    reason="recbole not installed (pip install --no-deps recbole==1.2.1)")
def test_sparse_regime_movielens_quick(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--dataset", "movielens", "--rows", "logistic",
         "majority", "hard_sharing", "known_graph", "--json", "out.json", "--markdown", "out.md"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "skipping known_graph" in proc.stdout
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["dataset"] == "movielens" and "known_graph" in out["skipped"]
    assert out["rows"] == ["logistic", "majority", "hard_sharing"]
    (setting,) = out["settings"]
    assert setting["n_tasks"] == 18 and setting["ceiling"] is None
    summ = setting["summary"]
    assert summ["majority"]["auroc_mean"] == pytest.approx(0.5)
    for row in out["rows"]:
        assert 0.0 <= summ[row]["acc_mean"] <= 1.0 and 0.0 <= summ[row]["ood_auroc_mean"] <= 1.0
        assert "gap_closed" not in summ[row]
    assert "majority" in summ["logistic"]["diff"]
    assert "hard_sharing" in summ["logistic"]["diff_auroc"]
    md = (tmp_path / "out.md").read_text()
    assert "| 18 | 10% | — |" in md and "AUROC" in md and "Not run: `known_graph`" in md


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sparse_regime_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_file(path, seeds, rows, acc, command):
    per_seed = {r: [{"acc": acc[r][sd], "cpu_s": 1.0} for sd in seeds] for r in rows}
    data = {"command": command, "dataset": "sparse_tasks", "rows": rows, "seeds": seeds,
            "skipped": {}, "settings": [{"n_tasks": 200, "label_rate": 0.05,
                                          "ceiling": [0.84 for _ in seeds],
                                          "per_seed": per_seed, "summary": {}}]}
    path.write_text(json.dumps(data))
    return str(path)


def test_sparse_regime_merge_joins_runs_split_across_processes(tmp_path):
    """--merge: seeds run in different files join into one table per setting; a row run on
    only some seeds is named, not averaged; a later file replaces the same run."""
    script = _load_script()
    acc = {"logistic": {0: 0.80, 1: 0.81, 2: 0.82}, "hard_sharing": {0: 0.79, 1: 0.79, 2: 0.80},
           "causal_graph": {0: 0.83, 1: 0.81, 2: 0.83}}
    a = _run_file(tmp_path / "a.json", [0], ["logistic", "hard_sharing", "causal_graph"], acc,
                  "cmd a")
    b = _run_file(tmp_path / "b.json", [1, 2], ["logistic", "hard_sharing"], acc, "cmd b")
    c = _run_file(tmp_path / "c.json", [1], ["causal_graph"], acc, "cmd c")
    text, commands = script.merge([a, b, c])
    assert commands == ["cmd a", "cmd b", "cmd c"]
    assert "#### T = 200, 5% labels" in text
    assert "seeds [0, 1, 2]" in text
    # logistic mean over the three seeds, hard_sharing likewise; causal_graph lacks seed 2
    assert "| 200 | 5% | 0.840 | 0.810 ± 0.008 | 0.793 ± 0.005 |" in text
    assert "Not in this table: `causal_graph` (run on seeds [0, 1] only)." in text
    # a later file replaces seed 2's logistic run
    acc2 = {"logistic": {2: 0.90}}
    d = _run_file(tmp_path / "d.json", [2], ["logistic"], acc2, "cmd d")
    text, _ = script.merge([a, b, c, d])
    assert "| 200 | 5% | 0.840 | 0.837 ± 0.045 |" in text
    assert "T = 200" not in script.merge([a, b, c, d], tasks=[20])[0]
    with pytest.raises(SystemExit, match="cannot read"):
        script.merge([str(tmp_path / "missing.json")])


def test_oracle_prior_reaches_the_ceiling_with_many_labels_and_beats_logistic_with_few():
    """oracle_prior (MAP under the generator's own prior, given the structure): with dense labels
    it is at the Bayes ceiling; with 5% labels it beats per-task logistic regression."""
    import taskgraph as tg

    script = _load_script()
    dense = tg.datasets.sparse_tasks(n_tasks=8, n_samples=4000, n_clusters=2, seed=0,
                                     n_test=1000)
    got = script.scores(script.fit_oracle_prior(dense), dense, "sparse_tasks")
    assert got["exp_acc"] > dense.info["bayes_accuracy"]["mean"] - 0.005
    sparse = tg.datasets.sparse_tasks(n_tasks=8, n_samples=2000, n_clusters=2, seed=0,
                                      label_rate=0.05, n_conflicting=2, n_unrelated=2,
                                      n_test=1000)
    oracle = script.scores(script.fit_oracle_prior(sparse), sparse, "sparse_tasks")
    logistic = script.scores(script.fit_logistic(sparse), sparse, "sparse_tasks")
    assert oracle["exp_acc"] > logistic["exp_acc"] + 0.01
