"""What the daemon reports about itself: its run state, each rule group's last cycle, the
last reload's outcome (shown by `/health/detailed`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RunState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class GroupStatus:
    last_started_at: float | None = None
    last_finished_at: float | None = None
    last_duration: float | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    cycles: int = 0
    overruns: int = 0
    # Clock time the last cycle completed (last_finished_at is the evaluation time).
    completed_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "last_evaluation_at": self.last_finished_at,
            "completed_at": self.completed_at,
            "duration_seconds": self.last_duration,
            "outcome": self.last_outcome,
            "last_error": self.last_error,
            "cycles": self.cycles,
            "overruns": self.overruns,
        }


@dataclass
class ReloadStatus:
    """Outcome of the last reload: initial (none yet), ok, partial (applied, but a reload
    hook failed: see errors) or failed (refused; the previous config keeps running).
    `changes` lists what an operator must hear about (source URLs, credentials, token)."""

    status: str = "initial"
    at: float | None = None
    errors: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "at": self.at,
            "errors": self.errors,
            "changes": self.changes,
        }
