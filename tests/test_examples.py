"""Every ``examples/*.py`` runs as a plain script with ``--quick``.

Examples are picked up by glob, so new ones are tested automatically. A script that needs an
absent optional package exits with code 77 after printing why; the test is then skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))
TIMEOUT_S = 120
SKIP_CODE = 77


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_quick(script, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(script), "--quick"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{script.name} --quick took more than {TIMEOUT_S} s")
    seconds = time.perf_counter() - t0
    if proc.returncode == SKIP_CODE:
        pytest.skip(f"{script.name}: {proc.stdout.strip().splitlines()[-1:]}")
    assert proc.returncode == 0, (
        f"{script.name} --quick failed ({seconds:.0f}s):\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-3000:]}")
    assert proc.stdout.strip(), f"{script.name} printed nothing"
