"""Experiments on a routing environment: train and evaluate (:mod:`.train`), the baselines
(:mod:`.baselines`), sweeps (:mod:`.sweep`) and their reports (:mod:`.report`)."""

from .baselines import hull_accuracy, oracle_row, random_skip_row, static_hull, static_rows, threshold_curve, threshold_row
from .engines import run_trials
from .report import groups_markdown, plot_pareto, run_name, write_pareto_csv
from .study import StudySpec, Trial, check_study, front_auc, hypervolume, pareto_front, rewards_markdown, run_study, steps_to_reach
from .sweep import SweepSpec, group_runs, reaching_reference, run_sweep, sweep_run
from .train import (
    EVAL_BATCH,
    EarlyStopping,
    evaluation_env,
    evaluation_json,
    evaluation_kwargs,
    make_vector_env,
    run_env_kwargs,
    train_run,
    write_json,
)

__all__ = [
    "EVAL_BATCH",
    "EarlyStopping",
    "StudySpec",
    "SweepSpec",
    "Trial",
    "check_study",
    "evaluation_env",
    "evaluation_json",
    "evaluation_kwargs",
    "front_auc",
    "group_runs",
    "hull_accuracy",
    "hypervolume",
    "groups_markdown",
    "make_vector_env",
    "oracle_row",
    "pareto_front",
    "plot_pareto",
    "random_skip_row",
    "reaching_reference",
    "rewards_markdown",
    "run_env_kwargs",
    "run_name",
    "run_study",
    "run_sweep",
    "run_trials",
    "static_hull",
    "static_rows",
    "steps_to_reach",
    "sweep_run",
    "threshold_curve",
    "threshold_row",
    "train_run",
    "write_json",
    "write_pareto_csv",
]
