"""Run and sweep directories as tidy pandas frames, summaries, reports and figures."""

from actlab.analysis.load import (  # noqa: F401
    AXES,
    CACHE,
    METRICS,
    STATUSES,
    SUMMARY,
    SWEEP_SUMMARY,
    Paths,
    activation_label,
    axes,
    comparison_table,
    expected_calibration_error,
    load_density,
    load_run,
    load_sweep,
    run_config,
    run_dirs,
    summaries,
    wide,
    write_sweep_summary,
)
