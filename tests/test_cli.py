"""The command line: help texts, export, and a tiny demo run."""

import json
import subprocess
import sys

import pytest

import taskgraph as tg
from taskgraph.cli import build_parser, main


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["export", "--help"],
                                  ["train", "--help"], ["shift", "--help"], ["bench", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: taskgraph" in capsys.readouterr().out


def test_python_dash_m_help():
    out = subprocess.run([sys.executable, "-m", "taskgraph", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "demo" in out.stdout and "export" in out.stdout


@pytest.mark.parametrize("fmt", ["graphml", "gexf", "json"])
def test_export_round_trip(fmt, mixed_data, tmp_path):
    learner = tg.learners.create("mmoe", mixed_data.tasks, epochs=1, hidden=8,
                                 verbose=False).fit(mixed_data)
    ckpt = learner.save(tmp_path / "m.pt")
    dest = tmp_path / f"g.{fmt}"
    assert main(["export", str(ckpt), "--format", fmt, "-o", str(dest)]) == 0
    assert tg.TaskGraph.load(dest) == learner.task_graph_


@pytest.mark.parametrize("fmt, first_line", [("dot", "strict digraph"),
                                             ("csv", "source,target,weight,kind")])
def test_export_only_formats(fmt, first_line, tmp_path, capsys):
    graph = tg.TaskGraph([[0, 0.5], [0, 0]], ["a", "b"])
    src = graph.save(tmp_path / "g.json")
    assert main(["export", str(src), "--format", fmt]) == 0
    dest = tmp_path / f"g.{fmt}"
    assert dest.read_text(encoding="utf-8").startswith(first_line)
    capsys.readouterr()
    assert main(["export", str(dest), "--format", "graphml"]) == 2    # cannot be read back
    err = capsys.readouterr().err
    assert "export-only" in err and "GraphML" in err
    assert not (tmp_path / "g.graphml").exists()


def test_export_errors_are_reported(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.pt")]) == 2
    assert "error" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "x.pt", "--format", "xlsx"])


def test_demo_writes_outputs(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--tasks", "4", "--edges", "3", "--samples", "300",
                 "--epochs", "2"]) == 0
    for name in ("graph.graphml", "graph.json", "graph.png", "graph_vs_truth.png", "metrics.json",
                 "table.txt"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    methods = {row["method"] for row in metrics["rows"]}
    assert {"causal_graph", "hard_sharing", "mmoe", "mtcrl", "pc", "ges", "lingam",
            "corr"} <= methods
    assert metrics["benchmark"] == "causal_mtl" and metrics["headline_graph"] == "causal_graph"
    graph = tg.TaskGraph.load(out / "graph.graphml")
    assert graph.n_tasks == 4 and graph.n_modules > 0    # the composed graph: tasks + modules


def test_demo_on_planted_dag_with_chosen_learners(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--benchmark", "planted_dag", "--out", str(out), "--tasks", "3",
                 "--edges", "2", "--samples", "200", "--epochs", "1",
                 "--learners", "gcnet", "hard_sharing"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["benchmark"] == "planted_dag" and metrics["headline_graph"] == "gcnet"
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--learners", "nope"]) == 2
    assert "--learners" in capsys.readouterr().err
