from __future__ import annotations

import subprocess
import sys

import simulator


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert simulator.__all__ == sorted(simulator.__all__)
    for name in simulator.__all__:
        assert getattr(simulator, name) is not None, name


def test_the_command_line_does_not_load_the_simulator_for_other_commands() -> None:
    code = (
        "import sys, server.cli; server.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith('simulator')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "['simulator', 'simulator.cli', 'simulator.errors']"
