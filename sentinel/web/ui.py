"""The status UI served by `sentinel run`: overview, service, incidents, gate and silences
pages, server-rendered with Jinja2 (autoescape on), styled and scripted from assets in
the package (no CDN, no build step). Pages work with JavaScript disabled; the script only
refreshes the overview after each evaluation and filters its rows as you type.

Handlers are thin: view models come from `ui_data` and `ui_service`, charts from
`charts`, auth from `ui_auth`; silences go through the API's own `create_silence`, gate
checks through the gate's own parsing, verdict and audit.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from markupsafe import Markup
from multidict import MultiDict

from sentinel import __version__
from sentinel.alerting.silences import Silence
from sentinel.daemon.assembly import Assembly
from sentinel.errors import GateInputError, GateOverloaded, StateStoreWriteError
from sentinel.evaluate.slo import rfc3339
from sentinel.gate.request import parse_query
from sentinel.outputs.links import dashboard_url
from sentinel.rules.model import SLIKind
from sentinel.units import format_duration
from sentinel.web import ui_data, ui_service
from sentinel.web.alerts_api import create_silence
from sentinel.web.app import off_loop
from sentinel.web.compare import same_secret
from sentinel.web.ui_auth import Auth, UIAuth, safe_next, same_origin
from sentinel.web.ui_series import History, RangeCache, SparkReader
from sentinel.web.ui_table import table_rows

STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
# Every page: no inline script or style can run (a second wall behind autoescaping), no
# framing, forms post only here.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
MAX_LABEL_MATCHERS = 4
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sentinel.web", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["urlpart"] = lambda s: quote(str(s), safe="")
    env.filters["when"] = ui_data.when
    env.filters["iso"] = rfc3339
    env.filters["fmt"] = lambda value, kind: ui_data.fmt(kind, value)
    env.filters["duration"] = format_duration
    env.filters["href"] = safe_href
    env.globals["status_text"] = ui_data.STATUS_TEXT
    return env


def safe_href(url: str | None) -> str:
    """Links from configuration (runbooks, Grafana) only to http(s) or this site: a
    `javascript:` runbook URL in a rule file must not become a script."""
    text = str(url or "")
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme in ("http", "https") or (text.startswith("/") and not text.startswith("//")):
        return text
    return "#"


def _static_assets() -> dict[str, tuple[bytes, str]]:
    folder = importlib.resources.files("sentinel.web") / "static"
    assets = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in STATIC_TYPES:
            assets[item.name] = (item.read_bytes(), STATIC_TYPES[suffix])
    return assets


@dataclass(frozen=True)
class Overview:
    """One cycle's overview: every row, worst first; the first page's HTML; the sparkline
    copies the other pages draw from."""

    rows: list[ui_data.Row]
    first_page: Markup
    page_rows: int  # the page size first_page was cut at
    reader: SparkReader
    # The header's counts and the service filter's choices (30,000 rows at 10,000
    # services: ~12 ms of the event loop per view when counted for each request).
    counts: Mapping[str, int]
    services: list[str]


def page_number(text: str | None) -> int:
    """The overview's `page` parameter: a whole number from 1 (absent: 1)."""
    if text is None or text == "":
        return 1
    if not (text.isascii() and text.isdigit()) or len(text) > 9 or int(text) < 1:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise ValueError(f"page: expected a page number from 1, got {shown!r}")
    return int(text)


class StatusUI:
    def __init__(self, assembly: Assembly, clock: Callable[[], float] | None = None) -> None:
        self.daemon = assembly.daemon
        self.manager = assembly.manager
        self.store = assembly.store
        self.gate = assembly.gate
        self.clock = clock or assembly.daemon.clock
        self.history = History()
        self.cache = RangeCache(lambda: self.daemon.engine.sources, self.generation)
        self.auth = UIAuth(self._token, time.time)
        self.env = _environment()
        self.assets = _static_assets()
        digest = hashlib.sha256(b"".join(a[0] for a in self.assets.values())).hexdigest()
        self.asset_version = digest[:10]
        self._rows: tuple[Any, Overview] | None = None
        self._building: tuple[Any, asyncio.Future[Overview]] | None = None

    def _token(self) -> str | None:
        token = self.daemon.config.server.api_token
        return token.get_secret_value() if token is not None else None

    def generation(self) -> int:
        """Changes whenever an evaluation cycle finishes (caches and refresh key on it)."""
        return sum(s.cycles for s in self.daemon.group_status.values())

    # -- rendering ----------------------------------------------------------------------

    def header(self) -> ui_data.Header:
        checks = {n: s.health.as_json() for n, s in self.daemon.engine.sources.items()}
        checks.update(self.daemon.extra_health())
        finished = [s for s in self.daemon.group_status.values() if s.last_finished_at]
        last = max(finished, key=lambda s: s.last_finished_at or 0.0, default=None)
        return ui_data.Header(
            dependencies=ui_data.dependencies(checks),
            last_cycle_at=last.last_finished_at if last else None,
            last_cycle_seconds=last.last_duration if last else None,
            generation=self.generation(),
            counts={},
        )

    def render(
        self,
        request: web.Request,
        auth: Auth,
        template: str,
        status: int = 200,
        **context: Any,
    ) -> web.Response:
        now = self.clock()
        values = {
            "auth": auth,
            "path": request.path,
            "path_qs": request.path_qs,
            "header": self.header(),
            "now": now,
            "ago": lambda ts: ui_data.ago(ts, now),
            "version": __version__,
            "asset_version": self.asset_version,
            **context,
        }
        text = self.env.get_template(template).render(values)
        response = web.Response(text=text, status=status, content_type="text/html")
        response.headers.update(SECURITY_HEADERS)
        self.auth.remember(response, request, auth)
        return response

    # -- pages --------------------------------------------------------------------------

    async def overview_rows(self, request: web.Request) -> Overview:
        """Every instance's row, and the first page's HTML, built once per evaluation cycle
        (and again when the set of active silences or the page size changes): ten people
        watching the overview cost one build per cycle."""
        now = self.clock()
        silences = self.store.silences()
        key = (
            tuple((s.cycles, s.completed_at) for s in self.daemon.group_status.values()),
            tuple(s.id for s in silences if s.active(now)),
            self.daemon.config.server.ui_page_rows,
        )
        if self._rows is not None and self._rows[0] == key:
            return self._rows[1]
        building = self._building
        if building is None or building[0] != key:
            building = (key, asyncio.ensure_future(self._build_rows(request, key, silences, now)))
            self._building = building
        # One build per key however many ask at once (ten people watching the overview
        # as a cycle ends); shielded: one of them leaving does not stop it for the rest.
        return await asyncio.shield(building[1])

    async def _build_rows(
        self, request: web.Request, key: Any, silences: list[Silence], now: float
    ) -> Overview:
        # Built in a worker thread from this moment's results and alert states (both
        # replaced, never changed in place, on the loop): 7,000 instances' rows and
        # sparklines held the event loop ~190 ms once per cycle.
        parts, alerts = self.daemon.latest_parts(), dict(self.manager.alerts)
        reader = self.history.reader()  # the rings change on the loop meanwhile
        size = key[-1]

        def build() -> Overview:
            rows = ui_data.rows([r for part in parts for r in part], alerts, silences, now)
            first = table_rows(rows[:size], reader.spark)
            services = sorted({r.service for r in rows})
            counts = ui_data.status_counts(rows)
            return Overview(rows, first, size, reader, counts, services)

        try:
            built = await off_loop(request, build)
        finally:
            if self._building is not None and self._building[0] == key:
                self._building = None
        self.history.keep(reader)
        self._rows = (key, built)
        return built

    async def overview(self, request: web.Request) -> web.Response:
        auth = self.auth.check(request)
        try:
            page = page_number(request.query.get("page"))
        except ValueError as exc:
            return self.render(
                request, auth, "error.html.j2", status=400, title="Overview", message=str(exc)
            )
        built = await self.overview_rows(request)
        rows, size = built.rows, built.page_rows  # the size it was built for, all through
        filters = ui_data.Filters.from_query(request.query)
        shown = rows
        if filters.active:
            shown = await off_loop(request, lambda: [r for r in rows if filters.keep(r)])
        pages = max(1, math.ceil(len(shown) / size))
        page = min(page, pages)  # a link from a longer list than this cycle's
        first = (page - 1) * size
        on_page = shown[first : first + size]
        if shown is rows and page == 1:
            table = built.first_page
        else:
            table = await off_loop(request, lambda: table_rows(on_page, built.reader.spark))
        params = filters.params()

        def page_href(number: int) -> str:
            return "/?" + urlencode({**params, "page": str(number)})

        return self.render(
            request,
            auth,
            "overview.html.j2",
            title="Overview",
            rows=on_page,
            table_rows=table,
            total=len(rows),
            matching=len(shown),
            first_row=first + 1,
            page=page,
            pages=pages,
            paged=len(rows) > size,
            page_href=page_href,
            counts=built.counts,
            filters=filters,
            services=built.services if len(built.services) <= 100 else [],
        )

    async def live_version(self, request: web.Request) -> web.Response:
        response = web.Response(text=str(self.generation()), content_type="text/plain")
        response.headers.update(SECURITY_HEADERS)
        return response

    async def service(self, request: web.Request) -> web.Response:
        auth = self.auth.check(request)
        service = request.match_info["service"]
        range_name = request.query.get("range", ui_service.DEFAULT_RANGE)
        if range_name not in ui_service.RANGES:
            range_name = ui_service.DEFAULT_RANGE
        now = self.clock()
        rows = [r for r in (await self.overview_rows(request)).rows if r.service == service]
        slos = [
            slo
            for slo in self.daemon.rules.slos
            if any(r.slo == slo.name for r in rows)
            or (slo.service == service and "service" not in slo.group_by)
        ]
        if not slos:
            return self.render(
                request,
                auth,
                "error.html.j2",
                status=404,
                title="Unknown service",
                message=f"No SLO of Sentinel's rules measures a service named “{service}”.",
            )
        rows_of: dict[str, list[ui_data.Row]] = {}
        for row in rows:
            rows_of.setdefault(row.slo, []).append(row)
        seconds = ui_service.RANGES[range_name]
        incidents = self._incidents(self.store.incidents_for(service, now - seconds), now - seconds)
        incidents_of: dict[str, list[ui_data.Incident]] = {}
        for incident in incidents:
            incidents_of.setdefault(incident.slo, []).append(incident)
        dashboards = self.daemon.config.dashboards
        panels = await ui_service.panels(
            slos,
            rows_of,
            incidents_of,
            self.cache,
            range_name,
            now,
            dashboards.grafana_url,
            {
                "prometheus": dashboards.prometheus_datasource_uid,
                "loki": dashboards.loki_datasource_uid,
            },
            self.manager.alerts,
        )
        return self.render(
            request,
            auth,
            "service.html.j2",
            title=service,
            service=service,
            panels=panels,
            range_name=range_name,
            ranges=list(ui_service.RANGES),
            dashboard=dashboard_url(dashboards.grafana_url, service),
        )

    def _incidents(self, raw: list[dict[str, Any]], since: float) -> list[ui_data.Incident]:
        slos = self.daemon.rules.slos
        kinds = {slo.key: slo.sli.kind for slo in slos}
        # The SLOs of the incidents shown, by their alerts, else by name among the SLOs
        # grouped by service when that name is theirs alone (an instance gone since):
        # not a walk over every alert, 7,000 at 1,000 services, on the loop at each view.
        named: dict[str, set[SLIKind]] = {}
        for grouped in slos:
            if "service" in grouped.group_by:
                named.setdefault(grouped.name, set()).add(grouped.sli.kind)
        by_name = {name: found.pop() for name, found in named.items() if len(found) == 1}
        slo_of = self.manager.slo_of
        for i in raw:
            slo = slo_of.get(str(i.get("alert_key")))
            kind = slo.sli.kind if slo is not None else by_name.get(str(i["slo"]))
            if kind is not None:
                kinds.setdefault(f"{i['service']}/{i['slo']}", kind)
        ids = [str(i["id"]) for i in raw]
        return ui_data.incidents(
            raw,
            self.store.deliveries(since) if raw else [],
            self.store.slack_threads(ids) if ids else {},
            self.store.silences(),
            kinds,
        )

    async def incidents(self, request: web.Request) -> web.Response:
        auth = self.auth.check(request)
        raw = self.store.incidents(limit=200)
        since = min((float(i["started_at"]) for i in raw), default=self.clock())
        views = self._incidents(raw, since)
        return self.render(
            request,
            auth,
            "incidents.html.j2",
            title="Incidents",
            open=[i for i in views if i.resolved_at is None],
            recent=[i for i in views if i.resolved_at is not None],
        )

    # -- gate ---------------------------------------------------------------------------

    async def gate_page(self, request: web.Request) -> web.StreamResponse:
        auth = self.auth.check(request)
        if not auth.allowed:
            raise web.HTTPSeeOther(f"/login?{urlencode({'next': request.path_qs})}")
        labels = list(self.daemon.config.gate.request_labels)
        form = {
            name: request.query.get(name, "") for name in ("service", "since", "release", *labels)
        }
        verdict = None
        if form["service"]:
            verdict = await self._ask_gate(form)
        if not form["since"]:
            form["since"] = rfc3339(self.clock() - 900)
        self.gate.flush_audit()
        history = self.store.gate_history(None, 100)
        return self.render(
            request,
            auth,
            "gate.html.j2",
            title="Deploy gate",
            form=form,
            labels=labels,
            verdict=verdict,
            history=ui_data.gate_rows(history),
            kinds={slo.name: slo.sli.kind for slo in self.daemon.rules.slos},
            services=sorted(self.gate.known_services())[:500],
        )

    async def _ask_gate(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The API's own path: parse as query parameters, check, audit."""
        gate = self.gate
        started, now = gate.monotonic(), self.clock()
        params = MultiDict((k, v) for k, v in form.items() if v)
        try:
            req = parse_query(params, now, self.daemon.config.gate.request_labels)
            if req.service not in gate.known_services():
                unknown = gate.unknown_service(req, now)
                if unknown is None:
                    return {"error": f"service: unknown service {req.service!r}"}
                shown: dict[str, Any] = json.loads(unknown.body)
                return shown
            answer = await gate.check(req, now, started + self.daemon.config.gate.deadline)
        except GateInputError as exc:
            return {"error": str(exc)}
        except GateOverloaded as exc:
            return {"error": f"gate overloaded: {exc}; retry in {exc.retry_after}s"}
        gate.audit(req, now, answer.decision, answer.body)
        body: dict[str, Any] = json.loads(answer.body)
        return body

    # -- silences -----------------------------------------------------------------------

    async def silences_page(self, request: web.Request) -> web.Response:
        auth = self.auth.check(request)
        prefill = self._prefill(request.query)
        return self.render(
            request,
            auth,
            "silences.html.j2",
            title="Silences",
            silences=ui_data.silence_views(self.store.silences(), self.clock()),
            matchers=prefill,
            form={"duration": "2h", "comment": "", "author": ""},
            error=None,
            created=request.query.get("created", ""),
        )

    @staticmethod
    def _prefill(query: Mapping[str, str]) -> list[tuple[str, str, str]]:
        """Matcher rows from a link ("Silence…" next to an instance): service, slo and
        `l.<label>` parameters; empty rows up to MAX_LABEL_MATCHERS."""
        rows = []
        for name in ("service", "slo"):
            if query.get(name):
                rows.append((name, "=", str(query[name])))
        for key, value in query.items():
            if key.startswith("l.") and len(rows) < MAX_LABEL_MATCHERS:
                rows.append((key[2:], "=", str(value)))
        while len(rows) < MAX_LABEL_MATCHERS:
            rows.append(("", "=", ""))
        return rows[:MAX_LABEL_MATCHERS]

    async def _checked_form(self, request: web.Request) -> tuple[Auth, MultiDict[str]]:
        """A POSTed form from this site with a valid CSRF token, by an allowed browser."""
        auth = self.auth.check(request)
        form: MultiDict[str] = MultiDict(
            (k, v) for k, v in (await request.post()).items() if isinstance(v, str)
        )
        token = form.get("csrf", "")
        if not same_origin(request) or not same_secret(token, auth.csrf):
            raise web.HTTPForbidden(
                text="This form expired or came from another site. Reload the page and retry.",
                headers=SECURITY_HEADERS,
            )
        if not auth.allowed:
            raise web.HTTPSeeOther("/login?next=/silences")
        return auth, form

    async def create_silence(self, request: web.Request) -> web.Response:
        auth, form = await self._checked_form(request)
        matchers = []
        rows = []
        for i in range(MAX_LABEL_MATCHERS):
            name = form.get(f"m{i}.name", "").strip()
            op = form.get(f"m{i}.op", "=")
            value = form.get(f"m{i}.value", "")
            rows.append((name, op, value))
            if name:
                matchers.append(
                    {
                        "name": name,
                        "value": value,
                        "isRegex": op in ("=~", "!~"),
                        "isEqual": op in ("=", "=~"),
                    }
                )
        body = {
            "matchers": matchers,
            "duration": form.get("duration", "").strip(),
            "comment": form.get("comment", "").strip(),
            "author": form.get("author", "").strip() or "status UI",
        }
        try:
            if not body["comment"]:
                raise ValueError("comment: say why (it is shown to whoever sees the silence)")
            silence = create_silence(self.store, body, self.clock())
        except (ValueError, StateStoreWriteError) as exc:
            return self.render(
                request,
                auth,
                "silences.html.j2",
                status=400 if isinstance(exc, ValueError) else 503,
                title="Silences",
                silences=ui_data.silence_views(self.store.silences(), self.clock()),
                matchers=rows,
                form=body,
                error=str(exc),
                created="",
            )
        raise web.HTTPSeeOther(f"/silences?{urlencode({'created': silence.id})}")

    async def expire_silence(self, request: web.Request) -> web.Response:
        await self._checked_form(request)
        silence_id = request.match_info["id"]
        if not self.store.expire_silence(silence_id, self.clock()):
            raise web.HTTPNotFound(text="no such silence", headers=SECURITY_HEADERS)
        raise web.HTTPSeeOther("/silences")

    # -- sign-in ------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.Response:
        auth = self.auth.check(request)
        return self.render(
            request,
            auth,
            "login.html.j2",
            title="Sign in",
            next=safe_next(request.query.get("next")),
            error=None,
        )

    async def login(self, request: web.Request) -> web.Response:
        auth = self.auth.check(request)
        form = await request.post()
        target = safe_next(str(form.get("next", "")))
        token = form.get("csrf", "")
        if (
            not same_origin(request)
            or not isinstance(token, str)
            or not same_secret(token, auth.csrf)
        ):
            raise web.HTTPForbidden(
                text="This form expired or came from another site. Reload the page and retry.",
                headers=SECURITY_HEADERS,
            )
        response = web.HTTPSeeOther(target)
        given = form.get("token", "")
        if not self.auth.sign_in(response, request, given if isinstance(given, str) else ""):
            return self.render(
                request,
                auth,
                "login.html.j2",
                status=401,
                title="Sign in",
                next=target,
                error="That token is not Sentinel's API token.",
            )
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        await self._checked_form(request)
        response = web.HTTPSeeOther("/")
        self.auth.sign_out(response)
        raise response

    # -- assets -------------------------------------------------------------------------

    async def static(self, request: web.Request) -> web.Response:
        asset = self.assets.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound()
        body, content_type = asset
        return web.Response(
            body=body,
            content_type=content_type,
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.overview),
            web.get("/ui/live", self.live_version),
            web.get(r"/services/{service:.+}", self.service),
            web.get("/incidents", self.incidents),
            web.get("/gate", self.gate_page),
            web.get("/silences", self.silences_page),
            web.post("/silences", self.create_silence),
            web.post("/silences/{id}/expire", self.expire_silence),
            web.get("/login", self.login_page),
            web.post("/login", self.login),
            web.post("/logout", self.logout),
            web.get("/static/{name}", self.static),
        ]


def ui_routes(assembly: Assembly) -> list[web.RouteDef]:
    """The UI's routes; its sparkline history listens to every evaluation."""
    ui = StatusUI(assembly)
    assembly.daemon.result_hooks.append(ui.history.observe)

    async def forget_removed_groups() -> None:
        ui.history.keep_groups(group.name for group in assembly.daemon.rules.groups)

    assembly.daemon.reload_hooks.append(forget_removed_groups)
    return ui.routes()
