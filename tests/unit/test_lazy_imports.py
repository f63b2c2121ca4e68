"""What `sentinel run` loads depends on what its config uses: slack-sdk (45 modules, ~3 MB
of the daemon's RSS) only with a Slack notifier, matplotlib and scipy never in the daemon
process (charts are drawn in the chart worker; the canary statistics are its own)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

RULES = """\
version: sentinel/v1
service: api
slos:
  - name: http-5xx-ratio
    sli:
      ratio:
        bad: {metric: http_requests_total, matchers: {code: "=~5.."}}
        total: {metric: http_requests_total}
    objective: 99.5%
    window: 5m
"""


def loaded_after(config: str, tmp_path: Path) -> set[str]:
    """Top-level packages loaded once the daemon is built as `sentinel run` builds it."""
    (tmp_path / "config.yaml").write_text(config)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "api.yaml").write_text(RULES)
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from sentinel.config import load_config
        from sentinel.daemon.assembly import build_daemon
        from sentinel.rules.loader import load_rules
        from sentinel.web.app import build_app
        from sentinel.web.routes import api_routes
        async def main():
            config = load_config({str(tmp_path / "config.yaml")!r})
            built = await build_daemon({str(tmp_path / "config.yaml")!r}, config,
                                       load_rules(config))
            build_app(built.daemon, api_routes(built))
            await built.cleanup()
        asyncio.run(main())
        print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}})))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return set(out.stdout.split())


def test_a_daemon_without_slack_does_not_load_slack_sdk(tmp_path: Path) -> None:
    loaded = loaded_after(
        f'prometheus: {{url: "http://127.0.0.1:9"}}\nrules: [rules/*.yaml]\n'
        f'state: {{path: "{tmp_path / "state.db"}"}}\n',
        tmp_path,
    )
    assert "aiohttp" in loaded and "sentinel" in loaded
    assert not loaded & {"slack_sdk", "matplotlib", "scipy", "numpy"}


def test_a_daemon_with_slack_loads_it(tmp_path: Path) -> None:
    loaded = loaded_after(
        f'prometheus: {{url: "http://127.0.0.1:9"}}\nrules: [rules/*.yaml]\n'
        f'state: {{path: "{tmp_path / "state.db"}"}}\n'
        "notifiers:\n  slack: {type: slack, token: xoxb-test, channel: C0123456789}\n",
        tmp_path,
    )
    assert "slack_sdk" in loaded
    assert not loaded & {"matplotlib", "scipy", "numpy"}
