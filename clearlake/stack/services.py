"""Start, stop and watch the stack's processes: lakeFS and a Prefect server.

Each service runs in its own session (process group) with its output in
`<home>/logs/<name>.log`; its pid and start time are recorded in
`<home>/run/<name>.json`, so `down` stops exactly the processes `up` started (a
recycled pid is recognised by its different start time) and never anything else.
Data stays in the state directory across `down`/`up`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clearlake.config import (
    DEFAULT_PORTS,
    LOOPBACK,
    StackSecrets,
    recorded_ports,
    state_dir,
    write_private,
)
from clearlake.errors import StackError
from clearlake.stack import install

Report = Callable[[str], None]
HEALTH_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
WEBHOOK_SECRET_ENV = "LAKEFSACTION_CLEARLAKE_WEBHOOK_SECRET"


@dataclass(frozen=True)
class Service:
    """One process of the stack and how to tell that it is healthy."""

    name: str
    port: int
    command: list[str]
    health_url: str
    url: str
    env: dict[str, str] = field(default_factory=dict, repr=False)  # may hold secrets


@dataclass(frozen=True)
class ServiceStatus:
    """What `status` reports for one service."""

    name: str
    url: str
    pid: int | None
    running: bool
    healthy: bool


def port_is_free(port: int) -> bool:
    """True when nothing listens on `port` on the loopback address."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may contain spaces): state is field 3,
    # start time field 22. A zombie has exited; it only waits for its parent to reap it.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[19])


def _is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


class Stack:
    """The local stack rooted at a state directory.

    Args:
        home: the state directory; `$CLEARLAKE_HOME` or `./.clearlake` by default.
        ports: ports per service name; unset ones come from environment variables
            (`CLEARLAKE_LAKEFS_PORT`, `CLEARLAKE_PREFECT_PORT`), then from the last
            `up`, then the defaults (lakeFS 8000, Prefect 4200).
    """

    def __init__(self, home: Path | None = None, ports: dict[str, int] | None = None) -> None:
        self.home = (home or state_dir()).resolve()
        chosen = recorded_ports(self.home)
        for name in DEFAULT_PORTS:
            if env_port := os.environ.get(f"CLEARLAKE_{name.upper()}_PORT"):
                chosen[name] = int(env_port)
        chosen.update(ports or {})
        self.ports = chosen

    # -- layout ------------------------------------------------------------------------
    def log_path(self, name: str) -> Path:
        """The log file of service `name`."""
        return self.home / "logs" / f"{name}.log"

    def _pid_path(self, name: str) -> Path:
        return self.home / "run" / f"{name}.json"

    @property
    def lakefs_url(self) -> str:
        """Base URL of lakeFS (API under /api/v1, web UI at /)."""
        return f"http://{LOOPBACK}:{self.ports['lakefs']}"

    @property
    def prefect_api_url(self) -> str:
        """The Prefect server's API URL (its UI is this without /api)."""
        return f"http://{LOOPBACK}:{self.ports['prefect']}/api"

    # -- services ----------------------------------------------------------------------
    def services(self) -> list[Service]:
        """The stack's services, in start order."""
        secrets = StackSecrets.load_or_create(self.home)
        return [self._lakefs(secrets), self._prefect()]

    def _lakefs(self, secrets: StackSecrets) -> Service:
        root = self.home / "lakefs"
        config = {
            "listen_address": f"{LOOPBACK}:{self.ports['lakefs']}",
            "database": {"type": "local", "local": {"path": str(root / "metadata")}},
            "blockstore": {"type": "local", "local": {"path": str(root / "data")}},
            "committed": {"local_cache": {"dir": str(root / "cache")}},
            "actions": {"enabled": True},
            "installation": {"user_name": "admin"},
            # No telemetry, no version checks: this machine talks only to loopback.
            "stats": {"enabled": False},
            "security": {"check_latest_version": False},
        }
        config_path = root / "config.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        # Secrets go through the environment, never into the config file.
        env = {
            "LAKEFS_AUTH_ENCRYPT_SECRET_KEY": secrets.lakefs_encrypt_key.get_secret_value(),
            "LAKEFS_INSTALLATION_ACCESS_KEY_ID": secrets.lakefs_access_key_id,
            "LAKEFS_INSTALLATION_SECRET_ACCESS_KEY": (
                secrets.lakefs_secret_access_key.get_secret_value()
            ),
            # Read by the action files as {{ ENV.LAKEFSACTION_CLEARLAKE_WEBHOOK_SECRET }}.
            WEBHOOK_SECRET_ENV: secrets.webhook_secret.get_secret_value(),
        }
        return Service(
            name="lakefs",
            port=self.ports["lakefs"],
            command=[str(install.lakefs_binary()), "run", "--config", str(config_path)],
            health_url=f"{self.lakefs_url}/api/v1/healthcheck",
            url=self.lakefs_url,
            env=env,
        )

    def _prefect(self) -> Service:
        root = self.home / "prefect"
        root.mkdir(parents=True, exist_ok=True)
        env = {
            "PREFECT_HOME": str(root),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'prefect.db'}",
            "PREFECT_UI_API_URL": self.prefect_api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": self.prefect_api_url,
        }
        port = str(self.ports["prefect"])
        return Service(
            name="prefect",
            port=self.ports["prefect"],
            command=[
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                LOOPBACK,
                "--port",
                port,
            ],
            health_url=f"{self.prefect_api_url}/health",
            url=self.prefect_api_url.removesuffix("/api"),
            env=env,
        )

    # -- lifecycle ---------------------------------------------------------------------
    def _running_pid(self, name: str) -> int | None:
        """The pid of `name` if the process this stack started is still alive."""
        path = self._pid_path(name)
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        if _process_start_time(record["pid"]) != record["start_time"]:
            return None  # exited, and the pid may since belong to someone else
        return record["pid"]

    def up(self, report: Report = print) -> list[Service]:
        """Start every service not already running and wait until all are healthy.

        Running `up` again is harmless: running, healthy services are left alone.

        Raises:
            StackError: lakeFS is not built, a port is taken by another program, or a
                service did not become healthy in time (with its log's tail).
        """
        if not install.is_installed():
            raise StackError("lakeFS is not built yet: run `clearlake stack install` first")
        self.home.mkdir(parents=True, exist_ok=True)
        write_private(self.home / "stack.json", json.dumps({"ports": self.ports}, indent=2))
        services = self.services()
        for service in services:
            if self._running_pid(service.name) is not None:
                report(f"{service.name}: already running")
            else:
                self._start(service)
                report(f"{service.name}: starting on port {service.port}")
        for service in services:
            self._wait_healthy(service)
            report(f"{service.name}: healthy at {service.url}")
        return services

    def _start(self, service: Service) -> None:
        if not port_is_free(service.port):
            raise StackError(
                f"port {service.port} for {service.name} is in use by another program; "
                f"choose another with CLEARLAKE_{service.name.upper()}_PORT"
            )
        log = self.log_path(service.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = subprocess.Popen(
                service.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **service.env},
                cwd=self.home,
                start_new_session=True,  # its own process group: `down` stops its children too
            )
        record = {
            "pid": process.pid,
            "start_time": _process_start_time(process.pid),
            "port": service.port,
        }
        write_private(self._pid_path(service.name), json.dumps(record))

    def _wait_healthy(self, service: Service) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            if _is_healthy(service.health_url):
                return
            if self._running_pid(service.name) is None:
                break
            time.sleep(0.25)
        tail = "\n".join(self.log_path(service.name).read_text(errors="replace").splitlines()[-20:])
        state = "exited" if self._running_pid(service.name) is None else "is not healthy"
        raise StackError(f"{service.name} {state} ({service.health_url}); last log lines:\n{tail}")

    def down(self, report: Report = print) -> None:
        """Stop the processes this stack started (by recorded pid); keep all data."""
        for name in reversed([*DEFAULT_PORTS]):
            pid = self._running_pid(name)
            if pid is None:
                report(f"{name}: not running")
            else:
                self._stop(pid)
                report(f"{name}: stopped")
            self._pid_path(name).unlink(missing_ok=True)

    def _stop(self, pid: int) -> None:
        start_time = _process_start_time(pid)
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if _process_start_time(pid) != start_time:
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(pid, signal.SIGKILL)

    def status(self) -> list[ServiceStatus]:
        """Whether each service runs and answers its health check."""
        endpoints = {
            "lakefs": (self.lakefs_url, f"{self.lakefs_url}/api/v1/healthcheck"),
            "prefect": (
                self.prefect_api_url.removesuffix("/api"),
                f"{self.prefect_api_url}/health",
            ),
        }
        result = []
        for name, (url, health_url) in endpoints.items():
            pid = self._running_pid(name)
            healthy = pid is not None and _is_healthy(health_url)
            result.append(ServiceStatus(name, url, pid, pid is not None, healthy))
        return result
