"""Experiments: configurations, the runner, run directories, CLI, plots and reports."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "Config": "..runner",
    "ConfigError": "..runner",
    "Run": "..runner",
    "RunDirError": "..runner",
    "RunRecord": "..runner",
    "load_run": "..runner",
    "run_experiment": "..runner",
    "main": "._cli",
    "parse": "._cli",
    "format_value": "._commands",
    "DEFAULT": "._presets",
    "PRESETS": "._presets",
    "Preset": "._presets",
    "preset_config": "._presets",
    "preset_values": "._presets",
    "claim_quadratic": "._verify",
    "fit_slope": "._verify",
    "run_verify": "._verify",
    "tracking": "._verify",
    "Check": "._verify",
    "adaptive_eos_rows": "._verify_central",
    "central_flow_rows": "._verify_central",
    "rmsprop_central_rows": "._verify_central",
})
