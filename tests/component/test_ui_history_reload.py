"""The status UI's sparklines across a reload that deletes a rule file and moves its SLO
into another: the moved instances go on with their values (real Prometheus, the daemon
as `sentinel run` builds it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.web.ui_series import History
from support.gatestack import running_gate
from support.promserver import PrometheusServer
from support.scenario import PLATFORM_RULE, at


async def test_an_slo_moved_to_another_rule_file_keeps_its_sparkline(
    tmp_path: Path, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gate(
        tmp_path, prometheus.url, monkeypatch, rules={"old.yaml": PLATFORM_RULE}
    ) as gate:
        daemon = gate.built.daemon
        (history,) = [
            hook.__self__
            for hook in daemon.result_hooks
            if isinstance(getattr(hook, "__self__", None), History)
        ]
        gate.clock.now = at(40)
        await daemon.evaluate_once(at(39))
        await daemon.evaluate_once(at(40))
        key = "svc-0007/errors{service=svc-0007}"
        before = history.values(key)
        assert len(before) == 2 and before[-1] == pytest.approx(0.007)

        (tmp_path / "rules" / "old.yaml").unlink()
        (tmp_path / "rules" / "new.yaml").write_text(PLATFORM_RULE)
        assert await daemon.reload()
        assert set(history._groups) == set()  # the deleted file's group is forgotten
        await daemon.evaluate_once(at(40))
        assert set(history._groups) == {"new"}
        assert history.values(key)[:2] == before and len(history.values(key)) == 3
