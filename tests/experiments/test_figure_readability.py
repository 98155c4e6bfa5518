"""Every line in a figure can be told apart and read: distinct colours for λ2 and λ3, an axis
kept on the data when a threshold is far away, legends off the data, tick labels that do not
collide, coinciding curves drawn with staggered markers, the time axis η·t, and the
preconditioned sharpness for Adam sweeps. Read through public matplotlib API only."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.colors import to_rgba

from eosflow.analysis import (
    cohen_panel,
    collapse_figure,
    compare_figure,
    sweep_figure,
    verify_figure,
)
from eosflow.runner import write_json

from .conftest import (
    GD_LR,
    GD_N,
    SWEEP_LRS,
    base_columns,
    curvature_columns,
    gd_columns,
    make_run,
)


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _gd_run(tmp_path, *, lr=GD_LR, name="gd", extra=None):
    cols = gd_columns()
    cols.update(extra or {})
    return make_run(tmp_path / name, cols, config={"name": name, "lr": lr, "steps": GD_N})


def test_lambda_2_and_3_have_their_own_colours(tmp_path):
    lam = gd_columns()["lambda_1"]
    run = _gd_run(tmp_path, extra={"lambda_2": 0.6 * lam, "lambda_3": 0.3 * lam})
    ax = cohen_panel(run).axes[1]
    by_label = {ln.get_label(): ln for ln in ax.get_lines()}
    colours = [to_rgba(by_label[k].get_color()) for k in
               (r"$\lambda_1$", r"$\lambda_2$", r"$\lambda_3$")]
    assert len(set(colours)) == 3, colours
    np.testing.assert_allclose(by_label[r"$\lambda_3$"].get_ydata(), 0.3 * lam)


def test_threshold_in_range_is_drawn_and_one_far_above_is_named(tmp_path):
    # in range: 2/eta = 20 while lambda_1 oscillates at 19.5-21
    ax = cohen_panel(_gd_run(tmp_path, name="near")).axes[1]
    lo, hi = ax.get_ylim()
    assert lo <= 2 / GD_LR <= hi
    assert not any("above the axis" in t for t in _legend_texts(ax))
    # far: the same curves with eta = 0.001 in the config, 2/eta = 2000
    ax = cohen_panel(_gd_run(tmp_path, lr=0.001, name="far")).axes[1]
    lam = gd_columns()["lambda_1"]
    lo, hi = ax.get_ylim()
    assert lo <= lam.min() and lam.max() <= hi < 2000 / 10  # the curves fill the axis
    assert any("2000" in t and "above the axis" in t for t in _legend_texts(ax))


def _sweep_of_small_sharpness(tmp_path):
    """Three lr points whose lambda_1 stays near 1, far below 2/eta = 40, 20, 10."""
    n, t = 60, np.arange(60)
    lr = np.asarray(SWEEP_LRS)[None, :]
    lam = np.repeat((1.0 + t / n)[:, None], 3, axis=1) * np.array([[1.0, 1.1, 1.2]])
    cols = {k: np.repeat(v[:, None], 3, axis=1) for k, v in base_columns(n).items()
            if k != "step"}
    cols["step"] = t.astype(np.int64)
    cols.update(curvature_columns(lam * lr, lam, np.repeat(lr, n, axis=0)))
    cols["test_loss"] = np.where(t[:, None] % 10 == 0, 2 * cols["loss"], np.nan)
    return make_run(tmp_path / "s", cols, sweep={"lr": SWEEP_LRS},
                    config={"name": "s", "lr": 0.1, "steps": n})


def test_sweep_panels_keep_the_curves_and_their_legends_off_the_data(tmp_path):
    run = _sweep_of_small_sharpness(tmp_path)
    fig = cohen_panel(run)
    ax_loss, ax_lam = fig.axes
    assert ax_lam.get_ylim()[1] < 3.0  # not squashed under 2/eta = 10 .. 40
    assert any("above the axis" in t for t in _legend_texts(ax_lam))
    assert "held-out loss" in _legend_texts(ax_loss)
    for ax in (ax_loss, ax_lam):  # legends below the axes: they cover no curve
        fig.draw_without_rendering()
        assert not _overlap(ax.get_legend().get_window_extent(), ax.get_window_extent())
    fig = sweep_figure(run)
    ax_l, ax_r = fig.axes[:2]
    assert ax_l.get_ylim()[1] < 3.0 and ax_r.get_ylim()[1] < 2.0  # y = x and S = 2 far above
    assert any("above the axis" in t for t in _legend_texts(ax_l))
    assert any("above the axis" in t for t in _legend_texts(ax_r))
    fig.draw_without_rendering()
    for ax in (ax_l, ax_r):
        assert not _overlap(ax.get_legend().get_window_extent(), ax.get_window_extent())


def test_step_axes_carry_eta_t_on_a_secondary_axis(tmp_path):
    fig = cohen_panel(_gd_run(tmp_path))
    fig.draw_without_rendering()
    for ax in fig.axes:
        (sec,) = [c for c in ax.child_axes if "η·t" in c.get_xlabel()]
        np.testing.assert_allclose(sec.get_xlim(), GD_LR * np.asarray(ax.get_xlim()))
    # a sweep over eta has no single eta*t: no secondary axis
    fig = cohen_panel(_sweep_of_small_sharpness(tmp_path))
    assert not any(c.get_xlabel() for ax in fig.axes for c in ax.child_axes)
    # compared runs: on top of the first panel when they share eta, else nowhere
    a, b = _gd_run(tmp_path, name="a"), _gd_run(tmp_path, name="b")
    fig = compare_figure([a, b])
    fig.draw_without_rendering()
    (sec,) = [c for c in fig.axes[0].child_axes if "η·t" in c.get_xlabel()]
    np.testing.assert_allclose(sec.get_xlim(), GD_LR * np.asarray(fig.axes[0].get_xlim()))
    fig = compare_figure([a, _gd_run(tmp_path, lr=2 * GD_LR, name="c")])
    assert not any(c.get_xlabel() for ax in fig.axes for c in ax.child_axes)


def test_held_out_loss_is_in_the_training_panel(tmp_path):
    loss = gd_columns()["loss"]
    test = np.where(np.arange(GD_N) % 10 == 0, 1.5 * loss, np.nan)
    ax = cohen_panel(_gd_run(tmp_path, extra={"test_loss": test})).axes[0]
    (held,) = [ln for ln in ax.get_lines() if ln.get_label() == "held-out loss"]
    keep = np.isfinite(test)
    np.testing.assert_allclose(held.get_ydata(), test[keep])


def _verify_json(path, etas, curves):
    taus = list(np.linspace(0.0, 4.0, 25))
    lam = list(10.0 - np.asarray(taus))
    data = {"checks": [], "tracking": [{
        "toy": "toy_a", "method": "normalized_gd", "etas": etas,
        "errors": [0.1 * e for e in etas], "taus": taus,
        "lambda_runs": [lam] * curves, "lambda_flow": lam}]}
    write_json(path, data)
    return path


def test_verify_tick_labels_do_not_collide(tmp_path):
    etas = [0.0258, 0.0283, 0.0516, 0.0566, 0.103, 0.113, 0.207]
    fig = verify_figure(_verify_json(tmp_path / "v.json", etas, len(etas)))
    fig.draw_without_rendering()
    (ax,) = fig.axes
    shown = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    boxes = [t.get_window_extent() for t in shown]
    assert len(shown) >= len(etas) // 2
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not _overlap(a, b)


def test_collapse_curves_that_coincide_stay_distinguishable(tmp_path):
    etas = [0.2, 0.1, 0.05, 0.025]
    fig = collapse_figure(_verify_json(tmp_path / "v.json", etas, len(etas)))
    (ax,) = [a for a in fig.axes if a.get_visible()]
    runs = [ln for ln in ax.get_lines() if ln.get_label().startswith("η =")]
    assert len(runs) == 4
    assert len({to_rgba(ln.get_color()) for ln in runs}) == 4
    assert len({ln.get_marker() for ln in runs}) == 4
    assert len({str(ln.get_linestyle()) for ln in runs}) == 4
    # the markers of the identical curves sit at different taus
    marked = []
    for ln in runs:
        start, every = ln.get_markevery()
        marked.append(set(np.asarray(ln.get_xdata())[start::every].tolist()))
        assert marked[-1]
    for i, a in enumerate(marked):
        for b in marked[i + 1:]:
            assert not a & b
    assert "staggered" in ax.get_legend().get_title().get_text()


def test_adam_sweep_figure_draws_the_preconditioned_sharpness_at_its_edge(tmp_path):
    lrs, n = [0.001, 0.002], 80
    t = np.arange(n)
    edge = (2 + 2 * 0.9) / ((1 - 0.9) * np.asarray(lrs))  # 38/eta
    pre = np.where(t[:, None] < 40, 0.5, 1.0) * edge[None, :]  # at the edge from step 40
    raw = np.full((n, 2), 10.0)
    cols = {k: np.repeat(v[:, None], 2, axis=1) for k, v in base_columns(n).items()
            if k != "step"}
    cols["step"] = t.astype(np.int64)
    cols.update(curvature_columns(2 * pre / edge, raw, np.repeat([lrs], n, axis=0)))
    cols["precond_lambda_1"] = pre
    run = make_run(tmp_path / "adam", cols, sweep={"lr": lrs},
                   config={"name": "adam", "optimizer": "adam", "momentum": 0.9,
                           "lr": 0.001, "steps": n})
    ax = sweep_figure(run).axes[0]
    (final,) = [ln for ln in ax.get_lines() if "at the end" in ln.get_label()]
    np.testing.assert_allclose(final.get_xdata(), edge)
    np.testing.assert_allclose(final.get_ydata(), edge)  # lambda_1(P^-1 H), not the raw 10
    assert "P^{-1}H" in ax.get_ylabel()


def test_compared_runs_that_coincide_stay_distinguishable(tmp_path):
    run = _gd_run(tmp_path)
    fig = compare_figure([run, run])  # the same run twice: the curves coincide exactly
    ax_loss, ax_lam, _ = fig.axes
    for ax in (ax_loss, ax_lam):
        lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
        assert len(lines) == 2
        assert lines[0].get_marker() != lines[1].get_marker()
        marked = []
        for ln in lines:
            start, every = ln.get_markevery()
            marked.append(set(np.asarray(ln.get_xdata())[start::every].tolist()))
        assert marked[0] and marked[1] and not marked[0] & marked[1]
    assert "staggered" in ax_loss.get_legend().get_title().get_text()


def test_titles_wider_than_the_figure_are_wrapped_not_cut(tmp_path):
    from eosflow.analysis import save_figure

    name = "a-very-long-run-name-" * 6  # as a sweep's name with its eta range
    fig = cohen_panel(_gd_run(tmp_path, name=name))
    title = fig.get_suptitle()
    assert name in title
    save_figure(fig, tmp_path, "fig", formats=("png",))
    fig.draw_without_rendering()
    from matplotlib.text import Text

    box = fig.bbox
    texts = [t for t in fig.findobj(Text) if t.get_text() == fig.get_suptitle()]
    assert len(texts) == 1
    texts += [ax.title for ax in fig.axes if ax.get_title()]
    for t in texts:
        e = t.get_window_extent()
        assert box.x0 <= e.x0 and e.x1 <= box.x1, (t.get_text(), e, box)
    # wrapped, nothing lost
    assert "\n" in fig.get_suptitle()
    assert "".join(fig.get_suptitle().split()) == "".join(title.split())


@pytest.mark.parametrize(("config", "want"), [
    (dict(optimizer="rmsprop", decay=0.999, bias_correction=True, lr=0.002),
     "(rmsprop, decay 0.999, bias-corrected, η = 0.002)"),
    (dict(optimizer="rmsprop", decay=0.9, bias_correction=False, lr=0.002),
     "(rmsprop, decay 0.9, η = 0.002)"),
    (dict(optimizer="gd", decay=0.9, lr=0.2), "(gd, η = 0.2)"),  # decay is RMSProp's alone
])
def test_titles_name_rmsprops_second_moment(tmp_path, config, want):
    """RMSProp's decay and bias correction set where it sits (2.01 against 3.09 on digits):
    a figure's title says them, and no other optimizer's does."""
    run = make_run(tmp_path / "r", gd_columns(), config={"name": "r", **config})
    fig = cohen_panel(run)
    assert fig.get_suptitle().endswith(want), fig.get_suptitle()
