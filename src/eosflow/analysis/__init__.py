"""Analysis of saved runs: headline numbers, figures and the HTML report.

Everything here is a pure function of a run directory; only this subpackage imports
matplotlib, and only inside the figure functions.
"""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "export_run": "._export",
    "run_table": "._export",
    "BUILDERS": "._figures",
    "cohen_panel": "._figures",
    "density_figure": "._figures",
    "density_on_grid": "._figures",
    "figure_stems": "._figures",
    "flow_figure": "._figures",
    "plot_run": "._figures",
    "prediction_figure": "._figures",
    "prediction_comparison": "._prediction",
    "prediction_line": "._prediction",
    "prediction_status": "._prediction",
    "format_value": "._report",
    "render_report": "._report",
    "write_report": "._report",
    "CAPTIONS": "._style",
    "decimate": "._style",
    "png_bytes": "._style",
    "save_figure": "._style",
    "Point": "._summary",
    "collapse": "._summary",
    "converged_rows": "._summary",
    "eos_onset": "._summary",
    "flow_clock": "._summary",
    "harmonic_sums": "._summary",
    "headline": "._summary",
    "lambda_threshold": "._summary",
    "lambda_thresholds": "._summary",
    "point_headline": "._summary",
    "points": "._summary",
    "stableness": "._summary",
    "two_step_average": "._summary",
    "two_step_harmonic_mean": "._summary",
    "compare_figure": "._sweep_figures",
    "compare_runs": "._sweep_figures",
    "plot_sweep": "._sweep_figures",
    "sweep_figure": "._sweep_figures",
    "collapse_figure": "._verify_figures",
    "plot_verify": "._verify_figures",
    "verify_figure": "._verify_figures",
    "comparison_line": "._processes",
    "process_comparison": "._processes",
    "processes_figure": "._processes",
})
