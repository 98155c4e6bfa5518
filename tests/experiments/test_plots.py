"""Figures rendered from synthetic and tiny real runs (Agg, object-oriented API), checked
through their matplotlib objects: axes, labels, series, reference lines, legends."""

import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure

from eosflow.analysis import (
    cohen_panel,
    compare_figure,
    compare_runs,
    decimate,
    density_figure,
    density_on_grid,
    figure_stems,
    flow_figure,
    plot_run,
    plot_sweep,
    png_bytes,
    prediction_figure,
    sweep_figure,
)
from eosflow.experiments import load_run

from .conftest import (
    GD_LR,
    GD_ONSET,
    NGD_ONSET,
    SWEEP_LRS,
    TOY_ETA,
    TOY_PHI_EVERY,
    base_columns,
    flow_sweep,
    make_run,
    ngd_columns,
    toy_a_flow,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _legend(ax) -> list[str]:
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg is not None else []


def _hlines(ax, y: float) -> list:
    """Dashed lines that are constant at ``y``."""
    return [ln for ln in ax.get_lines() if ln.get_linestyle() == "--" and len(ln.get_ydata())
            and np.allclose(np.asarray(ln.get_ydata(), float), y)]


def _vline_xs(ax) -> list[float]:
    out = []
    for ln in ax.get_lines():
        x = np.asarray(ln.get_xdata(), float)
        if ln.get_linestyle() == ":" and len(x) == 2 and x[0] == x[1]:
            out.append(float(x[0]))
    return out


def _data_lines(ax) -> list:
    return [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]


def _check_readable(fig: Figure) -> None:
    w, _ = fig.get_size_inches()
    assert w <= 7.0  # a page of text
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for t in [ax.xaxis.label, ax.yaxis.label, ax.title, *ax.get_xticklabels()]:
            if t.get_text():
                assert t.get_fontsize() >= 9, t.get_text()
    title = next(t for t in fig.texts if t.get_text() == fig.get_suptitle())
    assert fig.get_suptitle() and title.get_fontsize() >= 9


def test_cohen_panel_gd(gd_run):
    fig = cohen_panel(gd_run)
    assert isinstance(fig, Figure)
    _check_readable(fig)
    ax_loss, ax_lam = fig.axes
    assert "gd-synthetic" in fig.get_suptitle()
    assert ax_loss.get_yscale() == "log"
    assert "loss" in ax_loss.get_ylabel() and "step" in ax_loss.get_xlabel()
    assert "lambda_1" in ax_lam.get_ylabel()
    # the 2/eta line sits at 2/eta = 20, and the legend names it
    assert len(_hlines(ax_lam, 2 / GD_LR)) == 1
    assert any("2/\\eta" in s for s in _legend(ax_lam))
    # the data: lambda_1 exactly as written
    (lam,) = [ln for ln in _data_lines(ax_lam) if "lambda_1" in ln.get_label()]
    run = load_run(gd_run)
    np.testing.assert_allclose(lam.get_ydata(), run.metrics["lambda_1"])
    # the onset marker at the hand-computed onset step
    assert _vline_xs(ax_lam) == [GD_ONSET]


def test_cohen_panel_normalized_gd(ngd_run):
    fig = cohen_panel(ngd_run)
    _check_readable(fig)
    assert len(fig.axes) == 4
    _, ax_lam, ax_s, ax_h = fig.axes
    s = ngd_columns()["eta_lambda"]
    # no fixed 2/eta threshold for normalized GD
    assert not [ln for ln in ax_lam.get_lines() if ln.get_linestyle() == "--"]
    # stableness panel: S_t with the line at 2
    assert len(_hlines(ax_s, 2.0)) == 1
    np.testing.assert_allclose(_data_lines(ax_s)[0].get_ydata(), s)
    # harmonic-sum panel: 1/S_t + 1/S_{t+1} with the line at 1, the EoS value visible
    assert len(_hlines(ax_h, 1.0)) == 1
    (h,) = _data_lines(ax_h)
    np.testing.assert_allclose(h.get_ydata(), 1 / s[:-1] + 1 / s[1:])
    np.testing.assert_array_equal(h.get_xdata(), np.arange(len(s) - 1))
    lo, hi = ax_h.get_ylim()
    assert lo <= 1.0 <= hi and ax_h.get_yscale() == "linear"
    assert "S_{t+1}" in ax_h.get_ylabel()
    assert _vline_xs(ax_h) == [NGD_ONSET]


def test_cohen_panel_sweep_one_line_per_point(sweep_run):
    fig = cohen_panel(sweep_run)
    ax_loss, ax_lam = fig.axes
    assert _legend(ax_loss) == ["η = 0.05", "η = 0.1", "η = 0.2"]
    assert len(_data_lines(ax_loss)) == 3
    for lr in SWEEP_LRS:  # each point's own 2/eta
        assert len(_hlines(ax_lam, 2 / lr)) == 1
    # the point that diverged at step 60 stops there
    assert _data_lines(ax_loss)[2].get_xdata()[-1] == 60


def test_cohen_panel_without_curvature(tmp_path):
    cols = base_columns(20)
    cols["eff_lr"] = np.full(20, 0.1)
    fig = cohen_panel(make_run(tmp_path / "r", cols, config={"steps": 20, "eig_every": None}))
    ax_lam = fig.axes[1]
    assert any("not tracked" in t.get_text() for t in ax_lam.texts)


def test_decimate_keeps_both_branches_of_an_oscillation():
    n = 100_001
    x = np.arange(n)
    y = np.where(x % 2 == 0, 4.0, 4.0 / 3.0) * (1 + x / n)
    xd, yd = decimate(x, y, max_points=1000)
    assert len(xd) <= 1000
    assert np.all(np.diff(xd) > 0)
    assert yd.max() == y.max() and yd.min() == y.min()
    # both branches survive in every part of the run (striding by an even step would not)
    mid = 8 / 3 * (1 + xd / n)  # between the branches 4/3 (1 + x/n) and 4 (1 + x/n)
    for part in np.array_split(np.arange(len(xd)), 10):
        assert (yd[part] < mid[part]).any() and (yd[part] > mid[part]).any()
    _, ys = decimate(x[:50], y[:50])
    np.testing.assert_array_equal(ys, y[:50])


def test_prediction_figure(toy_run):
    fig = prediction_figure(toy_run)
    _check_readable(fig)
    ax_x, ax_lam, ax_err, _ = fig.axes
    for ax in fig.axes:
        assert "tau" in ax.get_xlabel()
    run = load_run(toy_run)
    m = run.metrics
    measured = np.isfinite(m["phi_0"])
    # Phi(x_t) coordinates against tau = eta^2 t
    phi0 = next(ln for ln in ax_x.get_lines() if ln.get_label() == r"$\Phi(x_t)_0$")
    np.testing.assert_allclose(phi0.get_xdata(), TOY_ETA**2 * m["step"][measured])
    np.testing.assert_allclose(phi0.get_ydata(), m["phi_0"][measured])
    assert len([ln for ln in ax_x.get_lines() if ln.get_linestyle() == "--"]) == 2  # X(tau)
    assert any("X(" in s for s in _legend(ax_x))
    # lambda_1 at Phi and along the flow
    assert any("lambda_1(X" in s for s in _legend(ax_lam))
    # tracking error against the exact flow of toy A (closed form, no interpolation)
    (err,) = _data_lines(ax_err)
    tau = np.asarray(err.get_xdata())
    exact = toy_a_flow(m["phi_0"][0], tau)
    np.testing.assert_allclose(err.get_ydata(), np.abs(m["phi_0"][measured] - exact),
                               atol=1e-3)  # the prediction grid is interpolated linearly
    assert max(err.get_ydata()) < TOY_ETA  # the O(eta) claim on this run
    assert len([ln for ln in ax_err.get_lines()
                if np.allclose(np.asarray(ln.get_ydata(), float), TOY_ETA)]) == 1
    assert len(tau) == len(m["step"]) // TOY_PHI_EVERY


def test_prediction_figure_absent(gd_run):
    assert prediction_figure(gd_run) is None
    assert figure_stems(gd_run) == ["training"]


def test_density_on_grid_is_a_density():
    nodes = np.array([[0.0, 5.0], [1.0, 5.0]])
    weights = np.array([[0.7, 0.3], [0.6, 0.4]])
    grid = np.linspace(-5, 10, 30001)
    d = density_on_grid(nodes, weights, grid, sigma=0.1)
    assert np.trapezoid(d, grid) == pytest.approx(1.0, abs=1e-6)
    one = density_on_grid(np.array([[2.0]]), np.array([[1.0]]), np.array([2.0]), sigma=0.5)
    assert one[0] == pytest.approx(1 / (0.5 * np.sqrt(2 * np.pi)))


def test_density_figure(tmp_path):
    rng = np.random.default_rng(0)
    dens = []
    for step in (0, 50, 99):
        nodes = np.sort(rng.normal(0, 1, (4, 12)), axis=1)
        nodes[:, -1] = 15.0 + step / 10  # an outlier that moves
        w = rng.uniform(0.5, 1, (4, 12))
        dens.append((step, nodes, w / w.sum(axis=1, keepdims=True)))
    from .conftest import gd_columns

    run = make_run(tmp_path / "r", gd_columns(100), densities=dens,
                   config={"name": "dens", "lr": GD_LR, "steps": 100})
    fig = density_figure(run)
    _check_readable(fig)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert _legend(ax)[:3] == ["step 0", "step 50", "step 99"]
    curves = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    assert len(curves) == 3
    grid = np.asarray(curves[0].get_xdata())
    assert np.trapezoid(curves[0].get_ydata(), grid) == pytest.approx(1.0, abs=0.02)
    # the outlier of the last step is a local peak near 24.9
    y = np.asarray(curves[2].get_ydata())
    near = np.abs(grid - 24.9) < 1.0
    assert grid[near][np.argmax(y[near])] == pytest.approx(24.9, abs=0.2)
    assert "lambda" in ax.get_xlabel()
    assert "density" in figure_stems(run)


def test_sweep_figure(sweep_run):
    fig = sweep_figure(sweep_run)
    _check_readable(fig)
    ax_l, ax_r = fig.axes
    (final,) = [ln for ln in ax_l.get_lines() if "at the end" in ln.get_label()]
    np.testing.assert_allclose(final.get_xdata(), [2 / lr for lr in SWEEP_LRS])
    np.testing.assert_allclose(final.get_ydata(), [1 / 0.05, 2 / 0.1, 1.5 / 0.2])
    (ident,) = [ln for ln in ax_l.get_lines() if "y = x" in ln.get_label()]
    np.testing.assert_allclose(ident.get_xdata(), ident.get_ydata())
    (mean,) = [ln for ln in ax_l.get_lines() if "after EoS onset" in ln.get_label()]
    assert np.isnan(mean.get_ydata()[[0, 2]]).all() and mean.get_ydata()[1] == pytest.approx(20)
    assert len(_hlines(ax_r, 2.0)) == 1
    assert "2/\\eta" in ax_l.get_xlabel()


def test_sweep_figure_from_single_runs(gd_run, ngd_run, tmp_path):
    fig = sweep_figure([gd_run, gd_run])
    (final,) = [ln for ln in fig.axes[0].get_lines() if "at the end" in ln.get_label()]
    assert len(final.get_xdata()) == 2
    fig = sweep_figure(ngd_run)  # normalized GD: harmonic sum, line at 1
    assert len(_hlines(fig.axes[1], 1.0)) == 1
    with pytest.raises(ValueError, match="out_dir"):
        plot_sweep([gd_run, ngd_run])
    paths = plot_sweep([gd_run, ngd_run], tmp_path / "out", formats=("png",))
    assert [p.name for p in paths] == ["sweep.png"] and paths[0].read_bytes()[:8] == PNG_MAGIC


def test_compare_figure(gd_run, ngd_run, sweep_run):
    fig = compare_figure([gd_run, ngd_run, sweep_run])
    _check_readable(fig)
    ax_loss, _, ax_s = fig.axes
    assert _legend(ax_loss) == ["gd-synthetic", "ngd-synthetic", "sweep-synthetic: η = 0.05",
                                "sweep-synthetic: η = 0.1", "sweep-synthetic: η = 0.2"]
    assert len(_data_lines(ax_loss)) == 5
    assert len(_hlines(ax_s, 2.0)) == 1
    # the NGD series of the bottom panel is its two-step harmonic mean: exactly 2 after onset
    s = ngd_columns()["eta_lambda"]
    ngd = _data_lines(ax_s)[1]
    np.testing.assert_allclose(ngd.get_ydata(), 2 / (1 / s[:-1] + 1 / s[1:]))
    assert ax_loss.get_shared_x_axes().joined(ax_loss, ax_s)


def test_plot_run_writes_png_and_svg(ngd_run, tmp_path):
    paths = plot_run(ngd_run)
    assert [p.name for p in paths] == ["training.png", "training.svg", "flow.png", "flow.svg"]
    assert all(p.parent == ngd_run / "figures" for p in paths)
    assert paths[0].read_bytes()[:8] == PNG_MAGIC
    root = ET.fromstring(paths[1].read_bytes())
    assert root.tag.endswith("svg")
    assert "ngd-synthetic" in paths[1].read_text()  # text stays text in the SVG
    out = plot_run(ngd_run, tmp_path / "elsewhere", formats=("png",))
    assert all(p.parent == tmp_path / "elsewhere" and p.exists() for p in out)


def test_plot_run_all_figures(toy_run, sweep_run):
    names = sorted(p.name for p in plot_run(toy_run, formats=("png",)))  # PNG only: speed
    assert names == ["flow.png", "prediction.png", "training.png"]
    assert figure_stems(sweep_run) == ["training", "sweep"]


def test_compare_runs(gd_run, ngd_run, tmp_path):
    paths = compare_runs([gd_run, ngd_run], tmp_path / "cmp", formats=("svg",))
    assert [p.name for p in paths] == ["compare.svg"]
    assert "gd-synthetic" in paths[0].read_text()
    with pytest.raises(ValueError, match="runs"):
        compare_figure([])


def test_mathtext_in_a_run_name(tmp_path):
    cols = ngd_columns()
    name = "run$_^$<&>"  # "$_^$" is invalid mathtext: drawing it unescaped raises
    run = make_run(tmp_path / "r", cols, config={"name": name, "optimizer": "normalized_gd",
                                                 "steps": len(cols["step"])})
    fig = cohen_panel(run)
    assert png_bytes(fig)[:8] == PNG_MAGIC
    assert fig.get_suptitle().startswith(name.replace("$", "\\$"))


def test_plot_real_run(real_toy_run):
    paths = plot_run(real_toy_run)  # into RUN/figures: the report test reuses them
    assert [p.name for p in paths] == ["training.png", "training.svg", "flow.png", "flow.svg"]
    fig = cohen_panel(real_toy_run)
    assert len(fig.axes) == 4
    assert len(_data_lines(fig.axes[3])[0].get_ydata()) == 299


def test_package_imports_without_matplotlib():
    code = ("import sys; import eosflow.experiments, eosflow.analysis, eosflow.runner; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _tracking_json(path):
    etas = [0.2, 0.1, 0.05]
    taus = list(np.linspace(0.0, 4.0, 5))
    lam = [10.0, 8.0, 6.5, 5.5, 5.0]
    data = {
        "checks": [{"claim": "3", "quantity": "slope", "prediction": "1", "measured": 1.0,
                    "tolerance": ">= 0.8", "passed": True},
                   {"claim": "4", "quantity": "slope", "prediction": "1", "measured": 0.2,
                    "tolerance": ">= 0.8", "passed": False}],
        "tracking": [{"toy": "toy_a", "method": "normalized_gd", "etas": etas,
                      "errors": [0.4, 0.2, 0.1], "taus": taus,
                      "lambda_runs": [lam, lam, [v * 1.01 for v in lam]], "lambda_flow": lam}],
    }
    from eosflow.runner import write_json

    write_json(path, data)
    return path


def test_verify_figure(tmp_path):
    from eosflow.analysis import collapse_figure, plot_verify, verify_figure

    path = _tracking_json(tmp_path / "verify.json")
    fig = verify_figure(path)
    _check_readable(fig)
    (ax_e,) = fig.axes
    assert "1 of 2 checks passed" in fig.get_suptitle()
    (series,) = [ln for ln in ax_e.get_lines() if ln.get_label().startswith("toy_a, normal")]
    np.testing.assert_allclose(series.get_ydata(), [0.4, 0.2, 0.1])
    assert "slope 1.00" in series.get_label()  # errors halve with eta: slope exactly 1
    assert ax_e.get_xscale() == "log" and ax_e.get_yscale() == "log"
    (ref,) = [ln for ln in ax_e.get_lines() if "slope 1)" in ln.get_label()]
    ratio = np.asarray(ref.get_ydata()) / np.asarray(ref.get_xdata())
    assert ratio[0] == pytest.approx(ratio[1])  # slope exactly 1 on log-log axes
    fig = collapse_figure(path)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    flow = next(ln for ln in ax.get_lines() if ln.get_linestyle() == "--")
    np.testing.assert_allclose(flow.get_xdata(), np.linspace(0, 4, 5))
    np.testing.assert_allclose(flow.get_ydata(), [10.0, 8.0, 6.5, 5.5, 5.0])
    runs = [ln for ln in ax.get_lines() if ln.get_label().startswith("η =")]
    assert len(runs) == 3
    np.testing.assert_allclose(runs[-1].get_ydata(), [v * 1.01 for v in flow.get_ydata()])
    names = [p.name for p in plot_verify(path, formats=("png",))]
    assert names == ["verify.png", "verify_collapse.png"]
    assert verify_figure({"checks": [], "tracking": []}) is None
    assert plot_verify(_no_tracking(tmp_path / "v2.json")) == []


def _no_tracking(path):
    from eosflow.runner import write_json

    write_json(path, [{"claim": "1", "passed": True}])
    return path


def test_prediction_figure_partial(tmp_path):
    from .conftest import toy_a_columns

    cols = toy_a_columns(n=100)
    cfg = {"name": "p", "problem": "toy_a", "dataset": "none", "optimizer": "normalized_gd",
           "lr": TOY_ETA, "steps": 100, "dtype": "float64", "x0": (6.0, -1.0)}
    # flow diagnostics but no prediction.npz: coordinates, lambda(Phi) and distance only
    fig = prediction_figure(make_run(tmp_path / "a", cols, config=cfg))
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 3
    assert not [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"]
    # a prediction but no flow columns: the flow alone
    tau = np.linspace(0, 9, 50)
    X = toy_a_flow(6.0, tau)
    pred = {"tau": tau, "X": np.stack([X, 0 * X], 1), "lambda": 2 * (1 + X**2),
            "method": np.asarray("normalized_gd")}
    plain = {k: v for k, v in cols.items() if not k.startswith("phi") and k != "lambda_phi"}
    fig = prediction_figure(make_run(tmp_path / "b", plain, config=cfg, prediction=pred))
    assert len(fig.axes) == 2
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), X)


def test_flow_figure_on_the_flow_clock(toy_run):
    fig = flow_figure(toy_run)
    _check_readable(fig)
    (ax,) = fig.axes
    assert "η²t/4" in ax.get_xlabel()
    m = load_run(toy_run).metrics
    measured = np.isfinite(m["lambda_1"])
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    dots = lines[r"$\lambda_1(x_t)$ measured"]  # the measurements as dots, not joined
    assert dots.get_linestyle() == "None"
    np.testing.assert_allclose(dots.get_xdata(), TOY_ETA**2 * m["step"][measured] / 4)
    np.testing.assert_allclose(dots.get_ydata(), m["lambda_1"][measured])
    (avg,) = [ln for k, ln in lines.items() if k.startswith("two-step average")]
    lam, steps = m["lambda_1"], m["step"]
    pair = np.isfinite(lam[:-1]) & np.isfinite(lam[1:]) & (np.diff(steps) == 1)
    np.testing.assert_allclose(avg.get_xdata(), TOY_ETA**2 * steps[:-1][pair] / 4)
    np.testing.assert_allclose(avg.get_ydata(), 0.5 * (lam[:-1] + lam[1:])[pair])
    pred = np.load(toy_run / "prediction.npz")
    (flow,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    np.testing.assert_allclose(flow.get_xdata(), pred["tau"] / 4)  # tau = eta^2 t
    np.testing.assert_allclose(flow.get_ydata(), pred["lambda"])


def test_flow_figure_of_a_sweep_quotes_the_collapse(tmp_path):
    run = flow_sweep(tmp_path / "f", [0.2, 0.1], 10, 411, lambda s: 10.0 - s, [1.0, 1.05])
    assert figure_stems(run) == ["training", "flow", "sweep"]
    fig = flow_figure(run)
    (ax,) = fig.axes
    assert "after the warm-up" in ax.get_xlabel()
    big, small = _data_lines(ax)
    assert big.get_xdata()[0] == 0.0 and max(big.get_xdata()) == pytest.approx(4.0)
    assert max(small.get_xdata()) == pytest.approx(1.0)
    assert "5.0%" in ax.get_title() and "10.0%" in ax.get_title()  # gap and fall over s <= 1
    _check_readable(fig)


def test_flow_figure_absent_without_a_flow(gd_run, sweep_run):
    assert flow_figure(gd_run) is None and flow_figure(sweep_run) is None
