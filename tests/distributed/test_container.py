"""The container files: the image runs the same commands the tests run."""

from __future__ import annotations

from pathlib import Path

import yaml

from server.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _final_stage(dockerfile: str) -> list[str]:
    stages = dockerfile.split("\nFROM ")
    return stages[-1].splitlines()


def test_the_image_is_slim_non_root_and_health_checked() -> None:
    final = _final_stage((ROOT / "Dockerfile").read_text())
    joined = "\n".join(final)

    assert final[0].startswith("${PYTHON_IMAGE}")
    assert "slim" in (ROOT / "Dockerfile").read_text().split("\n")[3]
    assert any(line.startswith("USER 10001") for line in final)
    assert "HEALTHCHECK" in joined and "/healthz" in joined
    assert not any(tool in joined for tool in ("build-essential", "gcc", "apt-get install"))
    assert 'ENTRYPOINT ["asyncfl"]' in joined


def test_compose_runs_the_distributed_topology_with_real_cli_commands() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    parser = build_parser()
    commands = {
        name: s.get("command") for name, s in services.items() if s.get("image") == "asyncfl:latest"
    }

    assert {"postgres", "redis", "lb"} <= set(services)
    assert sorted(c[0] for c in commands.values()) == [
        "aggregator",
        "aggregator",
        "db",
        "serve",
        "serve",
    ]
    for command in commands.values():
        parser.parse_args(command)  # exits (fails the test) on an unknown command
    assert "--appendfsync" in services["redis"]["command"]
