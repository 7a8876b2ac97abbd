"""A bounded atheris run of ``tests/fuzz/parsers.py``: no decoder raises anything but a 4xx."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("ASYNCFL_FUZZ_SECONDS", "20"))


def test_the_decoders_survive_a_coverage_guided_fuzz(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "fuzz" / "parsers.py"),
            f"-max_total_time={SECONDS}",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
            f"-artifact_prefix={tmp_path}/",
            str(tmp_path / "corpus"),
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    runs = re.search(r"Done (\d+) runs in (\d+) second", proc.stderr)
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))

    assert proc.returncode == 0 and not crashes, proc.stderr[-4000:]
    assert runs is not None and int(runs.group(1)) > 10_000, proc.stderr[-2000:]
    print(f"fuzz: {runs.group(1)} inputs in {runs.group(2)} s, no finding")
