"""One self-contained HTML report for one or several saved runs.

The file embeds everything it shows (figures as base64 PNG, styles inline; no scripts, no
external links), so it can be mailed or archived alone. Per run: how it ended, the headline
numbers of :func:`~eosflow.experiments._summary.headline`, the table of ``eosflow verify``
when the run has a ``verify.json``, the figures of :func:`~eosflow.experiments._figures.plot_run`
(generated when missing or older than the run's data), the configuration, the metadata and
the status. Several runs add a comparison figure and a summary table up front.
"""

import base64
import html
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import runner as rd
from ._summary import headline, is_adaptive

MAX_LIST = 10  # longer lists in the config/metadata are shown truncated
MAX_STRING = 400

# (key, label, meaning) of the single-run headline table, in order
HEADLINE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("state", "final state", "completed, diverged or goal_reached"),
    ("steps", "steps recorded", "rows in the metrics (steps run before any stop)"),
    ("loss_initial", "initial loss", "training loss at step 0"),
    ("loss_final", "final loss", "training loss at the last recorded step"),
    ("accuracy_final", "final accuracy", "training accuracy at its last evaluation"),
    ("lambda_threshold", "stability threshold", "2/η for GD, (2+2β)/η heavy ball, "
     "(2+2β)/((1+2β)η) Nesterov; on λ1(P⁻¹H): 2/η RMSProp, (2+2β1)/((1−β1)η) Adam; "
     "none for adaptive steps"),
    ("stableness", "stableness S_t", "how S_t is defined for this optimizer (EoS: S ≈ 2)"),
    ("eos_onset_step", "EoS onset step", "first step t with 2/(1/S_t + 1/S_{t+1}) ≥ 1.9; "
     "— if never"),
    ("mean_eta_lambda_after_onset", "mean S_t after onset",
     "arithmetic mean of S_t over the steps from the onset (GD at EoS: ≈ 2)"),
    ("median_eta_lambda_after_onset", "median S_t after onset",
     "robust to the huge S_t of normalized-GD steps near a minimum"),
    ("mean_harmonic_sum_after_onset", "mean 1/S_t + 1/S_{t+1} after onset",
     "normalized GD / GD on √L: theory 1 (Arora, Li & Panigrahi 2022, Thm 4.7)"),
    ("lambda_initial", "λ1 initial", "top Hessian eigenvalue at the first estimate"),
    ("lambda_max", "λ1 max", "largest estimate over the run"),
    ("lambda_at_onset", "λ1 at onset", "at the EoS onset step"),
    ("mean_lambda_after_onset", "mean λ1 after onset", "GD at EoS: ≈ 2/η"),
    ("lambda_final", "λ1 final", "at the last estimate"),
    ("lambda_fall", "fall of λ1 after onset", "(λ1 at onset − λ1 final) / λ1 at onset"),
    ("batch_sharpness_final", "batch sharpness final", "mini-batch runs: at the last estimate"),
    ("batch_sharpness_last_third", "mean batch sharpness, last third",
     "over the estimates at t ≥ 2T/3; SGD at the edge of stochastic stability: ≈ 2/η "
     "(arXiv 2412.20553)"),
    ("lambda_last_third", "mean λ1, last third", "mini-batch runs: below 2/η, lower for "
     "smaller batches"),
    ("minibatch_lambda_last_third", "mean mini-batch λ1, last third",
     "λ1 of fixed mini-batch losses (minibatch_lambda_batches), averaged over the batches"),
    ("test_loss_final", "final test loss", "held-out loss at its last evaluation"),
    ("test_accuracy_final", "final test accuracy", "held-out accuracy at its last evaluation"),
    ("num_estimates", "sharpness estimates", "steps at which λ1 was computed"),
    ("hvps_total", "HVPs total", "Hessian-vector products spent on curvature tracking"),
    ("hvps_per_estimate", "HVPs per estimate", "eigen-solve plus alignment products"),
    ("eig_matvecs_per_estimate", "eigen-solver HVPs per estimate", "warm-started Lanczos"),
    ("eig_converged_fraction", "eigen-solves converged", "fraction within the tolerance"),
    ("wall_seconds", "wall time [s]", "compiled stepping, curvature included"),
    ("seconds_per_step", "seconds per step", "wall time / steps run"),
    ("num_kicks", "kicks at ∇L ≈ 0", "normalized GD / √L GD: random kicks (theory: rare)"),
)

# rows and columns shown only where the run has them (normalized GD's kicks, mini-batch and
# held-out numbers)
OPTIONAL_ROWS = frozenset({"num_kicks", "batch_sharpness_final", "batch_sharpness_last_third",
                           "lambda_last_third", "minibatch_lambda_last_third",
                           "test_loss_final", "test_accuracy_final"})

# columns of the per-point table of a sweep, and of the summary table of several runs
POINT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("eos_onset_step", "EoS onset"),
    ("mean_eta_lambda_after_onset", "mean S_t after onset"),
    ("mean_harmonic_sum_after_onset", "mean 1/S_t + 1/S_{t+1}"),
    ("lambda_threshold", "threshold"),
    ("lambda_at_onset", "λ1 at onset"),
    ("lambda_final", "λ1 final"),
    ("lambda_fall", "fall of λ1"),
    ("batch_sharpness_last_third", "batch sharpness, last third"),
    ("lambda_last_third", "λ1, last third"),
    ("test_accuracy_final", "test accuracy"),
    ("loss_final", "final loss"),
    ("steps", "steps"),
)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 62em; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em;
     margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.meaning { color: #555; }
td.value { font-family: ui-monospace, monospace; font-size: 0.95em; word-break: break-word; }
table.headline td.value { word-break: normal; overflow-wrap: break-word; min-width: 8em; }
.state { font-size: 0.75em; padding: 0.1em 0.5em; border-radius: 0.3em;
         vertical-align: middle; color: #fff; background: #777; }
.state-completed, .state-goal_reached, .pass { background: #2e7d32; }
.state-diverged, .fail { background: #c62828; }
td.pass, td.fail { color: #fff; font-weight: bold; text-align: center; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #444; max-width: 50em; }
p.path, p.generated { color: #666; font-size: 0.85em; font-family: ui-monospace, monospace; }
p.message { background: #fff3e0; border-left: 4px solid #ef6c00; padding: 0.4em 0.8em; }
"""


# --- formatting ----------------------------------------------------------------------------------


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def format_value(v: Any) -> str:
    """How the report prints a value: ``None`` as "—", floats to 4 significant digits,
    everything else by ``str`` (not yet escaped)."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _short(v: Any) -> str:
    """A config or metadata value, long lists and strings truncated."""
    if isinstance(v, list | tuple):
        n = len(v)
        if n > MAX_LIST:
            ints = all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            if ints and list(v) == list(range(v[0], v[0] + n)):
                return f"[{v[0]}, {v[1]}, …, {v[-1]}] ({n} consecutive items)"
            head = ", ".join(_short(x) for x in v[:5])
            tail = ", ".join(_short(x) for x in v[-2:])
            return f"[{head}, …, {tail}] ({n} items)"
        return "[" + ", ".join(_short(x) for x in v) + "]"
    # floats at (almost) full precision: these are configuration values
    s = v if isinstance(v, str) else f"{v:.10g}" if isinstance(v, float) else format_value(v)
    return s if len(s) <= MAX_STRING else s[:MAX_STRING] + f"… ({len(s)} characters)"


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def _kv_table(d: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><th scope="row">{_e(k)}</th><td class="value">{_e(_short(v))}</td></tr>'
        for k, v in _flatten(d)
    )
    return f"<table>\n<tbody>{rows}</tbody>\n</table>\n"


def _num_td(v: Any) -> str:
    cls = "num" if isinstance(v, int | float) and not isinstance(v, bool) else "value"
    return f'<td class="{cls}">{_e(format_value(v))}</td>'


# --- sections ------------------------------------------------------------------------------------


def _headline_table(h: dict[str, Any], adaptive: bool) -> str:
    rows = []
    for key, label, meaning in HEADLINE_ROWS:
        if key not in h:
            continue
        if key == "mean_harmonic_sum_after_onset" and not adaptive:
            continue
        if key in OPTIONAL_ROWS and h.get(key) is None:
            continue
        rows.append(f'<tr data-key="{_e(key)}"><th scope="row">{_e(label)}</th>'
                    f'{_num_td(h[key])}<td class="meaning">{_e(meaning)}</td></tr>')
    return ('<table class="headline">\n<thead><tr><th>quantity</th><th>value</th>'
            "<th>meaning</th></tr></thead>\n<tbody>" + "\n".join(rows) + "</tbody>\n</table>\n")


def _points_table(rows: Sequence[dict[str, Any]], first: str, adaptive: bool) -> str:
    cols = [(k, lbl) for k, lbl in POINT_COLUMNS
            if (adaptive or k != "mean_harmonic_sum_after_onset")
            and (k not in OPTIONAL_ROWS or any(r.get(k) is not None for r in rows))]
    head = f"<th>{_e(first)}</th>" + "".join(f"<th>{_e(lbl)}</th>" for _, lbl in cols)
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="num" data-key="{_e(k)}">{_e(format_value(r.get(k)))}</td>'
            for k, _ in cols
        )
        body.append(f'<tr><th scope="row">{_e(r["label"])}</th>{cells}</tr>')
    return (f'<table class="points">\n<thead><tr>{head}</tr></thead>\n<tbody>'
            + "\n".join(body) + "</tbody>\n</table>\n")


def load_verify(run_dir: str | os.PathLike) -> list[dict[str, Any]] | None:
    """The rows of ``RUN/verify.json``, or None without one.

    Accepts a list of rows, or a dict holding them under ``"checks"`` (as ``eosflow verify``
    writes it) or ``"rows"``. A row has keys claim, quantity, prediction, measured,
    tolerance, passed.
    """
    path = Path(run_dir) / "verify.json"
    if not path.is_file():
        return None
    data = rd.read_json(path)
    rows = data.get("checks", data.get("rows", [])) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise rd.RunDirError(f"{path}: expected a list of rows, got {type(rows).__name__}.")
    return [r for r in rows if isinstance(r, dict)]


VERIFY_KEYS = ("claim", "quantity", "prediction", "measured", "tolerance", "passed")


def _verify_table(rows: Sequence[dict[str, Any]]) -> str:
    passed = sum(bool(r.get("passed")) for r in rows)
    head = "".join(f"<th>{k}</th>" for k in VERIFY_KEYS)
    body = []
    for r in rows:
        cells = []
        for k in VERIFY_KEYS[:-1]:
            v = r.get(k)
            cls = "num" if isinstance(v, int | float) and not isinstance(v, bool) else "value"
            cells.append(f'<td class="{cls}">{_e(format_value(v))}</td>')
        ok = bool(r.get("passed"))
        cells.append(f'<td class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<p class="verify-summary">{passed} of {len(rows)} checks passed.</p>\n'
            f'<table class="verify">\n<thead><tr>{head}</tr></thead>\n<tbody>'
            + "\n".join(body) + "</tbody>\n</table>\n")


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure>\n<img src="data:image/png;base64,{data}" alt="{_e(alt)}">\n'
            f"<figcaption>{_e(caption)}</figcaption>\n</figure>\n")


# --- figures -------------------------------------------------------------------------------------


def _data_mtime(run: rd.Run) -> float:
    paths = [p for _, p in rd.metric_files(run.path)]
    paths += list((run.path / "density").glob("*.npz")) if (run.path / "density").is_dir() else []
    paths += [run.path / n for n in ("prediction.npz", "status.json", "config.json")]
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def run_figures(run: rd.Run, *, regenerate: bool = False) -> list[tuple[str, bytes]]:
    """``(stem, PNG bytes)`` of each figure of ``run``, from ``RUN/figures/`` when they are
    there and newer than the run's data, else generated by
    :func:`~eosflow.experiments._figures.plot_run` (into memory only, if the run directory is
    read-only)."""
    from . import _figures, _style

    stems = _figures.figure_stems(run)
    folder = run.path / "figures"
    pngs = [folder / f"{s}.png" for s in stems]
    stale = regenerate or any(
        not p.exists() or p.stat().st_mtime < _data_mtime(run) for p in pngs
    )
    if stale:
        try:
            _figures.plot_run(run)
        except OSError:  # a read-only run: render into memory
            out = []
            for s in stems:
                fig = _figures.BUILDERS[s](run)
                if fig is not None:
                    out.append((s, _style.png_bytes(fig)))
            return out
    return [(s, p.read_bytes()) for s, p in zip(stems, pngs, strict=True) if p.exists()]


# --- the report ----------------------------------------------------------------------------------


def _prediction_paragraph(pr: dict[str, Any] | None) -> str:
    """The prediction's outcome: a warning box when it failed, one sentence when it ran."""
    from ._prediction import prediction_line

    if not pr:
        return ""
    line = prediction_line({"prediction": pr})
    if pr.get("status") == "ok":
        return f'<p class="prediction prediction-ok">{_e(line)}</p>\n'
    return f'<p class="message prediction-failed">{_e(line)}</p>\n'


def _run_section(run: rd.Run, h: dict[str, Any], anchor: str, *, regenerate: bool) -> str:
    from ._style import CAPTIONS

    name = str(run.config.get("name", run.path.name))
    state = str(h.get("state") or "unknown")
    adaptive = is_adaptive(run.config)
    parts = [f'<section class="run" id="{_e(anchor)}">\n',
             f'<h2>{_e(name)} <span class="state state-{_e(state)}">{_e(state)}</span></h2>\n',
             f'<p class="path">{_e(run.path)}</p>\n']
    if h.get("message"):
        parts.append(f'<p class="message">{_e(h["message"])}</p>\n')
    parts.append(_prediction_paragraph(h.get("prediction")))
    parts.append("<h3>Headline numbers</h3>\n")
    if run.sweep:
        wide = {k: h.get(k) for k in ("state", "hvps_total", "hvps_per_estimate",
                                       "wall_seconds", "seconds_per_step")}
        parts.append(_headline_table(wide, adaptive))
        parts.append("<p>Per point of the sweep "
                     + _e(", ".join(f"{k} = {_short(v)}" for k, v in run.sweep.items()))
                     + ":</p>\n")
        parts.append(_points_table(h["points"], "point", adaptive))
        c = h.get("collapse")
        if c:
            parts.append(
                f"<p>λ1 against the flow's clock s = {_e(c['clock'])}, over the range all "
                f"points cover (0 ≤ s ≤ {format_value(c['s_common'])}): largest relative "
                f"difference from the η = {format_value(c['reference_lr'])} curve "
                f"{format_value(c['max_rel_diff'])} (median "
                f"{format_value(c['median_rel_diff'])}), while that curve falls by "
                f"{format_value(c['reference_fall'])} (relative).</p>\n")
    else:
        parts.append(_headline_table(h, adaptive))
    if not run.sweep:
        from ._processes import comparison_line, process_comparison

        line = comparison_line(process_comparison(run))
        if line:
            parts.append(f'<h3>Processes</h3>\n<p class="processes">{_e(line)}.</p>\n')
    verify = load_verify(run.path)
    if verify is not None:
        parts.append("<h3>Verification (eosflow verify)</h3>\n")
        parts.append(_verify_table(verify))
        from . import _style, _verify_figures

        fig = _verify_figures.verify_figure(run.path / "verify.json")
        if fig is not None:
            parts.append(_img(_style.png_bytes(fig), f"{name}: verify",
                              _style.CAPTIONS["verify"]))
    figs = run_figures(run, regenerate=regenerate)
    if figs:
        parts.append("<h3>Figures</h3>\n")
        for stem, png in figs:
            parts.append(_img(png, f"{name}: {stem}", CAPTIONS.get(stem, stem)))
    parts.append("<h3>Configuration</h3>\n" + _kv_table(run.config))
    parts.append("<h3>Metadata</h3>\n" + _kv_table(run.metadata))
    parts.append("<h3>Status</h3>\n" + _kv_table(run.status))
    parts.append("</section>\n")
    return "".join(parts)


def render_report(run_dirs: Sequence[str | os.PathLike | rd.Run], *,
                  regenerate: bool = False) -> str:
    """The HTML text of the report on ``run_dirs`` (see :func:`write_report`)."""
    from .. import __version__
    from . import _style, _sweep_figures

    runs = [r if isinstance(r, rd.Run) else rd.load_run(r) for r in run_dirs]
    if not runs:
        raise ValueError("run_dirs: give at least one run directory.")
    heads = [headline(r) for r in runs]
    names = [str(r.config.get("name", r.path.name)) for r in runs]
    title = "eosflow report: " + (names[0] if len(runs) == 1 else f"{len(runs)} runs")
    when = time.strftime("%Y-%m-%d %H:%M:%S %z")
    parts = ["<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
             '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
             f'<meta name="generator" content="eosflow {_e(__version__)}">\n',
             f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
             f"<header>\n<h1>{_e(title)}</h1>\n",
             f'<p class="generated">generated {_e(when)} by eosflow {_e(__version__)}</p>\n'
             "</header>\n"]
    anchors = [f"run-{i + 1}" for i in range(len(runs))]
    if len(runs) > 1:
        links = "".join(f'<li><a href="#{a}">{_e(n)}</a></li>' for a, n in zip(
            anchors, names, strict=True))
        parts.append(f"<nav>\n<ul>{links}</ul>\n</nav>\n")
        parts.append('<section id="comparison">\n<h2>Comparison</h2>\n')
        rows = []
        for run, h in zip(runs, heads, strict=True):
            name = str(run.config.get("name", run.path.name))
            for p in h.get("points", [h]):
                label = name if "points" not in h else f"{name}: {p['label']}"
                rows.append({**p, "label": label})
        adaptive = any(is_adaptive(r.config) for r in runs)
        parts.append(_points_table(rows, "run", adaptive))
        fig = _sweep_figures.compare_figure(runs)
        parts.append(_img(_style.png_bytes(fig), "comparison", _style.CAPTIONS["compare"]))
        parts.append("</section>\n")
    for run, h, a in zip(runs, heads, anchors, strict=True):
        parts.append(_run_section(run, h, a, regenerate=regenerate))
    parts.append("</body>\n</html>\n")
    return "".join(parts)


def write_report(run_dirs: str | os.PathLike | rd.Run | Sequence[str | os.PathLike | rd.Run],
                 out: str | os.PathLike | None = None, *, regenerate: bool = False) -> Path:
    """Write one self-contained HTML report on one or several runs (or sweeps).

    Args:
        run_dirs: a run directory, or several.
        out: the HTML file to write; default ``RUN/report.html`` for one run (required for
            several).
        regenerate: redraw the figures even when ``RUN/figures/`` has up-to-date ones.

    Returns:
        The path of the written report.

    Raises:
        RunDirError: a directory is not a run.
        ValueError: several runs and no ``out``.
    """
    single = isinstance(run_dirs, str | os.PathLike | rd.Run)
    dirs = [run_dirs] if single else list(run_dirs)
    if out is None:
        if len(dirs) != 1:
            raise ValueError("out: required for a report on several runs; "
                             "pass the HTML file to write, e.g. out='runs/report.html'.")
        first = dirs[0]
        out = (first.path if isinstance(first, rd.Run) else Path(first)) / "report.html"
    text = render_report(dirs, regenerate=regenerate)
    out = Path(out)
    rd.atomic_write_bytes(out, text.encode("utf-8"))
    return out
