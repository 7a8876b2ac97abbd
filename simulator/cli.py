"""``asyncfl simulate``: run a preset, print its tables, write JSON and a PNG plot.

Tables go to stdout, progress and errors to stderr; with ``--json`` the last stdout
line is the result as one JSON object. Exit status: 0 when every mode reached the
target (a ``privacy`` preset: when every run committed its planned versions), 1 when
one did not, 2 for a bad preset or argument.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.errors import PresetError, SimulatorError

if TYPE_CHECKING:
    from simulator.config import Preset

__all__ = ["add_parser", "main"]

logger = logging.getLogger("simulator")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="virtual-time fleet simulation: async FedBuff vs sync rounds",
        description=(
            "Virtual-time simulation of a device fleet training with async FedBuff and "
            "with sync rounds; presets live in simulator/presets."
        ),
    )
    configure(p)
    p.set_defaults(func=main)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="preset name (see --list) or path to a .toml file")
    p.add_argument("--list", action="store_true", help="list the shipped presets and exit")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset value, e.g. fleet.devices=100000 (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the result as a JSON line last")
    p.add_argument("--out", type=Path, help="output directory (default .asyncfl/simulate/NAME)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes running independent runs at once (default: one per idle CPU, "
        "the CPUs minus the 1-minute load average; 1 runs everything in this process; "
        "the results do not depend on it)",
    )
    p.add_argument("--bundle-dir", type=Path, help="use the model bundle in this directory")
    p.add_argument("--cache-dir", type=Path, help="bundle cache (default ~/.cache/asyncfl/bundles)")


def main(args: argparse.Namespace) -> int:
    """Run ``args.preset``; see the module docstring for the exit status."""
    started = time.perf_counter()
    from simulator.presets import list_presets, load_preset

    if args.list:
        for name in list_presets():
            print(name)
        return 0
    try:
        if not args.preset:
            raise PresetError("--preset is required (or --list)")
        preset = load_preset(args.preset, args.overrides)
        return _run(args, preset, started)
    except PresetError as exc:
        print(f"asyncfl simulate: error: {exc.message}", file=sys.stderr)
        return 2
    except SimulatorError as exc:
        print(f"asyncfl simulate: failed: {exc.message}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, preset: Preset, started: float) -> int:
    from simulator import experiments, plot, report, speed
    from simulator.artifacts import load_bundle
    from simulator.environment import build_environments
    from simulator.memory import keep_freed_memory
    from simulator.parallel import default_workers
    from simulator.training import OnnxTrainer

    keep_freed_memory()  # fresh pages per update cost more than the arithmetic

    workers = default_workers() if args.workers is None else args.workers
    if workers < 1:
        raise PresetError(f"--workers must be at least 1, got {workers}")
    phase = experiments.Phase()

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    out: Path = args.out or Path(".asyncfl") / "simulate" / preset.name
    bundle = load_bundle(preset.training.model, args.cache_dir, bundle_dir=args.bundle_dir)
    envs = build_environments(preset, OnnxTrainer(bundle))
    env = envs[0]
    progress(report.describe(env))
    png = None if args.no_plot else out / "plot.png"
    full: dict[str, Any]
    if preset.kind == "compare":
        comp = experiments.compare(envs, progress, workers=workers, phase=phase)
        text = report.compare_text(env, comp)
        full = {
            "async": [r.to_dict() for r in comp.async_runs],
            "sync": [r.to_dict() for r in comp.sync_runs],
        }
        reached = comp.reached
        if png:
            plot.plot_compare(comp, png, preset.name)
        summary = comp.summary(time.perf_counter() - started, phase)
        trained = comp.trained
    elif preset.kind == "sweep":
        rows = experiments.sweep(envs, progress, workers=workers, phase=phase)
        text = report.sweep_text(env, rows)
        full = {
            str(c): {
                "async": [r.to_dict() for r in x.async_runs],
                "sync": [r.to_dict() for r in x.sync_runs],
            }
            for c, x in rows
        }
        reached = all(x.reached for _, x in rows)
        if png:
            plot.plot_sweep(rows, png, preset.name)
        summary = report.sweep_summary(rows, time.perf_counter() - started, phase)
        trained = sum(x.trained for _, x in rows)
    elif preset.kind == "privacy":
        from simulator import privacy

        dp = privacy.privacy_sweep(envs, progress, workers=workers, phase=phase)
        text = privacy.privacy_text(env, dp)
        full = {pt.label: [r.to_dict() for r in pt.runs] for pt in dp.points}
        reached = all(r.status == "budget" for pt in dp.points for r in pt.runs)
        if png:
            plot.plot_privacy(dp, png, preset.name)
        summary = privacy.privacy_summary(dp, time.perf_counter() - started, phase)
        trained = sum(r.trained for pt in dp.points for r in pt.runs)
    else:
        result = experiments.grid(env, progress, workers=workers, phase=phase)
        text = report.grid_text(env, result)
        full = {m: [r.to_dict() for r in runs] for m, runs in result.runs.items()}
        reached = result.comparison() is not None
        if png:
            plot.plot_grid(result, png, preset.name)
        summary = report.grid_summary(result, time.perf_counter() - started, phase)
        trained = sum(r.trained for runs in result.runs.values() for r in runs)
    summary["gate"] = speed.gate_report(phase.trainers)
    summary["training_speed"] = speed.training_speed(phase.trainers)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.txt").write_text(text + "\n", encoding="utf-8")
    (out / "result.json").write_text(
        json.dumps(
            {
                "preset": preset.name,
                "engine": env.engine,
                "summary": summary,
                "updates_per_command_wall_s": trained / summary["wall_s"],
                "runs": full,
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    print(text)
    print(f"\nwrote {out / 'result.json'}" + (f" and {png}" if png else ""))
    if args.json:
        print(json.dumps(summary))
    if not reached:
        progress("asyncfl simulate: a run did not reach its goal within the run's limits")
    return 0 if reached else 1
