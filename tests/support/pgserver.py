"""A real PostgreSQL (Debian's `postgresql` package) on a free loopback port, for the
shared state store's tests.

`initdb` in a fresh temporary directory (trust authentication on loopback only), then
`postgres` on 127.0.0.1. PostgreSQL refuses to run as root: when the tests run as root
(CI does) the server runs as the `postgres` user the package creates. Durability is
turned off (fsync) for speed: the tests kill Sentinel, not the machine. `restart()` stops
and starts the same cluster on the same port (the "PostgreSQL restarted mid-run" test).
Under CI=1 a missing binary fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.promserver import free_port


def pg_binary(name: str) -> str | None:
    """Debian keeps the server binaries per major version, off PATH: the newest."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for directory in versions:
        candidate = directory / name
        if candidate.exists():
            return str(candidate)
    return shutil.which(name)


def require_postgres() -> None:
    if pg_binary("initdb") and pg_binary("postgres"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            if os.environ.get("CI"):
                pytest.fail("psycopg missing: install the [postgres] extra (it is in [dev])")
            pytest.skip("psycopg is not installed (pip install -e '.[postgres]')")
        return
    if os.environ.get("CI"):
        pytest.fail("PostgreSQL missing: .ci/run must apt-get install postgresql")
    pytest.skip("Debian's postgresql package is not installed (apt-get install postgresql)")


def _run_as() -> str | None:
    """The user PostgreSQL runs as: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root and there is no `postgres` user to run PostgreSQL as")
    return "postgres"


@dataclass
class PostgresServer:
    port: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sentinel-pg-")))
    process: subprocess.Popen[bytes] | None = None
    user: str | None = None

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> PostgresServer:
        self.user = _run_as()
        if not self.port:
            self.port = free_port()
        if not self.data.exists():
            self._initdb()
        log = (self.workdir / "postgres.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(pg_binary("postgres")),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.workdir),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=100",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=self.user,
        )
        log.close()
        self._wait_ready(timeout)
        return self

    def _initdb(self) -> None:
        if self.user:
            shutil.chown(self.workdir, self.user)
        subprocess.run(
            [
                str(pg_binary("initdb")),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            user=self.user,
        )

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log_tail()}")
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres not ready: {self.log_tail()}") from None
                time.sleep(0.1)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "postgres.log").read_text()[-2000:]
        return ""

    def fresh_database(self) -> str:
        """A new empty database; returns its DSN."""
        import psycopg

        name = f"sentinel_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, as in a restart or failover."""
        if self.process is None:
            return
        self.process.send_signal(2)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
