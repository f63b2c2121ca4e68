"""Burn-rate window catalogues, as data: Sloth's `AlertWindows` YAML format.

`sentinel/rules/windows/` ships the Google SRE workbook catalogues for 30d, 28d and 7d
periods; a rule may name its own file. Factors are derived from the catalogue, not
written in it (see `BurnTier.factor`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sentinel.units import format_duration, parse_duration
from sentinel.yamlsource import read_yaml_file


@dataclass(frozen=True)
class BurnTier:
    severity: str  # page | ticket
    speed: str  # quick | slow
    short_window: float
    long_window: float
    budget_percent: float

    def factor(self, period: float) -> float:
        return self.budget_percent / 100.0 * period / self.long_window


@dataclass(frozen=True)
class WindowCatalogue:
    name: str
    period: float
    tiers: tuple[BurnTier, ...]

    def windows(self) -> tuple[float, ...]:
        return tuple(sorted({w for t in self.tiers for w in (t.short_window, t.long_window)}))


def parse_catalogue(data: Any, name: str) -> WindowCatalogue:
    try:
        spec = data["spec"]
        period = parse_duration(spec["sloPeriod"])
        tiers = []
        for severity in ("page", "ticket"):
            for speed in ("quick", "slow"):
                t = spec[severity][speed]
                tiers.append(
                    BurnTier(
                        severity,
                        speed,
                        parse_duration(t["shortWindow"]),
                        parse_duration(t["longWindow"]),
                        float(t["errorBudgetPercent"]),
                    )
                )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{name}: not a valid AlertWindows catalogue ({exc})") from None
    return WindowCatalogue(name, period, tuple(tiers))


@functools.lru_cache(maxsize=8)
def builtin_catalogue(period: float) -> WindowCatalogue:
    """The shipped catalogue for a 30d, 28d or 7d period (parsed once: every SLO with burn
    alerts asks for it, and 1,300 SLOs spent ~0.4 s of each load re-reading it)."""
    name = f"google-{format_duration(period)}"
    try:
        text = resources.files("sentinel.rules").joinpath(f"windows/{name}.yaml").read_text()
    except FileNotFoundError:
        raise ValueError(
            f"no built-in window catalogue for period {format_duration(period)} "
            "(built in: 30d, 28d, 7d); set burn_rate.windows to a catalogue file"
        ) from None
    return parse_catalogue(yaml.safe_load(text), name)


def load_catalogue(path: Path) -> WindowCatalogue:
    # Bounded like the config (size, depth, aliases): it is re-read on every SIGHUP.
    located = read_yaml_file(path, path.name, "window catalogue")  # YAMLSyntaxError: ValueError
    return parse_catalogue(located.data, path.name)
