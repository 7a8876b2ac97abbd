"""Plain-text tables for the three experiment kinds, and their one-line JSON forms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from simulator.environment import Environment
from simulator.experiments import Comparison, GridResult, Phase
from simulator.ledger import WASTE_CAUSES
from simulator.results import RunResult

__all__ = [
    "compare_text",
    "format_table",
    "grid_summary",
    "grid_text",
    "sweep_summary",
    "sweep_text",
]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def _is_number(v: Any) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool))


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def describe(env: Environment) -> str:
    p = env.preset
    counts = env.fleet.tier_counts()
    tiers = ", ".join(f"{t.name} {n:,}" for t, n in zip(p.fleet.tiers, counts, strict=True))
    data = p.data
    skew = (
        f"Dirichlet({data.alpha:g}) label skew"
        if data.dataset == "digits"
        else f"Synthetic-IID(beta {data.beta:g})"
        if data.iid
        else f"Synthetic({data.alpha:g}, {data.beta:g})"
    )
    seeds = p.run.seeds or (p.seed,)
    return (
        f"{p.name}: {p.fleet.devices:,} devices ({tiers}), {data.dataset} {skew}, "
        f"tier-data correlation {data.tier_correlation:g}, model {p.training.model}, "
        f"target accuracy {p.run.target:g} (held {p.run.hold_s:g} s); seeds {list(seeds)}; "
        f"local training: {env.engine}"
    )


def _run_row(r: RunResult) -> list[Any]:
    led = r.ledger
    return [
        r.mode,
        r.concurrency,
        r.hyper["aggregation_goal"],
        r.time_to_target,
        led.trips,
        led.bytes_down / 1e6,
        led.bytes_up / 1e6,
        led.applied,
        r.versions,
        led.energy_j / 1e3,
        r.trained,
        r.wall_s,
    ]


def compare_text(env: Environment, comp: Comparison) -> str:
    runs = [comp.async_run, comp.sync_run]
    seeds = len(comp.async_runs) > 1
    head = ["mode", "C", "K/goal", "to target s", "trips", "MB down", "MB up", "applied"]
    head += ["versions", "energy kJ", "trained", "wall s"]
    rows = []
    for r in comp.async_runs + comp.sync_runs:
        rows.append([*_run_row(r), r.label.rsplit("seed ", 1)[-1] if seeds else "-"])
    medians = (
        f"medians over {len(comp.async_runs)} seeds: async {_t(comp.async_time)}, "
        f"sync {_t(comp.sync_time)}; "
        if seeds
        else ""
    )
    parts = [
        describe(env),
        "",
        "until the target (or the run's end when it was not reached):",
        format_table([*head, "seed"], rows),
        f"{medians}speedup (sync time / async time): {_x(comp.speedup)}; "
        f"communication (sync trips / async trips): {_x(comp.comm_ratio)}",
        "",
        "wasted work until the target: sessions / training hours / energy kJ"
        + (" (median runs)" if seeds else ""),
        format_table(
            ["cause", *(r.mode for r in runs)],
            [[c, *(_waste(r, c) for r in runs)] for c in WASTE_CAUSES],
        ),
        "",
        "fairness per tier: share of fleet, share of applied updates, accuracy on the "
        "tier's data, energy kJ" + (" (median runs)" if seeds else ""),
        format_table(
            [
                "tier",
                "fleet share",
                *(f"{r.mode} {k}" for r in runs for k in ("applied", "acc", "kJ")),
            ],
            _tier_rows(env, runs),
        ),
        gap_text(comp),
    ]
    return "\n".join(parts)


def gap_text(comp: Comparison) -> str:
    """The tier accuracy gap of each mode over the seeds, and whether it reverses."""
    g = comp.gap_spread()
    line = "tier accuracy gap (best tier - worst), median [min, max] over seeds: " + ", ".join(
        f"{mode} {_g(g[mode]['median'])} [{g[mode]['min']:.3f}, {g[mode]['max']:.3f}]"
        for mode in ("async", "sync")
    )
    if g["reverses"]:
        worse = sum(d > 0 for d in g["async_minus_sync"])
        line += (
            f"; the gap REVERSES between modes: async's is the larger on {worse} of "
            f"{len(g['async_minus_sync'])} seeds, sync's on the others"
        )
    return line


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _t(v: float | None) -> str:
    return "not reached" if v is None else f"{v:,.0f} s"


def _waste(r: RunResult, cause: str) -> str:
    w = r.ledger.wasted[cause]
    return f"{int(w['sessions']):,} / {w['compute_s'] / 3600:,.1f} h / {w['energy_j'] / 1e3:,.1f}"


def _tier_rows(env: Environment, runs: Sequence[RunResult]) -> list[list[Any]]:
    counts = env.fleet.tier_counts()
    rows: list[list[Any]] = []
    for tier, n in zip(env.fleet.tiers, counts, strict=True):
        row: list[Any] = [tier.name, n / env.fleet.size]
        for r in runs:
            t = r.ledger.tiers[tier.name]
            row += [t["applied_share"], r.tier_accuracy.get(tier.name), t["energy_j"] / 1e3]
        rows.append(row)
    return rows


def sweep_text(env: Environment, rows: Sequence[tuple[int, Comparison]]) -> str:
    table = format_table(
        [
            "C",
            "async s",
            "sync s",
            "speedup",
            "async trips",
            "sync trips",
            "comm ratio",
            "async gap",
            "sync gap",
            "reverses",
        ],
        [
            [
                c,
                x.async_time,
                x.sync_time,
                _x(x.speedup),
                x.async_trips,
                x.sync_trips,
                _x(x.comm_ratio),
                _spread(x.gap_spread()["async"]),
                _spread(x.gap_spread()["sync"]),
                "yes" if x.gap_spread()["reverses"] else "no",
            ]
            for c, x in rows
        ],
    )
    return (
        f"{describe(env)}\n\ntime to target by concurrency C (gaps: median [min, max] "
        f"over seeds; 'reverses': the fairer mode changes between seeds):\n{table}"
    )


def _spread(g: dict[str, Any]) -> str:
    return f"{_g(g['median'])} [{g['min']:.3f}, {g['max']:.3f}]"


def sweep_summary(
    rows: Sequence[tuple[int, Comparison]], wall_s: float, phase: Phase | None = None
) -> dict[str, Any]:
    """The sweep's JSON line; speed figures as :meth:`Comparison.summary`'s."""
    trained = sum(x.trained for _, x in rows)
    sim_wall = phase.wall_s if phase else sum(x.simulation_wall_s for _, x in rows)
    sim_cpu = sum(x.simulation_cpu_s for _, x in rows)
    return {
        "target": rows[0][1].async_run.target if rows else None,
        "concurrency": [c for c, _ in rows],
        "async_time_to_target": [x.async_time for _, x in rows],
        "sync_time_to_target": [x.sync_time for _, x in rows],
        "speedup": [x.speedup for _, x in rows],
        "async_trips": [x.async_trips for _, x in rows],
        "sync_trips": [x.sync_trips for _, x in rows],
        "comm_ratio": [x.comm_ratio for _, x in rows],
        "tier_accuracy_gap": [x.gap_spread() for _, x in rows],
        "updates_per_wall_s": trained / sim_wall if sim_wall > 0 else None,
        "updates_per_cpu_s": trained / sim_cpu if sim_cpu > 0 else None,
        "workers": phase.workers if phase else 1,
        "wall_s": wall_s,
    }


def grid_text(env: Environment, result: GridResult) -> str:
    parts = [describe(env), ""]
    for mode, runs in result.runs.items():
        best = result.best(mode)
        third = "K" if mode == "async" else "over_selection"
        key = "aggregation_goal" if mode == "async" else "over_selection"
        rows = [
            [
                "*" if r is best else "",
                r.hyper["client_lr"],
                r.hyper["server_lr"],
                r.hyper["server_momentum"],
                r.hyper[key],
                r.time_to_target,
                r.ledger.trips,
                r.final_accuracy,
            ]
            for r in runs
        ]
        head = ["best", "client lr", "server lr", "momentum", third, "to target s", "trips"]
        head.append("last acc")
        parts += [f"{mode} grid ({len(runs)} runs):", format_table(head, rows), ""]
    parts.append(
        "'-': not at the target when the mode's best so far was (cut there), stalled "
        "or diverged; 'last acc' is the accuracy when the run stopped."
    )
    comp = result.comparison()
    if comp is not None:
        parts.append(
            f"best vs best: speedup {_x(comp.speedup)}, communication {_x(comp.comm_ratio)}"
        )
    return "\n".join(parts)


def grid_summary(result: GridResult, wall_s: float, phase: Phase | None = None) -> dict[str, Any]:
    comp = result.comparison()
    trained = sum(r.trained for runs in result.runs.values() for r in runs)
    sim_wall = phase.wall_s if phase else sum(r.wall_s for rs in result.runs.values() for r in rs)
    sim_cpu = sum(r.cpu_s for runs in result.runs.values() for r in runs)
    best = {}
    for mode in result.runs:
        b = result.best(mode)
        best[mode] = None if b is None else {**b.hyper, "time_to_target": b.time_to_target}
    return {
        "target": next((r.target for rs in result.runs.values() for r in rs), None),
        "best": best,
        "speedup": comp.speedup if comp else None,
        "comm_ratio": comp.comm_ratio if comp else None,
        "runs": sum(len(r) for r in result.runs.values()),
        "updates_per_wall_s": trained / sim_wall if sim_wall > 0 else None,
        "updates_per_cpu_s": trained / sim_cpu if sim_cpu > 0 else None,
        "workers": phase.workers if phase else 1,
        "wall_s": wall_s,
    }
