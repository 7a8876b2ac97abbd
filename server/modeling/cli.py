"""``asyncfl model``: export a model to a training bundle, or check parity and speed.

    asyncfl model export --model NAME|module:factory --out DIR [--optimizer sgd|momentum|adam]
    asyncfl model check --model NAME [--json]

Imports torch only when a command runs, so ``asyncfl serve`` never pays for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from server.errors import AsyncflError

OPTIMIZER_CHOICES = ("sgd", "momentum", "adam")  # server.modeling.optimizers.OPTIMIZERS
MODEL_HELP = "zoo model (logreg, mlp, cnn, embedding) or module:factory returning a ZooEntry"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("model", help="export torch models to ONNX training bundles")
    commands = parser.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")

    export = commands.add_parser("export", help="export a model, gated by torch parity")
    export.add_argument("--model", required=True, help=MODEL_HELP)
    export.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    _common(export)
    export.add_argument(
        "--hparam",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="optimizer hyperparameter, e.g. momentum=0.9 (repeatable)",
    )
    export.add_argument("--seed", type=int, default=0, help="seed of the initial weights")
    export.set_defaults(func=_export)

    check = commands.add_parser("check", help="parity and ORT-vs-torch speed and memory")
    check.add_argument("--model", required=True, help=MODEL_HELP)
    _common(check)
    check.add_argument("--steps", type=int, default=200, help="timed train steps")
    check.add_argument("--batch-size", type=int, default=32)
    check.add_argument("--repeats", type=int, default=3, help="timed passes; the best counts")
    check.add_argument("--json", action="store_true", help="print only the JSON result line")
    check.set_defaults(func=_check)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--optimizer", choices=OPTIMIZER_CHOICES, default="sgd")
    parser.add_argument("--parity-steps", type=int, default=50)
    parser.add_argument("--tolerance", type=float, default=1e-5)


def _export(args: argparse.Namespace) -> int:
    try:
        from server.modeling.export import export_bundle

        bundle = export_bundle(
            args.model,
            args.out,
            optimizer=args.optimizer,
            optimizer_hparams=_hparams(args.hparam),
            parity_steps=args.parity_steps,
            tolerance=args.tolerance,
            seed=args.seed,
        )
    except ModuleNotFoundError as exc:
        return _missing(exc)
    except AsyncflError as exc:
        print(f"asyncfl model export: {exc.message}", file=sys.stderr)
        return 1
    manifest = bundle.manifest
    parity = manifest.extra["parity"]
    print(
        f"exported {manifest.model} ({manifest.num_params} params, {manifest.optimizer}) "
        f"to {args.out}; parity over {parity['steps']} steps: "
        f"max param diff {parity['max_param_diff']:.3g}, "
        f"max loss diff {parity['max_loss_diff']:.3g}"
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        from server.modeling.bench import run_check

        result = run_check(
            args.model,
            optimizer=args.optimizer,
            steps=args.steps,
            batch_size=args.batch_size,
            repeats=args.repeats,
            parity_steps=args.parity_steps,
            tolerance=args.tolerance,
        )
    except ModuleNotFoundError as exc:
        return _missing(exc)
    except AsyncflError as exc:
        print(f"asyncfl model check: {exc.message}", file=sys.stderr)
        return 1
    if not args.json:
        for key, value in result.items():
            print(f"{key:>18}: {value}")
    print(json.dumps(result))
    return 0


def _hparams(pairs: list[str]) -> dict[str, float]:
    hparams = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            hparams[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise SystemExit(f"asyncfl model export: --hparam expects NAME=NUMBER, got {pair!r}")
    return hparams


def _missing(exc: ModuleNotFoundError) -> int:
    print(
        f"asyncfl model: needs {exc.name}; install the export extra: pip install 'asyncfl[export]'",
        file=sys.stderr,
    )
    return 2
