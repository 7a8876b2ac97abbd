"""The middle side of bench_ingest.py: asyncfl's FL logic per upload, and nothing else.

One route, ``POST /ingest``, run like :mod:`load_tests.bare_server` (one process, the
default asyncio loop, no access log, backlog 4096, loopback only). Its handler runs the
server's own code for what an upload *means*:

- the body read (:func:`server.api.http.read_body`) and the strict parse
  (:func:`server.updates.parse_update`: msgpack, fields, tensors);
- the session token's HMAC check (:class:`~server.coordination.tokens.TokenSigner`),
  its expiry and a single-use check (an in-memory set);
- the fold into a real :class:`~server.aggregation.FedBuffAggregator` (validation,
  staleness weight, ``saxpy``) and, every ``--goal`` updates, the server-optimizer step
  and what the worker does to cut a version (params packed, aggregator snapshot);
- the msgpack acknowledgement.

What it leaves out is what asyncfl's upload adds beyond the FL logic: the session
store, the durable log, the version commits, the ledger and the metrics. Against the
bare handler it prices the FL logic; against the real endpoint, the rest.

    python -m load_tests.logic_server --port-file PATH --secret S [--goal K]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from aiohttp import web

from client_sdk.wire import CONTENT_TYPE, encode_tensors, pack
from load_tests.bare_server import serve
from server.aggregation import AggregationConfig, make_aggregator
from server.aggregation.buffer import FedBuffAggregator
from server.api.http import read_body
from server.coordination.tokens import TokenSigner
from server.errors import AsyncflError
from server.updates import parse_update

MAX_BODY = 64 * 1024 * 1024


class Logic:
    def __init__(self, secret: str, goal: int) -> None:
        self.signer = TokenSigner(secret)
        self.config = AggregationConfig(aggregation_goal=goal, max_staleness=None)
        self.aggregator: FedBuffAggregator | None = None
        self.used: set[str] = set()

    async def ingest(self, request: web.Request) -> web.Response:
        try:
            body = await read_body(request, MAX_BODY)
            payload = parse_update(body)
            claims = self.signer.verify_session(payload.session)
        except AsyncflError as exc:
            return web.json_response({"error": exc.code}, status=exc.status)
        if claims.expired(time.time()):
            return web.json_response({"error": "session_expired"}, status=410)
        if claims.sid in self.used:
            return web.json_response({"error": "session_used"}, status=409)
        self.used.add(claims.sid)
        agg = self.aggregator
        if agg is None:
            zeros = [t * 0 for t in payload.tensors]
            built = make_aggregator(zeros, self.config)
            assert isinstance(built, FedBuffAggregator)
            agg = self.aggregator = built
        try:
            result = agg.fold(
                claims.sid, payload.tensors, payload.num_examples, payload.base_version
            )
        except AsyncflError as exc:
            return web.json_response({"error": exc.code}, status=exc.status)
        if result.step is not None:  # what the worker does to cut a version
            params = [p.copy() for p in agg.params]
            pack(encode_tensors(params))
            agg.snapshot()
        ack = {
            "status": "accepted",
            "update_id": claims.sid,
            "position": str(len(self.used)),
            "staleness": result.staleness,
        }
        return web.Response(body=pack(ack), content_type=CONTENT_TYPE)


def create_app(secret: str, goal: int) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app.add_routes([web.post("/ingest", Logic(secret, goal).ingest)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--secret", required=True, help="the secret the session tokens use")
    parser.add_argument("--goal", type=int, default=100, help="K: a version per K updates")
    args = parser.parse_args()
    asyncio.run(serve(args.port_file, create_app(args.secret, args.goal)))


if __name__ == "__main__":
    main()
