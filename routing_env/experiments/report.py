"""The sweep's files: run names, the Pareto CSV, the plot and the Markdown table."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..checkpoints import atomic_write_text
from .baselines import static_hull


def run_name(agent: str, lam: float, seed: int) -> str:
    return f"{agent.replace(':', '_').replace('.', '_')}-lam{lam:g}-seed{seed}"


def save_figure(fig: Any, path: Path) -> None:
    """``fig.savefig(path)``, atomically (the format from the suffix)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip("."))
    atomic_write_text(path, buffer.getvalue())


def write_pareto_csv(path: Path, results: dict[str, Any]) -> None:
    """One row per point of the Pareto plot: kind, label, agent, lam, seed, accuracy, macs_fraction,
    macs_fraction_with_policy and, for a policy, its mean ``test`` reward (blank for the baselines, and
    where a record lacks it); written atomically."""
    with io.StringIO(newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "label", "agent", "lam", "seed", "accuracy", "macs_fraction", "macs_fraction_with_policy", "reward_mean"])
        for s in results["singles"]:
            w.writerow(["single", s["label"], "fixed", "", "", s["accuracy"], s["macs_fraction"], s["macs_fraction"], ""])
        for p in results["threshold_curve"]:
            w.writerow(["threshold", f"tau={p['tau']:.4f}", "threshold", "", "", p["accuracy"], p["macs_fraction"], p["macs_fraction"], ""])
        for p in results.get("static_hull") or []:
            w.writerow(["static-hull", "mixture of static routes", "", "", "", p["accuracy"], p["macs_fraction"], p["macs_fraction"], ""])
        o = results["oracle"]
        w.writerow(["oracle", o["label"], "oracle", "", "", o["accuracy"], o["macs_fraction"], o["macs_fraction"], ""])
        for r in results["runs"]:
            t = r["test"]
            w.writerow(["policy", run_name(r["agent"], r["lam"], r["seed"]), r["agent"], r["lam"], r["seed"],
                        t["accuracy"], t["macs_fraction"], t["macs_fraction_with_policy"], t.get("reward_mean", "")])
            s = r.get("random_skip_at_val_cost")
            if s is not None:
                w.writerow(["random-skip", s["label"], "random-skip", r["lam"], r["seed"], s["accuracy"], s["macs_fraction"], s["macs_fraction"], ""])
        atomic_write_text(path, f.getvalue())


LABELLED_ROUTES = 12
"""Up to this many static routes the plot names each; beyond it (every exit at every width), only
the corners of their hull, the rest drawn small and unnamed, or the labels cover the policies."""


def labelled_route(route: dict[str, Any], singles: list[dict[str, Any]], hull: list[dict[str, Any]]) -> bool:
    """Whether the Pareto plot names static ``route``: every route while there are few, else a corner
    of ``hull`` (:func:`~routing_env.experiments.baselines.static_hull` of ``singles``)."""
    if len(singles) <= LABELLED_ROUTES:
        return True
    return any(p["macs_fraction"] == route["macs_fraction"] and p["accuracy"] == route["accuracy"] for p in hull)


def plot_pareto(path: Path, results: dict[str, Any], title: str) -> None:
    """Accuracy against mean MACs fraction: single models, threshold curve, oracle, learned policies
    (mean ± std over seeds per λ, seeds faint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
    curve = results["threshold_curve"]
    ax.plot([p["macs_fraction"] for p in curve], [p["accuracy"] for p in curve], "-", color="0.55", lw=1.5,
            label="confidence threshold (τ grid)")
    hull = results.get("static_hull")
    corners = hull if hull is not None else static_hull(results["singles"])  # a co-trained sweep draws no hull
    for s in results["singles"]:
        if labelled_route(s, results["singles"], corners):
            ax.plot(s["macs_fraction"], s["accuracy"], "s", color="black", ms=6)
            ax.annotate(s["label"], (s["macs_fraction"], s["accuracy"]), textcoords="offset points", xytext=(5, -10), fontsize=7)
        else:
            ax.plot(s["macs_fraction"], s["accuracy"], "s", color="0.6", ms=3)
    if hull and len(hull) > 1:
        ax.plot([p["macs_fraction"] for p in hull], [p["accuracy"] for p in hull], "--", color="black", lw=1,
                label="best mixture of static routes (convex hull)")
    o = results["oracle"]
    ax.plot(o["macs_fraction"], o["accuracy"], "*", color="gold", mec="black", ms=12, label="oracle (uses labels)")
    skips = [r["random_skip_at_val_cost"] for r in results["runs"] if r.get("random_skip_at_val_cost")]
    if skips:
        ax.plot([s["macs_fraction"] for s in skips], [s["accuracy"] for s in skips], "x", color="0.3", ms=6,
                label="random skipping at each policy's val cost")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    agents = list(dict.fromkeys(g["agent"] for g in results["groups"]))
    for k, agent in enumerate(agents):
        color = colors[k % len(colors)]
        runs = [r["test"] for r in results["runs"] if r["agent"] == agent]
        ax.plot([t["macs_fraction"] for t in runs], [t["accuracy"] for t in runs], "o", color=color, alpha=0.25, ms=4)
        groups = sorted((g for g in results["groups"] if g["agent"] == agent), key=lambda g: g["macs_fraction_mean"])
        ax.errorbar([g["macs_fraction_mean"] for g in groups], [g["accuracy_mean"] for g in groups],
                    xerr=[g["macs_fraction_std"] for g in groups], yerr=[g["accuracy_std"] for g in groups],
                    fmt="o-", color=color, ms=5, capsize=2, label=f"{agent} (mean ± std over seeds)")
    ax.set_xlabel("mean MACs / reference MACs")
    ax.set_ylabel(f"accuracy on {results['split']}")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def policy_family(results: dict[str, Any], agent: str) -> str:
    """How the comparison plot names a sweep's policies: the agent and the environment options it learned
    with (reward, skips, observation, split…), the backbone aside."""
    options = {k: v for k, v in results["spec"]["env_kwargs"].items() if k != "backbone"}
    return agent + (f" ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})" if options else "")


def same_backbone(sweeps: list[dict[str, Any]]) -> bool:
    """Whether ``sweeps`` ran on one backbone, as the comparison plot needs: the same members (or static
    routes) alone, at the same accuracy and cost, and so the same threshold curve and oracle."""
    def points(results: dict[str, Any]) -> list[tuple[str, float, float]]:  # what the plot draws once per backbone
        return [(s["label"], s["accuracy"], s["macs_fraction"]) for s in [*results["singles"], {"label": "oracle", **results["oracle"]}]]
    return all(points(r) == points(sweeps[0]) for r in sweeps)


def common_scale(cascades: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, float], str]:
    """Per label, the factor that puts its costs on the first cascade's reference, and the x-axis label.

    A cascade's costs are fractions of its own largest member (``reference_macs`` of its members'
    rows): a cascade with a ResNet-110 after a ResNet-56 halves every fraction, so on one plot with a
    cascade that ends at the ResNet-56 its points would sit at half their cost. Where the sweeps
    record their references and they differ, each is scaled to the first's; where they agree, or none
    is recorded, the fractions are drawn as they are. Some recorded and some not cannot be put on one
    scale, and is refused (``ValueError`` naming the labels without one)."""
    references = {label: sweeps[0]["singles"][0].get("reference_macs") if sweeps[0]["singles"] else None
                  for label, sweeps in cascades.items()}
    missing = [label for label, r in references.items() if r is None]
    if missing and len(missing) < len(references):
        raise ValueError(f"{missing}: no reference_macs in the members' rows, so their costs cannot be put on the "
                         "others' scale; plot them apart")
    first = next(iter(references.values()), None)
    if missing or len(set(references.values())) == 1:
        return dict.fromkeys(cascades, 1.0), "mean MACs / reference MACs"
    return ({label: r / first for label, r in references.items()},
            f"mean MACs / {next(iter(cascades))}'s reference MACs ({first / 1e6:.1f} M)")


def plot_cascades(path: Path, cascades: dict[str, list[dict[str, Any]]], title: str,
                  zoom: tuple[float, float, float, float] | None = None) -> list[str]:
    """Several backbones' sweeps on one Pareto plot (issue 13's frozen against jointly trained cascade):
    per backbone, in one colour, its members (or static routes), its threshold curve, its oracle and
    every sweep's policy groups (mean ± std over seeds; one marker per :func:`policy_family`).
    ``cascades`` maps a label to the ``results.json`` of that backbone's sweeps, which must have run on
    one backbone (:func:`same_backbone`; ``ValueError`` naming the label otherwise, before anything is
    drawn). ``zoom`` = (x0, x1, y0, y1) adds a second panel on that window, where differences of a
    tenth of a point show. Cascades with different references are drawn on the first's
    (:func:`common_scale`). Returns the legend's entries, each once."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for label, sweeps in cascades.items():
        if not sweeps or not same_backbone(sweeps):
            raise ValueError(f"{label!r}: expected the sweeps of one backbone; their static routes or oracles differ "
                             f"(backbones {sorted({str(r['spec']['env_kwargs'].get('backbone', 'default')) for r in sweeps})})")
    if zoom is not None and not (len(zoom) == 4 and zoom[0] < zoom[1] and zoom[2] < zoom[3]):
        raise ValueError(f"zoom {zoom}: expected (x0, x1, y0, y1) with x0 < x1 and y0 < y1")
    panels = 2 if zoom else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.8), dpi=120, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    families = list(dict.fromkeys(policy_family(r, g["agent"]) for sweeps in cascades.values() for r in sweeps for g in r["groups"]))
    markers = "o^DPXv<>ph"  # not "s": the members alone are hollow squares
    if len(families) > len(markers):
        raise ValueError(f"{len(families)} policy families, more than the {len(markers)} markers to tell them apart")
    scales, xlabel = common_scale(cascades)
    for ax in axes[0]:
        for k, (label, sweeps) in enumerate(cascades.items()):
            color, first, x = colors[k % len(colors)], sweeps[0], scales[label]
            curve = first["threshold_curve"]
            ax.plot([x * p["macs_fraction"] for p in curve], [p["accuracy"] for p in curve], "-", color=color, lw=1, alpha=0.6,
                    label=f"{label}: confidence threshold")
            ax.plot([x * s["macs_fraction"] for s in first["singles"]], [s["accuracy"] for s in first["singles"]], "s", color=color,
                    mfc="none", ms=7, label=f"{label}: members alone")
            o = first["oracle"]
            ax.plot(x * o["macs_fraction"], o["accuracy"], "*", color=color, mec="black", ms=11, label=f"{label}: oracle (uses labels)")
            for results in sweeps:
                for family in dict.fromkeys(policy_family(results, g["agent"]) for g in results["groups"]):
                    groups = [g for g in results["groups"] if policy_family(results, g["agent"]) == family]
                    ax.errorbar([x * g["macs_fraction_mean"] for g in groups], [g["accuracy_mean"] for g in groups],
                                xerr=[x * g["macs_fraction_std"] for g in groups], yerr=[g["accuracy_std"] for g in groups],
                                fmt=markers[families.index(family)], color=color, ms=7, mec="black", mew=0.5,
                                elinewidth=0.7, capsize=2, label=f"{label}: {family} (mean ± std over seeds)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy on test")
        ax.grid(alpha=0.3)
    # the threshold curve runs on to every member's MACs summed; past the largest it is flat
    axes[0][0].set_xlim(0, 1.05 * max(scales.values()))
    if zoom:
        x0, x1, y0, y1 = zoom
        axes[0][1].set_xlim(x0, x1)
        axes[0][1].set_ylim(y0, y1)
        axes[0][1].set_title("zoomed", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    entries = list(dict.fromkeys(labels))  # a family drawn by two sweeps of one backbone is named once
    axes[0][0].legend([handles[labels.index(e)] for e in entries], entries, fontsize=6, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return entries


def groups_markdown(results: dict[str, Any]) -> str:
    """The sweep as a Markdown table (accuracy and MACs fraction on ``test``)."""
    skips = all("random_skip_accuracy_mean" in g for g in results["groups"]) and results["groups"]
    hull = bool(results.get("static_hull")) and bool(results["groups"])
    extra = (" random skip at the same val cost |" if skips else "") + (" static mixture at the same test cost (policy − it) |" if hull else "")
    lines = [
        "| policy | λ | seeds | accuracy | MACs fraction | with policy net | threshold at the same val cost |" + extra,
        "|---|---|---|---|---|---|---|" + ("---|" if skips else "") + ("---|" if hull else ""),
    ]
    dash = (" – |" if skips else "") + (" – |" if hull else "")
    for s in results["singles"]:
        lines.append(f"| {s['label']} | – | – | {s['accuracy']:.4f} | {s['macs_fraction']:.4f} | – | – |" + dash)
    for g in results["groups"]:
        lines.append(
            f"| {g['agent']} | {g['lam']:g} | {len(g['seeds'])} | {g['accuracy_mean']:.4f} ± {g['accuracy_std']:.4f} | "
            f"{g['macs_fraction_mean']:.4f} ± {g['macs_fraction_std']:.4f} | {g['macs_fraction_with_policy_mean']:.4f} | "
            f"{g['threshold_accuracy_mean']:.4f} at {g['threshold_macs_fraction_mean']:.4f} |"
            + (f" {g['random_skip_accuracy_mean']:.4f} at {g['random_skip_macs_fraction_mean']:.4f} |" if skips else "")
            + ((f" {g['hull_accuracy_mean']:.4f} ({g['accuracy_minus_hull_mean']:+.4f} ± {g['accuracy_minus_hull_std']:.4f}) |"
                if "hull_accuracy_mean" in g else " – (a seed is cheaper than every static route) |") if hull else "")
        )
    o = results["oracle"]
    lines.append(f"| {o['label']} (upper bound, uses labels) | – | – | {o['accuracy']:.4f} | {o['macs_fraction']:.4f} | – | – |" + dash)
    return "\n".join(lines)
