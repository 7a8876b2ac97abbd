"""Run the Locust fleet against asyncfl and report one JSON line.

    python load_tests/run.py --users 10000 --seconds 120 --json

1. Start the embedded default (``asyncfl serve`` on loopback: SQLite, local update log,
   fsync "always") in a temporary data dir, or use ``--url`` (then pass the admin token
   and enrollment key through ASYNCFL_LOAD_ADMIN_TOKEN / ASYNCFL_LOAD_ENROLLMENT_KEY, and
   ``--server-pid`` to sample its RSS).
2. Create the task through the admin API with a synthetic-size bundle
   (:mod:`load_tests.bundle`: ``--model linear_100k`` = 100,100 float32 parameters, so
   each upload is a ~400 KB delta) and a concurrency of ``--concurrency``.
3. Run Locust headless (:mod:`load_tests.locustfile`, FastHttpUser + gevent, in one
   process or ``--processes`` workers): a linear ramp to ``--users`` over ``--ramp-s``
   (default: 100 new devices a second), then ``--seconds`` of steady state.
4. Sample the server's RSS every second; write Locust's HTML report and CSVs, and the
   server's log, to ``--out``.
5. With ``--pages N``: keep N dashboard task pages open in headless Chromium
   (:mod:`load_tests.pages`) for the whole Locust run, then ``--quiet-s`` more with the
   fleet gone, then ``--quiet-s`` with no page: see ``dashboard`` below.

Figures (the last stdout line; progress goes to stderr):

- ``failures``: Locust failures over the whole run, ramp-up included (HTTP errors other
  than the protocol's answers: retry_after, 409 too stale / 410 expired; transport
  errors and timeouts);
- ``checkins_per_s``, ``uploads_per_s``, ``checkin_p50_ms``, ``checkin_p99_ms``,
  ``upload_p99_ms``: over the steady state (from the moment every user is spawned), as
  the client measured them (Locust rounds times above 100 ms to 2 significant digits);
- ``server_rss_mb_start`` / ``server_rss_mb_end``: mean RSS over the first and the last
  ``min(60, seconds / 2)`` seconds of the steady state (the ramp-up is warm-up: it opens
  the connections and fills the session table); ``rss_growth_pct`` compares them;
- ``5xx``: answers with a 5xx status the server counted over the whole run (its
  ``/metrics``), by status in ``5xx_by_status``: the budget is 0, and the exit status is 1
  when it is not met.
- ``dashboard`` (with ``--pages``), from the server's own ``/metrics``; ``method`` in
  the JSON says the same. Open pages follow the task over server-sent events (one long
  request each), so the cost is counted as CPU a second, not per request:
  ``asyncfl_dashboard_cpu_seconds`` counts, on the threads that spend it, every rollup
  refresh whole (the reader thread that runs the queries, where nothing else runs, the
  SQLite driver's thread, and the fold on the event loop), every snapshot built and
  encoded, every frame written to a stream, and the documents of ``/live`` and the other
  admin routes (by part in ``cpu_ms_per_s_by_part``). Over the steady state: ``cpu_ms_per_s`` and
  ``cpu_share_pct`` (against the process' ``process_cpu_seconds``: the target is < 1%),
  ``cpu_ms_per_update`` (per snapshot delivered to a page or poll answered), and what
  happened (``snapshots``, ``frames``, ``refreshes``, ``requests``: HTTP requests to
  dashboard routes, a stream counted when it ends). Not counted: the event loop's
  scheduling of the stream tasks and aiohttp's parsing of the few requests a page makes
  when it opens. A cross-check of that: ``quiet_extra_cpu_ms_per_s``, the process CPU
  with the pages open and no fleet (``--quiet-s``) minus the same time with no page (the
  pages-open phase comes first: after a large fleet the server is still winding down its
  sessions then, which this difference counts too).
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make the repo root importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from load_tests.bundle import SIZES, linear_bundle, num_params
from load_tests.rss import RssSampler
from load_tests.scrape import MetricsScraper
from load_tests.target import AdminApi, enroll_fleet, log, start_server
from load_tests.training import SPECS, TrainTime
from server.process import ServerProcess

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Locust fleet against asyncfl")
    parser.add_argument("--users", type=int, default=1000, help="devices in the fleet")
    parser.add_argument("--seconds", type=float, default=120.0, help="steady-state seconds")
    parser.add_argument("--ramp-s", type=float, help="ramp-up seconds (default users/100)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--model", choices=sorted(SIZES), default="linear_100k")
    parser.add_argument("--concurrency", type=int, help="task concurrency (default users/5)")
    parser.add_argument("--aggregation-goal", type=int, help="K (default concurrency/10)")
    parser.add_argument("--train-time", default="lognormal:30:1", help=SPECS)
    parser.add_argument("--session-deadline-s", type=float, default=240.0)
    parser.add_argument(
        "--processes", type=int, help="Locust worker processes (default: 2 above 2000 users)"
    )
    parser.add_argument("--url", help="use this server instead of starting one")
    parser.add_argument("--server-pid", type=int, help="with --url: PID whose RSS to sample")
    parser.add_argument("--task-id", help="default: load-<time>")
    parser.add_argument("--out", type=Path, help="report dir (default out/load/<time>)")
    parser.add_argument("--keep-data", action="store_true", help="keep the server's data dir")
    parser.add_argument("--pages", type=int, default=0, help="dashboard pages kept open")
    parser.add_argument("--quiet-s", type=float, default=30.0, help="each quiet phase (--pages)")
    parser.add_argument(
        "--enroll-in-locust",
        action="store_true",
        help="users enroll as they spawn (default: the fleet is enrolled before the run)",
    )
    args = parser.parse_args(argv)
    if args.users < 1 or args.seconds <= 0:
        parser.error("--users and --seconds must be positive")
    try:
        TrainTime.parse(args.train_time)
    except ValueError as exc:
        parser.error(str(exc))
    args.ramp_s = args.ramp_s if args.ramp_s is not None else max(1.0, args.users / 100)
    args.concurrency = args.concurrency or max(1, args.users // 5)
    args.processes = args.processes or (2 if args.users > 2000 else 1)
    args.aggregation_goal = args.aggregation_goal or max(1, args.concurrency // 10)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.task_id = args.task_id or f"load-{stamp}"
    args.out = args.out or REPO / "out" / "load" / stamp
    return args


def task_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "concurrency": args.concurrency,
        "session_deadline_s": args.session_deadline_s,
        "eval_every": 0,
        "aggregation": {"aggregation_goal": args.aggregation_goal},
    }


def locust_command(args: argparse.Namespace, url: str, summary: Path) -> list[str]:
    prefix = args.out / "locust"
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "--only-summary",
        "--loglevel",
        os.environ.get("ASYNCFL_LOAD_LOCUST_LOGLEVEL", "WARNING"),
        "--csv",
        str(prefix),
        "--html",
        str(args.out / "report.html"),
        "--stop-timeout",
        "5",
        "--asyncfl-task",
        args.task_id,
        "--asyncfl-train-time",
        args.train_time,
        "--asyncfl-users",
        str(args.users),
        "--asyncfl-ramp-s",
        str(args.ramp_s),
        "--asyncfl-steady-s",
        str(args.seconds),
        "--asyncfl-summary",
        str(summary),
    ]
    if args.processes > 1:
        # a port of its own: workers that find another run's master on Locust's default
        # port join that one, and this run measures nothing
        port = str(free_port())
        cmd += ["--processes", str(args.processes), "--asyncfl-workers", str(args.processes)]
        cmd += ["--master-bind-port", port, "--master-port", port]
    return cmd


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_locust(
    args: argparse.Namespace, url: str, key: str, tokens: Path | None, rss: RssSampler | None
) -> Path:
    """Run Locust to completion (bounded in time); returns the summary file."""
    summary: Path = args.out / "summary.json"
    env = {**os.environ, "LOCUST_ASYNCFL_ENROLLMENT_KEY": key, "PYTHONPATH": str(REPO)}
    cmd = locust_command(args, url, summary)
    if tokens is not None:
        cmd += ["--asyncfl-device-tokens", str(tokens)]
    limit_s = args.ramp_s * 2 + 30 + args.seconds + 120
    started = time.monotonic()
    next_report = 0.0
    with open(args.out / "locust.log", "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                elapsed = time.monotonic() - started
                if elapsed > limit_s:
                    log(f"locust still running after {limit_s:.0f} s: stopping it")
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
                    break
                if elapsed >= next_report:
                    next_report += 15.0
                    rss_text = f", server RSS {rss.latest_mb():.0f} MiB" if rss else ""
                    log(f"  t={elapsed:5.0f} s{rss_text}")
                time.sleep(1.0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    tail = (args.out / "locust.log").read_text(errors="replace")[-3000:]
    if not summary.exists():
        raise RuntimeError(f"Locust wrote no summary (exit {proc.returncode}):\n{tail}")
    if json.loads(summary.read_text()).get("steady_started_at") is None:
        raise RuntimeError(f"Locust never reached the steady state:\n{tail}")
    return summary


def figures(
    args: argparse.Namespace, doc: dict[str, Any], rss: RssSampler | None
) -> dict[str, Any]:
    names = doc["names"]
    checkin = names.get("checkin", {})
    upload = names.get("upload", {})
    start_mb = end_mb = cpu = None
    if rss is not None and doc["steady_started_at"] and doc["steady_ended_at"]:
        t0, t1 = doc["steady_started_at"], doc["steady_ended_at"]
        window = min(60.0, (t1 - t0) / 2)
        start_mb = rss.mean_mb(t0, t0 + window)
        end_mb = rss.mean_mb(t1 - window, t1)
        cpu = rss.cpu_share(t0, t1)
    devices = doc["devices"]
    checkins = devices.get("admitted", 0) + devices.get("turned_away", 0)
    return {
        "users": args.users,
        "seconds": round(doc["steady_seconds"], 1),
        "checkins_per_s": round(checkin.get("steady_per_s", 0.0), 1),
        "uploads_per_s": round(upload.get("steady_per_s", 0.0), 1),
        "failures": doc["failures"],
        "checkin_p50_ms": checkin.get("steady_p50_ms", 0.0),
        "checkin_p99_ms": checkin.get("steady_p99_ms", 0.0),
        "upload_p99_ms": upload.get("steady_p99_ms", 0.0),
        "server_rss_mb_start": _round(start_mb),
        "server_rss_mb_end": _round(end_mb),
        "rss_growth_pct": _round(100 * (end_mb / start_mb - 1) if start_mb and end_mb else None),
        "server_cpu_cores": None if cpu is None else round(cpu, 2),
        "ramp_s": args.ramp_s,
        "fully_spawned": doc["fully_spawned"],
        "checkin_p99_ms_whole_run": checkin.get("p99_ms", 0.0),
        "upload_p99_ms_whole_run": upload.get("p99_ms", 0.0),
        "turned_away_share": round(devices.get("turned_away", 0) / checkins, 3) if checkins else 0,
        "devices": devices,
        "errors": doc["errors"],
        "model_params": num_params(args.model),
        "concurrency": args.concurrency,
        "aggregation_goal": args.aggregation_goal,
        "processes": args.processes,
        "loadavg_1m": round(os.getloadavg()[0], 2),  # the machine is shared: context
        "report": str(args.out / "report.html"),
    }


def start_pages(args: argparse.Namespace, url: str, admin_token: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "load_tests.pages", "--url", url, "--task", args.task_id]
    cmd += ["--pages", str(args.pages), "--out", str(args.out / "pages.json")]
    cmd += ["--ready", str(args.out / "pages.ready")]
    env = {**os.environ, "ASYNCFL_LOAD_ADMIN_TOKEN": admin_token, "PYTHONPATH": str(REPO)}
    log(f"opening {args.pages} dashboard page(s)")
    with open(args.out / "pages.log", "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


def wait_for_pages(args: argparse.Namespace, proc: subprocess.Popen[bytes]) -> None:
    """Until every page is open: opening five pages takes the CPU for seconds, and
    Locust's workers starved of it while they spawn miss heartbeats and end the run."""
    deadline = time.monotonic() + 120
    while not (args.out / "pages.ready").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the dashboard pages did not open (see {args.out}/pages.log)")
        time.sleep(0.5)
    time.sleep(5.0)  # their first paint and first stream messages


def stop_pages(proc: subprocess.Popen[bytes], args: argparse.Namespace) -> dict[str, Any]:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    path = args.out / "pages.json"
    return json.loads(path.read_text()) if path.exists() else {"error": "pages wrote nothing"}


METHOD = (
    "asyncfl_dashboard_cpu_seconds growth over the steady state against "
    "process_cpu_seconds: rollup refreshes whole (the reader thread's CPU, the SQLite "
    "driver thread's, the fold on the loop), snapshot summaries, builds and encodes, "
    "stream writes, admin documents, each timed with thread CPU clocks; not counted: "
    "the loop's scheduling of stream tasks, HTTP parsing of the page's opening requests; "
    "quiet_*: process CPU with pages open and no fleet minus the same time with no page"
)


def dashboard_figures(
    doc: dict[str, Any],
    scraper: MetricsScraper,
    quiet: tuple[float, float],
    idle: tuple[float, float],
) -> dict[str, Any]:
    """See the module docstring (``dashboard``)."""
    steady = scraper.between(doc["steady_started_at"], doc["steady_ended_at"])
    with_pages = scraper.between(*quiet)
    without = scraper.between(*idle)
    out: dict[str, Any] = {"method": METHOD}
    if steady:
        seconds, cpu = steady["seconds"], steady["dashboard_cpu_s"]
        updates = steady["frames"] + steady["dashboard_requests"]
        out.update(
            cpu_ms_per_s=round(1000 * cpu / seconds, 3),
            cpu_share_pct=round(100 * cpu / steady["process_cpu_s"], 3),
            steady_server_cpu_cores=round(steady["process_cpu_s"] / seconds, 3),
            cpu_ms_per_update=round(1000 * cpu / max(1.0, updates), 3),
            cpu_ms_per_s_by_part={
                part: round(1000 * value / seconds, 3)
                for part, value in sorted(steady["cpu_by_part"].items())
            },
            streams=int(steady["streams"]),
            snapshots=int(steady["snapshots"]),
            frames=int(steady["frames"]),
            refreshes=int(steady["refreshes"]),
            requests=int(steady["dashboard_requests"]),
            snapshots_per_s=round(steady["snapshots"] / seconds, 3),
            refreshes_per_s=round(steady["refreshes"] / seconds, 3),
            steady_seconds=round(seconds, 1),
        )
    if with_pages and without:
        idle_rate = without["process_cpu_s"] / without["seconds"]
        extra = with_pages["process_cpu_s"] / with_pages["seconds"] - idle_rate
        out.update(
            quiet_cpu_cores_pages=round(with_pages["process_cpu_s"] / with_pages["seconds"], 4),
            quiet_cpu_cores_idle=round(idle_rate, 4),
            quiet_extra_cpu_ms_per_s=round(1000 * extra, 3),
            quiet_meter_cpu_ms_per_s=round(
                1000 * with_pages["dashboard_cpu_s"] / with_pages["seconds"], 3
            ),
            quiet_frames=int(with_pages["frames"]),
        )
    return out


def server_errors(url: str) -> dict[str, int]:
    """5xx answers the server counted (``asyncfl_http_requests_total``), by status."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    counts: dict[str, int] = {}
    pattern = r'^asyncfl_http_requests_total\{[^}]*status="(5\d\d)"[^}]*\} (\S+)$'
    for status, value in re.findall(pattern, text, re.M):
        counts[status] = counts.get(status, 0) + int(float(value))
    return dict(sorted(counts.items()))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="afl-load-"))
    server: ServerProcess | None = None
    rss: RssSampler | None = None
    scraper: MetricsScraper | None = None
    pages: subprocess.Popen[bytes] | None = None
    try:
        if args.url:
            url, pid = args.url.rstrip("/"), args.server_pid
            admin_token = os.environ.get("ASYNCFL_LOAD_ADMIN_TOKEN", "")
            key = os.environ.get("ASYNCFL_LOAD_ENROLLMENT_KEY", "")
        else:
            server = start_server(data_dir)
            url, pid = server.url, server.pid
            admin_token, key = server.admin_token, server.enrollment_key
        if pid:
            rss = RssSampler(pid).start()
        admin = AdminApi(url, admin_token)
        asyncio.run(admin.create_task(args.task_id, linear_bundle(args.model), task_config(args)))
        log(
            f"task {args.task_id}: {num_params(args.model)} params, concurrency "
            f"{args.concurrency}, K {args.aggregation_goal}; {args.users} users, ramp "
            f"{args.ramp_s:.0f} s, steady {args.seconds:.0f} s; reports in {args.out}"
        )
        tokens = None
        if not args.enroll_in_locust:
            tokens = data_dir / "device-tokens.txt"
            started = time.monotonic()
            enrolled = asyncio.run(enroll_fleet(url, key, args.users))
            tokens.write_text("\n".join(enrolled) + "\n")
            tokens.chmod(0o600)
            log(f"enrolled {len(enrolled)} devices in {time.monotonic() - started:.0f} s")
        if args.pages:
            scraper = MetricsScraper(url).start()
            pages = start_pages(args, url, admin_token)
            wait_for_pages(args, pages)
        doc = json.loads(run_locust(args, url, key, tokens, rss).read_text())
        result = figures(args, doc, rss)
        if pages is not None and scraper is not None:
            log(f"quiet phases: {args.quiet_s:.0f} s with the pages open, then without")
            scraper.sample()
            t0 = time.time()
            time.sleep(args.quiet_s)
            scraper.sample()
            t1 = time.time()
            seen = stop_pages(pages, args)
            pages = None
            scraper.sample()
            t2 = time.time()
            time.sleep(args.quiet_s)
            scraper.sample()
            result["dashboard"] = {
                "pages": args.pages,
                **dashboard_figures(doc, scraper, (t0, t1), (t2, time.time())),
                "page_side": seen,
            }
        status = asyncio.run(admin.status(args.task_id))
        result["server_updates_accepted"] = status["updates_accepted"]
        result["server_updates_rejected"] = status["updates_rejected"]
        by_status = server_errors(url)
        result["5xx"] = sum(by_status.values())
        result["5xx_by_status"] = by_status
    finally:
        if pages is not None:
            stop_pages(pages, args)
        if scraper is not None:
            scraper.stop()
        if rss is not None:
            rss.stop()
        if server is not None:
            server.stop()
            if server.log_file.exists():  # the request ids of any 5xx are in it
                shutil.copy(server.log_file, args.out / "server.log")
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    if not args.json:
        for key_name in ("checkins_per_s", "uploads_per_s", "failures", "checkin_p99_ms", "5xx"):
            print(f"{key_name:>20}: {result[key_name]}")
    print(json.dumps(result), flush=True)
    return 1 if result["5xx"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
