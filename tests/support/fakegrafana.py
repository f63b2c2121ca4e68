"""A local server speaking Grafana's dashboard HTTP API as documented:
`GET /api/dashboards/uid/:uid` and `POST /api/dashboards/db` with Bearer auth, `overwrite`,
versions, and the 401 / 404 / 412 (version-mismatch, name-exists) answers."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from support.threaded import ThreadedServer

TOKEN = "glsa_test_token"


@dataclass
class FakeGrafana(ThreadedServer):
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    posts: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_id: int = 1
    fail_next_post: tuple[int, dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        ThreadedServer.__init__(self)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/dashboards/uid/{uid}", self._get)
        app.router.add_post("/api/dashboards/db", self._post)
        return app

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    async def _get(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"message": "invalid API key"}, status=401)
        stored = self.dashboards.get(request.match_info["uid"])
        if stored is None:
            return web.json_response({"message": "Dashboard not found"}, status=404)
        return web.json_response(
            {"dashboard": stored, "meta": {"slug": stored["uid"], "folderUid": ""}}
        )

    async def _post(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"message": "invalid API key"}, status=401)
        body = await request.json()
        dashboard = body.get("dashboard") or {}
        if not dashboard.get("title") or not dashboard.get("uid"):
            return web.json_response({"message": "Dashboard title cannot be empty"}, status=400)
        with self._lock:
            self.posts.append(body)
            if self.fail_next_post is not None:
                status, answer = self.fail_next_post
                self.fail_next_post = None
                return web.json_response(answer, status=status)
            uid = dashboard["uid"]
            existing = self.dashboards.get(uid)
            overwrite = bool(body.get("overwrite"))
            if not overwrite:
                clash = next(
                    (
                        d
                        for d in self.dashboards.values()
                        if d["title"] == dashboard["title"] and d["uid"] != uid
                    ),
                    None,
                )
                if clash is not None:
                    return web.json_response(
                        {
                            "message": "A dashboard with the same name in the folder already exists",
                            "status": "name-exists",
                        },
                        status=412,
                    )
                if existing is not None and dashboard.get("version") != existing["version"]:
                    return web.json_response(
                        {
                            "message": "The dashboard has been changed by someone else",
                            "status": "version-mismatch",
                        },
                        status=412,
                    )
            version = existing["version"] + 1 if existing else 1
            ident = existing["id"] if existing else self._next_id
            self._next_id += existing is None
            self.dashboards[uid] = {**dashboard, "id": ident, "version": version}
        return web.json_response(
            {
                "id": ident,
                "uid": uid,
                "url": f"/d/{uid}/x",
                "status": "success",
                "version": version,
                "slug": "x",
            }
        )
