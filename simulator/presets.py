"""Finding, reading and overriding the TOML presets under ``simulator/presets/``.

A preset is named by its file stem (``papaya-small``) or given as a path to any TOML
file. ``extends = "NAME"`` starts from another preset (tables merge key by key,
everything else is replaced), so the grid and the sweep share papaya-small's fleet and
data. Overrides are ``dotted.key=value`` strings applied before validation; the value
is read as TOML (``fleet.devices=100000``, ``async.optimizer.lr=2.0``,
``fleet.tiers.0.dropout=0.1``) and falls back to a plain string.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulator.config import Preset
from simulator.errors import PresetError
from simulator.parsing import parse_preset

__all__ = ["PRESET_DIR", "apply_override", "list_presets", "load_preset"]

PRESET_DIR = Path(__file__).with_name("presets")


def list_presets() -> list[str]:
    """Names of the presets shipped with the simulator."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(name_or_path: str, overrides: Sequence[str] = ()) -> Preset:
    """Read a preset by name or path, apply ``overrides`` and validate it."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PRESET_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise PresetError(
                f"unknown preset {name_or_path!r}; known: {', '.join(list_presets())} "
                "(or pass a path to a .toml file)"
            )
    data = _read(path)
    for override in overrides:
        apply_override(data, override)
    try:
        return parse_preset(data, path.stem)
    except PresetError as exc:
        raise PresetError(f"preset {path.stem}: {exc.message}") from exc


def _read(path: Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PresetError(f"preset file {path} does not exist") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PresetError(f"preset {path} is not valid TOML: {exc}") from exc
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or base in seen or base == path.stem:
        raise PresetError(f"preset {path.stem}: extends must name another preset, got {base!r}")
    parent = PRESET_DIR / f"{base}.toml"
    if not parent.is_file():
        raise PresetError(f"preset {path.stem} extends unknown preset {base!r}")
    return _merge(_read(parent, (*seen, path.stem)), data)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in the nested ``data`` (list items by index: ``tiers.0``)."""
    key, sep, text = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise PresetError(f"override {override!r} must look like section.key=value")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: i + 1]))
    last = parts[-1]
    value = _parse_value(text.strip())
    if isinstance(node, list):
        node[_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise PresetError(f"override {override!r}: {'.'.join(parts[:-1])} is not a table")


def _child(node: Any, part: str, where: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, where)]
    if not isinstance(node, dict):
        raise PresetError(f"override: {where} is not a table")
    return node.setdefault(part, {})


def _index(node: list[Any], part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise PresetError(f"override: {where} needs an index below {len(node)}")
    return int(part)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
