"""The fake Loki answers like the recorded real Loki 2.9.9, field for field."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.fakeloki import FakeLoki
from support.procs import http

# Recorded answers of a real Loki 2.9.9 (copied from shared/reference for CI).
REF = Path(__file__).resolve().parents[1] / "data" / "loki-2.9.9-responses"


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    server = FakeLoki().start()
    yield server
    server.stop()


def recorded(name: str) -> Any:
    text = (REF / name).read_text()
    if name.endswith(".txt"):
        head, _, body = text.partition("\n\n")
        status = int(head.split()[1])
        return status, (json.loads(body) if body.strip().startswith("{") else body)
    return 200, json.loads(text)


def push(loki: FakeLoki, body_file: str) -> int:
    body = json.loads((REF / body_file).read_text())
    status, _, _ = http("POST", f"{loki.url}/loki/api/v1/push", body)
    return status


def query(loki: FakeLoki, q: str, time: int) -> tuple[int, Any]:
    params = urllib.parse.urlencode({"query": q, "time": str(time)})
    status, body, _ = http("GET", f"{loki.url}/loki/api/v1/query?{params}")
    return status, body


def same_shape(ours: Any, theirs: Any) -> None:
    assert ours["status"] == theirs["status"]
    assert ours["data"]["resultType"] == theirs["data"]["resultType"]
    assert ours["data"]["result"] == theirs["data"]["result"]
    assert set(ours["data"]["stats"]) == set(theirs["data"]["stats"])
    assert set(ours["data"]["stats"]["summary"]) == set(theirs["data"]["stats"]["summary"])


def test_push_is_204(loki: FakeLoki) -> None:
    assert push(loki, "push-body.json") == 204


def test_instant_ratio_matches_real_loki(loki: FakeLoki) -> None:
    push(loki, "push-body.json")
    _, expected = recorded("query-instant-ratio.json")
    at = expected["data"]["result"][0]["value"][0]
    status, body = query(loki, (REF / "query.logql").read_text().strip(), at)
    assert status == 200
    same_shape(body, expected)


def test_by_mode_matches_real_loki(loki: FakeLoki) -> None:
    push(loki, "push-body.json")
    _, expected = recorded("query-instant-by-mode.json")
    at = expected["data"]["result"][0]["value"][0]
    q = 'sum by (answer_mode) (count_over_time({app="chatbot"} | json [5m]))'
    same_shape(query(loki, q, at)[1], expected)


def test_empty_window_is_empty_result(loki: FakeLoki) -> None:
    push(loki, "push-body.json")
    _, expected = recorded("query-instant-ratio-empty.json")
    status, body = query(loki, (REF / "query.logql").read_text().strip(), 1795295020 + 3600)
    assert status == 200
    same_shape(body, expected)


def test_unparseable_lines_with_and_without_error_filter(loki: FakeLoki) -> None:
    push(loki, "push-body-badjson.json")
    sel = '{app="chatbot-badjson"}'
    ratio = (
        f'sum(count_over_time({sel} | json | answer_mode="snippet-fallback" [5m])) / '
        f"sum(count_over_time({sel} | json [5m]))"
    )
    _, counted = recorded("query-badjson.txt")
    assert query(loki, ratio, 1795295030)[1]["data"]["result"] == counted["data"]["result"]
    filtered = ratio.replace("| json", '| json | __error__=""')
    _, expected = recorded("query-badjson-errfilter.txt")
    assert query(loki, filtered, 1795295030)[1]["data"]["result"] == expected["data"]["result"]
    status, text = query(loki, f"count_over_time({sel} | json [5m])", 1795295030)
    expected_status, expected_text = recorded("query-badjson-noagg.txt")
    assert (status, text.splitlines()[0][:40]) == (
        expected_status,
        expected_text.splitlines()[0][:40],
    )


def test_invalid_logql_is_400_plain_text(loki: FakeLoki) -> None:
    status, text = query(loki, 'sum(count_over_time({app="chatbot"} | json [5m])', 1795295020)
    expected_status, expected_text = recorded("query-invalid-400.txt")
    assert status == expected_status == 400
    assert text.startswith("parse error at line 1, col ") and expected_text.startswith(
        "parse error at line 1, col "
    )
    assert "syntax error: unexpected $end, expecting )" in text


def test_range_query_matches_real_loki(loki: FakeLoki) -> None:
    push(loki, "push-body.json")
    _, expected = recorded("query-range-ratio.json")
    ts = expected["data"]["result"][0]["values"][0][0]
    params = urllib.parse.urlencode(
        {"query": (REF / "query.logql").read_text().strip(), "start": ts, "end": ts, "step": "60"}
    )
    status, body, _ = http("GET", f"{loki.url}/loki/api/v1/query_range?{params}")
    assert status == 200
    same_shape(body, expected)
