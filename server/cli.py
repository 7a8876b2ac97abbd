"""The ``asyncfl`` command line.

Each command group lives next to the code it drives and registers itself here through
an ``add_parser(subparsers)`` function; its imports are deferred so that, for example,
``asyncfl serve`` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

# command -> module that defines add_parser(subparsers) for it
_COMMAND_MODULES: dict[str, str] = {
    "serve": "server.cli_serve",
    "aggregator": "server.cli_serve",
    "db": "server.cli_serve",
    "demo": "server.demo",
    "model": "server.modeling.cli",
    "simulate": "simulator.cli",
    "secagg": "server.secagg.cli",
}
_OWN_PACKAGES = frozenset({"server", "client_sdk", "simulator"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asyncfl", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    seen: set[str] = set()
    for module_name in dict.fromkeys(_COMMAND_MODULES.values()):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # an optional extra is not installed
            missing = exc.name or module_name
            if missing.split(".")[0] in _OWN_PACKAGES:
                raise
            for cmd, mod in _COMMAND_MODULES.items():
                if mod == module_name and cmd not in seen:
                    p = sub.add_parser(cmd, help=f"(unavailable: {missing} is not installed)")
                    p.set_defaults(func=_unavailable(cmd, missing))
            continue
        add_parser: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]
        add_parser = module.add_parser
        add_parser(sub)
        seen.update(c for c, m in _COMMAND_MODULES.items() if m == module_name)
    return parser


def _unavailable(cmd: str, missing: str) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        print(
            f"asyncfl {cmd}: needs {missing}; install the matching extra, "
            "e.g. pip install 'asyncfl[server,export,sim]'",
            file=sys.stderr,
        )
        return 2

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
