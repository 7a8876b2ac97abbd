"""``python -m client_sdk.bench`` runs end to end and prints its JSON line last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_bench_prints_one_json_line_last_and_downloads_graphs_once(
    exports_dir: Path,
) -> None:
    env = {**os.environ, "ASYNCFL_EXPORTS_DIR": str(exports_dir)}
    out = subprocess.run(
        [sys.executable, "-m", "client_sdk.bench", "--json", "--rounds", "3", "--model", "logreg"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])

    assert list(result)[:5] == [
        "rounds",
        "peak_rss_mb",
        "train_ms_median",
        "bytes_up_per_round",
        "bytes_down_per_round",
    ]
    assert result["rounds"] == 3
    assert result["graph_bytes_after_first"] == 0
    # after the first round: the parameters, plus the check-in answer and the ack
    assert result["param_bytes_per_round"] > 2000
    assert 0 < result["bytes_down_per_round"] - result["param_bytes_per_round"] < 2000
    assert not result["torch_imported"] and not result["server_code_imported"]
    assert 0 < result["peak_rss_mb"] < 200
