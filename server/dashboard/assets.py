"""The dashboard's files, read once from the package and served from memory."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
}
ASSETS = ("index.html", "app.js", "charts.js", "style.css")


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    folder = resources.files("server.dashboard") / "static"
    assets = {}
    for name in ASSETS:
        body = (folder / name).read_bytes()
        suffix = name[name.rindex(".") :]
        digest = hashlib.sha256(body).hexdigest()[:32]
        assets[name] = Asset(name, body, TYPES[suffix], f'"{digest}"')
    return assets
