"""Experiments on a routing environment: train and evaluate (:mod:`.train`), the baselines
(:mod:`.baselines`), sweeps (:mod:`.sweep`) and their reports (:mod:`.report`)."""

from .baselines import hull_accuracy, oracle_row, random_skip_row, static_hull, static_rows, threshold_curve, threshold_row
from .report import groups_markdown, plot_pareto, run_name, write_pareto_csv
from .sweep import SweepSpec, group_runs, reaching_reference, run_sweep, sweep_run
from .train import EVAL_BATCH, evaluation_env, evaluation_json, evaluation_kwargs, make_vector_env, train_run, write_json

__all__ = [
    "EVAL_BATCH",
    "SweepSpec",
    "evaluation_env",
    "evaluation_json",
    "evaluation_kwargs",
    "group_runs",
    "hull_accuracy",
    "groups_markdown",
    "make_vector_env",
    "oracle_row",
    "plot_pareto",
    "random_skip_row",
    "reaching_reference",
    "run_name",
    "run_sweep",
    "static_hull",
    "static_rows",
    "sweep_run",
    "threshold_curve",
    "threshold_row",
    "train_run",
    "write_json",
    "write_pareto_csv",
]
