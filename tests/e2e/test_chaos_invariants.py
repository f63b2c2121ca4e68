"""The chaos run's judge (tests/support/faults.py), fed known histories: a chaos run that
passes only proves something if its checks catch a lost, duplicated or reordered
notification, a pass during a long outage and a server error. (The run itself is
`reliability/chaos.py --minutes 1` in CI; it is not repeated here.)"""

from __future__ import annotations

from typing import Any

from support.faults import (
    Findings,
    GateCall,
    Outage,
    check_bounded,
    check_gate,
    check_slack,
    check_webhook,
)


def post(kind: str, digest: str, ts: str, thread: str | None = None) -> dict[str, Any]:
    text = {"firing": "🔴 FIRING: x", "resolved": "✅ Resolved: x"}[kind]
    meta = {
        "event_type": "sentinel",
        "event_payload": {"idempotency_key": f"oncall:{kind}:{digest}"},
    }
    message = {"ts": ts, "text": text, "thread_ts": thread, "metadata": meta}
    return {"op": "post", "message": message}


def update(ts: str) -> dict[str, Any]:
    return {"op": "update", "ts": ts, "text": "✅ RESOLVED: x"}


def incident(digest: str, ts: str) -> list[dict[str, Any]]:
    return [post("firing", digest, ts), update(ts), post("resolved", digest, ts + "1", ts)]


def slack_problems(expected: int, journal: list[dict[str, Any]]) -> list[str]:
    f = Findings()
    check_slack(expected, journal, f)
    return f.problems


def test_two_incidents_each_fired_and_resolved_once_in_order_pass() -> None:
    assert slack_problems(2, incident("a", "1.1") + incident("b", "2.1")) == []


def test_a_lost_resolve_a_duplicate_and_a_resolve_before_its_firing_are_each_caught() -> None:
    lost = [*incident("a", "1.1"), post("firing", "b", "2.1")]
    assert any("RESOLVED replies, expected 2" in p for p in slack_problems(2, lost))
    assert any("never updated to RESOLVED" in p for p in slack_problems(2, lost))
    twice = [*incident("a", "1.1"), post("firing", "a", "1.2")]
    assert any("duplicate" in p for p in slack_problems(1, twice))
    backwards = [post("resolved", "a", "1.2", "1.1"), post("firing", "a", "1.1"), update("1.1")]
    assert any("out of order" in p for p in slack_problems(1, backwards))
    extra = incident("a", "1.1") + incident("b", "2.1")
    assert any("FIRING messages, expected 1" in p for p in slack_problems(1, extra))


def test_webhook_redelivery_of_an_unacknowledged_request_is_fine_a_second_ack_is_not() -> None:
    f = Findings()
    resent = [{"op": "recv", "key": "i1"}, {"op": "recv", "key": "i1"}, {"op": "ack", "key": "i1"}]
    check_webhook(1, resent, f)
    assert f.problems == [] and f.counts["webhook"]["redelivered_unacknowledged"] == 1
    f = Findings()
    check_webhook(1, [*resent, {"op": "recv", "key": "i1"}, {"op": "ack", "key": "i1"}], f)
    assert f.problems == ["webhook: 1 rollback(s) acknowledged twice"]


def test_gate_pass_after_a_source_was_down_beyond_the_limit_is_caught_pending_503_is_not() -> None:
    outage = Outage("loki", "pause", start=100.0, end=130.0)
    early = GateCall(104.0, 104.1, 200, "pass")  # Sentinel cannot know yet
    late = GateCall(120.0, 120.1, 200, "pass")
    pending = GateCall(121.0, 121.2, 503, "pending")
    f = Findings()
    check_gate([early, pending], [outage], down_after=4.0, slack=5.0, f=f)
    assert f.problems == []
    check_gate([early, late, pending], [outage], down_after=4.0, slack=5.0, f=f)
    assert len(f.problems) == 1 and "1 pass answers while a source was down" in f.problems[0]
    # A request narrowed to Prometheus SLOs may pass while Loki is down.
    f = Findings()
    narrowed = GateCall(120.0, 120.1, 200, "pass", sources=("prometheus",))
    check_gate([narrowed], [outage], down_after=4.0, slack=5.0, f=f)
    assert f.problems == []
    f = Findings()
    check_gate([GateCall(1.0, 1.1, 500, None), GateCall(2.0, 2.0, 0)], [], 4.0, 5.0, f)
    assert f.problems == [
        "gate: 1 5xx answers that are not a pending verdict",
        "gate: 1 requests got no HTTP answer",
    ]


def test_rss_or_fds_growing_after_warm_up_are_caught() -> None:
    steady = [(float(t), 60_000 + (t % 3) * 100, 20) for t in range(100)]
    f = Findings()
    check_bounded(steady, f, rss_growth_mb=40, fd_growth=32)
    assert f.problems == []
    leaking = [(float(t), 60_000 + t * 1000, 20 + t) for t in range(100)]
    check_bounded(leaking, f, rss_growth_mb=40, fd_growth=32)
    assert len(f.problems) == 2
