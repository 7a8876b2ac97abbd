"""``asyncfl demo``: a real server, a fleet of SDK devices, a model that learns.

Starts ``asyncfl serve`` on the embedded default (SQLite, one process) on a free
loopback port, creates an async FedBuff task (the MLP on digits, with the held-out
split for server-side evaluation), runs N devices as asyncio tasks over real HTTP,
each the SDK's own :class:`client_sdk.Client` (its own storage folder, on tmpfs: see
:mod:`server.clientfleet`) with a non-IID shard (Dirichlet label skew) and a heavy-tailed
speed (a slower uplink), shows live progress, prints a summary, writes a plot and ends
with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from client_sdk.events import Event
from client_sdk.options import ClientOptions
from server.admin_client import AdminClient
from server.clientfleet import FLEET_OPTIONS, ClientFleet
from server.process import ServerProcess

TASK = "digits-demo"
# Stop once this many successive evaluated versions are all at least MARGIN above the
# target: the model has got there, not merely touched it once, and the few updates
# still in flight when the task is paused leave it there.
STABLE_EVALS = 5
MARGIN = 0.02
# FedBuff as in Nguyen et al.: K = 10, 1/sqrt(1+s) staleness weights, one local epoch
# of client SGD at lr 0.1; the server averages the buffer (FedAvg, lr 1).
DEFAULT_CONFIG: dict[str, Any] = {
    "concurrency": 20,
    "plan": {"lr": 0.1, "batch_size": 16, "epochs": 1},
    "aggregation": {
        "mode": "async",
        "aggregation_goal": 10,
        "staleness": {"kind": "polynomial", "exponent": 0.5},
        "max_staleness": 50,
        "example_weighting": {"kind": "sqrt", "cap": 1000},
        "optimizer": {"name": "fedavg", "lr": 1.0},
    },
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="end-to-end demo: server + 100 devices training the MLP")
    p.add_argument("--devices", type=int, default=100)
    p.add_argument("--seconds", type=float, default=90.0, help="stop after this long")
    p.add_argument("--target", type=float, default=0.90, help="stop at this held-out accuracy")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label-skew alpha")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="plot, logs, data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print only the final JSON line")
    p.add_argument(
        "--secure-aggregation",
        action="store_true",
        help="run the demo plainly, then again with secure aggregation; report both",
    )
    p.add_argument(
        "--dp",
        action="store_true",
        help="run the demo plainly, then again with a privacy budget (epsilon 8 at "
        "delta 1e-5, noise calibrated for the run); report both, with the epsilon reached",
    )
    from server.demo_web_run import add_arguments

    add_arguments(p)  # --web, --pages, --port: browsers as the devices
    p.set_defaults(func=_main)


@dataclass
class Progress:
    started: float = field(default_factory=time.monotonic)
    uploads: int = 0
    turned_away: int = 0
    errors: int = 0
    trace: list[tuple[float, int, float | None, int]] = field(default_factory=list)

    def on_event(self, device: int, event: Event) -> None:
        if event.kind == "upload":
            self.uploads += 1
        elif event.kind == "checkin" and not event.data.get("admitted"):
            self.turned_away += 1
        elif event.kind == "error":
            self.errors += 1


def _main(args: argparse.Namespace) -> int:
    if args.devices < 1 or args.seconds <= 0 or not 0 < args.target <= 1:
        print("asyncfl demo: --devices >= 1, --seconds > 0, 0 < --target <= 1", file=sys.stderr)
        return 2
    if args.web:
        from server.demo_web_run import run

        return run(args)
    # a hundred clients each log every round at INFO: the progress line says it better
    logging.getLogger("client_sdk").setLevel(max(logging.WARNING, logging.root.level))
    result = asyncio.run(run_demo(args))
    variant = "secure_aggregation" if args.secure_aggregation else "dp" if args.dp else None
    if variant is None:
        print(json.dumps(result))
        return 0 if _reached(result, args.target) else 1
    other = asyncio.run(run_demo(args, variant=variant))
    both = {
        "plain": result,
        variant: other,
        "accuracy_gap": (
            None
            if result["accuracy"] is None or other["accuracy"] is None
            else round(result["accuracy"] - other["accuracy"], 4)
        ),
    }
    print(json.dumps(both))
    if variant == "dp":  # DP costs accuracy: what counts is that it ran within its budget
        privacy = other.get("privacy") or {}
        return 0 if _reached(result, args.target) and privacy.get("epsilon") is not None else 1
    return 0 if _reached(result, args.target) and _reached(other, args.target) else 1


def _reached(result: dict[str, Any], target: float) -> bool:
    return result["accuracy"] is not None and result["accuracy"] >= target


def secure_config() -> dict[str, Any]:
    """The demo's task with secure aggregation: devices clip to 5 and mask; the mask
    service releases sums of at least K = 10 updates from distinct devices."""
    config = {**DEFAULT_CONFIG, "aggregation": {**DEFAULT_CONFIG["aggregation"], "clip_norm": 5.0}}
    config["secure_aggregation"] = {"threshold": DEFAULT_CONFIG["aggregation"]["aggregation_goal"]}
    return config


# The DP variant: clip to 1, equal example weights (a bounded sensitivity), staleness at
# most 4 and a device at most once every 5 versions (one update per device per version:
# the accountant's m = 1), epsilon 8 at delta 1e-5 over the versions the demo makes.
DP_VERSIONS = 200


def dp_config() -> dict[str, Any]:
    aggregation = {
        **DEFAULT_CONFIG["aggregation"],
        "clip_norm": 1.0,
        "max_staleness": 4,
        "example_weighting": {"kind": "equal", "cap": None},
    }
    privacy = {
        "target_epsilon": 8.0,
        "delta": 1e-5,
        "noise_multiplier": "auto",
        "planned_versions": DP_VERSIONS,
        "min_separation": 5,
    }
    return {**DEFAULT_CONFIG, "aggregation": aggregation, "privacy": privacy}


async def run_demo(args: argparse.Namespace, *, variant: str | None = None) -> dict[str, Any]:
    from server.modeling.datasets import load_dataset
    from simulator.partition import dirichlet_partition

    secure = variant == "secure_aggregation"
    out: Path = args.out / variant if variant else args.out
    data_dir = out / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    quiet = bool(args.json)

    def say(*parts: object) -> None:
        if not quiet:
            print(*parts, flush=True)

    x_train, y_train, _, _ = load_dataset("digits")
    shards = dirichlet_partition(y_train, args.devices, args.alpha, seed=args.seed, min_size=4)
    rng = np.random.default_rng(args.seed)
    # Heavy-tailed device speed: log-normal extra time per session (median ~0.3 s).
    speeds = np.minimum(rng.lognormal(np.log(0.3), 1.0, args.devices), 8.0)

    # The export cache outlives the (fresh) data dir: a second demo skips the export.
    exports = os.environ.get("ASYNCFL_EXPORTS_DIR") or str(out / "exports")
    options = FLEET_OPTIONS
    if secure:  # the app knows the mask service's key out of band (here: made first)
        from client_sdk.secagg import TrustAnchor
        from server.secagg.keys import MaskKeys

        pinned = MaskKeys.load_or_create(data_dir / "secagg").public
        options = replace(FLEET_OPTIONS, secagg_trust=TrustAnchor(mask_key=pinned))
    server = ServerProcess(
        data_dir, log_file=out / "server.log", env={"ASYNCFL_EXPORTS_DIR": exports}
    )
    say(f"starting asyncfl serve (SQLite in {data_dir}) ...")
    await asyncio.to_thread(server.start)
    try:
        say(f"server on {server.url} (pid {server.pid}); creating task {TASK!r} (MLP on digits)")
        async with AdminClient(server.url, server.admin_token) as admin:
            await admin.create_task(
                TASK,
                model="mlp",
                client_optimizer="sgd",
                config=(
                    secure_config()
                    if secure
                    else dp_config()
                    if variant == "dp"
                    else DEFAULT_CONFIG
                ),
                evaluation={"dataset": "digits"},
            )
            progress = await _run_fleet(
                args, server, admin, shards, x_train, y_train, speeds, say, options
            )
            status = await admin.status(TASK)
    finally:
        await asyncio.to_thread(server.stop)
    seconds = round(time.monotonic() - progress.started, 2)
    last_eval = status.get("last_eval") or {}
    accuracy = last_eval.get("accuracy")
    plot = _plot(progress, args.target, out / "demo.png")
    if not quiet:
        _summary(status, progress, seconds, plot)
    return {
        "accuracy": accuracy,
        "versions": status["version"],
        "updates_applied": status["updates_applied"],
        "devices": args.devices,
        "seconds": seconds,
        "secure_aggregation": secure,
        **({"privacy": status.get("privacy")} if variant == "dp" else {}),
    }


async def _run_fleet(
    args: argparse.Namespace,
    server: ServerProcess,
    admin: AdminClient,
    shards: list[np.ndarray[Any, Any]],
    x: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    speeds: np.ndarray[Any, Any],
    say: Callable[..., None],
    options: ClientOptions,
) -> Progress:
    progress = Progress()
    fleet = ClientFleet(server.url, TASK, limit=200, options=options, on_event=progress.on_event)
    await fleet.enroll(
        server.enrollment_key,
        [(x[idx], y[idx]) for idx in shards],
        seed=args.seed,
        info=lambda i: {"model": "demo", "tier": int(speeds[i] > 1)},
        uplink_delay=lambda i: float(speeds[i]),
    )
    progress.started = time.monotonic()
    done = asyncio.Event()
    training = asyncio.create_task(fleet.run_forever(done))
    try:
        await _watch(args, admin, progress, done, say)
    finally:
        done.set()
        training.cancel()
        await asyncio.gather(training, return_exceptions=True)
        await fleet.close()
    return progress


async def _watch(
    args: argparse.Namespace,
    admin: AdminClient,
    progress: Progress,
    done: asyncio.Event,
    say: Callable[..., None],
) -> None:
    tty = sys.stdout.isatty() and not args.json
    last_line = 0.0
    evaluated: dict[int, float] = {}  # version -> held-out accuracy, in order seen
    while True:
        await asyncio.sleep(0.5)
        status = await admin.status(TASK)
        elapsed = time.monotonic() - progress.started
        acc = (status.get("last_eval") or {}).get("accuracy")
        progress.trace.append((elapsed, status["version"], acc, status["updates_applied"]))
        rate = status["updates_applied"] / elapsed if elapsed > 0 else 0.0
        filled = int(20 * min(1.0, (acc or 0.0) / args.target))
        line = (
            f"[{'#' * filled}{'.' * (20 - filled)}] acc {acc if acc is not None else 0:.3f}"
            f"/{args.target:.2f}  v{status['version']:<4d} {rate:6.1f} upd/s  "
            f"active {status['active_sessions']:3d}  {elapsed:5.1f}s"
        )
        if tty:
            print("\r" + line, end="", flush=True)
        elif elapsed - last_line >= 5.0:
            say(line)
            last_line = elapsed
        if acc is not None and status["version"] not in evaluated:
            evaluated[status["version"]] = acc
        recent = list(evaluated.values())[-STABLE_EVALS:]
        stable = len(recent) == STABLE_EVALS and min(recent) >= min(1.0, args.target + MARGIN)
        if stable or elapsed >= args.seconds:
            await admin.request("POST", f"/admin/v1/tasks/{TASK}/pause")  # no new sessions
            if tty:
                print()
            return


def _plot(progress: Progress, target: float, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(t, a) for t, _, a, _ in progress.trace if a is not None]
    if not points:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points], label="held-out accuracy")
    ax.axhline(target, color="grey", linestyle="--", label=f"target {target:.2f}")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("accuracy")
    ax.set_title("asyncfl demo: FedBuff, MLP on digits, non-IID fleet")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _summary(status: dict[str, Any], progress: Progress, seconds: float, plot: Path | None) -> None:
    rows = [
        ("held-out accuracy", f"{(status.get('last_eval') or {}).get('accuracy')}"),
        ("model versions", status["version"]),
        ("updates accepted", status["updates_accepted"]),
        ("updates applied", status["updates_applied"]),
        ("updates buffered", status["updates_buffered"]),
        ("updates rejected", sum(status["updates_rejected"].values())),
        (
            "mean staleness",
            f"{status['mean_staleness']:.2f}" if status["mean_staleness"] is not None else "-",
        ),
        ("check-ins turned away", progress.turned_away),
        ("wall seconds", seconds),
        ("plot", str(plot) if plot else "-"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "-" * (width + 24))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print("-" * (width + 24))
