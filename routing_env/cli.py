"""The ``routing-env`` command line (docs/design.md §10): ``train``, ``evaluate``, ``sweep``, ``study``, ``demo``, ``joint``, ``rewards``, ``backbones``, ``profile``, ``attack``, ``bench`` and ``pretrain``."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .checkpoints import read_json
from .env import COTRAINING_OPTIONS
from .experiments import (
    EarlyStopping,
    StudySpec,
    SweepSpec,
    evaluation_env,
    evaluation_json,
    groups_markdown,
    rewards_markdown,
    run_env_kwargs,
    run_study,
    run_sweep,
    train_run,
)
from .plugins import option_value
from .rewards import split_specs

DEFAULT_ENV = "routing_env/Cascade-v0"
"""The environment a command makes when ``--env`` is not given."""


def parse_kwargs(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, each VALUE read by :func:`routing_env.plugins.option_value`; a KEY given twice
    with two values is refused, not settled by the last."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} entry {item!r} is not of the form KEY=VALUE")
        value = option_value(raw)
        if key in out and out[key] != value:
            raise ValueError(f"{what} gives {key} twice, {out[key]!r} and {value!r}; give it once")
        out[key] = value
    return out


def env_kwargs_from(args: argparse.Namespace) -> dict[str, Any]:
    """The environment options of ``--env-kwargs`` and the named flags; an option given both ways
    with two values is refused, not silently settled."""
    kwargs = parse_kwargs(args.env_kwargs, "--env-kwargs")
    for name in ("backbone", "dataset", "lam", "data_root"):
        value = getattr(args, name, None)
        if value is not None:
            if name in kwargs and kwargs[name] != value:
                raise ValueError(f"--{name.replace('_', '-')} {value!r} and --env-kwargs {name}={kwargs[name]!r} disagree; give it once")
            kwargs[name] = value
    return kwargs


def grid_env_kwargs(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The environment options of a ``sweep`` or ``study``, whose λ comes from ``--lams`` (or, under
    ``--targets``, starts at 0): a λ given as an option too is refused rather than dropped."""
    kwargs = env_kwargs_from(args)
    if "lam" in kwargs:
        raise ValueError(f"{command} takes λ from --lams (or --targets), so --lam / --env-kwargs lam={kwargs['lam']!r} "
                         "would be ignored; drop it")
    return kwargs


def refuse_options(args: argparse.Namespace, names: tuple[str, ...], why: str) -> None:
    """Refuse (``ValueError``: ``main`` prints one line and exits with status 2) any option of ``names``
    given a value other than its default, rather than ignore it. The defaults are the parser's own,
    recorded by ``record_defaults``, so they are declared once, in ``build_parser``."""
    given = sorted(f"--{k.replace('_', '-')}" for k in names if getattr(args, k) != args.defaults[k])
    if given:
        raise ValueError(f"{', '.join(given)} {why}")


def record_defaults(p: argparse.ArgumentParser, *groups: tuple[str, ...]) -> None:
    """Keep ``p``'s defaults of the options in ``groups`` as ``args.defaults``, for ``refuse_options``."""
    p.set_defaults(defaults={name: p.get_default(name) for group in groups for name in group})


def parse_list(raw: str, kind: type, what: str) -> tuple[Any, ...]:
    """A comma-separated list such as ``0.01,0.05`` of ``kind`` values."""
    try:
        values = tuple(kind(v) for v in raw.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{what} {raw!r} is not a comma-separated list of {kind.__name__} values") from None
    if not values:
        raise ValueError(f"{what} {raw!r} names no values")
    return values


# --- train ----------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if (out / "eval.json").exists() and not args.overwrite:  # a finished run's policy and curves would be lost
        raise ValueError(f"--out {out} already holds a finished run ({out / 'eval.json'}); choose another --out, or "
                         f"pass --overwrite to replace it")
    _, result = train_run(
        args.env, env_kwargs_from(args), args.agent, parse_kwargs(args.agent_kwargs, "--agent-kwargs"), args.seed,
        args.steps, args.num_envs, out, progress=not args.quiet, early_stopping=early_stopping_from(args),
    )
    stopped = result.get("early_stopping")
    learned = (f"{stopped['stopped_at']} of {args.steps} steps (kept the policy of step {stopped['best_steps']}, best on val-holdout)"
               if stopped else f"{args.steps} steps")
    print(
        f"trained {args.agent} for {learned} in {result['train_seconds']} s; "
        f"{result['split']}: accuracy {result['accuracy']:.4f} at {result['macs_fraction']:.4f} of the "
        f"reference MACs; tensorboard --logdir {out / 'tb'}",
        file=sys.stderr,
    )
    return 0


# --- evaluate -------------------------------------------------------------------------------------
RUN_REFUSES = ("agent_kwargs", "steps", "seed", "num_envs", "env")
"""``evaluate`` options that only ``--agent`` reads: beside ``--run`` they are refused."""


def cmd_evaluate(args: argparse.Namespace) -> int:
    from routing_env.agents import load_agent, make_agent

    if (args.run is None) == (args.agent is None):
        raise ValueError("evaluate needs exactly one of --run DIR or --agent NAME")
    if args.steps < 0:
        raise ValueError(f"evaluate needs --steps >= 0, got {args.steps}")
    if args.run is not None:  # the run's own agent, options and environment: what only --agent reads is refused
        refuse_options(args, RUN_REFUSES, "are options of evaluate --agent; --run evaluates the run's own agent in its own environment")
        run = Path(args.run)
        config_path = run / "config.json"
        if not config_path.is_file():
            raise ValueError(f"--run {run}: {config_path} does not exist (is it a directory written by `train`?)")
        config = read_json(config_path)
        env_id = config["env"]
        env = evaluation_env(env_id, run_env_kwargs(run, config, args.allow_code, env_kwargs_from(args)), args.split, run=run)
        agent = load_agent(run, env, allow_code=args.allow_code)
    else:
        env_id = args.env or DEFAULT_ENV
        env_kwargs = env_kwargs_from(args)
        dropped = sorted({"split", *COTRAINING_OPTIONS, "train_backbone"} & set(env_kwargs))
        if dropped:  # the evaluation environments set these themselves (tuned on val, scored on --split, frozen)
            raise ValueError(f"evaluate --agent tunes on val and scores --split on frozen environments, so --env-kwargs "
                             f"{', '.join(dropped)} would be ignored; give the split as --split, and evaluate a co-trained run with --run")
        if "target_macs" in env_kwargs:  # evaluation environments hold λ still, so the budget would be dropped silently
            raise ValueError("evaluate --agent tunes on a frozen environment, without target_macs: learn a budgeted policy with "
                             "`train --env-kwargs target_macs=F`, or give the threshold --agent-kwargs target_macs_fraction=F")
        tune_env = evaluation_env(env_id, env_kwargs, "val", num_envs=args.num_envs)  # frozen too
        agent = make_agent(args.agent, tune_env, seed=args.seed, **parse_kwargs(args.agent_kwargs, "--agent-kwargs"))
        agent.learn(args.steps, progress=not args.json)
        env = evaluation_env(env_id, env_kwargs, args.split)
    result = evaluation_json(agent, env, env_id)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table([result]))
    return 0


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of evaluation objects: policy, accuracy, mean MACs fraction."""
    lines = [f"{'policy':<52} {'accuracy':>9} {'MACs fraction':>14} {'mean MACs':>12}"]
    for r in rows:
        name = r.get("label", r["policy"]) + (" (upper bound, uses labels)" if r.get("uses_labels") else "")
        lines.append(f"{name:<52} {r['accuracy']:>9.4f} {r['macs_fraction']:>14.4f} {r['macs_mean']:>12.4g}")
    return "\n".join(lines)


# --- demo -----------------------------------------------------------------------------------------
DEMO_LAM = 0.03
"""The demo's λ unless ``--lam`` or ``--env-kwargs lam=`` gives one."""


def cmd_demo(args: argparse.Namespace) -> int:
    """One sweep point (agent, λ, seed) on the default pretrained cascade, shown beside the baselines."""
    out = Path(args.out)
    env_kwargs = env_kwargs_from(args)
    lam = env_kwargs.pop("lam", DEMO_LAM)
    spec = SweepSpec(args.env, env_kwargs, (args.agent,), (lam,), (args.seed,), args.steps, args.num_envs)
    results = run_sweep(spec, out, progress=not args.quiet)
    run = results["runs"][0]
    threshold = run["threshold_at_val_cost"]
    rows = [
        *results["singles"],
        {**threshold, "label": f"threshold at the policy's val cost (tau={threshold['tau']:.3f})"},
        {**run["test"], "label": f"{args.agent} (learned on val, lam={lam:g})"},
        results["oracle"],
    ]
    test = run["test"]
    print(f"{args.env} ({env_kwargs.get('backbone') or 'default backbone'}) on test ({test['n']} instances); "
          f"policies and the threshold tuned on val; MACs = multiply-accumulates, fraction of the reference network's")
    print(format_table(rows))
    print(f"policy network: {test['policy_macs_per_decision']:.0f} MACs per decision, {test['decisions_mean']:.2f} decisions "
          f"per input: {test['macs_fraction_with_policy']:.4f} of the reference MACs in all")
    print(f"pareto plot: {out / 'pareto.png'}; results: {out / 'results.json'}; tensorboard --logdir {out / 'runs'}")
    return 0


# --- sweep ----------------------------------------------------------------------------------------
def cmd_sweep(args: argparse.Namespace) -> int:
    env_kwargs = grid_env_kwargs(args, "sweep")
    spec = SweepSpec(
        args.env,
        env_kwargs,
        parse_list(args.agent, str, "--agent"),
        parse_list(args.lams, float, "--lams"),
        parse_list(args.seeds, int, "--seeds"),
        args.steps,
        args.num_envs,
        parse_kwargs(args.agent_kwargs, "--agent-kwargs"),
        early_stopping_from(args),
    )
    results = run_sweep(spec, args.out, progress=not args.quiet, workers=args.workers, engine=args.engine, address=args.address)
    print(groups_markdown(results))
    reached = results["reaching_reference"]
    if reached is None:
        print("no (agent, lam) reaches the reference network's val accuracy on average")
    else:
        print(f"chosen on val as the cheapest to reach the reference network's val accuracy: {reached['agent']} "
              f"lam={reached['lam']:g}; on test {reached['accuracy_mean']:.4f} at {reached['macs_fraction_mean']:.4f} of its MACs "
              f"(the reference, the widest path offered: {reached['reference_accuracy']:.4f})")
    print(f"pareto plot: {Path(args.out) / 'pareto.png'}; table: {Path(args.out) / 'pareto.csv'}")
    return 0


# --- study ----------------------------------------------------------------------------------------
def cmd_study(args: argparse.Namespace) -> int:
    env_kwargs = grid_env_kwargs(args, "study")
    if (args.lams is None) == (args.targets is None):
        raise ValueError("study needs exactly one of --lams L,L (prices of compute) or --targets F,F (MACs budgets)")
    rewards = split_specs(args.rewards)  # commas inside a spec's [parameters] stay in it
    if not rewards:
        raise ValueError(f"--rewards {args.rewards!r} names no values")
    spec = StudySpec(
        args.env,
        env_kwargs,
        rewards,
        parse_list(args.agent, str, "--agent"),
        parse_list(args.seeds, int, "--seeds"),
        args.steps,
        lams=parse_list(args.lams, float, "--lams") if args.lams is not None else (),
        targets=parse_list(args.targets, float, "--targets") if args.targets is not None else (),
        num_envs=args.num_envs,
        agent_kwargs=parse_kwargs(args.agent_kwargs, "--agent-kwargs"),
        early_stopping=early_stopping_from(args),
    )
    study = run_study(spec, args.out, workers=args.workers, progress=not args.quiet, engine=args.engine, address=args.address)
    out = Path(args.out)
    print(rewards_markdown(study))
    print(f"report: {out / 'study.md'}; per trial: {out / 'study.csv'}; plots: {out / 'fronts.png'}, "
          f"{out / 'learning_curves.png'}, {out / 'hypervolume.png'}")
    return 0


# --- attack ---------------------------------------------------------------------------------------
def cmd_attack(args: argparse.Namespace) -> int:
    from routing_env.agents import load_agent

    from .attack import attack_report
    from .routed import RoutedModel

    run = Path(args.run)
    config_path = run / "config.json"
    if not config_path.is_file():
        raise ValueError(f"--run {run}: {config_path} does not exist (is it a directory written by `train`?)")
    config = read_json(config_path)
    env = evaluation_env(config["env"], run_env_kwargs(run, config, args.allow_code), args.split, run=run)
    agent = load_agent(run, env, allow_code=args.allow_code)
    if not hasattr(agent, "policy_module") or not hasattr(env.core.executor, "inputs"):
        raise ValueError(f"attack needs a policy with a policy_module (reinforce, ppo, maskable-ppo, a2c, dqn) on routing_env/DynamicResNet-v0; {run} holds {agent.name!r} on {config['env']}")
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    budget = {} if args.max_macs is None else {"max_macs": args.max_macs}  # else the one the policy was trained under
    routed = RoutedModel.from_env(env, agent.policy_module(), **budget)
    n = min(args.n, env.num_instances)
    report = attack_report(routed, env.core.executor.inputs[:n], env.core.labels[:n], args.eps, args.steps)
    print(json.dumps({"run": str(run), "split": args.split, **report}, indent=None if args.json else 1))
    return 0


# --- profile --------------------------------------------------------------------------------------
def cmd_profile(args: argparse.Namespace) -> int:
    from .backbones import make_backbone
    from .checkpoints import write_json
    from .latency import default_profile_path, profile

    table = profile(make_backbone(args.backbone), batch=args.batch, repeats=args.repeats)
    out = Path(args.out) if args.out else default_profile_path(args.backbone, args.batch)
    write_json(out, table)
    print(f"latency profile of {args.backbone} at batch {args.batch} ({table['machine']}): {out}; "
          f"train with --env-kwargs cost={'latency' if not args.out and args.batch == 1 else out}", file=sys.stderr)
    return 0


# --- rewards --------------------------------------------------------------------------------------
def cmd_rewards(args: argparse.Namespace) -> int:
    from .rewards import REWARD_DESCRIPTIONS, REWARD_SPECS, reward_parameters, show_default

    rows = [{"spec": spec, "description": REWARD_DESCRIPTIONS[spec][0], "source": REWARD_DESCRIPTIONS[spec][1],
             "parameters": reward_parameters(spec)} for spec in REWARD_SPECS]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            options = "".join(f" {k}={show_default(v)}" for k, v in row["parameters"].items())
            print(f"{row['spec']:<26} {row['description']}  [{row['source']}]" + (f"  (parameters:{options})" if options else ""))
    return 0


# --- backbones ------------------------------------------------------------------------------------
def cmd_backbones(args: argparse.Namespace) -> int:
    from .backbones import backbone_catalogue

    rows = backbone_catalogue()
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        if row["error"]:
            print(f"{row['name']:<34} cannot be loaded: {row['error']}")
            continue
        models = ", ".join(f"{m['model']} {model_figures(m)}".rstrip() for m in row["models"])
        default = f", the default of {row['env']}" if row["default"] else f", {row['env']}"
        data = ("; routes read the images" if row["needs_data"] else "") + (f"; exits after every {row['exits']}" if row["exits"] else "")
        dataset = row["dataset"] or "no data set registered: pass dataset="
        print(f"{row['name']:<34} {row['kind']}{default} ({dataset}{data}){': ' + models if models else ''}")
    return 0


def model_figures(model: dict) -> str:
    """``0.9213 at 125.5M MACs``, or what of it a card or manifest records."""
    accuracy, macs = model["test_accuracy"], model["macs"]
    parts = [f"{accuracy:.4f}" if isinstance(accuracy, (int, float)) else "", f"at {macs / 1e6:.1f}M MACs" if isinstance(macs, (int, float)) else ""]
    return " ".join(p for p in parts if p)


# --- joint ----------------------------------------------------------------------------------------
def cmd_joint(args: argparse.Namespace) -> int:
    if args.from_scratch:
        return joint_from_scratch_command(args)
    from .experiments.joint import JointSpec, joint_train

    refuse_options(args, SCRATCH_ONLY, "are options of --from-scratch")
    spec = JointSpec(
        backbone=args.backbone,
        lam=args.lam,
        epochs=args.epochs if args.epochs is not None else 10,
        num_envs=args.num_envs,
        seed=args.seed,
        backbone_lr=args.backbone_lr if args.backbone_lr is not None else 0.01,
        backbone_update_every=args.backbone_update_every,
        backbone_lr_schedule=args.backbone_lr_schedule,
        targets=args.targets or "exit",
        augment=args.augment,
        env_kwargs=parse_kwargs(args.env_kwargs, "--env-kwargs"),
        agent_kwargs=parse_kwargs(args.agent_kwargs, "--agent-kwargs"),
    )
    summary = joint_train(spec, args.out, resume=args.resume, progress=not args.quiet, time_limit=args.time_limit)
    last = summary["history"][-1] if summary["history"] else {}
    state = "stopped at the time limit; go on with --resume" if summary["stopped"] else "done"
    print(f"joint training: {summary['epochs']} of {spec.epochs} epochs, {state}, {last.get('backbone_updates', 0)} backbone updates; "
          f"co-trained members in {summary['backbone']}; evaluate with `routing-env evaluate --run {args.out}`, "
          f"tensorboard --logdir {Path(args.out) / 'tb'}", file=sys.stderr)
    return 0


SCRATCH_ONLY = ("batch_size", "dense_epochs", "member_floor", "member_loss", "warmup_epochs", "precision", "device", "branch_from")
"""``joint`` options that only the batched from-scratch run has."""
ENVIRONMENT_ONLY = ("num_envs", "backbone_update_every", "backbone_lr_schedule", "augment", "env_kwargs", "agent_kwargs")
"""``joint`` options that only the environment-driven fine-tuning run has."""


def joint_from_scratch_command(args: argparse.Namespace) -> int:
    from .experiments.joint_scratch import ScratchJointSpec, joint_from_scratch

    refuse_options(args, ENVIRONMENT_ONLY, "are options of the environment-driven run, not of --from-scratch")
    given = {"epochs": args.epochs, "lr": args.backbone_lr, "batch_size": args.batch_size, "dense_epochs": args.dense_epochs,
             "member_floor": args.member_floor, "warmup_epochs": args.warmup_epochs, "precision": args.precision, "targets": args.targets, "member_loss": args.member_loss}
    given = {k: v for k, v in given.items() if v is not None}
    if "epochs" in given and "warmup_epochs" not in given:  # the default warm-up, never longer than the run
        given["warmup_epochs"] = min(ScratchJointSpec.warmup_epochs, given["epochs"])
    spec = ScratchJointSpec(backbone=args.backbone, lam=args.lam, seed=args.seed, **given)
    summary = joint_from_scratch(spec, args.out, resume=args.resume, device=args.device or "cpu", time_limit=args.time_limit,
                                 progress=not args.quiet, branch_from=args.branch_from)
    state = "stopped at the time limit; go on with --resume" if summary["stopped"] else "done"
    print(f"joint training from scratch: {summary['epochs']} of {spec.epochs} epochs, {state}; members in {summary['backbone']}; "
          f"freeze them with routing_env.pretrained.package_cotrained(..., recalibrate=0); tensorboard --logdir {Path(args.out) / 'tb'}",
          file=sys.stderr)
    return 0


# --- bench ----------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench

    if not args.seconds > 0 or args.ppo_steps < 1:
        raise ValueError(f"bench needs --seconds > 0 and --ppo-steps >= 1, got {args.seconds} and {args.ppo_steps}")
    result = bench(seconds=args.seconds, ppo_steps=args.ppo_steps, dynamic=not args.no_dynamic, device=args.device)
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


# --- pretrain -------------------------------------------------------------------------------------
def cmd_pretrain(args: argparse.Namespace) -> int:
    from .pretrain import PretrainArgs, command_line, pretrain

    pargs = PretrainArgs(
        backbone=args.backbone,
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        schedule=args.schedule,
        ema=args.ema,
        seed=args.seed,
        precision=args.precision,
        init=args.init,
        sandwich=args.sandwich,
        skip_rate=args.skip_rate,
        uniform_routes=args.uniform_routes,
        full_width_routes=args.full_width_routes,
        whole_uniform_routes=args.whole_uniform_routes,
        order_channels=not args.no_order_channels,
        recalibrate=args.recalibrate,
        monitor=args.monitor,
        teacher=args.teacher,
        rescale=args.rescale,
        exits=args.exits,
        heads_only=args.heads_only,
    )
    card = pretrain(
        pargs,
        args.out,
        resume=args.resume,
        data_root=args.data_root,
        download=args.download,
        progress=not args.quiet,
        command=command_line(args.argv),
        device=args.device,
        time_limit=args.time_limit,
    )
    print(json.dumps(card))
    return 0


# --- parser ---------------------------------------------------------------------------------------
def add_early_stopping_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--holdout-every", type=int, metavar="STEPS",
                   help="early stopping: score the policy on val-holdout every STEPS instance-steps and keep the best "
                        "(learn on split=val-fit or val-aug-fit)")
    p.add_argument("--patience", type=int, help="with --holdout-every: stop after this many scorings without a better one (default 5)")


def early_stopping_from(args: argparse.Namespace) -> EarlyStopping | None:
    if args.holdout_every is None:
        if args.patience is not None:
            raise ValueError(f"--patience {args.patience} needs --holdout-every STEPS (early stopping)")
        return None
    return EarlyStopping(args.holdout_every, 5 if args.patience is None else args.patience)


def add_grid_options(p: argparse.ArgumentParser, unit: str, folder: str) -> None:
    """What a sweep and a study share: the agents and seeds of their grid, the steps per ``unit`` (a
    sweep's run, a study's trial), where the units execute, and the ``folder`` they are kept in."""
    p.add_argument("--agent", required=True, help="agent name(s), comma-separated, e.g. reinforce,ppo")
    p.add_argument("--agent-kwargs", nargs="*", metavar="KEY=VALUE", help="agent options (all agents)")
    p.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated")
    p.add_argument("--steps", type=int, required=True, help=f"environment instance-steps per {unit}")
    p.add_argument("--workers", type=int, default=1, help=f"{unit}s trained at once, each in its own process (or Ray task)")
    p.add_argument("--engine", default="local", help="where runs execute: local (this process or --workers processes) or ray")
    p.add_argument("--address", help="with --engine ray: join the Ray cluster at this address (default: start Ray here)")
    p.add_argument("--out", required=True, help=f"{folder} directory (finished {unit}s are kept and reused)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_early_stopping_options(p)


def add_env_options(p: argparse.ArgumentParser, env_default: str | None = DEFAULT_ENV, seed: bool = True) -> None:
    """The environment's options, shared by the commands that make one. ``env_default=None`` lets a
    command tell an ``--env`` given from the default (``evaluate --run`` refuses one); ``seed=False``
    for the grids, whose seeds are ``--seeds``."""
    p.add_argument("--env", default=env_default, help=f"environment id (default {DEFAULT_ENV})")
    p.add_argument("--backbone", help="backbone name (an environment option)")
    p.add_argument("--dataset", help="data set name (an environment option)")
    p.add_argument("--lam", type=float, help="price of compute λ (an environment option)")
    p.add_argument("--data-root", help="image data root (else ROUTING_ENV_DATA; an environment option)")
    p.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="further environment options")
    p.add_argument("--num-envs", type=int, default=16, help="episodes stepped together while learning")
    if seed:
        p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routing-env", description=__doc__)
    parser.add_argument("--version", action="version", version=f"routing-env {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a routing policy on val; write tensorboard logs, the policy, eval.json")
    add_env_options(p)
    p.add_argument("--agent", required=True, help="agent name or module.path:ClassName")
    p.add_argument("--agent-kwargs", nargs="*", metavar="KEY=VALUE", help="agent options")
    p.add_argument("--steps", type=int, required=True, help="environment instance-steps to learn for")
    p.add_argument("--out", required=True, help="run directory (refused if it holds a finished run, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the finished run --out holds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_early_stopping_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a trained run or a baseline on a split")
    add_env_options(p, env_default=None)
    p.add_argument("--run", help="run directory written by `train`")
    p.add_argument("--allow-code", action="store_true",
                   help="let --run import the module:Class its agent.json names, or the module:name reward its config.json "
                        "names (runs that code: trusted folders only)")
    p.add_argument("--agent", help="agent name (tuned or trained on val first)")
    p.add_argument("--agent-kwargs", nargs="*", metavar="KEY=VALUE", help="agent options")
    p.add_argument("--steps", type=int, default=0, help="steps to learn on val before evaluating (with --agent)")
    p.add_argument("--split", default="test", help="split to evaluate on")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else on stdout")
    p.set_defaults(func=cmd_evaluate)
    record_defaults(p, RUN_REFUSES)

    p = sub.add_parser("demo", help="train a policy on val, compare it with baselines on test")
    add_env_options(p)
    p.add_argument("--agent", default="reinforce")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sweep", help="train agents over lams and seeds on val; Pareto table and plot on test")
    add_env_options(p, seed=False)
    p.add_argument("--lams", required=True, help="prices of compute, comma-separated, e.g. 0.02,0.05,0.1")
    add_grid_options(p, "run", "sweep")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("study", help="train every reward spec over lams (or MACs targets), seeds and agents; compare their test fronts")
    add_env_options(p, seed=False)
    p.add_argument("--rewards", required=True, help="reward specs, comma-separated (routing-env rewards lists them), each optionally with parameters, 'accuracy-hinge[budget=0.3]' (quote it for the shell), or module.path:name for your own")
    p.add_argument("--lams", help="prices of compute, comma-separated (or --targets)")
    p.add_argument("--targets", help="MACs budgets (environment option target_macs; λ adapts from 0), comma-separated")
    add_grid_options(p, "trial", "study")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("attack", help="PGD inputs that maximise a routing policy's compute; its MACs clean and attacked, as JSON")
    p.add_argument("--run", required=True, help="a `train` run of reinforce on routing_env/DynamicResNet-v0")
    p.add_argument("--eps", type=float, default=8.0, help="L-infinity radius in pixel levels (of 255)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps (each eps/4)")
    p.add_argument("--max-macs", type=float, help="the hard budget to defend with (a fraction of the full network's MACs)")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=1000, help="images attacked (the first n of the split)")
    p.add_argument("--allow-code", action="store_true", help="as for evaluate --run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("profile", help="measure a backbone's latency per stage and width on this machine (a cost model, JSON)")
    p.add_argument("--backbone", required=True, help="backbone name")
    p.add_argument("--batch", type=int, default=1, help="inputs per call")
    p.add_argument("--repeats", type=int, default=50, help="calls per figure (the median is kept)")
    p.add_argument("--out", help="JSON path (default: $ROUTING_ENV_CACHE/latency/<backbone>-b<batch>.json, what cost=latency reads at batch 1)")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("rewards", help="list the reward specs with a one-line description and their source")
    p.add_argument("--json", action="store_true", help="one JSON list")
    p.set_defaults(func=cmd_rewards)

    p = sub.add_parser("backbones", help="list the backbones to route: kind, environment, data set, each model's test accuracy")
    p.add_argument("--json", action="store_true", help="one JSON list")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser("joint", help="train a cascade and its REINFORCE selection module together on train (Guan et al.); checkpoints, --resume")
    p.add_argument("--backbone", default="cifar10-resnet-cascade", help="the cascade to co-train (with --from-scratch: whose members' architectures to train)")
    p.add_argument("--lam", type=float, default=0.03, help="price of compute λ")
    p.add_argument("--epochs", type=int, help="passes over the train split (default 10; 60 with --from-scratch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone-lr", type=float, help="the members' SGD learning rate (default 0.01; with --from-scratch the peak rate, 0.2)")
    p.add_argument("--targets", help="the heads the members learn from: exit (Guan et al.; the default) or heads (every head on the route; the default with --from-scratch)")
    p.add_argument("--num-envs", type=int, default=64, help="episodes stepped together")
    p.add_argument("--backbone-update-every", type=int, default=32, help="ended episodes per member update")
    p.add_argument("--backbone-lr-schedule", default="constant", help="constant (Guan et al.) or cosine (from --backbone-lr towards 0, set per epoch)")
    p.add_argument("--augment", action="store_true", help="fresh crop-and-flip views of the train images (backbone_augment)")
    p.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="further environment options")
    p.add_argument("--agent-kwargs", nargs="*", metavar="KEY=VALUE", help="reinforce options")
    p.add_argument("--from-scratch", action="store_true", help="members from random weights, batched on a device (Guan et al.'s setting; experiments/joint_scratch.py)")
    p.add_argument("--batch-size", type=int, help="--from-scratch: images per step (default 512)")
    p.add_argument("--dense-epochs", type=int, help="--from-scratch: first epochs in which every member learns from every instance (default 0)")
    p.add_argument("--member-floor", type=float, help="--from-scratch: after the dense epochs, the weight of the instances a member's routes did not bring it (default 0: only those they did)")
    p.add_argument("--member-loss", help="--from-scratch: expected (a member's routed cross-entropy over the batch size; the default) or routed-mean (over the instances routed to it)")
    p.add_argument("--warmup-epochs", type=int, help="--from-scratch: linear warm-up of the members' rate (default 2)")
    p.add_argument("--precision", help="--from-scratch: fp32, or bf16 autocast (the default)")
    p.add_argument("--device", help="--from-scratch: where to train, e.g. cuda (default cpu)")
    p.add_argument("--time-limit", type=float, metavar="MINUTES", help="start an epoch only if it ends within this many minutes of the start; --resume goes on")
    p.add_argument("--branch-from", metavar="CHECKPOINT", help="--from-scratch: start from another run's checkpoint.pt taken inside both runs' dense epochs, "
                   "when the runs differ only in --dense-epochs or --member-floor (the same computation up to there); with --resume, "
                   "--out's own checkpoint once it has one")
    p.add_argument("--out", required=True, help="run directory (checkpoint.pt, backbone.pt, the policy, tb/)")
    p.add_argument("--resume", action="store_true", help="go on from OUT/checkpoint.pt")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_joint)
    record_defaults(p, SCRATCH_ONLY, ENVIRONMENT_ONLY)

    p = sub.add_parser("bench", help="speed of the environments, SB3 training and routed inference, as JSON")
    p.add_argument("--json", action="store_true", help="one line of JSON (the default prints it indented)")
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per throughput figure (the median of 5 rounds)")
    p.add_argument("--ppo-steps", type=int, default=16384, help="timesteps of each PPO run")
    p.add_argument("--no-dynamic", action="store_true", help="skip the figures that need CIFAR-10")
    p.add_argument("--device", default="cpu", help="e.g. cuda: only the figures whose work runs there (dynamic env at B = 256/1024/4096, "
                   "routing overhead, routed inference at batch 1/64/256)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("pretrain", help="train a backbone on the train split; checkpoints, --resume, model card")
    p.add_argument("--backbone", required=True, help="classifier name, e.g. resnet20, or resnet20-dynamic")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--out", required=True, help="output directory (checkpoint, tensorboard, weights, model card)")
    p.add_argument("--resume", action="store_true", help="go on from OUT/checkpoint.pt")
    p.add_argument("--data-root", help="data root (else ROUTING_ENV_DATA, else ~/.cache/routing_env)")
    p.add_argument("--download", action="store_true", help="download the data set with torchvision first")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--schedule", default="cosine", help="cosine (with warm-up) or onecycle")
    p.add_argument("--ema", type=float, help="EMA decay of the weights, e.g. 0.999")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="fp32", help="fp32, or bf16 autocast")
    p.add_argument("--device", default="cpu", help="where to train, e.g. cuda")
    p.add_argument("--init", help="start from these weights (a plain ResNet of the same depth for a dynamic backbone)")
    p.add_argument("--sandwich", type=int, default=2, help="dynamic backbones: random routes per batch")
    p.add_argument("--skip-rate", type=float, default=0.5, help="dynamic backbones: largest random skip probability")
    p.add_argument("--uniform-routes", type=float, default=0.5, help="dynamic backbones: probability that a random route runs every block at one width")
    p.add_argument(
        "--full-width-routes",
        type=float,
        default=0.0,
        help="dynamic backbones: probability that a random route runs every kept block at full width (trains skip patterns)",
    )
    p.add_argument(
        "--whole-uniform-routes",
        action="store_true",
        help="dynamic backbones: a uniform random route skips no block (trains each slimmed network whole more often)",
    )
    p.add_argument("--no-order-channels", action="store_true", help="dynamic backbones: keep a plain --init's channel order")
    p.add_argument("--recalibrate", type=int, default=100, help="dynamic backbones: BatchNorm recalibration batches after training (0: none)")
    p.add_argument("--monitor", type=int, default=1000, help="dynamic backbones: val images each static route is scored on every epoch (0: none)")
    p.add_argument("--teacher", help="a plain CIFAR ResNet state_dict to distil from (e.g. the shipped resnet56.pt): every route of a dynamic backbone, or a plain member (half labels, half teacher)")
    p.add_argument("--rescale", action="store_true", help="dynamic backbones: LC-Net's learned rescaling of narrowed and skipped blocks")
    p.add_argument("--exits", default="stage", help="dynamic backbones: exit heads after each stage (stage) or after every block (block)")
    p.add_argument(
        "--heads-only",
        action="store_true",
        help="dynamic backbones: train only the exit heads --init lacks, the rest frozen (e.g. --exits block from a stage-exit model)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        help="minutes: start an epoch only if it should end within them (the last epoch this call trained as the estimate; "
        "the first always runs), else stop with the checkpoint written and print {\"stopped\": true, ...}; go on with --resume",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what was asked, for the records that keep the command
    try:
        return args.func(args)
    except (ValueError, TypeError, KeyError, OSError, RuntimeError, ArithmeticError, pickle.UnpicklingError) as e:
        # a user's bad input (values, files, checkpoints, devices) or a diverged run is one line, not a traceback;
        # ROUTING_ENV_DEBUG=1 shows the traceback
        if os.environ.get("ROUTING_ENV_DEBUG"):
            raise
        print(f"routing-env {args.command}: error: {type(e).__name__ + ': ' if not isinstance(e, ValueError) else ''}{e}", file=sys.stderr)
        return 2
