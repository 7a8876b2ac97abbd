"""The zoo export cache is keyed by the exporter's sources, so a change to a zoo model
(the CNN's stride-2 convolutions) is not served from an export made before it."""

from __future__ import annotations

from pathlib import Path

from server.modeling.sources import MODELING_DIR, exporter_digest, sources_digest


def test_the_digest_changes_when_a_source_file_changes(tmp_path: Path) -> None:
    (tmp_path / "zoo.py").write_text("POOL = 'max'\n")
    before = sources_digest(tmp_path)

    (tmp_path / "zoo.py").write_text("POOL = None\n")

    assert sources_digest(tmp_path) != before


def test_the_digest_ignores_files_that_are_not_python(tmp_path: Path) -> None:
    (tmp_path / "zoo.py").write_text("POOL = None\n")
    before = sources_digest(tmp_path)

    (tmp_path / "notes.txt").write_text("scratch")

    assert sources_digest(tmp_path) == before


def test_the_export_key_covers_the_zoo_and_the_tracer() -> None:
    assert {"zoo.py", "graphs.py", "decompositions.py"} <= {p.name for p in MODELING_DIR.iterdir()}
    assert exporter_digest() == sources_digest(MODELING_DIR)
