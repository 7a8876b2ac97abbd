"""Does the load generator, not the server, set the pace? The bare handler under each
generator, fed one body reused or a distinct token in every body.

    python load_tests/compare_generators.py [--json] [--seconds 6] [--rounds 2]

Starts :mod:`load_tests.bare_server` and, for ``--rounds`` rounds, drives it for
``--seconds`` with wrk (when installed) and ``upgen`` (when a C compiler is), each with
one 400 KB update body reused (one token, cycled) and with 20,000 distinct tokens
(cycled), 64 connections. The server's CPU per request shows whether the server or the
generator was the limit: the same CPU per request at a lower rate means the generator.
Prints one JSON line last: the best rate and the CPU per request of each combination::

    {"wrk_one_rps": ..., "wrk_distinct_rps": ..., "native_one_rps": ...,
     "native_distinct_rps": ..., "wrk_one_cpu_us_per_req": ..., ...}
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make the repo root importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from load_tests import loadgen
from load_tests.bench_ingest import ChildServer, cpu_seconds, placeholder_tokens
from load_tests.bundle import linear_bundle
from load_tests.target import log

TOKEN_LENGTH = 200  # about a real session token's
DISTINCT = 20_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.connections < 1:
        parser.error("--seconds, --rounds and --connections must be positive")
    generators = {}
    if loadgen.wrk_available():
        generators["wrk"] = loadgen.run_wrk
    if loadgen.native_binary() is not None:
        generators["native"] = loadgen.run_native
    if not generators:
        parser.error("neither wrk nor a C compiler is installed")
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="afl-gen-") as tmp:
        work = Path(tmp)
        head_file = work / "head.bin"
        head_file.write_bytes(loadgen.update_head(linear_bundle("linear_100k").param_shapes))
        tokens = placeholder_tokens(TOKEN_LENGTH, DISTINCT)
        token_files = {"one": work / "one.txt", "distinct": work / "distinct.txt"}
        token_files["one"].write_text(tokens[0] + "\n")
        token_files["distinct"].write_text("\n".join(tokens) + "\n")
        with ChildServer(work, "bare_server") as bare:
            for round_ in range(args.rounds):
                for name, run in generators.items():
                    for bodies, path in token_files.items():
                        cpu = cpu_seconds(bare.pid)
                        result = run(
                            bare.url,
                            head_file,
                            path,
                            connections=args.connections,
                            seconds=args.seconds,
                            cycle=True,
                        )
                        cpu_us = (cpu_seconds(bare.pid) - cpu) / max(result.requests, 1) * 1e6
                        key = f"{name}_{bodies}"
                        log(
                            f"round {round_ + 1} {key:16} {result.rps:7.1f} req/s, "
                            f"server CPU {cpu_us:5.0f} us/req"
                        )
                        if result.rps > best.get(key, (0.0, 0.0))[0]:
                            best[key] = (result.rps, cpu_us)
    doc: dict[str, Any] = {}
    for key, (rps, cpu_us) in best.items():
        doc[f"{key}_rps"] = round(rps, 1)
        doc[f"{key}_cpu_us_per_req"] = round(cpu_us, 1)
    doc |= {"connections": args.connections, "seconds": args.seconds, "rounds": args.rounds}
    print(json.dumps(doc), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
