"""The gate asked about a service it does not know yet. Services of `group_by: [service]`
SLOs are known from their answers; until such an SLO has named any (after a start or a
reload, until its group's first cycle; while its source is down), a service may be one
of theirs, so the pipeline is told "pending, retry", not "unknown service" (404), which
it would read as its own mistake. Real Prometheus, real HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.gatestack import running_gate
from support.promserver import PrometheusServer
from support.scenario import at

PLATFORM = """\
version: sentinel/v1
service: platform
labels: {namespace: platform}
interval: 45s
slos:
  - name: errors
    sli:
      ratio:
        bad: {metric: platform_requests_total, matchers: {code: "=~5.."}}
        total: {metric: platform_requests_total}
    objective: 99.5%
    window: 5m
    group_by: [service]
    alert: {for: 0s}
"""


async def test_a_group_by_service_is_pending_until_the_first_cycle_names_it(
    tmp_path: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gate(
        tmp_path, prometheus.url, monkeypatch, rules={"platform.yaml": PLATFORM}
    ) as gate:
        gate.clock.now = at(40)
        for service in ("svc-0003", "no-such-service"):
            status, body, headers = await gate.get(service=service)
            assert status == 503, body
            assert body["decision"] == "pending"
            assert headers["Retry-After"] == "5"
            (reason,) = body["reasons"]
            assert reason.startswith(f"service {service!r} not known yet: rule group ")
            assert "has not finished its first evaluation" in reason
            assert "SLO 'errors' names services by group_by" in reason
        # decision_in=body: the same pending verdict, answered 200 for such tools
        status, body, _ = await gate.get(service="svc-0003", decision_in="body")
        assert (status, body["decision"]) == (200, "pending")

        await gate.built.daemon.evaluate_once(at(40))

        # svc-0003: 3 of 1,000 requests fail (0.3 % < 0.5 %); svc-0007: 0.7 %
        status, body, _ = await gate.get(service="svc-0003")
        assert (status, body["decision"]) == (200, "pass"), body
        status, body, _ = await gate.get(service="svc-0007")
        assert (status, body["decision"]) == (412, "fail"), body
        status, body, _ = await gate.get(service="no-such-service")
        assert status == 404
        assert body == {"error": "service: unknown service 'no-such-service'", "decision": None}

        # Only verdicts on known services are audited (as a 404 is not).
        _, history, _ = await gate.get("/api/v1/gate/history")
        assert sorted(row["service"] for row in history) == ["svc-0003", "svc-0007"]


async def test_a_source_down_that_named_no_service_keeps_unknown_services_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gate(
        tmp_path, "http://127.0.0.1:9", monkeypatch, rules={"platform.yaml": PLATFORM}
    ) as gate:
        gate.clock.now = at(40)
        await gate.built.daemon.evaluate_once(at(40))
        status, body, headers = await gate.get(service="svc-0003")
        assert status == 503, body
        assert body["decision"] == "pending"
        assert headers["Retry-After"] == "45"  # the group's interval: the next cycle's answer
        (reason,) = body["reasons"]
        assert "SLO 'errors' names services by group_by and its answer held none (" in reason
        assert "prometheus" in reason
        # The service the rule file names is known and judged as before.
        status, body, _ = await gate.get(service="platform")
        assert status == 503 and "source temporarily unavailable" in str(body["reasons"])


async def test_a_page_alert_restored_for_a_service_fails_it_before_the_first_cycle(
    tmp_path: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart the alert states come back from the state file before any cycle:
    a firing page alert on the service is a fail, as for a known service."""
    async with running_gate(
        tmp_path, prometheus.url, monkeypatch, rules={"platform.yaml": PLATFORM}
    ) as gate:
        gate.clock.now = at(40)
        await gate.built.daemon.evaluate_once(at(40))
        assert gate.built.manager.firing("svc-0009")
        assert not gate.built.manager.firing("svc-0003")

    (tmp_path / "rules" / "platform.yaml").unlink()  # running_gate writes it again
    (tmp_path / "rules").rmdir()
    async with running_gate(
        tmp_path, prometheus.url, monkeypatch, rules={"platform.yaml": PLATFORM}
    ) as gate:
        gate.clock.now = at(41)
        status, body, _ = await gate.get(service="svc-0009")
        assert (status, body["decision"]) == (412, "fail"), body
        assert body["reasons"] == ["alert firing for errors (severity page)"]
        assert body["firing_alerts"] == [{"slo": "errors", "severity": "page"}]
        status, body, _ = await gate.get(service="svc-0003")
        assert (status, body["decision"]) == (503, "pending")


async def test_a_page_alert_restored_for_a_known_service_counts_before_the_first_cycle(
    tmp_path: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The platform SLO over all services (0.45 % errors > 0.1 %) fires at minute 40. After
    a restart at minute 70 its data has ended: judged afresh it is only pending (no data),
    but the alert the state file holds is still firing, and the gate says so until the
    group's first step decides it. A restored alert whose SLO left the rules is not counted."""
    whole = PLATFORM.replace("objective: 99.5%", "objective: 99.9%").replace(
        "    group_by: [service]\n", ""
    )

    async def restart(rules: str) -> None:
        (tmp_path / "rules" / "platform.yaml").unlink()  # running_gate writes it again
        (tmp_path / "rules").rmdir()
        async with running_gate(
            tmp_path, prometheus.url, monkeypatch, rules={"platform.yaml": rules}
        ) as gate:
            gate.clock.now = at(70)
            status, body, _ = await gate.get(service="platform")
            if "name: errors" in rules:
                assert (status, body["decision"]) == (412, "fail"), body
                assert "alert firing for errors (severity page)" in body["reasons"]
            else:
                assert (status, body["decision"]) == (503, "pending"), body
                assert body["firing_alerts"] == []

    async with running_gate(
        tmp_path, prometheus.url, monkeypatch, rules={"platform.yaml": whole}
    ) as gate:
        gate.clock.now = at(40)
        await gate.built.daemon.evaluate_once(at(40))
        assert gate.built.manager.firing("platform")
    await restart(whole)
    await restart(whole.replace("name: errors", "name: renamed"))
