"""Sub-commands that talk to a running daemon or run it (`run`, `gate`, `silence`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any) -> None:
    _ = sub, argparse
