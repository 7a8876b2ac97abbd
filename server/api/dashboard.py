"""``/dashboard``: the operator dashboard's page and assets (no data: that comes from
the admin API, with the token the operator signs in with)."""

from __future__ import annotations

from aiohttp import web

from server.dashboard import Asset, load_assets
from server.errors import NotFound

# The page loads only its own files and talks only to this origin; nothing may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate by ETag: a new release shows at once
}


def routes() -> list[web.RouteDef]:
    assets = load_assets()

    async def page(request: web.Request) -> web.StreamResponse:
        return _serve(request, assets["index.html"])

    async def asset(request: web.Request) -> web.StreamResponse:
        found = assets.get(request.match_info["name"])
        if found is None or found.name == "index.html":
            raise NotFound("no such dashboard file", code="not_found")
        return _serve(request, found)

    async def slash(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/dashboard")

    return [
        web.get("/dashboard", page),
        web.get("/dashboard/", slash),
        web.get("/dashboard/static/{name}", asset),
    ]


def _serve(request: web.Request, asset: Asset) -> web.StreamResponse:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
    )
