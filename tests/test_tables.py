"""Your own table in: MultiTaskData.from_frame / from_csv, and `taskgraph fit | predict |
discover` end to end on a small CSV written here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas")

import taskgraph as tg  # noqa: E402
from taskgraph import MultiTaskData, ValidationError  # noqa: E402
from taskgraph.cli import main  # noqa: E402
from taskgraph.tables import TableSchema  # noqa: E402

TASKS = ["sick", "grade", "score"]


def make_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    g = np.random.default_rng(seed)
    f1, f2, f3 = g.normal(size=(3, n))
    color = g.choice(["red", "green", "blue"], n)
    sick = np.where(f1 + 0.5 * (color == "red") + 0.3 * g.normal(size=n) > 0, "yes", "no")
    grade = np.array(["A", "B", "C"])[np.digitize(f2 + 0.5 * (sick == "yes"), [-0.5, 0.5])]
    score = 2.0 * f3 + (grade == "C") + 0.1 * g.normal(size=n)
    frame = pd.DataFrame({"f1": f1, "f2": f2, "f3": f3, "color": color, "sick": sick,
                          "grade": grade, "score": score})
    for col in TASKS:                                   # 20% missing labels
        frame.loc[g.random(n) < 0.2, col] = None
    return frame


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "table.csv"
    make_frame().to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- the Python API
def test_from_frame_infers_kinds_and_encodes_features():
    frame = make_frame()
    data = MultiTaskData.from_frame(frame, tasks=TASKS)
    assert [(t.name, t.kind, t.n_classes) for t in data.tasks] == [
        ("sick", "binary", 2), ("grade", "multiclass", 3), ("score", "regression", None)]
    assert data.schema.tasks[1].classes == ["A", "B", "C"]
    assert data.schema.feature_names == ["f1", "f2", "f3", "color=blue", "color=green",
                                         "color=red"]
    assert data.x.shape == (400, 6)
    torch.testing.assert_close(data.x[:, :3].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    assert torch.isnan(data.y).float().mean() > 0.15          # empty cells are NaN labels
    # classes in sorted order: "no" = 0, "yes" = 1
    sick = frame["sick"].to_numpy()
    obs = ~pd.isna(sick)
    assert np.array_equal(data.y[obs, 0].numpy(), (sick[obs] == "yes").astype(np.float32))
    # regression labels are standardised; decode maps predictions back to the column's units
    score = data.y[:, 2][~torch.isnan(data.y[:, 2])]
    assert abs(float(score.mean())) < 1e-5 and abs(float(score.std(unbiased=False)) - 1) < 1e-4
    back = data.schema.decode(torch.nan_to_num(data.y))["score"]
    obs = ~pd.isna(frame["score"]).to_numpy()
    np.testing.assert_allclose(np.asarray(back)[obs], frame["score"].to_numpy(float)[obs],
                               rtol=1e-5, atol=1e-5)
    # a new table is encoded with the training transform
    other = make_frame(seed=1)
    again = MultiTaskData.from_frame(other, schema=data.schema)
    mean, std = frame["f1"].mean(), frame["f1"].std(ddof=0)
    torch.testing.assert_close(again.x[:, 0], torch.as_tensor(
        ((other["f1"] - mean) / std).to_numpy(), dtype=torch.float32))


def test_kind_overrides_and_integer_columns():
    g = np.random.default_rng(0)
    frame = pd.DataFrame({"x": g.normal(size=50), "level": g.integers(0, 4, 50),
                          "flag": g.integers(0, 2, 50) == 1, "amount": g.integers(0, 500, 50)})
    data = MultiTaskData.from_frame(frame, tasks=["level", "flag", "amount"])
    assert [t.kind for t in data.tasks] == ["multiclass", "binary", "regression"]
    data = MultiTaskData.from_frame(frame, tasks=["level"], kinds={"level": "regression"})
    assert data.tasks[0].kind == "regression"
    with pytest.raises(ValidationError, match="kinds: 'nope'"):
        MultiTaskData.from_frame(frame, tasks=["level"], kinds={"nope": "binary"})


@pytest.mark.parametrize("change, match", [
    (lambda f: f, "tasks: unknown column 'missing'"),
    (lambda f: f.assign(const="same"), "label column 'const' has a single value"),
    (lambda f: f.assign(f1=f["f1"].where(f.index != 5)), "column 'f1' has empty cells"),
    (lambda f: f.assign(f2=f["f2"].where(f.index != 7, np.inf)),
     "column 'f2' has infinite values"),
    (lambda f: f.assign(note=[f"text {i}" for i in range(len(f))]),
     "column 'note' is text with 400 distinct values"),
])
def test_bad_tables_name_the_column(change, match):
    frame = change(make_frame())
    tasks = ["missing"] if "missing" in match else (["const"] if "const" in match else TASKS)
    with pytest.raises(ValidationError, match=match):
        MultiTaskData.from_frame(frame, tasks=tasks)


def test_learner_predicts_frames_and_keeps_the_encoding_when_saved(tmp_path):
    frame = make_frame()
    data = MultiTaskData.from_frame(frame, tasks=TASKS)
    learner = tg.learners.create("hard_sharing", data.tasks, epochs=2, verbose=False)
    learner.fit(data)
    new = make_frame(seed=2).drop(columns=TASKS)
    pred = learner.predict(new)
    again = tg.learners.load_learner(learner.save(tmp_path / "m.pt"))
    assert isinstance(again.data_schema_, TableSchema)
    assert torch.equal(again.predict(new), pred)
    with pytest.warns(UserWarning, match="not seen in training"):
        learner.predict(new.assign(color="purple"))


# ---------------------------------------------------------------- the command line
def test_fit_predict_discover_end_to_end(csv, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["fit", str(csv), "--tasks", *TASKS, "--out", str(out), "--epochs", "3",
               "--learner", "gcnet", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    for name in ["model.pt", "graph.graphml", "graph.gexf", "graph.json", "graph.dot",
                 "graph.csv", "graph.png", "metrics.json", "metrics.txt", "report.html",
                 "command.txt"]:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(any(k.startswith(t + "/") for k in metrics) for t in TASKS)
    report = (out / "report.html").read_text()
    assert all(t in report for t in TASKS)
    assert "data:image/png;base64," in report and "taskgraph fit" in report
    assert tg.TaskGraph.load(out / "graph.graphml").names == TASKS

    # predict on a fresh table equals the Python API
    fresh = tmp_path / "fresh.csv"
    make_frame(seed=3).drop(columns=TASKS).to_csv(fresh, index=False)
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(out / "model.pt"), str(fresh), "--out", str(preds),
                 "--proba"]) == 0
    table = pd.read_csv(preds)
    learner = tg.learners.load_learner(out / "model.pt")
    want = learner.data_schema_.decode(learner.predict(pd.read_csv(fresh)))
    for task in TASKS:
        got = table[task].tolist()
        if task == "score":
            np.testing.assert_allclose(got, want[task], rtol=1e-6)
        else:
            assert [str(v) for v in got] == want[task]
    assert {"p(sick=yes)", "p(grade=C)"} <= set(table.columns)

    # structure only
    for method in ("pc", "gcnet"):
        d = tmp_path / f"disc_{method}"
        assert main(["discover", str(csv), "--tasks", *TASKS, "--method", method, "--out",
                     str(d), "--epochs", "2"]) == 0
        assert (d / "graph.json").is_file() and "data:image/png" in (
            d / "report.html").read_text()
        assert not (d / "model.pt").exists()


@pytest.mark.parametrize("args, column", [
    (["--tasks", "sick", "nope"], "nope"),
    (["--tasks", "sick", "--features", "f1", "ghost"], "ghost"),
])
def test_failed_fit_writes_nothing_and_names_the_column(csv, tmp_path, capsys, args, column):
    out = tmp_path / "run"
    assert main(["fit", str(csv), *args, "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"'{column}'" in err and "taskgraph fit: error" in err
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_a_failed_run_leaves_an_earlier_result_as_it_was(csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["discover", str(csv), "--tasks", *TASKS, "--out", str(out)]) == 0
    before = sorted(p.name for p in out.iterdir())
    bad = tmp_path / "bad.csv"
    make_frame().assign(f1=np.nan).to_csv(bad, index=False)
    assert main(["discover", str(bad), "--tasks", *TASKS, "--out", str(out)]) == 2
    assert "'f1'" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


def test_duplicate_headers_and_unreadable_files(tmp_path, capsys):
    dup = tmp_path / "dup.csv"
    dup.write_text("a,a,b\n1,2,0\n3,4,1\n")
    assert main(["discover", str(dup), "--tasks", "b", "--out", str(tmp_path / "o")]) == 2
    assert "'a' appears more than once" in capsys.readouterr().err
    assert main(["discover", str(tmp_path / "none.csv"), "--tasks", "b", "--out",
                 str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_label_names_agree_between_fit_and_new_tables(tmp_path):
    """Booleans with an empty cell (object dtype), integers read as floats and the same
    column written without empty cells name their classes the same way."""
    frame = pd.DataFrame({"x": np.arange(8.0), "flag": [True, False, None, True, False, True,
                                                          False, True],
                          "level": [1.0, 2.0, 3.0, None, 1.0, 2.0, 3.0, 1.0]})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    data = MultiTaskData.from_csv(path, tasks=["flag", "level"])
    assert data.schema.tasks[0].classes == ["False", "True"]
    assert data.schema.tasks[1].classes == ["1", "2", "3"]
    clean = pd.DataFrame({"x": [0.0, 1.0], "flag": [True, False], "level": [3, 1]})
    again = MultiTaskData.from_frame(clean, schema=data.schema)
    assert again.y.tolist() == [[1.0, 2.0], [0.0, 0.0]]


def test_out_must_be_new_empty_or_an_earlier_result(csv, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("my notes")
    assert main(["discover", str(csv), "--tasks", *TASKS, "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "my notes"


def test_metric_rows_keep_task_names_with_slashes():
    from taskgraph.report import metrics_rows

    rows = metrics_rows({"a/b/accuracy": 0.5, "mean": 0.5}, {"a/b": "binary"})
    assert rows == [{"task": "a/b", "kind": "binary", "accuracy": 0.5}]


def test_columns_named_like_pandas_duplicates_are_fine(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"x": [1.0, 2, 3, 4], "x.1": [0.5, 1, 2, 3], "y": [0, 1, 0, 1]}).to_csv(
        path, index=False)
    assert MultiTaskData.from_csv(path, tasks=["y"]).x.shape == (4, 2)
