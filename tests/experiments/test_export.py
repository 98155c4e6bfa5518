"""Runs as data: table exports, loggers fed chunk by chunk, figures from Python, the record."""

import csv
import json
import sys

import numpy as np
import pytest

from eosflow import Config, load_run, run_experiment
from eosflow.analysis import export_run, run_table
from eosflow.runner import Logger, TensorBoardLogger, WandbLogger

TOY = dict(name="toy", problem="toy_a", dataset="none", dtype="float64", x0=(3.0, -1.0),
           steps=30, chunk_steps=10, eig_every=3, lr=0.05)


class FakeLogger:
    def __init__(self):
        self.calls, self.closed = [], 0

    def log_rows(self, columns, start_step):
        self.calls.append((start_step, {k: np.array(v) for k, v in columns.items()}))

    def close(self):
        self.closed += 1


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    fake = FakeLogger()
    record = run_experiment(Config(**TOY), root / "one", progress=False, loggers=[fake])
    return record, fake


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_sweep")
    return run_experiment(Config(**TOY), root / "sweep", progress=False,
                          sweep={"lr": [0.05, 0.1]})


def test_loggers_receive_each_chunk_once_after_it_is_stored_and_are_closed(single):
    record, fake = single
    assert [start for start, _ in fake.calls] == [0, 10, 20] and fake.closed == 1
    got = {k: np.concatenate([c[k] for _, c in fake.calls]) for k in fake.calls[0][1]}
    for k, v in record.metrics.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    assert isinstance(fake, Logger)
    with pytest.raises(TypeError, match=r"loggers\[0\]: object has no log_rows"):
        run_experiment(Config(**TOY), record.path.parent / "bad", loggers=[object()])


def test_record_repr_is_one_short_line(single):
    record, _ = single
    text = repr(record)
    assert text.startswith("RunRecord(path=") and "status='completed'" in text
    assert "steps_done=30" in text and "array" not in text and len(text) < 250


def test_csv_has_every_column_and_the_exact_values(single):
    record, _ = single
    path = export_run(record.path, "csv")
    assert path == record.path / "metrics.csv"
    with open(path) as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert set(header) == set(record.metrics) and len(body) == 30
    for k in ("loss", "lambda_1", "eig_converged"):
        col = np.array([float(r[header.index(k)]) for r in body])
        np.testing.assert_array_equal(col, record.metrics[k], err_msg=k)  # nan where unmeasured


def test_sweep_table_is_one_row_per_step_and_point(swept):
    t = run_table(swept.path)
    m = swept.metrics
    assert len(t["step"]) == 60
    np.testing.assert_array_equal(t["step"], np.repeat(np.arange(30), 2))
    np.testing.assert_array_equal(t["point"], np.tile([0, 1], 30))
    np.testing.assert_array_equal(t["lr"], np.tile([0.05, 0.1], 30))
    np.testing.assert_array_equal(t["loss"][t["point"] == 1], m["loss"][:, 1])
    out = export_run(swept.path, "csv", swept.path.parent / "s.csv")
    assert out.read_text().splitlines()[0].split(",")[:3] == ["step", "point", "lr"]


def test_parquet_and_hdf5_round_trip_or_name_their_package(swept, tmp_path, monkeypatch):
    t = run_table(swept.path)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is not None:
        got = pq.read_table(export_run(swept.path, "parquet", tmp_path / "s.parquet"))
        np.testing.assert_array_equal(got.column("loss").to_numpy(), t["loss"])
        assert json.loads(got.schema.metadata[b"eosflow.config"])["name"] == "toy"
    try:
        import h5py
    except ImportError:
        h5py = None
    if h5py is not None:
        with h5py.File(export_run(swept.path, "hdf5", tmp_path / "s.h5")) as f:
            np.testing.assert_array_equal(f["lambda_1"][()], t["lambda_1"])
            assert json.loads(f.attrs["eosflow.metadata"])["sweep"] == {"lr": [0.05, 0.1]}
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"needs the pyarrow package: pip install pyarrow"):
        export_run(swept.path, "parquet", tmp_path / "x.parquet")
    with pytest.raises(ImportError, match=r"needs the h5py package: pip install h5py"):
        export_run(swept.path, "hdf5", tmp_path / "x.h5")
    with pytest.raises(ValueError, match="format: unknown value 'xlsx'"):
        export_run(swept.path, "xlsx")


def test_adapters_import_their_package_only_when_built_and_name_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"needs the tensorboardX package"):
        TensorBoardLogger(tmp_path / "tb")
    with pytest.raises(ImportError, match=r"needs the wandb package"):
        WandbLogger(project="p")


def test_wandb_adapter_logs_finite_values_per_step_and_sweep_points(monkeypatch):
    class FakeRun:
        def __init__(self):
            self.logged, self.finished = [], False

        def log(self, row, step):
            self.logged.append((step, row))

        def finish(self):
            self.finished = True

    run = FakeRun()

    class FakeWandb:
        @staticmethod
        def init(**kwargs):
            return run

    monkeypatch.setitem(sys.modules, "wandb", FakeWandb)
    lg = WandbLogger(project="p")
    lg.log_rows({"step": np.array([4, 5]), "valid": np.array([[True, True], [True, False]]),
                 "loss": np.array([[1.0, 2.0], [3.0, 4.0]]),
                 "lambda_1": np.array([[np.nan, 5.0], [6.0, 7.0]])}, 4)
    lg.close()
    assert run.logged == [
        (4, {"loss/point_0": 1.0, "loss/point_1": 2.0, "lambda_1/point_1": 5.0}),
        (5, {"loss/point_0": 3.0, "lambda_1/point_0": 6.0}),  # point 1 stopped at step 5
    ]
    assert run.finished


def test_figures_true_writes_the_figures_and_report_like_the_cli(tmp_path):
    pytest.importorskip("matplotlib")
    record = run_experiment(Config(**{**TOY, "steps": 12}), tmp_path / "f", progress=False,
                            figures=True)
    assert record.report == tmp_path / "f" / "report.html" and record.report.exists()
    assert record.figures and all(p.exists() and p.suffix == ".png" for p in record.figures)
    assert "report=" in repr(record)
    assert load_run(tmp_path / "f").status["state"] == "completed"


def test_tensorboard_adapter_writes_scalars(monkeypatch, tmp_path):
    written = []

    class Writer:
        def __init__(self, logdir):
            self.logdir = logdir

        def add_scalar(self, name, value, step):
            written.append((name, value, step))

        def flush(self):
            pass

        def close(self):
            written.append("closed")

    fake = type(sys)("tensorboardX")
    fake.SummaryWriter = Writer
    monkeypatch.setitem(sys.modules, "tensorboardX", fake)
    lg = TensorBoardLogger(tmp_path / "tb")
    lg.log_rows({"step": np.array([0, 1]), "valid": np.array([True, True]),
                 "loss": np.array([2.0, 1.0]), "lambda_1": np.array([9.0, np.nan])}, 0)
    lg.close()
    assert written == [("loss", 2.0, 0), ("lambda_1", 9.0, 0), ("loss", 1.0, 1), "closed"]
