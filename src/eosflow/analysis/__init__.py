"""Analysis of saved runs: headline numbers, figures and the HTML report.

Everything here is a pure function of a run directory; only this subpackage imports
matplotlib, and only inside the figure functions.
"""

from ._export import export_run as export_run
from ._export import run_table as run_table
from ._figures import BUILDERS as BUILDERS
from ._figures import cohen_panel as cohen_panel
from ._figures import density_figure as density_figure
from ._figures import density_on_grid as density_on_grid
from ._figures import figure_stems as figure_stems
from ._figures import flow_figure as flow_figure
from ._figures import plot_run as plot_run
from ._figures import prediction_figure as prediction_figure
from ._processes import comparison_line as comparison_line
from ._processes import process_comparison as process_comparison
from ._processes import processes_figure as processes_figure
from ._report import format_value as format_value
from ._report import render_report as render_report
from ._report import write_report as write_report
from ._style import CAPTIONS as CAPTIONS
from ._style import decimate as decimate
from ._style import png_bytes as png_bytes
from ._style import save_figure as save_figure
from ._summary import Point as Point
from ._summary import collapse as collapse
from ._summary import converged_rows as converged_rows
from ._summary import eos_onset as eos_onset
from ._summary import flow_clock as flow_clock
from ._summary import harmonic_sums as harmonic_sums
from ._summary import headline as headline
from ._summary import lambda_threshold as lambda_threshold
from ._summary import lambda_thresholds as lambda_thresholds
from ._summary import point_headline as point_headline
from ._summary import points as points
from ._summary import prediction_comparison as prediction_comparison
from ._summary import prediction_line as prediction_line
from ._summary import prediction_status as prediction_status
from ._summary import stableness as stableness
from ._summary import two_step_average as two_step_average
from ._summary import two_step_harmonic_mean as two_step_harmonic_mean
from ._sweep_figures import compare_figure as compare_figure
from ._sweep_figures import compare_runs as compare_runs
from ._sweep_figures import plot_sweep as plot_sweep
from ._sweep_figures import sweep_figure as sweep_figure
from ._verify_figures import collapse_figure as collapse_figure
from ._verify_figures import plot_verify as plot_verify
from ._verify_figures import verify_figure as verify_figure
