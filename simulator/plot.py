"""PNG plots of the experiments (matplotlib, headless Agg backend).

- compare: accuracy on the held-out set vs virtual time for both modes, with the
  target line; next to it, each tier's accuracy when the target was reached.
- sweep: time to target vs concurrency C for both modes (log-log), and the speedup
  and communication ratio vs C.
- grid: every run's accuracy curve, the best of each mode drawn bold.
- privacy: final accuracy vs epsilon (median, min-max over seeds) against the no-DP
  baseline; next to it, accuracy vs virtual time for each budget (the median run).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.experiments import Comparison, GridResult
from simulator.results import RunResult

if TYPE_CHECKING:
    from simulator.privacy import PrivacySweep

__all__ = ["plot_compare", "plot_grid", "plot_privacy", "plot_sweep"]

_COLORS = {"async": "tab:blue", "sync": "tab:orange"}


def _figure(ncols: int) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.2), constrained_layout=True)
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _curve(ax: Any, run: RunResult, **style: Any) -> None:
    t = [p[0] / 60 for p in run.curve]
    a = [p[1] for p in run.curve]
    ax.plot(t, a, color=_COLORS[run.mode], **style)


def plot_compare(comp: Comparison, path: Path, title: str) -> Path:
    fig, (ax, bars) = _figure(2)
    for runs, when in ((comp.async_runs, comp.async_time), (comp.sync_runs, comp.sync_time)):
        for i, run in enumerate(runs):
            label = None
            if i == 0:
                label = f"{run.mode} C={run.concurrency}"
                if when is not None:
                    label += f" ({when / 60:.1f} min" + (" median)" if len(runs) > 1 else ")")
            _curve(ax, run, label=label, linewidth=1.4 if len(runs) == 1 else 1.0)
    ax.axhline(comp.async_run.target, color="grey", linestyle="--", linewidth=1, label="target")
    ax.set_xlabel("virtual time (minutes)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(title + (f" ({len(comp.async_runs)} seeds)" if len(comp.async_runs) > 1 else ""))
    ax.legend(loc="lower right")
    tiers = list(comp.async_run.tier_accuracy)
    width = 0.38
    for i, run in enumerate((comp.async_run, comp.sync_run)):
        xs = [j + (i - 0.5) * width for j in range(len(tiers))]
        values = [run.tier_accuracy[t] for t in tiers]
        bars.bar(xs, values, width, color=_COLORS[run.mode], label=run.mode)
    bars.set_xticks(range(len(tiers)), tiers)
    bars.set_ylabel("accuracy on the tier's data at the target")
    bars.set_title(
        "fairness per device tier" + (" (median runs)" if len(comp.async_runs) > 1 else "")
    )
    bars.set_ylim(0, 1)
    bars.legend(loc="lower right")
    return _save(fig, path)


def plot_sweep(rows: Sequence[tuple[int, Comparison]], path: Path, title: str) -> Path:
    fig, (ax, ratio) = _figure(2)
    cs = [c for c, _ in rows]
    for mode in ("async", "sync"):
        times = [x.async_time if mode == "async" else x.sync_time for _, x in rows]
        pts = [(c, t / 60) for c, t in zip(cs, times, strict=True) if t is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", color=_COLORS[mode], label=mode)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrency C")
    ax.set_ylabel("virtual minutes to target")
    ax.set_title(title)
    ax.legend()
    for key, style in (("speedup", "o-"), ("comm_ratio", "s--")):
        pts = [(c, getattr(x, key)) for c, x in rows if getattr(x, key) is not None]
        if pts:
            ratio.plot(*zip(*pts, strict=True), style, label=key.replace("_", " "))
    ratio.axhline(1.0, color="grey", linewidth=1)
    ratio.set_xscale("log")
    ratio.set_xlabel("concurrency C")
    ratio.set_ylabel("sync / async")
    ratio.set_title("speedup and communication ratio")
    ratio.legend()
    return _save(fig, path)


def plot_grid(result: GridResult, path: Path, title: str) -> Path:
    fig, axes = _figure(2)
    for ax, (mode, runs) in zip(axes, result.runs.items(), strict=True):
        best = result.best(mode)
        for run in runs:
            _curve(ax, run, linewidth=0.7, alpha=0.35)
        if best is not None:
            _curve(ax, best, linewidth=2.2, label=f"best: {best.label}")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{title}: {mode} ({len(runs)} runs)")
        ax.set_xlabel("virtual time (minutes)")
        ax.set_ylabel("held-out accuracy")
    return _save(fig, path)


def _median_run(runs: Sequence[RunResult]) -> RunResult:
    return sorted(runs, key=lambda r: r.final_accuracy)[(len(runs) - 1) // 2]


def plot_privacy(result: PrivacySweep, path: Path, title: str) -> Path:
    fig, (ax, curves) = _figure(2)
    dp = [pt for pt in result.points if pt.budget is not None]
    seeds = len(result.points[0].runs)
    for pt in result.points:
        if pt.budget is None:
            acc = pt.accuracies()
            ax.axhline(
                statistics.median(acc),
                color="black",
                linestyle="--",
                linewidth=1,
                label="no DP (median)",
            )
            ax.axhspan(min(acc), max(acc), color="grey", alpha=0.2, linewidth=0)
    if dp:
        xs = [pt.to_dict()["epsilon_reached"] for pt in dp]
        meds = [pt.to_dict()["accuracy"]["median"] for pt in dp]
        lows = [m - min(pt.accuracies()) for m, pt in zip(meds, dp, strict=True)]
        highs = [max(pt.accuracies()) - m for m, pt in zip(meds, dp, strict=True)]
        ax.errorbar(
            xs,
            meds,
            yerr=[lows, highs],
            fmt="o-",
            capsize=4,
            color="tab:blue",
            label=f"DP, delta {result.delta:g}",
        )
        for x, m, pt in zip(xs, meds, dp, strict=True):
            ax.annotate(
                f"z={pt.noise_multiplier:.2f}",
                (x, m),
                textcoords="offset points",
                xytext=(6, -12),
                fontsize=8,
            )
        ax.set_xscale("log")
        ax.minorticks_off()  # the epsilons themselves are the ticks
        ax.set_xticks(xs, [f"{x:.2g}" for x in xs])
    ax.set_xlabel(f"epsilon after {result.planned_versions} versions (log scale)")
    ax.set_ylabel("held-out accuracy at the last version")
    ax.set_title(title + (f" ({seeds} seeds: median, min-max)" if seeds > 1 else ""))
    ax.legend(loc="lower right")
    cmap = ["black", "tab:green", "tab:blue", "tab:purple", "tab:red", "tab:orange"]
    for i, pt in enumerate(result.points):
        run = _median_run(pt.runs)
        t = [p[0] / 60 for p in run.curve]
        a = [p[1] for p in run.curve]
        curves.plot(t, a, color=cmap[i % len(cmap)], linewidth=1.3, label=pt.label)
    curves.set_xlabel("virtual time (minutes)")
    curves.set_ylabel("held-out accuracy")
    curves.set_title("accuracy over the run per budget (median seed)")
    curves.legend(loc="lower right")
    return _save(fig, path)
