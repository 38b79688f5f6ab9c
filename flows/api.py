"""The Prefect API a command-line run talks to: the configured server, or a temporary one.

Prefect's own ephemeral mode starts a server per process and gives it 20 s; on a slow,
loaded laptop a first run misses that (migrating a fresh database alone takes longer), and
two processes starting at once migrate the same SQLite file. So for a run without
``PREFECT_API_URL`` agrimon starts its own temporary server, :class:`TemporaryApi`:

* its database is a private copy of a template migrated once per Prefect version (under a
  file lock, so concurrent first runs migrate it once), so runs never share a SQLite file;
* it listens on a socket the parent binds (no port race), is waited for as long as it
  takes, and starts while the command line does its pre-flight checks;
* it runs in its own session, so Ctrl-C on the terminal reaches only the command line,
  which then stops it; it dies with its parent even on SIGKILL (Linux's parent-death
  signal, and a watchdog on the parent's pid);
* everything it writes (database copy, log) lives under ``$PREFECT_HOME/agrimon-api`` and
  is removed when it stops; what a killed run left there is removed by the next start.

Run as ``python -m flows.api migrate DB`` or ``python -m flows.api serve FD PARENT_PID``
(the two child processes); the parent side never imports Prefect's server.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import IO

import httpx

from agrimon.errors import ConfigError, OrchestrationError
from agrimon.products.folder import pid_alive

#: Longest wait for a temporary server to answer; a healthy one needs 5–40 s.
START_TIMEOUT_S = 600.0
_POLL_S = 0.2
_DRAIN_S = 10.0
_DEFAULT_HOME = Path("~") / ".prefect"

# Server settings: no UI, no telemetry, only the services an ephemeral server runs.
_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def prefect_home() -> Path:
    """``PREFECT_HOME`` as Prefect resolves it (environment, else ``~/.prefect``)."""
    return Path(os.environ.get("PREFECT_HOME") or _DEFAULT_HOME).expanduser()


def check_api(url: str, *, timeout_s: float = 10.0) -> None:
    """Raise a one-line :class:`ConfigError` unless the Prefect API at ``url`` is healthy."""
    health = url.rstrip("/") + "/health"
    try:
        response = httpx.get(health, timeout=timeout_s)
    except httpx.HTTPError as err:
        raise ConfigError(
            f"cannot reach the Prefect API at PREFECT_API_URL={url} ({type(err).__name__}): "
            "start it (prefect server start), fix PREFECT_API_URL, or unset it to run "
            "with a temporary local server"
        ) from err
    if response.status_code != 200:
        raise ConfigError(
            f"the Prefect API at PREFECT_API_URL={url} answered HTTP {response.status_code} "
            "to a health check: check the server's logs, fix PREFECT_API_URL, or unset it "
            "to run with a temporary local server"
        )


def drain_prefect() -> None:
    """Send the logs and events Prefect still holds, before the server they go to stops."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    # Bounded: a server that went away must not hold the command line.
    APILogWorker.drain_all(timeout=_DRAIN_S)
    EventsWorker.drain_all(timeout=_DRAIN_S)


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


class TemporaryApi:
    """A private, temporary Prefect server for one command-line run.

    Use :meth:`start` early (it returns at once), :meth:`wait` when the API is needed and
    :meth:`stop` at the end (also a context manager, which starts and stops it).

    Args:
        home: Prefect's home folder (``$PREFECT_HOME``).
        status: Told what the server is doing while :meth:`wait` waits.
        timeout_s: Longest wait for the server to answer.
    """

    def __init__(
        self,
        home: Path | None = None,
        *,
        status: Callable[[str], None] | None = None,
        timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.folder = (home or prefect_home()) / "agrimon-api"
        self.status = status or (lambda _: None)
        self.timeout_s = timeout_s
        version = importlib.metadata.version("prefect")
        self.template = self.folder / f"template-{re.sub(r'[^0-9A-Za-z.]+', '_', version)}.db"
        self.run_id = f"run-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.database = self.folder / f"{self.run_id}.db"
        self.log = self.folder / f"{self.run_id}.log"
        self._sock: socket.socket | None = None
        self._lock: IO[bytes] | None = None
        self._builder: subprocess.Popen[bytes] | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.url: str | None = None

    def __enter__(self) -> TemporaryApi:
        self.start()
        self.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- parent side -----------------------------------------------------------------------

    def start(self) -> None:
        """Begin starting the server (building the template first if none exists)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"cannot create {self.folder} for the temporary Prefect server "
                f"({err.strerror}): set PREFECT_HOME to a writable folder"
            ) from err
        self._remove_stale()
        if self.template.exists():
            self._start_server()
        elif self._try_lock():
            self._start_builder()
        # else another run is building the template: wait() waits for its lock.

    def wait(self) -> str:
        """Block until the server answers; returns its API URL.

        Raises:
            OrchestrationError: The server exited or did not answer within ``timeout_s``.
        """
        if self.url is not None:
            return self.url
        deadline = time.monotonic() + self.timeout_s
        if self._server is None:
            self._finish_template(deadline)
            self._start_server()
        assert self._server is not None and self._sock is not None
        url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/api"
        began = time.monotonic()
        with httpx.Client(timeout=5.0) as client:
            while True:
                self.status(f"starting a local Prefect server ({time.monotonic() - began:.0f} s)")
                if self._server.poll() is not None:
                    raise self._failure(f"exited with code {self._server.returncode}")
                with suppress(httpx.HTTPError):
                    if client.get(f"{url}/health").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise self._failure(f"did not answer within {self.timeout_s:.0f} s")
                time.sleep(_POLL_S)
        self.url = url
        return url

    def stop(self) -> None:
        """Stop the server (and a template build in progress); remove what it wrote."""
        for proc in (self._server, self._builder):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._server = self._builder = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._lock is not None:  # a template build of this run's, unfinished
            self.template.with_suffix(".building").unlink(missing_ok=True)
            self._unlock()
        for path in self._run_files(self.run_id):
            path.unlink(missing_ok=True)
        self.url = None

    def _child(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        if self._log_file is None:
            self._log_file = self.log.open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "flows.api", *args],
            env={**os.environ, **_SERVER_ENV, **env},
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Its own session: Ctrl-C on the terminal reaches the command line only.
            start_new_session=True,
            pass_fds=() if self._sock is None else (self._sock.fileno(),),
        )

    def _start_builder(self) -> None:
        building = self.template.with_suffix(".building")
        building.unlink(missing_ok=True)
        self._builder = self._child(
            ["migrate", str(building), str(os.getpid())],
            {"PREFECT_API_DATABASE_CONNECTION_URL": _sqlite_url(building)},
        )

    def _finish_template(self, deadline: float) -> None:
        """Wait for this run's template build, or for another run's (its lock)."""
        if self._builder is None and not self.template.exists():
            self.status("waiting for another run to prepare the Prefect database")
            self._lock_blocking(deadline)
            if not self.template.exists():  # the other run was stopped: build it here
                self._start_builder()
        if self._builder is not None:
            began = time.monotonic()
            while self._builder.poll() is None:
                self.status(
                    "preparing the Prefect database, once per Prefect version "
                    f"({time.monotonic() - began:.0f} s)"
                )
                if time.monotonic() > deadline:
                    raise self._failure(f"did not prepare its database in {self.timeout_s:.0f} s")
                time.sleep(_POLL_S)
            if self._builder.returncode != 0:
                raise self._failure(f"database setup exited with code {self._builder.returncode}")
            os.replace(self.template.with_suffix(".building"), self.template)
            self._builder = None
        self._unlock()

    def _start_server(self) -> None:
        shutil.copyfile(self.template, self.database)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.set_inheritable(True)
        self._server = self._child(
            ["serve", str(self._sock.fileno()), str(os.getpid())],
            {
                "PREFECT_API_DATABASE_CONNECTION_URL": _sqlite_url(self.database),
                # The copy is of this Prefect version's migrated template, blocks included.
                "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
                "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
            },
        )

    def _failure(self, what: str) -> OrchestrationError:
        tail = ""
        if self._log_file is not None:
            self._log_file.flush()
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
            tail = f"; its last words: {lines[-1].strip()[:300]}" if lines else ""
        return OrchestrationError(
            f"the temporary Prefect server {what}{tail}: rerun, or start a server yourself "
            "(prefect server start) and set PREFECT_API_URL"
        )

    def _try_lock(self) -> bool:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): concurrent first runs may both migrate
            return True
        handle = (self.folder / "template.lock").open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock = handle
        return True

    def _lock_blocking(self, deadline: float) -> None:
        while not self._try_lock():
            if self.template.exists():
                return
            if time.monotonic() > deadline:
                raise self._failure("waited too long for another run's database setup")
            time.sleep(_POLL_S)

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing releases the flock
            self._lock = None

    def _run_files(self, run_id: str) -> list[Path]:
        return [
            self.folder / f"{run_id}{suffix}" for suffix in (".db", ".db-wal", ".db-shm", ".log")
        ]

    def _remove_stale(self) -> None:
        """Remove what runs that were killed left behind (their pid is gone)."""
        for path in self.folder.glob("run-*.db"):
            match = re.fullmatch(r"(run-(\d+)-[0-9a-f]+)\.db", path.name)
            if match and not pid_alive(int(match.group(2))):
                for stale in self._run_files(match.group(1)):
                    stale.unlink(missing_ok=True)


# --- child side ----------------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """End this process when ``parent`` dies, however it dies (SIGKILL included)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(0)
            time.sleep(0.5)

    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(0)
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _migrate(database: Path) -> None:
    """Create and migrate a database and register Prefect's block types in it."""
    import asyncio
    import sqlite3

    from prefect.server.database import provide_database_interface
    from prefect.server.models.block_registration import run_block_auto_registration

    async def setup() -> None:
        db = provide_database_interface()
        await db.create_db()
        async with await db.session() as session:
            await run_block_auto_registration(session=session)
            await session.commit()
        await (await db.engine()).dispose()

    asyncio.run(setup())
    # One self-contained file (no write-ahead log beside it), so a plain copy is complete.
    with sqlite3.connect(database) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("PRAGMA journal_mode=DELETE")


def _serve(fd: int) -> None:
    import uvicorn

    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(
        "prefect.server.api.server:create_app",
        factory=True,
        log_level="error",
        lifespan="on",
    )
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str]) -> None:
    """Entry point of the child processes (see the module docstring)."""
    command, arg, parent = argv
    _die_with_parent(int(parent))
    if command == "migrate":
        _migrate(Path(arg))
    elif command == "serve":
        _serve(int(arg))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
