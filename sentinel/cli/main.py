"""The `sentinel` command line. Only this module prints and chooses exit codes."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sentinel import __version__, jsonenc
from sentinel.cli.report import results_json, results_table
from sentinel.config import Config, load_config
from sentinel.errors import ConfigError, Problem, UsageError
from sentinel.rules.loader import load_rules, load_rules_lenient
from sentinel.rules.model import RuleSet
from sentinel.timeparse import parse_time

if TYPE_CHECKING:
    from sentinel.evaluate.engine import CycleReport

EXIT_OK, EXIT_BAD, EXIT_ERROR = 0, 1, 2
# `eval` only: no breach, but some SLOs could not be evaluated because their source failed.
EXIT_PARTIAL = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print_problems(exc.problems)
        return EXIT_ERROR
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return result


def parse_at(value: str, option: str) -> float:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentinel", description="SLO monitoring daemon")
    parser.add_argument("--version", action="version", version=f"sentinel {__version__}")
    sub = parser.add_subparsers(dest="command")

    check = sub.add_parser("check", help="validate the config and every rule file")
    check.add_argument("-c", "--config", required=True)
    check.add_argument(
        "--offline", action="store_true", help="do not ask backends to parse queries"
    )
    check.set_defaults(func=cmd_check)

    ev = sub.add_parser("eval", help="evaluate every SLO once, now or at --at")
    ev.add_argument("-c", "--config", required=True)
    ev.add_argument("--at", help="RFC 3339 time or Unix seconds (default: now)")
    ev.add_argument("--format", choices=("table", "json"), default="table")
    ev.add_argument("--service", help="only SLOs of this service")
    ev.add_argument("--explain", action="store_true", help="print the query behind each SLO")
    ev.set_defaults(func=cmd_eval)

    dash = sub.add_parser("dashboards", help="render Grafana dashboards from the rules")
    dash.add_argument("-c", "--config", required=True)
    dash.add_argument("-o", "--output", default="build/dashboards")
    dash.add_argument("--push", action="store_true", help="also push to dashboards.grafana_url")
    dash.set_defaults(func=cmd_dashboards)

    rules = sub.add_parser("rules", help="export Prometheus recording and alerting rules")
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    export = rsub.add_parser("export", help="write Prometheus rule files for burn-rate SLOs")
    export.add_argument("-c", "--config", help="Sentinel config (its rules are exported)")
    export.add_argument("--sloth", action="append", default=[], help="a Sloth prometheus/v1 spec")
    export.add_argument("-o", "--output", help="file to write (default: stdout)")
    export.set_defaults(func=cmd_rules_export)

    back = sub.add_parser("backtest", help="replay rules over history: what would have fired")
    back.add_argument("-c", "--config", required=True)
    back.add_argument("--from", dest="start", required=True, help="RFC 3339 or Unix seconds")
    back.add_argument("--to", dest="end", required=True)
    back.add_argument("--step", default="1m")
    back.add_argument("--service")
    back.add_argument("--format", choices=("table", "json"), default="table")
    back.set_defaults(func=cmd_backtest)

    test = sub.add_parser("test", help="run rule unit-test files in-process (no Prometheus)")
    test.add_argument("files", nargs="+")
    test.set_defaults(func=cmd_test)

    probe = sub.add_parser(
        "probe", help="run the configured synthetic probes once (a post-deploy check)"
    )
    probe.add_argument("-c", "--config", required=True)
    probe.add_argument("--once", action="store_true", help="run each probe once (required)")
    probe.add_argument("--probe", action="append", default=[], help="only this probe (repeatable)")
    probe.add_argument("--format", choices=("table", "json"), default="table")
    probe.set_defaults(func=cmd_probe)

    from sentinel.cli import daemon_commands as cli_daemon

    cli_daemon.add_commands(sub)
    return parser


def load_all(path: str) -> tuple[Config, RuleSet]:
    config = load_config(path)
    return config, load_rules(config)


def print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print_problems(exc.problems)
        return EXIT_BAD
    rules, problems = load_rules_lenient(config)
    if rules.slos and not args.offline:
        from sentinel.offline.checks import check_queries

        query_problems, notes = asyncio.run(check_queries(config, rules))
        problems += query_problems
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    if problems:
        print_problems(problems)
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return EXIT_BAD
    print(f"ok: {len(rules.slos)} SLOs in {len(rules.groups)} rule file(s)")
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    config, rules = load_all(args.config)
    at = parse_at(args.at, "--at") if args.at else time.time()
    slos = [s for s in rules.slos if not args.service or s.service == args.service]
    from sentinel.evaluate.wiring import build_engine

    async def run() -> CycleReport:
        engine = build_engine(config)
        try:
            return await engine.evaluate_once(slos, at)
        finally:
            for source in engine.sources.values():
                await source.close()

    report = asyncio.run(run())
    text = results_json(report.results) if args.format == "json" else results_table(report.results)
    if args.explain:
        text += "\n\n" + "\n\n".join(f"# {r.key}\n{r.query}" for r in report.results if r.query)
    # Every SLO depends on its own source only: what could be evaluated is printed, the
    # rest is no_data with the source's error, and the exit code says which case it was.
    print(text)
    return _eval_exit(report, len(slos))


def _eval_exit(report: CycleReport, evaluated: int) -> int:
    """0 nothing breaches; 1 an SLO breaches (whatever else failed); 2 no SLO could be
    evaluated (every source failed); 3 some SLOs could not be evaluated (a source failed)."""
    failed: dict[tuple[str, str, str], list[str]] = {}
    for key, err in report.errors.items():
        failed.setdefault((err.source, err.kind, err.detail), []).append(key)
    if any(r.status == "breach" for r in report.results):
        code = EXIT_BAD
    elif failed and len(report.errors) >= evaluated:
        code = EXIT_ERROR
    elif failed:
        code = EXIT_PARTIAL
    else:
        code = EXIT_OK
    if code == EXIT_ERROR:  # one line, as for any error that leaves nothing evaluated
        reasons = dict.fromkeys(f"{src} {kind}: {detail}" for src, kind, detail in failed)
        print(f"error: no SLO could be evaluated: {'; '.join(reasons)}", file=sys.stderr)
        return code
    for (source, kind, detail), keys in failed.items():
        names = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        print(
            f"warning: {source} {kind}: {detail} ({len(keys)} SLO(s) no_data: {names})",
            file=sys.stderr,
        )
    return code


def cmd_dashboards(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sentinel.outputs.dashboards import render_all, write_all

    config, rules = load_all(args.config)
    try:
        dashboards = render_all(rules, config)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    written = write_all(dashboards, Path(args.output))
    print(f"{len(dashboards)} dashboards in {args.output} ({len(written)} changed)")
    if args.push:
        from sentinel.outputs.dashboard_sync import push

        results = asyncio.run(push(config, dashboards))
        for uid, outcome in sorted(results.items()):
            print(f"  {uid}: {outcome}")
        if any(o.startswith("error") for o in results.values()):
            return EXIT_BAD
    return EXIT_OK


def cmd_rules_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sentinel.outputs.export import export
    from sentinel.query.promql import exportable
    from sentinel.rules.sloth import load_sloth

    slos = []
    try:
        if args.config:
            slos += list(load_all(args.config)[1].slos)
        for spec in args.sloth:
            slos += load_sloth(Path(spec))
    except OSError as exc:
        raise UsageError(str(exc)) from exc
    if not args.config and not args.sloth:
        print("error: give -c CONFIG and/or --sloth SPEC", file=sys.stderr)
        return EXIT_ERROR
    text = export(slos)
    skipped = [s.key for s in slos if not exportable(s)]
    if skipped:
        print(
            "note: not exported (need a ratio SLI with objective and period): "
            + ", ".join(skipped),
            file=sys.stderr,
        )
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return EXIT_OK


def cmd_backtest(args: argparse.Namespace) -> int:

    from sentinel.evaluate.wiring import build_engine
    from sentinel.offline.backtest import backtest, progress_bar, report_table
    from sentinel.units import parse_duration

    config, rules = load_all(args.config)
    start, end = parse_at(args.start, "--from"), parse_at(args.end, "--to")
    try:
        step = parse_duration(args.step)
    except ValueError as exc:
        raise UsageError(f"--step: {exc}") from None
    if end <= start or step <= 0:
        print("error: --to must be after --from and --step positive", file=sys.stderr)
        return EXIT_ERROR
    slos = [s for s in rules.slos if not args.service or s.service == args.service]

    async def run() -> str:
        engine = build_engine(config)
        try:
            report = await backtest(engine, slos, start, end, step, progress_bar)
        finally:
            for source in engine.sources.values():
                await source.close()
        if args.format == "json":
            return jsonenc.dumps(report.to_json(), indent=2)
        return report_table(report)

    print(asyncio.run(run()))
    return EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sentinel.offline.ruletest.runner import run_file

    failed = total = 0
    for name in args.files:
        for outcome in run_file(Path(name)):
            total += 1
            if outcome.passed:
                print(f"PASS {name}: {outcome.name}")
                continue
            failed += 1
            print(f"FAIL {name}: {outcome.name}")
            for failure in outcome.failures:
                print(f"  {failure}")
    print(f"{total - failed} passed, {failed} failed")
    return EXIT_BAD if failed else EXIT_OK


def cmd_probe(args: argparse.Namespace) -> int:
    """0 every probe passed, 1 one failed (its failing assertion is printed), 2 usage or
    config error (no such probe, none configured)."""
    from sentinel.evaluate.prober import run_probes_once

    if not args.once:
        raise UsageError("probe: give --once (`sentinel run` runs probes on their schedule)")
    config = load_config(args.config)
    unknown = sorted(set(args.probe) - set(config.probes))
    if not config.probes or unknown:
        known = ", ".join(sorted(config.probes)) or "none"
        what = f"no probe named {', '.join(unknown)}" if unknown else "no probes configured"
        raise UsageError(f"{args.config}: {what} (probes: {known})")
    probes = {n: c for n, c in config.probes.items() if not args.probe or n in args.probe}
    runs = asyncio.run(run_probes_once(probes))
    if args.format == "json":
        print(jsonenc.dumps([run.to_json() for run in runs.values()], indent=2))
    else:
        for name, run in runs.items():
            verdict = "PASS" if run.success else "FAIL"
            print(f"{verdict} {name} ({probes[name].service}) in {run.duration:.2f}s")
            for failure in run.failures:
                print(f"  - {failure}")
    return EXIT_OK if all(run.success for run in runs.values()) else EXIT_BAD
