"""Reading a result key (`service/slo` or `service/slo{labels}`) back into its service
and instance: what the gate, `/api/v1/alerts` and the overview file an alert under. A
`service` label is any text, so a service may hold `/` and `{`."""

from __future__ import annotations

import pytest

from sentinel.alerting.manager import instance_of, service_of
from sentinel.evaluate.slo import SLOResult, Status


@pytest.mark.parametrize(
    ("service", "labels"),
    [
        ("api", {}),
        ("api", {"model": "gpt"}),
        ("team/api", {}),
        ("team/api", {"path": "/a/b{"}),
        ("web{eu", {}),
        ("web{eu", {"p": "/q{r"}),
        ("a/b{c", {}),
        ("a/b{c}", {}),
        ("team/api", {"service": "team/api"}),
    ],
)
def test_a_key_reads_back_as_the_service_and_instance_it_was_built_from(
    service: str, labels: dict[str, str]
) -> None:
    key = SLOResult(service, "p95", Status.OK, 1.0, 2.0, None, 300, 0, labels).key
    assert service_of(key) == service
    assert instance_of(key) == f"{service}/p95"
