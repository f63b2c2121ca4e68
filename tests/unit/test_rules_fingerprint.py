"""The rules' fingerprint (`RuleSet.fingerprint`): equal for rules that say the same,
different for rules that judge differently — what /health/detailed and
`sentinel_rules_info` compare across replicas."""

from __future__ import annotations

from dataclasses import replace

from sentinel.rules.model import SLO, LatencySLI, RuleGroup, RuleSet, Selector


def latency(name: str, threshold: float = 1.5, **kw: object) -> SLO:
    return SLO(
        service="chatbot-backend",
        name=name,
        sli=LatencySLI(Selector("chatbot_response_latency_seconds"), 0.95),
        threshold=threshold,
        window=300,
        **kw,  # type: ignore[arg-type]
    )


def rules(*slos: SLO, interval: float = 30.0, name: str = "chatbot") -> RuleSet:
    return RuleSet((RuleGroup(name, f"rules/{name}.yaml", "chatbot-backend", interval, slos),))


def test_where_and_in_which_order_the_rules_were_written_does_not_count() -> None:
    a = latency("p95", labels=(("namespace", "chatbot"), ("service", "chatbot-backend")))
    b = latency("p99", threshold=5.0)
    moved = replace(
        a,
        source_file="/etc/sentinel/rules/chatbot.yaml",
        source_line=40,
        source_path="slos[1].sli",
        labels=(("service", "chatbot-backend"), ("namespace", "chatbot")),
    )
    assert rules(a, b).fingerprint == rules(b, moved).fingerprint


def test_anything_that_judges_differently_changes_it() -> None:
    base = rules(latency("p95"), latency("p99", threshold=5.0))
    changed = [
        rules(latency("p95", threshold=2.0), latency("p99", threshold=5.0)),
        rules(latency("p95"), latency("p99", threshold=5.0), interval=60.0),
        rules(latency("p95"), latency("p99", threshold=5.0), name="other"),
        rules(latency("p95")),
        rules(latency("p95", labels=(("env", "prod"),)), latency("p99", threshold=5.0)),
        rules(replace(latency("p95"), window=600), latency("p99", threshold=5.0)),
    ]
    prints = {base.fingerprint} | {r.fingerprint for r in changed}
    assert len(prints) == 1 + len(changed)
