"""The overview is split into pages: at 10,000 services x 3 SLOs one page of every instance
was 30,000 rows and 6.7 MB of HTML, which a browser takes seconds to lay out and a
person cannot read. Pages keep the worst-first order, the filters apply to every row (not
to one page), and only the rows of the page asked for get a sparkline drawn."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sentinel.daemon.runstate import GroupStatus
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.web.ui_series import SparkReader
from support.gatestack import GateClient, running_gate

INSTANCES = 1203  # 3 pages of the default 500 rows
ROW = re.compile(r'<tr class=s-(\w+)><td><a href="/services/([^"]+)">')


def result(i: int, now: float) -> SLOResult:
    breach = i % 100 == 0  # 13 breaches, listed first
    return SLOResult(
        f"svc-{i:04d}",
        "http-5xx-ratio",
        Status.BREACH if breach else Status.OK,
        0.004 if breach else 0.0001,
        0.001,
        0.999,
        300.0,
        now,
        {"service": f"svc-{i:04d}"},
        5000.0,
        kind="ratio",
        budget={"remaining": 1.0 - i / 10_000},
    )


@pytest.fixture
async def ui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GateClient]:
    async with running_gate(tmp_path, "http://127.0.0.1:9", monkeypatch) as client:
        daemon = client.built.daemon
        now = daemon.clock()
        group = daemon.rules.groups[0].name
        daemon.results[group] = [result(i, now) for i in range(INSTANCES)]
        daemon.group_status[group] = GroupStatus(
            last_started_at=now, last_finished_at=now, last_duration=0.1, cycles=1
        )
        yield client


async def page(client: GateClient, query: str) -> tuple[int, str]:
    async with client.session.get(client.server.make_url("/" + query)) as answer:
        return answer.status, await answer.text()


def listed(html: str) -> list[tuple[str, str]]:
    return [(status, service) for status, service in ROW.findall(html)]


async def test_pages_hold_every_instance_once_worst_first(ui: GateClient) -> None:
    status, first = await page(ui, "")
    assert status == 200
    rows = listed(first)
    assert len(rows) == 500
    assert [s for s, _ in rows[:13]] == ["breach"] * 13 and rows[13][0] == "ok"
    assert "showing 1–500 of 1,203" in first and "Page 1 of 3" in first
    assert 'href="/?page=2" rel="next"' in first and 'rel="prev"' not in first
    # The script fetches filtered pages from the server only when there is more than one.
    assert 'id="slo-table" data-live data-paged>' in first

    _, second = await page(ui, "?page=2")
    _, third = await page(ui, "?page=3")
    assert "showing 501–1,000 of 1,203" in second and "Page 2 of 3" in second
    assert 'href="/?page=1" rel="prev"' in second and 'href="/?page=3" rel="next"' in second
    assert len(listed(third)) == 203 and 'rel="next"' not in third
    everything = rows + listed(second) + listed(third)
    services = [service for _, service in everything]
    assert sorted(services) == [f"svc-{i:04d}" for i in range(INSTANCES)]  # each once
    # Worst first across pages: breaches, then the least budget left (the highest i).
    ok = [int(service[4:]) for status, service in everything if status == "ok"]
    assert ok == sorted(ok, reverse=True)


async def test_a_page_past_the_end_shows_the_last_and_a_bad_page_is_refused(
    ui: GateClient,
) -> None:
    status, html = await page(ui, "?page=40")  # a link from a longer list than this one
    assert status == 200 and "Page 3 of 3" in html and len(listed(html)) == 203
    for bad in ("abc", "0", "-1", "2.5", "1e3", "9" * 12):
        status, html = await page(ui, f"?page={bad}")
        assert status == 400, bad
        assert "page: expected a page number from 1, got" in html
    status, html = await page(ui, "?page=%3Cscript%3E")
    assert status == 400 and "&#39;&lt;script&gt;&#39;" in html and "<script>'" not in html


async def test_filters_apply_to_every_row_and_page_links_keep_them(ui: GateClient) -> None:
    _, breaches = await page(ui, "?status=breach")
    assert [s for s, _ in listed(breaches)] == ["breach"] * 13
    assert "Page 1 of" not in breaches  # one page: no pager
    # svc-12xx: past the first page unfiltered; found by the search all the same.
    _, found = await page(ui, "?q=svc-12")
    assert sorted(s for _, s in listed(found)) == ["svc-1200", "svc-1201", "svc-1202"]
    _, oks = await page(ui, "?status=ok&page=2")
    assert "showing 501–1,000 of 1,190 matching" in oks
    assert 'href="/?status=ok&amp;page=3" rel="next"' in oks
    assert {s for s, _ in listed(oks)} == {"ok"}


async def test_only_the_rows_shown_get_a_sparkline_drawn(
    ui: GateClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[str] = []
    spark = SparkReader.spark

    def counted(self: SparkReader, key: str, r: SLOResult) -> object:
        drawn.append(key)
        return spark(self, key, r)

    monkeypatch.setattr(SparkReader, "spark", counted)
    await page(ui, "")
    assert len(drawn) == 500
    await page(ui, "")  # the same cycle: the first page is not drawn again
    assert len(drawn) == 500
    await page(ui, "?page=3")
    assert len(drawn) == 703
