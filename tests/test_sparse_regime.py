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
