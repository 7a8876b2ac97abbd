"""The SDK's footprint and public surface."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import client_sdk
from client_sdk import errors

REPO = Path(__file__).resolve().parents[2]


def _loaded_after(imports: str, heavy: set[str]) -> list[str]:
    """The top-level packages among ``heavy`` that ``import <imports>`` loads, in a
    fresh interpreter."""
    code = (
        f"import sys, {imports}; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(heavy)!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return list(ast.literal_eval(out.stdout.strip()))


def test_importing_the_sdk_loads_no_torch_nor_server_dependencies() -> None:
    heavy = {"torch", "server", "sqlalchemy", "redis", "sklearn", "scipy", "onnx"}

    assert _loaded_after("client_sdk", heavy) == []


def test_the_wire_format_alone_loads_no_client_machinery() -> None:
    heavy = {"aiohttp", "onnxruntime", "sqlite3"}

    assert _loaded_after("client_sdk.wire, client_sdk.errors", heavy) == []


def test_the_base_install_is_exactly_the_sdk_dependencies() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("[")[0] for dep in project["dependencies"]}

    assert names == {"numpy", "msgpack", "onnxruntime", "aiohttp", "cryptography"}


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert client_sdk.__all__ == sorted(client_sdk.__all__)
    for name in client_sdk.__all__:
        assert getattr(client_sdk, name) is not None


def test_every_sdk_error_has_one_root() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]

    assert all(issubclass(c, errors.SdkError) for c in classes)
    assert len(classes) == 8
