"""The ``routing-env`` command line (DESIGN §10): ``train``, ``evaluate`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch

from . import ENV_IDS, __version__
from .env import RoutingVectorEnv
from .evaluation import route_split, summarize

EVAL_BATCH = 256


def parse_kwargs(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that parses as JSON (numbers, true, null, lists) is taken as such."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} entry {item!r} is not of the form KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def make_vector_env(env_id: str, num_envs: int, **kwargs: Any) -> RoutingVectorEnv:
    """A natively vectorised routing environment for a registered id."""
    if env_id not in gym.registry or not env_id.startswith("routing_env/"):
        raise ValueError(f"unknown environment id {env_id!r}; expected one of {list(ENV_IDS)}")
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    assert isinstance(env, RoutingVectorEnv)
    return env


def env_kwargs_from(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = parse_kwargs(args.env_kwargs, "--env-kwargs")
    for name in ("backbone", "dataset", "lam", "data_root"):
        value = getattr(args, name, None)
        if value is not None:
            kwargs[name] = value
    return kwargs


def machine() -> str:
    return f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} torch threads".strip()


def evaluation_json(agent: Any, env: RoutingVectorEnv, env_id: str, progress: bool = False) -> dict[str, Any]:
    """The evaluation object of DESIGN §10 for ``agent`` on ``env``'s split."""
    records = route_split(agent, env, progress=progress)
    summary = summarize(records, env, agent.policy_macs())
    return {
        "policy": agent.name,
        "uses_labels": bool(getattr(agent, "uses_labels", False)),
        "env": env_id,
        **summary,
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


# --- train ----------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from agents import RunLogger, make_agent

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs = env_kwargs_from(args)
    env_kwargs.setdefault("split", "val")
    agent_kwargs = parse_kwargs(args.agent_kwargs, "--agent-kwargs")
    env = make_vector_env(args.env, args.num_envs, **env_kwargs)
    agent = make_agent(args.agent, env, seed=args.seed, **agent_kwargs)
    config = {
        "env": args.env,
        "env_kwargs": env_kwargs,
        "agent": args.agent,
        "agent_kwargs": agent_kwargs,
        "seed": args.seed,
        "steps": args.steps,
        "num_envs": args.num_envs,
        "routing_env_version": __version__,
    }
    write_json(out / "config.json", config)
    logger = RunLogger(out / "tb")
    start = time.time()
    agent.learn(args.steps, logger=logger, progress=not args.quiet)
    logger.close()
    agent.save(out)
    eval_env = make_vector_env(args.env, EVAL_BATCH, **env_kwargs)
    result = evaluation_json(agent, eval_env, args.env)
    result["train_seconds"] = round(time.time() - start, 2)
    write_json(out / "eval.json", result)
    print(
        f"trained {args.agent} for {args.steps} steps in {result['train_seconds']} s; "
        f"{env_kwargs['split']}: accuracy {result['accuracy']:.4f} at {result['macs_fraction']:.4f} of the "
        f"reference MACs; tensorboard --logdir {out / 'tb'}",
        file=sys.stderr,
    )
    return 0


# --- evaluate -------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    from agents import load_agent, make_agent

    if (args.run is None) == (args.agent is None):
        raise ValueError("evaluate needs exactly one of --run DIR or --agent NAME")
    if args.run is not None:
        run = Path(args.run)
        config_path = run / "config.json"
        if not config_path.is_file():
            raise ValueError(f"--run {run}: {config_path} does not exist (is it a directory written by `train`?)")
        config = json.loads(config_path.read_text())
        env_id = config["env"]
        env_kwargs = {**config["env_kwargs"], "split": args.split}
        env = make_vector_env(env_id, EVAL_BATCH, **env_kwargs)
        agent = load_agent(run, env)
    else:
        env_id = args.env
        env_kwargs = env_kwargs_from(args)
        tune_env = make_vector_env(env_id, args.num_envs, **{**env_kwargs, "split": "val"})
        agent = make_agent(args.agent, tune_env, seed=args.seed, **parse_kwargs(args.agent_kwargs, "--agent-kwargs"))
        agent.learn(args.steps, progress=not args.json)
        env = make_vector_env(env_id, EVAL_BATCH, **{**env_kwargs, "split": args.split})
    result = evaluation_json(agent, env, env_id)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table([result]))
    return 0


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of evaluation objects: policy, accuracy, mean MACs fraction."""
    lines = [f"{'policy':<34} {'accuracy':>9} {'MACs fraction':>14} {'mean MACs':>12}"]
    for r in rows:
        name = r.get("label", r["policy"]) + (" (upper bound, uses labels)" if r.get("uses_labels") else "")
        lines.append(f"{name:<34} {r['accuracy']:>9.4f} {r['macs_fraction']:>14.4f} {r['macs_mean']:>12.4g}")
    return "\n".join(lines)


# --- demo -----------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from agents import RunLogger, make_agent

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs = env_kwargs_from(args)
    val = make_vector_env(args.env, args.num_envs, **{**env_kwargs, "split": "val"})
    test = make_vector_env(args.env, EVAL_BATCH, **{**env_kwargs, "split": "test"})
    rows = []
    reference = None
    for position in sorted(test.core.backbone.spec.head_positions):
        fixed = make_agent("fixed", val, position=position)
        row = evaluation_json(fixed, test, args.env)
        rows.append({**row, "label": f"fixed route, exit at point {position}"})
        reference = row
    rows.append({
        **reference,
        "label": "reference model alone",
        "accuracy": reference["reference_accuracy"],
        "macs_mean": reference["reference_macs"],
        "macs_fraction": 1.0,
    })
    logger = RunLogger(out / "tb")
    policy = make_agent(args.agent, val, seed=args.seed)
    policy.learn(args.steps, logger=logger, progress=not args.quiet)
    logger.close()
    policy.save(out / "policy")
    val_cost = evaluation_json(policy, make_vector_env(args.env, EVAL_BATCH, **{**env_kwargs, "split": "val"}), args.env)
    threshold = make_agent("threshold", val, target_macs_fraction=val_cost["macs_fraction"])
    threshold.learn(0)
    rows.append({**evaluation_json(threshold, test, args.env), "label": f"threshold (tau={threshold.tau:.3f})"})
    rows.append({**evaluation_json(policy, test, args.env), "label": f"{args.agent} (learned)"})
    rows.append({**evaluation_json(make_agent("oracle", val), test, args.env), "label": "oracle"})
    write_json(out / "results.json", {"env": args.env, "env_kwargs": env_kwargs, "split": "test", "rows": rows})
    print(f"{args.env} on {test.core.dataset} test ({test.core.num_instances} instances), "
          f"policy trained on val, lam={test.config.lam}; MACs = multiply-accumulates")
    print(format_table(rows))
    print(f"results: {out / 'results.json'}; tensorboard --logdir {out / 'tb'}")
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
    )
    card = pretrain(
        pargs,
        args.out,
        resume=args.resume,
        data_root=args.data_root,
        download=args.download,
        progress=not args.quiet,
        command=command_line(),
        device=args.device,
    )
    print(json.dumps(card))
    return 0


# --- parser ---------------------------------------------------------------------------------------
def add_env_options(p: argparse.ArgumentParser, default_split: str | None = None) -> None:
    p.add_argument("--env", default="routing_env/Cascade-v0", help="environment id")
    p.add_argument("--backbone", help="backbone name (an environment option)")
    p.add_argument("--dataset", help="data set name (an environment option)")
    p.add_argument("--lam", type=float, help="price of compute λ (an environment option)")
    p.add_argument("--data-root", help="image data root (else ROUTING_ENV_DATA; an environment option)")
    p.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="further environment options")
    p.add_argument("--num-envs", type=int, default=16, help="episodes stepped together while learning")
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
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a trained run or a baseline on a split")
    add_env_options(p)
    p.add_argument("--run", help="run directory written by `train`")
    p.add_argument("--agent", help="agent name (tuned or trained on val first)")
    p.add_argument("--agent-kwargs", nargs="*", metavar="KEY=VALUE", help="agent options")
    p.add_argument("--steps", type=int, default=0, help="steps to learn on val before evaluating (with --agent)")
    p.add_argument("--split", default="test", help="split to evaluate on")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else on stdout")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="train a policy on val, compare it with baselines on test")
    add_env_options(p)
    p.add_argument("--agent", default="reinforce")
    p.add_argument("--steps", type=int, default=30_000)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo, lam=0.05)

    p = sub.add_parser("pretrain", help="train a backbone on the train split; checkpoints, --resume, model card")
    p.add_argument("--backbone", required=True, help="classifier name, e.g. resnet20")
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"routing-env {args.command}: error: {e}", file=sys.stderr)
        return 2
