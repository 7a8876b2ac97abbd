"""``asyncfl model export`` and ``asyncfl model check`` end to end (small settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client_sdk.bundle import Bundle
from server.cli import main
from server.modeling.cli import OPTIMIZER_CHOICES
from server.modeling.optimizers import OPTIMIZERS

CHECK_KEYS = [
    "model",
    "params",
    "max_param_diff",
    "max_loss_diff",
    "ort_ms_per_step",
    "torch_ms_per_step",
    "speedup_vs_torch",
    "ort_rss_mb",
    "torch_rss_mb",
]


def test_export_writes_a_loadable_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "logreg"

    code = main(
        [
            "--log-level",
            "WARNING",
            "model",
            "export",
            "--model",
            "logreg",
            "--out",
            str(out),
            "--optimizer",
            "momentum",
            "--hparam",
            "momentum=0.5",
            "--parity-steps",
            "4",
        ]
    )

    assert code == 0
    assert "exported logreg" in capsys.readouterr().out
    manifest = Bundle.load(out).manifest
    assert (manifest.optimizer, manifest.optimizer_hparams["momentum"]) == ("momentum", 0.5)


def test_check_prints_the_json_line_last(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--log-level",
            "WARNING",
            "model",
            "check",
            "--model",
            "logreg",
            "--json",
            "--steps",
            "20",
            "--repeats",
            "1",
            "--parity-steps",
            "4",
        ]
    )

    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert list(result) == CHECK_KEYS
    assert result["model"] == "logreg"
    assert result["params"] == 650
    assert result["max_param_diff"] <= 1e-5
    assert result["ort_ms_per_step"] > 0
    assert result["torch_ms_per_step"] > 0
    assert 0 < result["ort_rss_mb"] < result["torch_rss_mb"]


def test_export_of_an_unknown_model_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--log-level",
            "WARNING",
            "model",
            "export",
            "--model",
            "nope",
            "--out",
            str(tmp_path / "x"),
        ]
    )

    assert code == 1
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_cli_optimizer_choices_match_the_exporter() -> None:
    assert OPTIMIZER_CHOICES == OPTIMIZERS
