"""The web SDK's figures, each against a baseline measured in the same run:

    python load_tests/bench_web.py [--json] [--pages 12] [--repeats 5] [--skip-fleet]

1. ``train_step``: milliseconds per train step of every zoo model (batch 32, one thread)
   on Python onnxruntime (the baseline), onnxruntime-node, onnxruntime-web's WASM in
   Node, and onnxruntime-web's WASM in a Chromium Web Worker; ratios to Python. The
   same start parameters and batches run everywhere, so each line also gives the
   parameter difference to Python after 50 steps (tests/web/test_parity.py).
2. ``bundle``: the SDK's browser builds without ONNX Runtime, minified and gzipped
   (``gzip -9``), beside onnxruntime-web's own files for scale.
3. ``download``: what a browser device downloads and uploads in its first round and in
   later ones (MLP, a new model version each round), counted by the page server's relay.
4. ``fleet``: ``--pages`` headless Chromium pages, one device each, train the MLP on
   non-IID digits shards against an embedded ``asyncfl serve`` to 0.90 held-out accuracy
   (``asyncfl demo --web --pages N``); the time it took.

Every line is JSON; ``--json`` prints nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client_sdk.wire import unpack  # noqa: E402
from load_tests.web_jobs import (  # noqa: E402
    WEB,
    browser_job,
    build_web_sdk,
    parity_error,
    run_node_job,
    step_job,
)
from server.admin_client import AdminClient  # noqa: E402
from server.demo_web import ORT_DIR, SDK_DIR, DemoTask, WebDemo  # noqa: E402
from server.demo_web_run import chromium, serve  # noqa: E402
from server.modeling.datasets import load_dataset  # noqa: E402
from server.modeling.zoo import ZOO  # noqa: E402
from server.process import ServerProcess  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print only the JSON lines")
    p.add_argument("--pages", type=int, default=12, help="browser fleet size")
    p.add_argument("--repeats", type=int, default=5, help="timed passes over the 50 batches")
    p.add_argument("--fleet-seconds", type=float, default=600.0)
    p.add_argument("--skip-fleet", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench-web")
    return p.parse_args(argv)


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def step_ms(pass_ms: list[float], steps: int) -> float:
    """Milliseconds per step: the median pass but the first (warm-up), over its steps
    (whole passes: a browser's timer is too coarse to time single steps)."""
    timed = pass_ms[1:] if len(pass_ms) > 1 else pass_ms
    return round(statistics.median(timed) / steps, 4)


def bundle_dir(out: Path, model: str) -> Path:
    from client_sdk.bundle import MANIFEST_FILE
    from server.modeling.export import export_bundle
    from server.modeling.sources import exporter_digest

    # keyed by the exporter's sources: a changed zoo model is exported again
    folder = out / "bundles" / f"{model}-sgd-{exporter_digest()[:12]}"
    if not (folder / MANIFEST_FILE).exists():
        export_bundle(model, folder, optimizer="sgd", parity_steps=10)
    return folder


async def train_steps(args: argparse.Namespace, site: str, demo: WebDemo, work: Path) -> None:
    async with chromium() as browser:
        page = await browser.new_page()
        for model in sorted(ZOO):
            folder = await asyncio.to_thread(bundle_dir, args.out, model)
            job = step_job(model, folder, repeats=args.repeats)
            line: dict[str, Any] = {"bench": "train_step", "model": model}
            steps = len(job.job["batches"])
            line["python_ms"] = step_ms(job.python_pass_ms, steps)
            for backend, name in (("node", "node"), ("web", "wasm_node")):
                out = await run_node_job(backend, job.job, work)
                line[f"{name}_ms"] = step_ms(out["pass_ms"], steps)
                line[f"{name}_diff"] = parity_error(job, out)
            demo.jobs[model] = browser_job(job.job)
            await page.goto(f"{site}/demo/bench.html?job={model}")
            handle = await page.wait_for_function("window.asyncflBench", timeout=600_000)
            out = await handle.json_value()
            if "error" in out:
                raise RuntimeError(f"{model} in Chromium: {out['error']}")
            result = unpack(base64.b64decode(out["params"]))
            line["wasm_chromium_ms"] = step_ms(out["pass_ms"], steps)
            line["wasm_chromium_diff"] = parity_error(job, result)
            for name in ("node", "wasm_node", "wasm_chromium"):
                line[f"{name}_ratio"] = round(line[f"{name}_ms"] / line["python_ms"], 2)
            emit(line)


def bundle_sizes() -> None:
    def gz(path: Path) -> float:
        return round(len(gzip.compress(path.read_bytes(), 9)) / 1024, 1)

    line: dict[str, Any] = {"bench": "bundle"}
    for name in ("worker.js", "asyncfl-web.js"):
        path = SDK_DIR / name
        line[f"{name}_min_kb"] = round(path.stat().st_size / 1024, 1)
        line[f"{name}_min_gz_kb"] = gz(path)
    line["ort_wasm_mjs_gz_kb"] = round(
        gz(ORT_DIR / "ort.wasm.min.mjs") + gz(ORT_DIR / "ort-wasm-simd-threaded.mjs"), 1
    )
    line["ort_wasm_binary_gz_kb"] = gz(ORT_DIR / "ort-wasm-simd-threaded.wasm")
    emit(line)


async def downloads(server: ServerProcess, site: str, demo: WebDemo, rounds: int = 3) -> None:
    task = f"bytes-{uuid.uuid4().hex[:6]}"
    async with AdminClient(server.url, server.admin_token) as admin:
        config = {
            "concurrency": 10,
            "plan": {"lr": 0.1, "batch_size": 16, "epochs": 1},
            "aggregation": {"aggregation_goal": 1, "optimizer": {"name": "fedavg", "lr": 1.0}},
        }
        await admin.create_task(task, model="mlp", config=config, evaluation={"dataset": "digits"})
    per_round = []
    async with chromium() as browser:
        page = await (await browser.new_context()).new_page()
        for _ in range(rounds):
            before_in, before_out = dict(demo.body_bytes), dict(demo.sent_bytes)
            await page.goto(f"{site}/?rounds=1&task={task}")
            await page.wait_for_function("asyncflDemo.results.length", timeout=120_000)
            got = {k: v - before_in.get(k, 0) for k, v in demo.body_bytes.items()}
            sent = {k: v - before_out.get(k, 0) for k, v in demo.sent_bytes.items()}
            per_round.append({"down": sum(got.values()), "up": sum(sent.values()), "by_kind": got})
    emit(
        {
            "bench": "download",
            "model": "mlp",
            "first_round_down_bytes": per_round[0]["down"],
            "later_round_down_bytes": per_round[-1]["down"],
            "first_round_up_bytes": per_round[0]["up"],
            "later_round_up_bytes": per_round[-1]["up"],
            "first_round_by_kind": per_round[0]["by_kind"],
            "later_round_by_kind": per_round[-1]["by_kind"],
        }
    )


def fleet(args: argparse.Namespace) -> None:
    from server.demo_web_run import run_web_demo

    demo_args = argparse.Namespace(
        pages=args.pages,
        devices=args.pages,
        alpha=0.5,
        seed=0,
        target=0.90,
        seconds=args.fleet_seconds,
        port=0,
        json=True,
        out=args.out,
    )
    started = time.monotonic()
    result = asyncio.run(run_web_demo(demo_args))
    emit(
        {
            "bench": "fleet",
            "pages": args.pages,
            "accuracy": result["accuracy"],
            "target": 0.90,
            "seconds": result["seconds"],
            "wall_s_with_startup": round(time.monotonic() - started, 2),
            "versions": result["versions"],
            "updates_applied": result["updates_applied"],
            "updates_per_s": round(result["updates_applied"] / result["seconds"], 2),
        }
    )


async def browser_benches(args: argparse.Namespace, work: Path) -> None:
    server = ServerProcess(work / "server", env={"ASYNCFL_EXPORTS_DIR": str(args.out / "exports")})
    await asyncio.to_thread(server.start)
    try:
        x, y, _, _ = load_dataset("digits")
        shard = [(x[:120], y[:120])]
        demo = WebDemo(server.url, server.admin_token, DemoTask("-", server.enrollment_key, shard))
        async with serve(demo.app()) as site:
            await train_steps(args, site, demo, work)
            await downloads(server, site, demo)
    finally:
        await asyncio.to_thread(server.stop)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    build_web_sdk()
    assert (WEB / "dist" / "browser" / "worker.js").exists()
    bundle_sizes()
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        asyncio.run(browser_benches(args, Path(tmp)))
    if not args.skip_fleet:
        fleet(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
