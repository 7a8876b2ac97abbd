"""``asyncfl secagg``: run the mask service, make an operator key, vouch for a mask key.

asyncfl secagg serve --data-dir DIR [--host H] [--port P] [--port-file F]
                     [--database-url URL] [--min-threshold N] [--parent-pid PID]
                     (token: ASYNCFL_SECAGG_TOKEN)
asyncfl secagg operator-keygen --out FILE        prints the public key apps ship (hex)
asyncfl secagg sign --operator-key FILE --data-dir DIR
asyncfl secagg key --data-dir DIR                prints the mask service's public key (hex)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from server.secagg.keys import MaskKeys, operator_keygen, sign_mask_key
from server.secagg.service import ServiceConfig, create_app

TOKEN_ENV = "ASYNCFL_SECAGG_TOKEN"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("secagg", help="the secure-aggregation mask service")
    actions = parser.add_subparsers(dest="secagg_command", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="run the mask service")
    serve.add_argument("--data-dir", type=Path, default=Path(".asyncfl-secagg"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8090)
    serve.add_argument("--port-file", type=Path)
    serve.add_argument("--database-url", default=os.environ.get("ASYNCFL_SECAGG_DATABASE_URL", ""))
    serve.add_argument(
        "--min-threshold",
        type=int,
        default=int(os.environ.get("ASYNCFL_SECAGG_MIN_THRESHOLD", "2")),
        help="the fewest updates any release may cover, whatever a task asks",
    )
    serve.add_argument(
        "--parent-pid",
        type=int,
        help="exit when this process is gone (the embedded server's child; set by it)",
    )
    serve.set_defaults(func=_serve)
    keygen = actions.add_parser("operator-keygen", help="make an operator signing key")
    keygen.add_argument("--out", type=Path, required=True)
    keygen.set_defaults(func=_keygen)
    sign = actions.add_parser("sign", help="vouch for the mask service's key")
    sign.add_argument("--operator-key", type=Path, required=True)
    sign.add_argument("--data-dir", type=Path, required=True)
    sign.set_defaults(func=_sign)
    key = actions.add_parser("key", help="print the mask service's public key")
    key.add_argument("--data-dir", type=Path, required=True)
    key.set_defaults(func=_key)


def _serve(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"asyncfl secagg serve: set {TOKEN_ENV}", file=sys.stderr)
        return 2
    config = ServiceConfig(
        data_dir=args.data_dir,
        token=token,
        database_url=args.database_url,
        min_threshold=max(1, args.min_threshold),
    )
    app = create_app(config)
    asyncio.run(_run(app, args.host, args.port, args.port_file, args.parent_pid))
    return 0


async def _orphaned(parent: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once ``parent`` is gone (a kill -9 of the server leaves no child)."""
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
            return
        await asyncio.sleep(0.5)


async def _run(
    app: web.Application, host: str, port: int, port_file: Path | None, parent: int | None
) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        if port_file is not None:
            tmp = port_file.with_suffix(".tmp")
            tmp.write_text(str(runner.addresses[0][1]))
            tmp.replace(port_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watch = None if parent is None else asyncio.create_task(_orphaned(parent, stop))
        await stop.wait()
        if watch is not None:
            watch.cancel()
    finally:
        await runner.cleanup()


def _keygen(args: argparse.Namespace) -> int:
    print(operator_keygen(args.out).hex())
    return 0


def _sign(args: argparse.Namespace) -> int:
    print(sign_mask_key(args.operator_key, args.data_dir).hex())
    return 0


def _key(args: argparse.Namespace) -> int:
    print(MaskKeys.load_or_create(args.data_dir).public.hex())
    return 0
