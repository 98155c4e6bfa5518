"""record_every = k: one metrics row per k steps, reduced on the device. The oracle is the
same run recording every step, reduced here with NumPy window by window."""

import numpy as np
import pytest

from eosflow import load_run, run_experiment
from eosflow.analysis import headline, points, stableness
from eosflow.runner import Config, ConfigError
from eosflow.runner import _store as rd

K = 10
# GD below its edge (2/lr = 500 > lambda_1 = 434 at the start): normalized GD's stableness
# pairs lambda_1 at consecutive steps, which decimated rows cannot keep (refused)
TOY = dict(name="t", problem="toy_a", dataset="none", optimizer="gd", lr=0.004,
           x0=(14.7, -3.0), steps=200, chunk_steps=100, dtype="float64", eig_every=3)
EVERY_STEP = ("loss", "grad_norm", "eff_lr", "param_norm", "update_norm", "num_kicks")


def _toy(**kw) -> Config:
    return Config(**{**TOY, **kw})


def _windows(steps: np.ndarray, k: int) -> list[np.ndarray]:
    """The row indices of each window of ``k`` steps (a stopped run's last one is short)."""
    return [np.flatnonzero(steps // k == w) for w in np.unique(steps // k)]


def _reduced(full: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """What record_every = k should record, from a single run's every-step rows."""
    out: dict[str, list] = {}
    for rows in _windows(full["step"], k):
        last = rows[-1]
        for name, col in full.items():
            col = np.asarray(col)
            if name in ("step", "valid", "stop_reason", *EVERY_STEP):
                value = col[last] if name != "stop_reason" else col[rows].max()
            elif name.endswith("matvecs"):
                value = col[rows].sum()
            else:  # measured every eig_every steps: the window's last measurement
                seen = rows[np.isfinite(col[rows])]
                value = col[seen[-1]] if len(seen) else np.nan
            out.setdefault(name, []).append(value)
        loss = full["loss"][rows]
        out.setdefault("loss_min_window", []).append(loss.min())
        out.setdefault("loss_max_window", []).append(loss.max())
        out.setdefault("loss_mean_window", []).append(loss.mean())
        measured = rows[np.isfinite(full["lambda_1"][rows])]
        out.setdefault("eig_solves", []).append(len(measured))
        out.setdefault("lambda_step", []).append(full["step"][measured[-1]] if len(measured)
                                                 else -1)
    return {name: np.asarray(v) for name, v in out.items()}


def _assert_reduced(got: dict[str, np.ndarray], full: dict[str, np.ndarray], k: int):
    want = _reduced(full, k)
    assert set(got) == set(want)
    for name, v in want.items():
        if name == "loss_mean_window":  # a sum in another order: equal to rounding
            np.testing.assert_allclose(got[name], v, rtol=1e-14, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], v, err_msg=name)


@pytest.mark.parametrize("goal", [None, 100.0])
def test_decimated_rows_are_the_windows_of_the_full_run(tmp_path, capsys, goal):
    """Last values at the window's last step (or the stopping step, goal 100 stops mid-window),
    loss min/max/mean over the window, the last finite lambda_1, matvecs summed; the final
    parameters bit for bit."""
    config = _toy(loss_goal=goal)
    full = run_experiment(config, tmp_path / "full", progress=False)
    dec = run_experiment(config.replace(record_every=K), tmp_path / "dec", progress=False)
    assert dec.status == full.status == ("completed" if goal is None else "goal_reached")
    assert dec.steps_done == full.steps_done
    stop = int(full.metrics["step"][-1])
    assert goal is None or stop % K != K - 1  # the goal is met mid-window
    _assert_reduced(dec.metrics, full.metrics, K)
    assert dec.metrics["step"][-1] == stop
    np.testing.assert_array_equal(np.asarray(dec.params), np.asarray(full.params))
    np.testing.assert_array_equal(load_run(tmp_path / "dec").metrics["step"], dec.metrics["step"])
    meta = load_run(tmp_path / "dec").metadata
    assert meta["record_every"] == K and "loss_min" in meta["record_window"]
    # the summary places each lambda_1 at the step it was measured: the decimated run's
    # stableness is the full run's at those steps
    (ds, dS), (fs, fS) = (stableness(points(load_run(tmp_path / n))[0]) for n in ("dec", "full"))
    assert len(ds) and set(ds) <= set(fs)
    np.testing.assert_array_equal(dS, fS[np.searchsorted(fs, ds)])
    s, f = (headline(load_run(tmp_path / n)) for n in ("dec", "full"))
    assert s["num_estimates"] == f["num_estimates"]
    assert s["eig_matvecs_per_estimate"] == pytest.approx(f["eig_matvecs_per_estimate"])
    assert rd.read_json(tmp_path / "dec" / "status.json")["hvps_total"] == rd.read_json(
        tmp_path / "full" / "status.json")["hvps_total"]
    # the terminal summary counts steps run, not rows
    from eosflow.experiments._commands import _print_summary

    for name in ("dec", "full"):
        _print_summary(tmp_path / name)
    dec_line, full_line = [ln for ln in capsys.readouterr().out.splitlines()
                           if ln.startswith(f"{config.name}: ")]
    assert f"; {full.steps_done} steps;" in dec_line and f"; {full.steps_done} steps;" in full_line


@pytest.mark.parametrize("case", ["toy", "network", "sweep"])
def test_step_metrics_computed_at_the_windows_end_are_the_full_runs(tmp_path, case):
    """Without eigen-solves nothing in the step reads grad_norm, eff_lr, param_norm and
    update_norm, and the window computes them at its end from its last counted step's
    gradient, update and parameters: bit for bit the every-step run's at that step, for a
    toy stopped mid-window, a network with several weight arrays, and a sweep."""
    sweep = None
    if case == "network":
        config = Config(name="n", problem="mlp", dataset="digits", widths=(16,), lr=0.05,
                        steps=40, chunk_steps=20, eig_every=None, eval_every=None)
    else:
        config = _toy(optimizer="normalized_gd", lr=0.05, eig_every=None, steps=100,
                      loss_goal=100.0 if case == "toy" else None)
        sweep = {"lr": [0.03, 0.05]} if case == "sweep" else None
    full = run_experiment(config, tmp_path / "full", sweep=sweep, progress=False)
    dec = run_experiment(config.replace(record_every=K), tmp_path / "dec", sweep=sweep,
                         progress=False)
    assert "_deferred" not in dec.metrics
    assert [k for k in dec.metrics if k in EVERY_STEP] == [k for k in full.metrics
                                                             if k in EVERY_STEP]
    assert case != "toy" or dec.metrics["step"][-1] % K != K - 1  # stopped mid-window
    for j in range(2 if sweep else 1):
        f = {k: v if v.ndim == 1 else v[:, j] for k, v in full.metrics.items()}
        f = {k: v[f["valid"]] for k, v in f.items()}
        want = _reduced(f | {"lambda_1": np.full(len(f["step"]), np.nan)}, K)
        got = {k: v if v.ndim == 1 else v[:, j] for k, v in dec.metrics.items()}
        for name in EVERY_STEP[:-1]:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_record_every_one_is_the_default_bit_for_bit(tmp_path):
    config = _toy(eig_every=None, steps=50, chunk_steps=None)
    a = run_experiment(config, tmp_path / "a", progress=False)
    b = run_experiment(config.replace(record_every=1), tmp_path / "b", progress=False)
    assert list(a.metrics) == list(b.metrics)
    for k, v in a.metrics.items():
        np.testing.assert_array_equal(b.metrics[k], v, err_msg=k)
    np.testing.assert_array_equal(np.asarray(b.params), np.asarray(a.params))


def test_a_sweep_records_each_points_stop(tmp_path):
    """Points stopping at different steps: each keeps its stopping step's values and
    stop_reason in the window where it stopped; the final parameters bit for bit."""
    config = _toy(optimizer="normalized_gd", eig_every=None, steps=100, loss_goal=100.0)
    sweep = {"lr": [0.03, 0.05, 0.1]}
    full = run_experiment(config, tmp_path / "full", sweep=sweep, progress=False)
    dec = run_experiment(config.replace(record_every=K), tmp_path / "dec", sweep=sweep,
                         progress=False)
    np.testing.assert_array_equal(np.asarray(dec.params), np.asarray(full.params))
    np.testing.assert_array_equal(dec.metrics["step"], np.arange(K - 1, 100, K))
    assert dec.steps_done == full.steps_done
    stops = []
    for j in range(3):
        valid = full.metrics["valid"][:, j]
        point = {k: (v if v.ndim == 1 else v[:, j])[valid] for k, v in full.metrics.items()
                 if k not in ("eig_matvecs",)}
        want = _reduced(point | {"lambda_1": np.full(valid.sum(), np.nan)}, K)
        n = len(want["step"])
        assert dec.metrics["valid"][:n, j].all() and not dec.metrics["valid"][n:, j].any()
        got = dict(dec.metrics, step=dec.metrics["point_step"])
        for name in ("step", "loss", "grad_norm", "loss_min_window", "loss_max_window",
                     "stop_reason"):
            np.testing.assert_array_equal(got[name][:n, j], want[name], err_msg=name)
        stops.append(int(point["step"][-1]))
    assert len(set(stops)) == 3 and any(s % K != K - 1 for s in stops)
    # the analysis reads each point's own steps
    assert [int(p.steps[-1]) for p in points(load_run(tmp_path / "dec"))] == stops


@pytest.mark.parametrize("at", [6, 9])
def test_a_kill_at_a_write_resumes_bit_for_bit(tmp_path, monkeypatch, at):
    """Killed after writing the metrics of step 20 (before the step-40 checkpoint: those
    rows are dropped and recomputed) or of step 40 (after it), then resumed."""
    config = _toy(eig_every=None, steps=60, chunk_steps=20, checkpoint_every=40,
                  record_every=K)
    straight = run_experiment(config, tmp_path / "one", progress=False)
    writes = []

    class Killed(BaseException):
        pass

    def write_point(phase):
        if phase == "renamed":
            writes.append(phase)
            if len(writes) == at:
                raise Killed

    monkeypatch.setattr(rd, "_write_point", write_point)
    with pytest.raises(Killed):
        run_experiment(config, tmp_path / "r", progress=False)
    monkeypatch.undo()
    assert rd.metric_files(tmp_path / "r")[-1][0] == (20 if at == 6 else 40)
    again = run_experiment(config, tmp_path / "r", resume=True, progress=False)
    assert again.status == "completed" and again.steps_done == 60
    assert list(again.metrics) == list(straight.metrics)
    for k, v in straight.metrics.items():
        np.testing.assert_array_equal(again.metrics[k], v, err_msg=k)
    np.testing.assert_array_equal(np.asarray(again.params), np.asarray(straight.params))
    assert rd.check_metrics(tmp_path / "r", K) == 60


@pytest.mark.parametrize(("changes", "field"), [
    (dict(record_every=0), "record_every"),
    (dict(record_every=2.5), "record_every"),
    (dict(record_every=True), "record_every"),
    (dict(record_every=7), "steps"),
    (dict(steps=215, chunk_steps=None, record_every=10), "steps"),
    (dict(chunk_steps=50, record_every=20), "chunk_steps"),
    # a network's default chunk, min(steps, 100)
    (dict(problem="mlp", dataset="digits", steps=300, record_every=60), "chunk_steps"),
    (dict(checkpoint_every=15, chunk_steps=None, record_every=10), "checkpoint_every"),
    (dict(density_at=(0, 15), record_every=10), "density_at"),
    (dict(processes=("discrete", "midpoint"), record_every=10), "record_every"),
    (dict(optimizer="normalized_gd", eig_every=None, reproject_steps=50, warmup_steps=20,
          record_every=10), "record_every"),
    (dict(optimizer="normalized_gd", lr=0.05, record_every=10), "record_every"),
])
def test_bad_record_every_is_a_config_error_naming_the_field(changes, field):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        _toy(**changes)
