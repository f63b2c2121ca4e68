"""The gate asked about a service it does not know yet. Services of `group_by: [service]`
SLOs are known from their answers; until such an SLO has named any (after a start or a
reload, until its group's first cycle; while its source is down), a service may be one
of theirs, so the pipeline is told "pending, retry", not "unknown service" (404), which
it would read as its own mistake. Real Prometheus, real HTTP."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from support.gatestack import GateClient, running_gate
from support.promserver import PrometheusServer
from support.scenario import PLATFORM_RULE, at


async def test_a_group_by_service_is_pending_until_the_first_cycle_names_it(
    tmp_path: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gate(
        tmp_path, prometheus.url, monkeypatch, rules={"platform.yaml": PLATFORM_RULE}
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


@pytest.mark.parametrize("where", ["a new rule file", "the same rule file"])
async def test_a_reload_that_adds_a_group_by_slo_keeps_names_pending_until_it_answers(
    tmp_path: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    async with running_gate(
        tmp_path, prometheus.url, monkeypatch, rules={"platform.yaml": PLATFORM_RULE}
    ) as gate:
        gate.clock.now = at(40)
        await gate.built.daemon.evaluate_once(at(40))
        assert (await gate.get(service="svc-9999"))[0] == 404

        added = PLATFORM_RULE.replace("service: platform", "service: answers").replace(
            "name: errors", "name: availability"
        )
        if where == "a new rule file":
            (tmp_path / "rules" / "answers.yaml").write_text(added)
        else:  # a new SLO in a group that has cycled: no result of it yet
            (tmp_path / "rules" / "platform.yaml").write_text(
                PLATFORM_RULE + "  -" + added.split("slos:\n  -", 1)[1]
            )
        assert await gate.built.daemon.reload()
        status, body, headers = await gate.get(service="svc-9999")
        assert (status, body["decision"], headers["Retry-After"]) == (503, "pending", "5")
        (reason,) = body["reasons"]
        assert "has not finished its first evaluation since Sentinel started or the reload" in (
            reason
        )
        assert "SLO 'availability'" in reason
        # Services the first group named are judged meanwhile.
        assert (await gate.get(service="svc-0003"))[1]["decision"] == "pass"

        await gate.built.daemon.evaluate_once(at(40))
        assert (await gate.get(service="svc-9999"))[0] == 404


async def test_a_source_down_that_named_no_service_keeps_unknown_services_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a budget: the burn tiers' results carry a `tier` label and no service, and do
    not count as the SLO having named one."""
    budgeted = PLATFORM_RULE + "    period: 30d\n    burn_rate: {min_events: 100}\n"
    async with running_gate(
        tmp_path, "http://127.0.0.1:9", monkeypatch, rules={"platform.yaml": budgeted}
    ) as gate:
        gate.clock.now = at(40)
        results = await gate.built.daemon.evaluate_once(at(40))
        assert any(r.labels.get("tier") for r in results)
        status, body, headers = await gate.get(service="svc-0003")
        assert status == 503, body
        assert body["decision"] == "pending"
        assert headers["Retry-After"] == "45"  # the group's interval: the next cycle's answer
        (reason,) = body["reasons"]
        assert "SLO 'errors' names services by group_by and its latest answer failed (" in reason
        assert "prometheus unavailable" in reason
        # The service the rule file names is known and judged as before.
        status, body, _ = await gate.get(service="platform")
        assert status == 503 and "source temporarily unavailable" in str(body["reasons"])


async def test_an_answer_that_names_no_service_from_a_healthy_source_leaves_names_unknown(
    tmp_path: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A metric nobody exports (a typo, a service not deployed yet): the SLO names no
    service, but nothing is down, so a name nothing else knows is a 404, not a pending
    that a pipeline would retry until its own timeout."""
    absent = PLATFORM_RULE.replace("platform_requests_total", "platform_nothing_total")
    async with running_gate(
        tmp_path, prometheus.url, monkeypatch, rules={"platform.yaml": absent}
    ) as gate:
        gate.clock.now = at(40)
        assert (await gate.get(service="svc-0003"))[0] == 503  # before the first cycle
        await gate.built.daemon.evaluate_once(at(40))
        status, body, _ = await gate.get(service="svc-0003")
        assert (status, body["error"]) == (404, "service: unknown service 'svc-0003'")


async def test_a_page_alert_restored_for_a_service_counts_until_its_slo_answers(
    tmp_path: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart the alert states come back from the state file before any cycle:
    a firing page alert on a service of a group_by SLO is a fail, as for a known service,
    and stays one while its source is down. Once the SLO answers without that instance (it
    is gone), the alert no longer blocks its service's releases."""
    async with running_gate(
        tmp_path, prometheus.url, monkeypatch, rules={"platform.yaml": PLATFORM_RULE}
    ) as gate:
        gate.clock.now = at(40)
        await gate.built.daemon.evaluate_once(at(40))
        assert gate.built.manager.firing("svc-0009")
        assert not gate.built.manager.firing("svc-0003")

    def restart(url: str, rules: str) -> AbstractAsyncContextManager[GateClient]:
        (tmp_path / "rules" / "platform.yaml").unlink()  # running_gate writes it again
        (tmp_path / "rules").rmdir()
        return running_gate(tmp_path, url, monkeypatch, rules={"platform.yaml": rules})

    async with restart("http://127.0.0.1:9", PLATFORM_RULE) as gate:
        gate.clock.now = at(41)
        for cycled in (False, True):  # before the first cycle, and after it found no source
            status, body, _ = await gate.get(service="svc-0009")
            assert (status, body["decision"]) == (412, "fail"), (cycled, body)
            assert body["reasons"] == ["alert firing for errors (severity page)"]
            assert body["firing_alerts"] == [{"slo": "errors", "severity": "page"}]
            status, body, _ = await gate.get(service="svc-0003")
            assert (status, body["decision"]) == (503, "pending")
            await gate.built.daemon.evaluate_once(at(41))
        _, history, _ = await gate.get("/api/v1/gate/history")
        # Audited (it blocked a deploy); repeats may be folded into one row with a count.
        assert {(r["service"], r["decision"]) for r in history} == {("svc-0009", "fail")}
        assert sum(r["count"] for r in history) == 2

    gone = PLATFORM_RULE.replace(
        "{metric: platform_requests_total}",
        '{metric: platform_requests_total, matchers: {service: "!=svc-0009"}}',
    ).replace('matchers: {code: "=~5.."}', 'matchers: {code: "=~5..", service: "!=svc-0009"}')
    # svc-0009 stays known through a second SLO; the first no longer has its instance.
    gone += (
        PLATFORM_RULE.split("slos:\n")[1]
        .replace("name: errors", "name: availability")
        .replace("objective: 99.5%", "objective: 90%")
    )
    async with restart(prometheus.url, gone) as gate:
        gate.clock.now = at(41)
        assert (await gate.get(service="svc-0009"))[0] == 412
        await gate.built.daemon.evaluate_once(at(41))
        status, body, _ = await gate.get(service="svc-0009")
        assert (status, body["decision"], body["firing_alerts"]) == (200, "pass", []), body
        assert [s["slo"] for s in body["slos"]] == ["availability"]
        assert (await gate.get(service="svc-0003"))[1]["decision"] == "pass"


@pytest.mark.parametrize("service", ["platform", "team/platform"])
async def test_a_page_alert_restored_for_a_known_service_counts_before_the_first_cycle(
    tmp_path: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    """The platform SLO over all services (0.45 % errors > 0.1 %) fires at minute 40. After
    a restart at minute 70 its data has ended: judged afresh it is only pending (no data),
    but the alert the state file holds is still firing, and the gate says so until the
    group's first step decides it. A restored alert whose SLO left the rules is not counted.
    A service holding `/` is one service (its alerts were filed under `team`)."""
    whole = (
        PLATFORM_RULE.replace("objective: 99.5%", "objective: 99.9%")
        .replace("    group_by: [service]\n", "")
        .replace("service: platform", f"service: {service}")
    )

    async def restart(rules: str) -> None:
        (tmp_path / "rules" / "platform.yaml").unlink()  # running_gate writes it again
        (tmp_path / "rules").rmdir()
        async with running_gate(
            tmp_path, prometheus.url, monkeypatch, rules={"platform.yaml": rules}
        ) as gate:
            gate.clock.now = at(70)
            status, body, _ = await gate.get(service=service)
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
        assert [slo.name for _, slo in gate.built.manager.firing(service)] == ["errors"]
        _, alerts, _ = await gate.get("/api/v1/alerts")
        firing = [a for a in alerts["alerts"] if a["state"] == "firing"]
        assert [(a["service"], a["slo"]) for a in firing] == [(service, "errors")]
    await restart(whole)
    await restart(whole.replace("name: errors", "name: renamed"))
