"""The status UI over real loopback HTTP, in process, against Debian's Prometheus holding
the scenario (latency regression at minutes 60-90 after BASE), with the daemon's clock
pinned: charts are checked against the timeline the scenario generator defines, and the
forms against forged and cross-site posts."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sentinel.web.ui import StatusUI
from support.gatestack import TOKEN, GateClient, make_client
from support.promserver import PrometheusServer
from support.scenario import at

pytestmark = pytest.mark.component


@pytest.fixture
async def ui(
    tmp_path: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[GateClient]:
    async for client in make_client(tmp_path, prometheus.url, monkeypatch):
        client.clock.now = at(100)
        await client.built.daemon.evaluate_once(at(100))
        yield client


def status_ui(client: GateClient) -> StatusUI:
    for route in client.server.app.router.routes():
        owner = getattr(inspect.unwrap(route.handler), "__self__", None)
        if isinstance(owner, StatusUI):
            return owner
    raise AssertionError("the status UI is not served")


async def page(client: GateClient, path: str, **kwargs: object) -> tuple[int, str]:
    async with client.session.get(client.server.make_url(path), **kwargs) as r:  # type: ignore[arg-type]
        return r.status, await r.text()


def spans(html: str, panel: str) -> list[tuple[float, float]]:
    section = html[html.index(f'id="{panel}"') :]
    section = section[: section.index("</section>")]
    return [
        (float(a), float(b)) for a, b in re.findall(r'data-from="(\d+)" data-to="(\d+)"', section)
    ]


async def test_service_chart_shades_the_scenario_latency_regression(ui: GateClient) -> None:
    status, html = await page(ui, "/services/chatbot-backend?range=1h")
    assert status == 200
    assert 'id="slo-0-h">chat-latency-p95' in html
    found = spans(html, "slo-0")
    # P95 over a 5-minute window: the regression [60, 90) shows from shortly after minute 60
    # until the window has moved past minute 90; nothing else in [40, 100] breaches.
    assert len(found) == 1, found
    start, end = found[0]
    assert at(60) <= start <= at(65), (start - at(0)) / 60
    assert at(90) <= end <= at(96), (end - at(0)) / 60
    assert "threshold 1.5 s" in html


async def test_service_page_of_the_regression_range_charts_the_budget_burn_down(
    ui: GateClient,
) -> None:
    _, html = await page(ui, "/services/chatbot-backend?range=1h")
    section = html[html.index('id="slo-3"') :]
    assert "http-5xx-ratio" in section[:200]
    assert "error budget burn-down" in section
    assert 'class="ideal"' in section and 'class="budget"' in section


async def test_ten_viewers_share_one_range_query_per_chart_per_cycle(ui: GateClient) -> None:
    cache = status_ui(ui).cache
    before = cache.queries
    answers = await asyncio.gather(
        *(page(ui, "/services/chatbot-backend?range=6h") for _ in range(10))
    )
    assert {status for status, _ in answers} == {200}
    charts = answers[0][1].count('<figure class="chart-box">')  # a chart, or its error
    assert cache.queries - before == charts  # not 10 x charts
    # The next evaluation cycle makes them fresh again.
    await ui.built.daemon.evaluate_once(at(100))
    await page(ui, "/services/chatbot-backend?range=6h")
    assert cache.queries - before == 2 * charts


async def test_overview_lists_the_breaching_slo_first_during_the_regression(
    ui: GateClient,
) -> None:
    ui.clock.now = at(75)
    await ui.built.daemon.evaluate_once(at(75))
    status, html = await page(ui, "/")
    assert status == 200
    body = html[html.index("<tbody>") :]
    classes = re.findall(r"<tr class=s-(\w+)>", body)
    order = {"breach": 0, "no_data": 1, "ok": 2}
    assert classes == sorted(classes, key=order.__getitem__)
    assert "chat-latency-p95" in body.split("<tr class=s-no_data>")[0]  # among the breaches
    headers = await ui.session.get(ui.server.make_url("/"))
    assert "script-src 'self'" in headers.headers["Content-Security-Policy"]
    headers.release()


async def csrf_form(client: GateClient, session: aiohttp.ClientSession, path: str) -> str:
    async with session.get(client.server.make_url(path)) as r:
        html = await r.text()
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, html
    return match.group(1)


SILENCE = {
    "m0.name": "service",
    "m0.op": "=",
    "m0.value": "chatbot-backend",
    "duration": "1h",
    "comment": "maintenance",
}


async def test_silence_form_needs_a_session_its_csrf_token_and_this_origin(
    ui: GateClient,
) -> None:
    url = ui.server.make_url
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        login_csrf = await csrf_form(ui, browser, "/login")
        # Not signed in: the form is not offered, and a post is sent to sign in.
        async with browser.post(
            url("/silences"), data={**SILENCE, "csrf": login_csrf}, allow_redirects=False
        ) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/login")
        async with browser.post(
            url("/login"),
            data={"csrf": login_csrf, "token": TOKEN, "next": "/silences"},
            allow_redirects=False,
        ) as r:
            assert r.status == 303 and r.headers["Location"] == "/silences"
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        csrf = await csrf_form(ui, browser, "/silences")
        assert csrf != login_csrf  # the session has its own
        for data, headers in (
            ({**SILENCE}, {}),  # no token
            ({**SILENCE, "csrf": login_csrf}, {}),  # the pre-session token
            ({**SILENCE, "csrf": csrf}, {"Origin": "https://evil.example"}),
            ({**SILENCE, "csrf": csrf}, {"Origin": "null"}),
        ):
            async with browser.post(url("/silences"), data=data, headers=headers) as r:
                assert r.status == 403, (data, headers)
        assert ui.built.store.silences() == []
        async with browser.post(
            url("/silences"),
            data={**SILENCE, "csrf": csrf},
            headers={"Origin": str(url("/")).rstrip("/")},
            allow_redirects=False,
        ) as r:
            assert r.status == 303
        [silence] = ui.built.store.silences()
        assert silence.comment == "maintenance" and silence.ends_at - silence.starts_at == 3600
    # Another client without the session cookie cannot expire it.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as stranger:
        anon = await csrf_form(ui, stranger, "/login")
        async with stranger.post(
            url(f"/silences/{silence.id}/expire"), data={"csrf": anon}, allow_redirects=False
        ) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/login")
    assert ui.built.store.silences()[0].ends_at == silence.ends_at


async def test_a_wrong_token_signs_nobody_in_and_the_gate_page_stays_closed(
    ui: GateClient,
) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        csrf = await csrf_form(ui, browser, "/login")
        async with browser.post(
            ui.server.make_url("/login"), data={"csrf": csrf, "token": "nope", "next": "/gate"}
        ) as r:
            assert r.status == 401
            assert "not Sentinel&#39;s API token" in await r.text()
        async with browser.get(ui.server.make_url("/gate"), allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login?next=/gate"
        # A forged session cookie (right shape, wrong signature) is no session.
        browser.cookie_jar.update_cookies(
            {"sentinel_session": "9999999999.00000000000000000000000000000000.abc"}
        )
        async with browser.get(ui.server.make_url("/gate"), allow_redirects=False) as r:
            assert r.status == 303


async def test_incidents_of_instances_gone_show_their_slos_unit_when_the_name_says_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/incidents finds an incident's SLO by its alert, else (the instance is gone) by
    name among the SLOs grouped by service: with its unit when the name is theirs alone,
    without one when two such SLOs of different kinds share it."""
    latency = (
        "  - name: {name}\n"
        "    sli: {{latency: {{histogram: h_seconds, quantile: 0.95}}}}\n"
        "    threshold: 1.5s\n"
        "    window: 5m\n"
        "    group_by: [service]\n"
    )
    ratio = (
        "  - name: errors\n"
        "    sli: {ratio: {bad: {metric: r_total, matchers: {code: '=~5..'}}, "
        "total: {metric: r_total}}}\n"
        "    objective: 99.5%\n"
        "    window: 5m\n"
        "    group_by: [service]\n"
    )
    rules = {
        "a.yaml": "version: sentinel/v1\nservice: platform\nslos:\n"
        + latency.format(name="slow")
        + latency.format(name="errors"),
        "b.yaml": "version: sentinel/v1\nservice: other\nslos:\n" + ratio,
    }
    async for client in make_client(tmp_path, "http://127.0.0.1:9", monkeypatch, rules=rules):
        now = client.clock.now
        client.built.store.commit_cycle(
            [],
            [
                {
                    "id": f"inc-{slo}",
                    "alert_key": f"svc-gone/{slo}{{service=svc-gone}}",
                    "service": "svc-gone",
                    "slo": slo,
                    "severity": "page",
                    "labels": '{"service": "svc-gone"}',
                    "started_at": now - 60,
                    "last_value": 1.83,
                    "threshold": 1.5,
                }
                for slo in ("slow", "errors")
            ],
            [],
            [],
            now,
        )
        status, html = await page(client, "/incidents")
        assert status == 200
        rows = {}
        for slo in ("slow", "errors"):
            row = html[html.index(f'id="i-inc-{slo}"') :]
            rows[slo] = row[: row.index("</tr>")]
        assert "1.83 s" in rows["slow"]
        assert "1.83" in rows["errors"] and "1.83 s" not in rows["errors"]
        assert "183 %" not in rows["errors"]
