from __future__ import annotations

import json

import pytest

import server.aggregation as aggregation
from server.aggregation import bench


def test_all_is_sorted_and_every_name_exists() -> None:
    assert aggregation.__all__ == sorted(aggregation.__all__)
    for name in aggregation.__all__:
        assert hasattr(aggregation, name), name


def test_the_names_the_server_and_simulator_use_are_exported() -> None:
    assert {
        "AggregationConfig",
        "AggregatorStats",
        "FedBuffAggregator",
        "FoldResult",
        "ModelSpec",
        "RejectReason",
        "RoundState",
        "StepResult",
        "SyncRoundAggregator",
        "clip_by_norm",
        "example_weight",
        "make_optimizer",
        "make_staleness_fn",
        "validate_update",
    } <= set(aggregation.__all__)


def test_bench_prints_a_json_line_last(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--rounds", "1", "--sizes", "1000", "20000"])

    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["params"] == [1000, 20000]
    assert set(result) == {
        "params",
        "folds_per_s",
        "np_add_per_s",
        "ratio",
        "folds_with_steps_per_s",
        "ratio_with_steps",
        "kernel_ratio",
        "merged_updates_per_s",
        "merge_ratio",
    }
    assert all(r > 0 for r in result["ratio"])
    assert len(lines) > 1  # the table came first
